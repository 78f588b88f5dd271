"""The reference's anchor benchmark: D − dim Lie(W_φ) for 100 random deep nets, with fxlaws.

Regenerates the reference's architectures with numpy's legacy RNG (``np.random.seed(0)``, then 50
linear nets: depth ``randint(2, 5)``, widths ``randint(2, 6)`` each, no biases; then 50 ReLU nets:
depth ``randint(2, 5)``, widths ``randint(2, 10)`` each, biases on hidden layers when
``random() < 0.5`` (drawn after the widths)). For each, ``fxlaws.verify.completeness`` with
``fields="phi"`` computes the number of laws ``D − dim Lie`` from the reparametrisation the
reference uses — linear: the product ``W_q ⋯ W_1``; ReLU: the path-lifting (every product of
weights along an input→output path, and every product starting at a hidden bias) — and compares it
with the known count — linear: the rank of the gradients of all entries of
``W_i W_iᵀ − W_{i+1}ᵀ W_{i+1}`` at a random point; ReLU: the sum of hidden widths — and with the laws
fxlaws attaches. The reference took 34 min (linear) + 1 h 53 min (ReLU) on 64 threads.

    python benchmarks/lie_anchor.py          # last line: cases=100 agree=N total_s=T
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch
from torch import nn
from torch.func import jacrev

from fxlaws.verify.completeness import completeness, numeric_rank


def architectures() -> list[tuple[str, list[int], bool]]:
    np.random.seed(0)
    archs = []
    for _ in range(50):
        depth = np.random.randint(2, 5)
        widths = [int(np.random.randint(2, 6)) for _ in range(depth + 1)]
        archs.append(("linear", widths, False))
    for _ in range(50):
        depth = np.random.randint(2, 5)
        widths = [int(np.random.randint(2, 10)) for _ in range(depth + 1)]
        bias = bool(np.random.random() < 0.5)
        archs.append(("relu", widths, bias))
    return archs


class Net(nn.Sequential):
    """Linear layers ``widths[0] → … → widths[-1]``; ReLU between them for ``kind == "relu"``."""

    def __init__(self, kind: str, widths: list[int], bias: bool):
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            layers.append(nn.Linear(n_in, n_out, bias=bias and not last))
            if kind == "relu" and not last:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.kind, self.widths = kind, widths

    def linears(self, params: dict[str, torch.Tensor]):
        idx = [i for i, m in enumerate(self) if isinstance(m, nn.Linear)]
        return [(params[f"{i}.weight"], params.get(f"{i}.bias")) for i in idx]


def phi_of(net: Net):
    """The reference's reparametrisation as a function of the parameter dict."""

    def product(params):
        out = None
        for w, _ in net.linears(params):
            out = w if out is None else w @ out
        return out

    def path_lifting(params):
        layers = net.linears(params)
        pieces = []
        starts = [(1, layers[0][0])] + [(l, b) for l, (_, b) in enumerate(layers[:-1], start=1) if b is not None]
        for first, t in starts:  # weight paths from the inputs, bias paths from each hidden bias
            for w, _ in layers[first:]:
                t = w.reshape(*w.shape, *([1] * (t.dim() - 1))) * t.unsqueeze(0)
            pieces.append(t.reshape(-1))
        return torch.cat(pieces)

    return product if net.kind == "linear" else path_lifting


def known_count(net: Net) -> int:
    if net.kind == "relu":
        return sum(net.widths[1:-1])
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]

    def laws(theta):
        ws, i = [], 0
        for s, k in zip(shapes, sizes):
            ws.append(theta[i:i + k].view(s))
            i += k
        return torch.cat([(a @ a.T - b.T @ b).reshape(-1) for a, b in zip(ws[:-1], ws[1:])])

    theta = torch.randn(sum(sizes), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rank, _ = numeric_rank(jacrev(laws)(theta))
    return rank


def main() -> None:
    torch.manual_seed(0)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    start = time.perf_counter()
    agree = agree_attached = 0
    archs = architectures()
    for i, (kind, widths, bias) in enumerate(archs):
        net = Net(kind, widths, bias)
        x = (torch.randn(2, widths[0]),)
        t = time.perf_counter()
        res = completeness(net, x, fields="phi", phi=phi_of(net), seed=i)
        known = known_count(net)
        ok = res.expected == known
        agree += ok
        agree_attached += res.attached == known and not res.unsound
        print(f"{i:3d} {kind:6} widths={widths} bias={bias!s:5} D={res.D:4d} dimLie={res.dim_lie:4d} "
              f"laws={res.expected:3d} known={known:3d} attached={res.attached:3d} depth={len(res.ranks)} "
              f"{'ok' if ok else 'DISAGREE'} {time.perf_counter() - t:.2f}s", flush=True)
    total = time.perf_counter() - start
    print(f"fxlaws laws attached == known count in {agree_attached}/100 cases")
    print(f"cases={len(archs)} agree={agree} total_s={total:.1f}")


if __name__ == "__main__":
    main()
