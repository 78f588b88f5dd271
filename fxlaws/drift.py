"""Per-step drift accounting for any ``torch.optim`` optimizer (THEORY §3).

For a quadratic law ``h(θ) = B(θ, θ)`` and any update ``θ' = θ + Δ``:
``h(θ') − h(θ) = 2B(θ, Δ) + h(Δ)`` exactly. ``2B(θ, Δ)`` is the *first-order* term (the optimizer's
geometry: zero for plain SGD because ``⟨∇h, g⟩ = 0``), ``h(Δ)`` the *second-order* term (the step
size: ``τ² h(g)`` for SGD). Linear laws (translations) change by ``h(Δ)`` alone, which is first
order (zero for SGD). Every law family fxlaws attaches is a homogeneous quadratic form except the
translation kind, which is linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from .annotation import Annotation
from .capture import unwrap
from .errors import require_values

__all__ = ["DriftTracker", "StepDrift"]


@dataclass
class StepDrift:
    """One optimizer step, per law family (tensors of the family's shape, detached)."""

    step: int
    change: dict[str, Tensor] = field(default_factory=dict)   # h(θ') − h(θ)
    first: dict[str, Tensor] = field(default_factory=dict)    # 2B(θ, Δ) (linear laws: h(Δ))
    second: dict[str, Tensor] = field(default_factory=dict)   # h(Δ) (linear laws: 0)

    def first_order_share(self, family: str) -> float:
        """|first| / (|first| + |second|), summed over the family's components (0 for plain SGD)."""
        a, b = float(self.first[family].abs().sum()), float(self.second[family].abs().sum())
        return a / (a + b) if a + b > 0 else 0.0


class DriftTracker:
    """Split every optimizer step's law change into geometry (first order) and step size (second order).

    Registers step pre/post hooks on ``optimizer``; nothing is added to the model's forward.

    Args:
        model: the annotated model being trained (its parameters are read by name).
        ann: its Annotation.
        optimizer: any ``torch.optim.Optimizer`` over (some of) the model's parameters.
        history: keep every StepDrift in ``self.steps`` (default), else only ``self.last``.

    Example:
        >>> tracker = DriftTracker(model, ann, opt)
        >>> loss.backward(); opt.step()
        >>> tracker.last.first_order_share(ann.laws[0].name)
    """

    def __init__(self, model: nn.Module, ann: Annotation, optimizer: torch.optim.Optimizer, *,
                 history: bool = True):
        self.model, self.ann, self.history = model, ann, history
        self.params = dict(unwrap(model)[0].named_parameters())
        require_values(self.params.items(), "fxlaws.drift.DriftTracker")
        self.steps: list[StepDrift] = []
        self.last: Optional[StepDrift] = None
        self._before: Optional[dict[str, Tensor]] = None
        self._count = 0
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()

    def _snapshot(self) -> dict[str, Tensor]:
        names = {p for fam in self.ann.laws for p in fam.params}
        return {n: self.params[n].detach().clone() for n in names}

    def _pre(self, optimizer, args, kwargs) -> None:
        self._before = self._snapshot()

    @torch.no_grad()
    def _post(self, optimizer, args, kwargs) -> None:
        before, after = self._before, self._snapshot()
        delta = {n: after[n] - before[n] for n in after}
        record = StepDrift(self._count)
        for fam in self.ann.laws:
            h0, h1, hd = fam.evaluate(before), fam.evaluate(after), fam.evaluate(delta)
            record.change[fam.name] = h1 - h0
            if fam.kind == "translation":  # linear: h(θ + Δ) − h(θ) = h(Δ), first order
                record.first[fam.name], record.second[fam.name] = hd, torch.zeros_like(hd)
            else:  # quadratic: polarisation gives 2B(θ, Δ) = h(θ') − h(θ) − h(Δ)
                record.first[fam.name], record.second[fam.name] = h1 - h0 - hd, hd
        self._count += 1
        self.last = record
        if self.history:
            self.steps.append(record)
