"""Distributed runs (gloo, 2 CPU processes): every rank records the law metrics of a one-process run.

DDP keeps whole parameters on every rank; FSDP2 (``fully_shard``, per layer and at the root)
keeps them sharded along dim 0 outside each layer's forward, so the metrics are computed from
shard-local partial sums and one all-reduce (fxlaws/laws/sharded.py).
"""

import sys
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import fxlaws
from fxlaws.instrument import instrument
from fxlaws.laws.sharded import is_sharded

STEPS = 4
WORLD = 2

pytestmark = pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed")


def _data():
    """ReLU layer (R1, N-free), a linear pair (G1 Gram law: read as whole matrices) and T1 sums."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 8), act=nn.ReLU(), fc2=nn.Linear(8, 5, bias=False),
                                      fc3=nn.Linear(5, 4))).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 4, (16,))
    return model, x, y


def _train(forward, params, x, y):
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for _ in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        opt.step()


def _rank(rank: int, wrap: str, rdzv: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=WORLD)
    try:
        model, x, y = _data()
        ann = fxlaws.annotate(model, x[:2], loss="cross_entropy")
        inst = instrument(model, ann)
        if wrap == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            wrapped = DDP(inst)
            assert not any("fxlaws_metrics" in name for name in wrapped.named_module_buffers)  # never broadcast
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (WORLD,))
            for layer in (model.fc1, model.fc2, model.fc3):
                fully_shard(layer, mesh=mesh)
            wrapped = fully_shard(inst, mesh=mesh)
            # outside each layer's forward — when the metrics are computed — parameters are shards
            assert all(is_sharded(p) and p.to_local().shape[0] < p.shape[0] for p in model.parameters())
        shard = slice(rank * len(x) // WORLD, (rank + 1) * len(x) // WORLD)
        _train(wrapped, wrapped.parameters(), x[shard], y[shard])  # mean loss per rank, grads averaged
        torch.save({"metrics": inst.metrics(), "values": inst.law_metrics.values.clone(),
                    "kinds": sorted({f.kind for f in ann.laws})}, f"{out}.{rank}")
        # Both ranks leave together: a rank tearing gloo down while its peer still had a pending
        # connection aborted the peer, rarely ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("wrap", ["ddp", "fsdp2"])
def test_every_rank_records_the_metrics_of_a_single_process_run(tmp_path, wrap):
    mp.spawn(_rank, args=(wrap, str(tmp_path / "rdzv"), str(tmp_path / "rank")), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank.{r}") for r in range(WORLD)]
    assert ranks[0]["kinds"] == ["gl", "rescale", "translation"]

    model, x, y = _data()  # the same run in one process, on the whole batch
    inst = instrument(model, fxlaws.annotate(model, x[:2], loss="cross_entropy"))
    _train(inst, model.parameters(), x, y)

    assert torch.equal(ranks[0]["values"], ranks[1]["values"])  # identical on every rank
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    torch.testing.assert_close(ranks[0]["values"], inst.law_metrics.values, rtol=1e-12, atol=1e-12)
    assert ranks[0]["metrics"].keys() == inst.metrics().keys()
    assert ranks[0]["metrics"]["conservation/step"] == STEPS
