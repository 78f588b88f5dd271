"""Instrumentation on a GPU: training-step overhead and no device->host synchronisation.

For the built-in ResNet-50 (batch 64, 3x224x224) and a GPT-2-small (124M, batch 8 x 1024
tokens), measured side by side in one run: plain training step vs instrumented step (``every=1``),
metric computation vs one ``torch._foreach_norm`` over all trainable parameters, and an
instrumented training forward run under ``torch.cuda.set_sync_debug_mode("error")`` (any
host synchronisation raises). Skips (exit 0) without CUDA.

    python benchmarks/gpu_instrument.py [--steps 20] [--amp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.models import GPT, GPTConfig, resnet50


def _timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def _case(name, model, x, loss_fn, steps: int, amp: bool) -> str:
    ann = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy")
    model = model.cuda()
    x = x.cuda()
    inst = fxlaws.instrument(model, ann, every=1)
    metrics = inst.law_metrics
    params = [p for p in model.parameters() if p.requires_grad]
    named = dict(model.named_parameters())
    tensors = [named[n] for n in metrics.names]
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step(forward):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(forward(x))
        loss.backward()
        opt.step()

    for _ in range(3):
        step(model)
        step(inst)
    torch.cuda.set_sync_debug_mode("error")  # any device->host sync in the instrumented forward raises
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            inst(x)
        sync = "none"
    except RuntimeError as err:
        sync = f"SYNC: {err}".splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    with torch.no_grad():
        norm_t = [_timed(lambda: torch._foreach_norm(params)) for _ in range(50)]
        metric_t = [_timed(lambda: metrics.record(tensors)) for _ in range(50)]
    plain_t, inst_t = [], []
    for _ in range(steps):
        plain_t.append(_timed(lambda: step(model)))
        inst_t.append(_timed(lambda: step(inst)))
    norm, metric = statistics.median(norm_t), statistics.median(metric_t)
    plain, instrumented = statistics.median(plain_t), statistics.median(inst_t)
    return (f"{name:10} {sum(p.numel() for p in params) / 1e6:6.1f}M {len(ann.laws):5} families  "
            f"step {plain * 1e3:7.2f} ms -> {instrumented * 1e3:7.2f} ms (ratio {instrumented / plain:.3f})  "
            f"metrics {metric * 1e3:.3f} ms / foreach_norm {norm * 1e3:.3f} ms = {metric / norm:.2f}  "
            f"host syncs in forward: {sync}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, amp={args.amp}")
    torch.manual_seed(0)
    rn = resnet50()
    labels = torch.randint(0, 1000, (64,), device="cuda")
    print(_case("resnet50", rn, torch.randn(64, 3, 224, 224), lambda out: F.cross_entropy(out, labels),
                args.steps, args.amp))
    gpt = GPT(GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768))
    tokens = torch.randint(0, 50304, (8, 1024))
    targets = tokens.roll(-1, 1).cuda()
    print(_case("gpt2-small", gpt, tokens,
                lambda out: F.cross_entropy(out.flatten(0, 1).float(), targets.flatten()), args.steps, args.amp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
