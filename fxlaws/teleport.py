"""``fxlaws.teleport``: move along the symmetry orbits to a point with a larger gradient norm (or any
objective), without changing what the model computes — symmetry teleportation (Zhao et al., 2022),
with the groups of docs/THEORY.md §2b.

The group elements are parametrised by their Lie algebra — ``log λ`` per unit for rescale families,
a matrix ``X`` per block with ``A = exp(X)`` for Gram families (G1, A1/A2/A4), ``(log s, φ)`` per
rotary pair (A5), a translation ``v`` — and optimised by gradient ascent (Adam) on the objective,
differentiated through the actions (:mod:`fxlaws.laws.actions`) and the model. Every point visited is
on the orbit, so the model's function (and loss) is unchanged up to round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from .annotation import Annotation
from .capture import normalise_inputs, unwrap
from .laws.actions import act, algebra_shape, exp_element, has_action

__all__ = ["teleport", "TeleportResult"]


@dataclass
class TeleportResult:
    """The objective before and after, the loss before and after (unchanged), the families moved."""

    objective_before: float
    objective_after: float
    loss_before: float
    loss_after: float
    families: list[str]
    steps: int

    def __str__(self) -> str:
        return (f"teleport over {len(self.families)} families, {self.steps} steps: objective "
                f"{self.objective_before:.4e} → {self.objective_after:.4e}; loss {self.loss_before:.6e} → "
                f"{self.loss_after:.6e}")


def teleport(model: nn.Module, ann: Annotation, loss_fn: Callable[[Any], Tensor], batch: Any, *,
             objective: str | Callable[[Tensor, dict], Tensor] = "grad_norm", steps: int = 50, lr: float = 0.05,
             kinds: Optional[set[str]] = None) -> TeleportResult:
    """Move ``model``'s parameters along the orbits of its exact law families to raise ``objective``,
    **in place**; the function (and the loss on every input) does not change.

    Args:
        model: the annotated model.
        ann: its Annotation.
        loss_fn: the model's output -> scalar loss (e.g. ``lambda out: F.cross_entropy(out, y)``).
        batch: the model's inputs for the objective (a tensor, a tuple of args, or ``(args, kwargs)``).
        objective: ``"grad_norm"`` (``‖∇L‖²`` over the trainable parameters, the original
            teleportation target) or ``f(loss, params) -> scalar`` to maximise (e.g. a negative
            sharpness estimate).
        steps: Adam steps on the Lie-algebra coordinates.
        lr: Adam's learning rate.
        kinds: only families of these kinds (default: every exact family with an action; translation
            families included).

    Returns:
        A :class:`TeleportResult`. Optimizer state (momenta, Adam moments) belongs to the old
        parameters: teleport between optimizer steps and reset (or transport) that state yourself.
    """
    model = unwrap(model)[0]
    args, kwargs = normalise_inputs(batch)
    live = dict(model.named_parameters())
    trainable = [n for n, p in live.items() if p.requires_grad]
    base = {n: p.detach().clone().requires_grad_(n in trainable) for n, p in live.items()}
    families = [f for f in ann.laws if f.exact and has_action(f) and (kinds is None or f.kind in kinds)]
    dtype = next(iter(base.values())).dtype if base else torch.float64
    coords = [torch.zeros(algebra_shape(f), dtype=dtype, requires_grad=True) for f in families]

    def moved() -> dict[str, Tensor]:
        params = dict(base)
        for fam, x in zip(families, coords):
            params.update(act(fam, params, exp_element(fam, x)))
        return params

    def value(params: dict[str, Tensor], create_graph: bool) -> tuple[Tensor, Tensor]:
        # the fused attention kernels have no double backward (the gradient norm's own gradient)
        with sdpa_kernel(SDPBackend.MATH):
            loss = loss_fn(functional_call(model, params, args, kwargs))
        if callable(objective):
            return objective(loss, params), loss
        with sdpa_kernel(SDPBackend.MATH):
            grads = torch.autograd.grad(loss, [params[n] for n in trainable], create_graph=create_graph,
                                        allow_unused=True)
        return sum((g.pow(2).sum() for g in grads if g is not None), torch.zeros((), dtype=loss.dtype)), loss

    start = {n: t.clone().requires_grad_(n in trainable) for n, t in base.items()}
    obj0, loss0 = value(start, create_graph=False)
    opt = torch.optim.Adam(coords, lr=lr) if coords else None
    for _ in range(steps if coords else 0):
        opt.zero_grad()
        obj, _ = value(moved(), create_graph=True)
        (-obj).backward()
        opt.step()
    with torch.no_grad():
        final = moved() if coords else base
    end = {n: t.detach().clone().requires_grad_(n in trainable) for n, t in final.items()}
    obj1, loss1 = value(end, create_graph=False)
    o0, o1, l0, l1 = (float(t.detach()) for t in (obj0, obj1, loss0, loss1))
    if not (o1 >= o0 and math.isfinite(o1) and math.isfinite(l1) and math.isclose(l1, l0, rel_tol=1e-6, abs_tol=1e-12)):
        # never leave the user worse off: a diverged ascent (NaN, overflow) or a moved loss keeps the start
        end, obj1, loss1 = start, obj0, loss0
    with torch.no_grad():
        for n, t in end.items():
            live[n].copy_(t)
    return TeleportResult(float(obj0.detach()), float(obj1.detach()), float(loss0.detach()), float(loss1.detach()),
                          [f.name for f in families], steps)
