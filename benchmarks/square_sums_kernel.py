"""The fused CPU square-sum kernel (``kernel="cpp"``) alone: speed and accuracy, side by side.

Speed, on the built-in ResNet-18's weight tensors (2+ dims), each side interleaved with one
``torch._foreach_norm`` over the same tensors: the kernel asked for rows only, and for rows and
columns; the eager reductions (square into a scratch buffer, two sums) for rows and columns; and,
for the largest weight alone, an inductor-compiled (``torch.compile``) square + two sums.
Accuracy: max relative error against float64 of the kernel's and of torch's own float32 sums,
over ResNet-18's weights and one LLaMA-7B-sized 4096 x 11008 matrix.

    python benchmarks/square_sums_kernel.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from fxlaws.laws.cpu_kernel import square_sums_module
from fxlaws.laws.slots import _position_sq
from fxlaws.models import resnet18

from _timing import rounds  # benchmarks/_timing.py (the script's own directory)


def _vs_norm(fn, tensors, n: int) -> float:
    t = rounds({"norm": lambda: torch._foreach_norm(tensors), "fn": fn}, n, "cpu", all_orders=False)
    return statistics.median(t["fn"]) / statistics.median(t["norm"])


def _rows_cols(w):
    sq = w * w
    return sq.sum(1), sq.sum(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    module = square_sums_module()
    weights = [p.detach() for p in resnet18().parameters() if p.dim() > 1]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; ResNet-18: {len(weights)} weight tensors, "
          f"{sum(w.numel() for w in weights):,} elements")
    scratch = torch.empty(1 << 22)
    with torch.no_grad():
        for label, fn in (
                ("kernel, rows only", lambda: module.square_sums(weights, [1] * len(weights))),
                ("kernel, rows + columns", lambda: module.square_sums(weights, [3] * len(weights))),
                ("eager, rows + columns", lambda: [_position_sq(w, (0, 1), scratch) for w in weights])):
            print(f"{label:24} {_vs_norm(fn, weights, args.rounds):.2f}x foreach_norm")
        big = max(weights, key=torch.Tensor.numel).reshape(512, -1)
        compiled = torch.compile(_rows_cols)
        compiled(big)
        print(f"{'inductor, rows + columns':24} {_vs_norm(lambda: compiled(big), [big], args.rounds):.2f}x "
              f"foreach_norm (one {tuple(big.shape)} weight)")
        kernel_err = eager_err = 0.0
        for w in weights + [torch.randn(4096, 11008) * 0.02]:
            exact = _position_sq(w.double(), (0, 1))
            rows, cols = module.square_sums([w], [3])[0]
            eager = _position_sq(w, (0, 1))
            for axis, got in ((0, rows), (1, cols)):
                kernel_err = max(kernel_err, float(((got.double() - exact[axis]).abs() / exact[axis]).max()))
                eager_err = max(eager_err, float(((eager[axis].double() - exact[axis]).abs() / exact[axis]).max()))
    print(f"max relative error vs float64: kernel {kernel_err:.1e}, torch float32 sums {eager_err:.1e} "
          f"(float32 eps {torch.finfo(torch.float32).eps:.1e})")


if __name__ == "__main__":
    main()
