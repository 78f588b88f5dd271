"""The zoo table for README: every model of tests/zoo_models.py annotated by its default call.

Prints per model: parameters, front end, families, scalar laws (sum of independent counts), coverage
(share of trainable scalars read by a law), annotate seconds (median of 3, single process), and the
THEORY rows found. Completeness (``D − dim Lie``) is not in this table yet: at these sizes (D ≥ 5,000)
one rank computation takes minutes on 2 cores (README "Not handled yet").

    python benchmarks/zoo.py [names...]
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

import fxlaws

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from zoo_models import ZOO, build  # noqa: E402


def main(names) -> None:
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"| model | params | front end | families | laws | coverage | annotate s | rows |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        model, inputs = build(name)
        params = sum(p.numel() for p in model.parameters())
        try:
            times = []
            for _ in range(3):
                t = time.perf_counter()
                ann = fxlaws.annotate(model, inputs)
                times.append(time.perf_counter() - t)
        except fxlaws.FxlawsError as exc:
            print(f"| {name} | {params:,} | fails: {type(exc).__name__} | | | | | |")
            continue
        rows = Counter()
        for fam in ann.laws:
            rows[fam.theory] += fam.count
        print(f"| {name} | {params:,} | {ann.frontend} | {len(ann.laws)} | {ann.num_laws:,} | {ann.coverage:.0%} | "
              f"{statistics.median(times):.2f} | {' '.join(f'{k}:{v}' for k, v in sorted(rows.items()))} |")


if __name__ == "__main__":
    main(sys.argv[1:] or list(ZOO))
