"""Time ``fxlaws.annotate`` on the built-in ResNet-18 and ResNet-50 (target: < 1 s each).

Prints, per model, the median wall time of annotate over several runs, side by side with one
eval-mode forward pass at the same example inputs (the ratio says what tracing + analysis costs
relative to running the model once).

    python benchmarks/annotate_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import fxlaws
from fxlaws.models import resnet18, resnet50


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"{'model':10} {'params':>10} {'laws':>8} {'families':>8} {'annotate s':>11} {'forward s':>10} {'ratio':>7}")
    for factory in (resnet18, resnet50):
        model = factory()
        x = model.example_inputs()
        fxlaws.annotate(model, x)  # warm-up (imports, first-call caches)
        t_ann = _median_time(lambda: fxlaws.annotate(model, x), args.repeats)
        model.eval()
        with torch.no_grad():
            t_fwd = _median_time(lambda: model(*x), args.repeats)
        ann = fxlaws.annotate(model, x)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{factory.__name__:10} {n_params:>10,} {ann.num_laws:>8} {len(ann.laws):>8} {t_ann:>11.3f} "
              f"{t_fwd:>10.3f} {t_ann / t_fwd:>7.1f}")


if __name__ == "__main__":
    main()
