"""Instrumentation on a GPU: training-step overhead and no device->host synchronisation.

For the built-in ResNet-50 (batch 64, 3x224x224) and a GPT-2-small (124M, batch 8 x 1024
tokens), measured side by side in one run: plain training step vs instrumented step (``every=1``),
metric computation vs one ``torch._foreach_norm`` over all trainable parameters, and an
instrumented training forward run under ``torch.cuda.set_sync_debug_mode("error")`` (any
host synchronisation raises). Skips (exit 0) without CUDA.

``--device cpu --small`` runs the same code on tiny sizes on CPU (no sync check there): a dry run
that proves the script works before spending lent GPU time on it.

    python benchmarks/gpu_instrument.py [--steps 20] [--amp] [--device cuda|cpu] [--small]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.models import GPT, GPTConfig, resnet50

from _timing import median_ratio, rounds  # benchmarks/_timing.py (the script's own directory)


def _case(name, model, x, loss_fn, steps: int, amp: bool, device: str) -> str:
    ann = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy")
    model = model.to(device)
    x = x.to(device)
    inst = fxlaws.instrument(model, ann, every=1)
    metrics = inst.law_metrics
    params = [p for p in model.parameters() if p.requires_grad]
    named = dict(model.named_parameters())
    tensors = [named[n] for n in metrics.names]
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step(forward):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(forward(x))
        loss.backward()
        opt.step()

    for _ in range(3):
        step(model)
        step(inst)
    sync = "n/a (CPU)"
    if device == "cuda":
        torch.cuda.set_sync_debug_mode("error")  # any device->host sync in the instrumented forward raises
        try:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                inst(x)
            sync = "none"
        except RuntimeError as err:
            sync = f"SYNC: {err}".splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode(0)
    with torch.no_grad():  # interleaved, so both sides see the same machine state
        t = rounds({"norm": lambda: torch._foreach_norm(params), "metric": lambda: metrics.record(tensors)}, 50,
                   device, all_orders=False)
    norm, metric = statistics.median(t["norm"]), statistics.median(t["metric"])
    t = rounds({"plain": lambda: step(model), "inst": lambda: step(inst)}, steps, device)  # ABBA
    plain, instrumented = statistics.median(t["plain"]), statistics.median(t["inst"])
    ratio = median_ratio(t["inst"], t["plain"])
    return (f"{name:10} {sum(p.numel() for p in params) / 1e6:6.1f}M {len(ann.laws):5} families  "
            f"step {plain * 1e3:7.2f} ms -> {instrumented * 1e3:7.2f} ms (ratio {ratio:.3f})  "
            f"metrics {metric * 1e3:.3f} ms / foreach_norm {norm * 1e3:.3f} ms = {metric / norm:.2f}  "
            f"host syncs in forward: {sync}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes (a dry run of the script)")
    args = parser.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, amp={args.amp}, small={args.small}")
    torch.manual_seed(0)
    batch, pixels = (2, 64) if args.small else (64, 224)
    rn = resnet50()
    labels = torch.randint(0, 1000, (batch,), device=dev)
    print(_case("resnet50", rn, torch.randn(batch, 3, pixels, pixels), lambda out: F.cross_entropy(out, labels),
                args.steps, args.amp, dev))
    config = (GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=64) if args.small else
              GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768))
    tokens = torch.randint(0, config.vocab_size, (2 if args.small else 8, config.block_size))
    targets = tokens.roll(-1, 1).to(dev)
    print(_case("gpt2-small" if not args.small else "gpt-small", GPT(config), tokens,
                lambda out: F.cross_entropy(out.flatten(0, 1).float(), targets.flatten()), args.steps, args.amp, dev))
    return 0


if __name__ == "__main__":
    sys.exit(main())
