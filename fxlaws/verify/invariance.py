"""Invariance: the group behind each law family leaves the model's function unchanged (docs/THEORY.md
§2b) — a third, independent proof of the laws, beside soundness (§4.1) and completeness (§4.2).

For random elements of every exact family with an action (:mod:`fxlaws.laws.actions`), on random
float64 parameters and inputs, the model's outputs after the action are compared with those before,
against the change round-off alone makes (every parameter moved at float64's precision)
(families that hold only under softmax cross-entropy, T1: the log-softmax of the output); and the
family's own values are compared with what the group predicts (rescale: each term's channel squares
times ``λ^{2c}``; GL: ``A G Aᵀ`` on producers, ``A^{-T} G A^{-1}`` on consumers; translation: ``h +
|group|·v``; shared shifts: ``h + C N Cᵀ u``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..annotation import Annotation
from ..capture import normalise_inputs, training_call, unwrap
from ..laws.actions import act, has_action, random_element
from ..laws.family import BlockGramTerms, DiagonalTerms, GramTerms, PairTerms, ShiftTerms, SumTerms
from .fields import single_threaded_when_small
from .soundness import _flat_outputs, _random_like

__all__ = ["invariance", "InvarianceResult", "InvarianceRow"]


@dataclass
class InvarianceRow:
    family: str
    theory: str
    output_change: float  # max over trials of max|out' − out| / max|out|
    law_error: float  # max relative error of the predicted law values
    passed: bool


@dataclass
class InvarianceResult:
    """``floor``: the relative output change when every parameter moves at float64's own precision
    (1e-15 relative, random): what round-off alone does. A family passes when its action changes the
    outputs by at most ``max(tol, min(10·floor, 1e-6))`` and its law values are as predicted within
    ``tol``."""

    rows: list[InvarianceRow]
    skipped: dict[str, str]
    tol: float
    floor: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def worst(self) -> float:
        return max((r.output_change for r in self.rows), default=0.0)

    def __str__(self) -> str:
        lines = [f"{'family':48} {'row':4} {'output change':>14} {'law error':>10}  verdict"]
        lines += [f"{r.family[:48]:48} {r.theory:4} {r.output_change:14.3e} {r.law_error:10.3e}  "
                  f"{'ok' if r.passed else 'NOT INVARIANT'}" for r in self.rows]
        lines += [f"{name[:48]:48} skipped: {why}" for name, why in self.skipped.items()]
        lines.append(f"round-off floor (parameters moved by 1e-15 relative): {self.floor:.1e}")
        return "\n".join(lines)


def _predicted(fam, params: dict, element: Tensor) -> Optional[Tensor]:
    """The family's value after ``element`` acts, as the group says (None: no prediction here)."""
    ev = fam.evaluator
    if isinstance(ev, DiagonalTerms):
        lam = element.repeat_interleave(ev.group) if ev.group > 1 else element
        value = sum(coef * lam ** (2 * coef) * slot.channel_sq(params) for slot, coef in ev.terms)
        return (value.view(-1, ev.group).sum(1) if ev.group > 1 else value).reshape(fam.shape)
    if isinstance(ev, GramTerms):
        inv = torch.linalg.inv(element)
        out = sum(coef * (element @ g @ element.T if coef > 0 else inv.T @ g @ inv) for coef, g in ev.term_grams(params))
        return out.reshape(fam.shape)
    if isinstance(ev, BlockGramTerms):
        inv_t = torch.linalg.inv(element).transpose(-2, -1)
        out = None
        for coef, groups, g in ev.head_grams(params):
            a = (element if coef > 0 else inv_t)[torch.tensor(groups, dtype=torch.long)]
            g = coef * ev.to_blocks(a @ g @ a.transpose(1, 2), groups)
            out = g if out is None else out + g
        return out
    if isinstance(ev, PairTerms):  # rotations keep each pair's squares; the scale multiplies them by s^±2
        out = None
        for coef, groups, per in ev.pair_squares(params):
            s2 = torch.exp(2 * coef * element[..., 0])[torch.tensor(groups)]
            g = ev.to_blocks(coef * s2 * per, groups)
            out = g if out is None else out + g
        return out
    if isinstance(ev, SumTerms):
        return fam.evaluate(params).reshape(-1) + ev.group * element.reshape(-1)
    if isinstance(ev, ShiftTerms):
        return fam.evaluate(params) + ev.shift_gram(params, element.dtype, element.device) @ element
    return None


@single_threaded_when_small
def invariance(model: nn.Module, ann: Annotation, example_inputs: Any = None, *, trials: int = 2,
               scale: float = 0.3, tol: float = 1e-10, seed: int = 0,
               action: Optional[Callable] = None) -> InvarianceResult:
    """Check that every exact family's group leaves the model unchanged and moves the law as predicted.

    Args:
        model: the annotated model (deep-copied in float64; never modified).
        ann: its Annotation.
        example_inputs: inputs whose shapes/dtypes random inputs copy (default: those annotate kept).
        trials: random (parameters, inputs, element) draws per family.
        scale: size of the random Lie-algebra elements (``random_element``).
        tol: pass threshold on the relative output change and the law error.
        seed: seeds every draw.
        action: ``(family, params, element) -> new params`` to check instead of
            :func:`fxlaws.laws.actions.act` (a test hands in a wrong one on purpose).

    Returns:
        An :class:`InvarianceResult`: one row per family checked, the families skipped and why.
    """
    model = unwrap(model)[0]
    if example_inputs is None:
        example_inputs = ann.example_inputs() if ann.inputs is not None else model.example_inputs()
    args, kwargs = normalise_inputs(example_inputs)
    training_call(model, kwargs)
    act_fn = action or (lambda fam, params, element: act(fam, params, element))
    gen = torch.Generator().manual_seed(seed)
    net = copy.deepcopy(model).double()
    net.train(ann.train)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    rows, skipped = [], {}
    checked = []
    for fam in ann.laws:
        if not fam.exact:
            skipped[fam.name] = "approximate (eps-broken): its action keeps the function only as eps → 0"
        elif not has_action(fam):
            skipped[fam.name] = f"{fam.theory}: no group action implemented yet"
        else:
            checked.append(fam)
    change = {fam.name: 0.0 for fam in checked}
    floor = 0.0
    law_error = {fam.name: 0.0 for fam in checked}
    with torch.no_grad():
        for _ in range(trials):  # one draw of parameters and inputs per trial, shared by the families
            params = {}
            for n, p in net.named_parameters():
                v = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                params[n] = (v / max(1, p[0].numel()) ** 0.5 if p.dim() >= 2 else
                             (0.1 * v if n.endswith("bias") else 1 + 0.3 * v)) if n in names else p.detach()
            x_args = tuple(_random_like(a, gen) for a in args)
            x_kwargs = {k: _random_like(v, gen) for k, v in kwargs.items()}
            plain = _flat_outputs(_run(net, params, x_args, x_kwargs))
            # round-off floor: the same change of every parameter at float64's own relative precision
            jitter = {n: (t * (1 + 1e-15 * torch.randn(t.shape, generator=gen, dtype=t.dtype))
                          if n in names else t) for n, t in params.items()}
            jittered = _flat_outputs(_run(net, jitter, x_args, x_kwargs))
            floor = max(floor, max((_relative(_seen(jittered, f), _seen(plain, f)) for f in checked), default=0.0))
            for fam in checked:
                element = random_element(fam, scale, gen)
                moved = dict(params)
                moved.update(act_fn(fam, params, element))
                after = _flat_outputs(_run(net, moved, x_args, x_kwargs))
                change[fam.name] = max(change[fam.name], _relative(_seen(after, fam), _seen(plain, fam)))
                predicted = _predicted(fam, params, element)
                if predicted is not None:
                    error = _relative([fam.evaluate(moved).reshape(-1)], [predicted.reshape(-1)])
                    law_error[fam.name] = max(law_error[fam.name], error)
    # deep nets with batch statistics amplify round-off (RegNet: 3e-9); capped, so that a model whose
    # outputs jump under a 1e-15 change (rounding, argmax, routing ties) cannot pass everything
    limit = max(tol, min(10 * floor, 1e-6))
    for fam in checked:
        c, e = change[fam.name], law_error[fam.name]
        rows.append(InvarianceRow(fam.name, fam.theory, c, e, c <= limit and e <= tol))
    return InvarianceResult(rows, skipped, tol, floor)


def _run(net: nn.Module, params: dict, args: tuple, kwargs: dict):
    # the same dropout masks before and after the action (train mode, as annotate analysed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return functional_call(net, params, args, kwargs)


def _seen(outs: list[Tensor], fam) -> list[Tensor]:
    """What the family's symmetry keeps: the outputs, or for T1 (softmax cross-entropy) the log-softmax
    of the first output (the logits up to a shift per row)."""
    if "softmax-cross-entropy" in fam.assumptions:
        outs = [F.log_softmax(o, dim=-1) for o in outs[:1]]
    return [o for o in outs if o.is_floating_point()]


def _relative(a: list[Tensor], b: list[Tensor]) -> float:
    """The largest change relative to its own tensor's scale (a small auxiliary output is not diluted
    by a large one)."""
    out = 0.0
    for x, y in zip(a, b):
        if x.numel():
            scale = float(y.abs().max()) or 1.0
            out = max(out, float((x - y).abs().max()) / scale)
    return out
