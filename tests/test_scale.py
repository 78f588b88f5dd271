"""Scale: models built on the meta device, a LLaMA-7B, and 10,000 layers (issue 6).

On meta, ``annotate`` must find exactly the laws it finds on the same model on CPU (the ground
truth here), allocate no parameter memory, and everything that needs values must say how to
materialise the model.
"""

import json
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import fxlaws
from fxlaws.errors import ExampleInputsError, MetaDeviceError
from fxlaws.models import MODELS, llama_7b
from fxlaws.verify.completeness import completeness
from fxlaws.verify.flow import flow_check

META_MODELS = ["mlp", "lenet", "vgg-bn", "resnet18", "vit-tiny", "gpt-tiny", "llama-tiny", "encoder-tiny",
               "mha-tiny", "moe-tiny"]


def _on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return MODELS[name]()


def _signature(ann):
    return [(f.name, f.kind, f.theory, f.count, f.shape, f.exact, f.params, f.formula) for f in ann.laws]


@pytest.mark.parametrize("name", META_MODELS)
def test_meta_model_has_the_laws_of_the_cpu_model(name):
    cpu = MODELS[name]()
    x = cpu.example_inputs()
    want = fxlaws.annotate(cpu, x, loss="cross_entropy" if name in ("resnet18", "vit-tiny") else None)
    meta = _on_meta(name)
    got = fxlaws.annotate(meta, x, loss=want.loss if want.loss != "any" else None)  # CPU inputs, meta model
    assert _signature(got) == _signature(want)
    assert got.counts() == want.counts() and got.coverage == pytest.approx(want.coverage)
    assert got.no_law == want.no_law and got.frontend == want.frontend
    assert all(p.is_meta for p in meta.parameters())  # nothing materialised


def test_meta_inputs_give_the_same_laws_as_cpu_inputs():
    model = _on_meta("llama-tiny")
    x = MODELS["llama-tiny"]().example_inputs()
    with_cpu = fxlaws.annotate(model, x)
    with_meta = fxlaws.annotate(model, tuple(t.to("meta") for t in x))
    assert _signature(with_meta) == _signature(with_cpu)
    assert {f.theory for f in with_cpu.laws} >= {"A4", "A5", "S1"}  # GQA: A4 for v/o


def test_meta_inputs_for_a_real_model_say_what_to_do():
    model = MODELS["mlp"]()
    (x,) = model.example_inputs()
    with pytest.raises(ExampleInputsError, match="meta device but MLP's parameters are not"):
        fxlaws.annotate(model, x.to("meta"))


def test_meta_templates_are_the_cpu_templates():
    want = fxlaws.annotate(MODELS["gpt-tiny"](), MODELS["gpt-tiny"]().example_inputs())
    got = fxlaws.annotate(_on_meta("gpt-tiny"), MODELS["gpt-tiny"]().example_inputs())
    assert [f.expr for f in got.laws] == [f.expr for f in want.laws]


def test_values_on_meta_raise_with_the_fix():
    model = _on_meta("mlp")
    ann = fxlaws.annotate(model, MODELS["mlp"]().example_inputs())
    with pytest.raises(MetaDeviceError, match=r"to_empty\(device="):
        ann.evaluate(model)
    with pytest.raises(MetaDeviceError, match="fxlaws.soundness"):
        fxlaws.soundness(model, ann, MODELS["mlp"]().example_inputs())
    with pytest.raises(MetaDeviceError, match="completeness"):
        completeness(model, MODELS["mlp"]().example_inputs(), ann=ann)
    with pytest.raises(MetaDeviceError, match="flow_check"):
        flow_check(model, ann, MODELS["mlp"]().example_inputs())
    model.to_empty(device="cpu")  # materialised (values arbitrary): evaluate works again
    assert set(ann.evaluate(model)) == {f.name for f in ann.laws}


def test_llama_7b_on_meta_is_quick_and_small():
    """The whole 6.7 B-parameter model (27 GB in float32) in a fresh process: < 10 s, and annotate adds
    < 1 GiB to the process's peak RSS. (The increment, not the total: importing torch alone is 0.27 GiB
    with the 2.13 CPU build and 0.74 GiB with the 2.14 CUDA build.)"""
    code = (
        "import json, resource, time, torch, fxlaws\n"
        "from fxlaws.models import llama_7b\n"
        "with torch.device('meta'):\n"
        "    model = llama_7b()\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "before = peak()\n"
        "t = time.perf_counter(); ann = fxlaws.annotate(model, model.example_inputs()); t = time.perf_counter() - t\n"
        "print(json.dumps({'s': t, 'gib': peak() - before,\n"
        "                  'counts': ann.counts(), 'theories': sorted({f.theory for f in ann.laws}),\n"
        "                  'families': len(ann.laws)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["s"] < 10 and got["gib"] < 1, got
    assert got["families"] == 5 * 32 + 1 and got["theories"] == ["A2", "A5", "N3", "S1"], got
    assert got["counts"]["attention-qk"] == 32 * 32 * 64  # A5: per layer, head and rotary pair


def test_llama_7b_config():
    with torch.device("meta"):
        model = llama_7b()
    n = sum(p.numel() for p in model.parameters())
    assert 6.7e9 < n < 6.8e9
    assert (model.params.dim, model.params.n_layers, model.params.n_heads, model.params.hidden_dim,
            model.vocab_size) == (4096, 32, 32, 11008, 32000)


@pytest.mark.parametrize("device, pairs", [("cpu", 10_000), ("meta", 2_000)])
def test_ten_thousand_layers(device, pairs):
    """10,000 Linear+ReLU pairs: no recursion limit on the way, and one R1 family per hidden layer.
    (On meta, torch's shape functions run in Python, ~0.5 ms per op: fewer layers keep the test short.)"""
    with torch.device(device):
        model = nn.Sequential(*(m for _ in range(pairs) for m in (nn.Linear(4, 4), nn.ReLU())))
    t = time.perf_counter()
    ann = fxlaws.annotate(model, torch.randn(2, 4))
    elapsed = time.perf_counter() - t
    assert len(ann.laws) == pairs - 1 and {f.theory for f in ann.laws} == {"R1"}
    last = 2 * pairs - 2
    assert ann.laws[-1].params == (f"{last - 2}.weight", f"{last - 2}.bias", f"{last}.weight")
    assert ann.coverage == pytest.approx(1 - 4 / (20 * pairs))  # all but the output bias
    assert elapsed < 60  # CPU 10k: ~5 s on the 2-core VM; a quadratic pass would take minutes
