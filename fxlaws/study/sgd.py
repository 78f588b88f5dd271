"""The seed paper's experiment (THEORY §3): laws persist under plain SGD with error ∝ τ².

ResNet-18 (the first residual block's summed bn1→conv2 rescale law) and a small GPT-style decoder
(‖Q₁Q₁ᵀ − K₁K₁ᵀ‖_F of layer 1, head 1) are trained with plain SGD on generated data; for each
learning rate τ and seed the relative error ``|h(θ_k) − h(θ_0)| / |h(θ_0)|`` is recorded each step.
The fitted log-log slope of the final error against τ should be ≈ 2. The same runs with momentum
0.9 and Adam report, through :class:`~fxlaws.drift.DriftTracker`, the share of the drift that is
first order (the optimizer's geometry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..api import annotate
from ..drift import DriftTracker

__all__ = ["sgd_persistence", "StudyResult"]


@dataclass
class StudyResult:
    model: str
    lrs: list[float]
    curves: dict[float, list[list[float]]] = field(default_factory=dict)  # lr -> per seed, error per step
    slope: float = float("nan")
    first_order_share: dict[str, float] = field(default_factory=dict)  # optimizer -> median share

    def final(self, lr: float) -> float:
        finals = sorted(c[-1] for c in self.curves[lr])
        return finals[len(finals) // 2]


def _setups():
    from .. import models

    def resnet():
        model = models.resnet18()
        ann = annotate(model, model.example_inputs(), loss="cross_entropy")
        fam = next(f for f in ann.laws if f.name.startswith("rescale:layer1.0.bn1"))
        law = lambda params: fam.evaluate(params).sum()  # noqa: E731  summed over channels
        data = lambda g: (torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))  # noqa: E731
        return model, ann, law, data, lambda out, y: F.cross_entropy(out, y)

    def gpt():
        model = models.gpt_tiny().double()  # its drift (~1e-7 at these τ) is below float32 round-off
        ann = annotate(model, model.example_inputs(), loss="cross_entropy")
        fam = next(f for f in ann.laws if f.theory == "A1" and ".h.0." in f.name)
        law = lambda params: fam.evaluate(params)[0]  # noqa: E731  head 1 of layer 1: a dh×dh matrix
        data = lambda g: (torch.randint(0, 64, (4, 16), generator=g), torch.randint(0, 64, (4, 16), generator=g))  # noqa: E731
        return model, ann, law, data, lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    return {"resnet18": resnet, "gpt-tiny": gpt}


def _run(setup, lr: float, seed: int, steps: int, optimizer: str = "sgd"):
    torch.manual_seed(seed)
    model, ann, law, data, loss_fn = setup()
    model.train()
    params = dict(model.named_parameters())
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=lr), "momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=lr)}[optimizer]
    opt = make(model.parameters())
    tracker = DriftTracker(model, ann, opt) if optimizer != "sgd" else None
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        h0 = law(params).detach().clone()
    errors = []
    for _ in range(steps):
        x, y = data(gen)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            errors.append(float((law(params) - h0).norm() / h0.norm()))
    share = None
    if tracker is not None:
        shares = [s.first_order_share(f.name) for s in tracker.steps for f in ann.laws if f.exact and f.kind != "translation"]
        share = sorted(shares)[len(shares) // 2] if shares else float("nan")
    return errors, share


def sgd_persistence(model: str = "resnet18", *, lrs=(1e-3, 2e-3, 3e-3, 4e-3, 5e-3), seeds: int = 10,
                    steps: int = 50, other_optimizers: bool = True,
                    progress: Optional[Callable[[str], None]] = None) -> StudyResult:
    """Run the experiment on a built-in model ("resnet18" or "gpt-tiny"); returns curves and the slope."""
    setup = _setups()[model]
    result = StudyResult(model, list(lrs))
    for lr in lrs:
        result.curves[lr] = []
        for seed in range(seeds):
            if progress:
                progress(f"{model}: SGD lr={lr:g} seed {seed + 1}/{seeds}")
            result.curves[lr].append(_run(setup, lr, seed, steps)[0])
    xs = [math.log(lr) for lr in lrs]
    ys = [math.log(max(result.final(lr), 1e-300)) for lr in lrs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    result.slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    if other_optimizers:
        for name in ("momentum", "adam"):
            if progress:
                progress(f"{model}: {name}")
            shares = [_run(setup, lr, 0, min(steps, 10), name)[1] for lr in (lrs[0], lrs[-1])]
            result.first_order_share[name] = sorted(shares)[len(shares) // 2]
    return result


def plot(results: list[StudyResult], path) -> None:
    """Relative error vs step, one curve per learning rate (median over seeds), τ² reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2))
    axes = [axes] if len(results) == 1 else list(axes)
    for ax, res in zip(axes, results):
        base = None
        for lr in res.lrs:
            curves = res.curves[lr]
            med = [sorted(c[k] for c in curves)[len(curves) // 2] for k in range(len(curves[0]))]
            line, = ax.loglog(range(1, len(med) + 1), med, label=f"τ = {lr:g}")
            if base is None:
                base = (lr, med)
            else:  # the τ² reference: the smallest τ's curve scaled by (τ / τ_min)²
                scale = (lr / base[0]) ** 2
                ax.loglog(range(1, len(med) + 1), [v * scale for v in base[1]], ls="--", lw=0.8,
                          color=line.get_color(), label=f"τ² ref. ({lr:g})" if lr == res.lrs[-1] else None)
        ax.set_title(f"{res.model}: relative error, plain SGD (fit: error ∝ τ^{res.slope:.2f})")
        ax.set_xlabel("step")
        ax.set_ylabel("|h(θ_k) − h(θ_0)| / |h(θ_0)|")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
