"""Cost of the instrument pass on the built-in ResNet-18 (batch 64, 3x32x32), measured side by side.

(a) metric computation (every law family's value, into the on-device buffer) / one
    ``torch._foreach_norm`` over all trainable parameters — target <= 1.5; printed for both
    reduction kernels (``eager`` torch ops, and ``cpp``, the fused CPU kernel: CPU only);
(b) instrumented training step (forward + backward + SGD step, ``every=1``) / plain training step —
    target <= 1.01: the median of per-round ratios; each round also times the plain step a second
    time, so the same run prints its A/A noise floor (plain / plain).
The sides of each ratio run interleaved in one process and the medians are compared. The last
line is for ``--kernel`` (default: cpp on CPU, eager on CUDA), the kernel the training step uses.

    python benchmarks/instrument_overhead.py [--steps 30] [--device cpu|cuda] [--kernel eager|cpp]
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.models import resnet18

from _timing import median_ratio, rounds  # benchmarks/_timing.py (the script's own directory)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--kernel", choices=("eager", "cpp"), default=None)
    args = parser.parse_args()
    dev = args.device
    kernels = ["eager"] + (["cpp"] if dev == "cpu" else [])
    kernel = args.kernel or kernels[-1]
    torch.manual_seed(0)
    model = resnet18().to(dev)
    ann = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy")
    insts = {k: fxlaws.instrument(model, ann, every=1, kernel=k) for k in kernels}
    inst = insts[kernel]
    params = [p for p in model.parameters() if p.requires_grad]
    named = dict(model.named_parameters())
    tensors = [named[n] for n in inst.law_metrics.names]
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(forward):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        opt.step()

    print(f"machine: {platform.machine()} {platform.processor() or ''}, device {dev}"
          f"{' (' + torch.cuda.get_device_name() + ')' if dev == 'cuda' else ''}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; ResNet-18 {sum(p.numel() for p in params):,} params, "
          f"{len(ann.laws)} law families, {inst.law_metrics.values.numel()} law values, batch {args.batch}")
    ratios, metric = {}, {}
    with torch.no_grad():
        for k, i in insts.items():  # each kernel interleaved with its own foreach_norm timings
            record = i.law_metrics.record
            for _ in range(5):  # warm-up: allocator, kernels
                torch._foreach_norm(params)
                record(tensors)
            t = rounds({"norm": lambda: torch._foreach_norm(params), "metric": lambda: record(tensors)},
                       max(50, args.steps), dev, all_orders=False)
            metric[k] = statistics.median(t["metric"])
            ratios[k] = metric[k] / statistics.median(t["norm"])
    for _ in range(3):
        step(model)
        step(inst)
    # Rounds of plain / instrumented / plain again, every order of the three in turn (slow drifts of
    # the machine cancel). plain-again / plain is the A/A noise floor of the same run.
    t = rounds({"plain": lambda: step(model), "inst": lambda: step(inst), "again": lambda: step(model)}, args.steps, dev)
    plain, instrumented = statistics.median(t["plain"]), statistics.median(t["inst"])
    step_ratio, noise = median_ratio(t["inst"], t["plain"]), median_ratio(t["again"], t["plain"])
    print("   ".join(f"metrics[{k}] {metric[k] * 1e3:.3f} ms = {ratios[k]:.2f}x foreach_norm ({metric[k] / ratios[k] * 1e3:.3f} ms)"
                     for k in metric))
    print(f"plain step {plain * 1e3:.1f} ms   instrumented step (kernel={kernel}) {instrumented * 1e3:.1f} ms   "
          f"(medians of {args.steps}; A/A plain/plain {noise:.3f}; metric / plain step {metric[kernel] / plain:.4f})")
    print(f"metric_vs_foreach_norm={ratios[kernel]:.2f} step_ratio={step_ratio:.3f}")


if __name__ == "__main__":
    main()
