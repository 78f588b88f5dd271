"""The seed paper's experiment: law error under plain SGD grows ∝ τ² (THEORY §3).

    python benchmarks/sgd_persistence.py [--seeds 10] [--steps 50] [--out sgd_persistence.png]

Prints per model the median final relative error per learning rate, the fitted log-log slope
(expected ≈ 2), and the median first-order share of per-step drift with momentum 0.9 and Adam.
"""

import argparse
import platform
import sys
import time

import torch

from fxlaws.study import plot, sgd_persistence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default="sgd_persistence.png")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    results = []
    for model in ("resnet18", "gpt-tiny"):
        t = time.perf_counter()
        res = sgd_persistence(model, seeds=args.seeds, steps=args.steps,
                              progress=lambda m: print(f"… {m}", file=sys.stderr, flush=True))
        results.append(res)
        finals = ", ".join(f"τ={lr:g}: {res.final(lr):.2e}" for lr in res.lrs)
        print(f"{model}: final relative error (median of {args.seeds} seeds) {finals}")
        print(f"{model}: log-log slope of final error vs τ = {res.slope:.2f} (expected ≈ 2); "
              f"first-order share of drift: momentum {res.first_order_share['momentum']:.2f}, "
              f"adam {res.first_order_share['adam']:.2f} (plain SGD: 0) [{time.perf_counter() - t:.0f} s]")
    plot(results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
