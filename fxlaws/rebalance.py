"""``fxlaws.rebalance``: move every law family to its balanced point on its group orbit, where the
law's value is zero, without changing what the model computes (docs/THEORY.md §2b).

Per family, the group element that zeroes the law (where one exists):

* rescale (R1–R3, S1, S2, N3): per channel the ``λ`` with ``Σ_t c_t λ^{2 c_t} q_t = 0`` (``q_t`` the
  term's channel squares; for ``c = ±1``, ``λ⁴ = q_consumer / q_producer``), found by bisection on
  ``log λ`` (the value is increasing in λ). A channel whose producer or consumer side is zero has no
  balanced point and stays.
* GL (G1) and attention (A1, A2, A4), per block: the ``A`` with ``A G_P Aᵀ = A^{-T} G_C A^{-1}``,
  in closed form: ``P = AᵀA = G_P^{-1/2} (G_P^{1/2} G_C G_P^{1/2})^{1/2} G_P^{-1/2}`` (the matrix
  geometric mean of ``G_P^{-1}`` and ``G_C``), ``A = P^{1/2}``. Blocks whose Gram matrices are not
  positive definite stay.
* rotary pairs (A5): per block and pair the scale ``s⁴ = q_k / q_q``.
* translations (N1, T1, T2, A3): ``v = −h / |group|``; shared shifts (T3): ``u = −(C N Cᵀ)⁺ h``
  (``N`` the rows each source sums).

Families share parameters (a layer is the consumer of one family and the producer of the next), so
one family's move changes its neighbours' values: :func:`rebalance` sweeps over the families until
every reachable value is below ``tol`` relative to its terms, or ``max_sweeps``. Approximate families
(N2) are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from .annotation import Annotation
from .capture import unwrap
from .laws.actions import act, has_action
from .laws.family import BlockGramTerms, DiagonalTerms, GramTerms, PairTerms, ShiftTerms, SumTerms

__all__ = ["rebalance", "RebalanceResult", "balancing_element"]


@dataclass
class RebalanceResult:
    """What moved: per family, the largest relative law value before and after, and the sweeps run."""

    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    sweeps: int = 0

    @property
    def worst(self) -> float:
        return max(self.after.values(), default=0.0)

    def __str__(self) -> str:
        lines = [f"{'family':52} {'before':>10} {'after':>10}"]
        lines += [f"{n[:52]:52} {self.before[n]:10.2e} {self.after[n]:10.2e}" for n in self.before]
        lines += [f"{n[:52]:52} skipped: {why}" for n, why in self.skipped.items()]
        lines.append(f"{self.sweeps} sweeps; worst relative law value after: {self.worst:.1e}")
        return "\n".join(lines)


def _sqrtm(m: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp(min=0).sqrt().unsqueeze(-2)) @ v.transpose(-2, -1)


def _geometric(gp: Tensor, gc: Tensor) -> Optional[Tensor]:
    """``A = P^{1/2}`` with ``P G_P P = G_C`` (batched), or None if a Gram matrix is not definite."""
    if bool((torch.linalg.eigvalsh(gp) <= 1e-12 * gp.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True)).any()) or \
            bool((torch.linalg.eigvalsh(gc) <= 1e-12 * gc.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True)).any()):
        return None
    half = _sqrtm(gp)
    inv_half = torch.linalg.inv(half)
    p = inv_half @ _sqrtm(half @ gc @ half) @ inv_half
    return _sqrtm((p + p.transpose(-2, -1)) / 2)


def _gram_sides(ev, params) -> tuple[Tensor, Tensor]:
    """Producer-side and consumer-side Gram matrices per block."""
    if isinstance(ev, GramTerms):
        grams = ev.term_grams(params)
        return sum(c * g for c, g in grams if c > 0)[None], sum(-c * g for c, g in grams if c < 0)[None]
    blocks = [(c, ev.to_blocks(g, groups)) for c, groups, g in ev.head_grams(params)]
    return sum(c * g for c, g in blocks if c > 0), sum(-c * g for c, g in blocks if c < 0)


def balancing_element(fam, params) -> Optional[Tensor]:
    """The group element that moves ``fam`` to its balanced point (None: no action or not reachable)."""
    ev = fam.evaluator
    if isinstance(ev, DiagonalTerms):
        sq = [(c, s.channel_sq(params)) for s, c in ev.terms]
        if ev.group > 1:
            return None  # only N2 groups channels, and N2 is approximate
        pos = sum(q for c, q in sq if c > 0)
        neg = sum(q for c, q in sq if c < 0)
        lo, hi = torch.full_like(pos, -40.0), torch.full_like(pos, 40.0)
        for _ in range(200):  # bisection on log λ: Σ c λ^{2c} q is increasing in λ
            mid = (lo + hi) / 2
            value = sum(c * torch.exp(2 * c * mid) * q for c, q in sq)
            lo, hi = torch.where(value < 0, mid, lo), torch.where(value < 0, hi, mid)
        reachable = (pos > 0) & (neg > 0)
        return torch.where(reachable, torch.exp((lo + hi) / 2), torch.ones_like(pos))
    if isinstance(ev, (GramTerms, BlockGramTerms)):
        gp, gc = _gram_sides(ev, params)
        a = _geometric(gp, gc)
        if a is None:
            return None
        return a[0] if isinstance(ev, GramTerms) else a
    if isinstance(ev, PairTerms):
        q = {1: 0, -1: 0}
        for coef, groups, per in ev.pair_squares(params):
            q[1 if coef > 0 else -1] = q[1 if coef > 0 else -1] + ev.to_blocks(abs(coef) * per, groups)
        reachable = (q[1] > 0) & (q[-1] > 0)  # a pair with all-zero query or key rows has no balance
        log_s = torch.where(reachable, 0.25 * (torch.log(q[-1].clamp(min=1e-300)) - torch.log(q[1].clamp(min=1e-300))),
                            torch.zeros_like(q[1]))
        return torch.stack([log_s, torch.zeros_like(log_s)], -1)
    if isinstance(ev, SumTerms):
        return -fam.evaluate(params) / ev.group
    if isinstance(ev, ShiftTerms):  # h + C N Cᵀ u = 0 (least squares where C N Cᵀ is singular)
        h = fam.evaluate(params)
        return -torch.linalg.pinv(ev.shift_gram(params, h.dtype, h.device)) @ h
    return None


def _relative_value(fam, params) -> float:
    """``max |h| / max |terms|``: how far from balanced, on the scale of what the law adds up."""
    value = fam.evaluate(params).abs().max()
    ev = fam.evaluator
    if isinstance(ev, SumTerms):
        scale = ev.slot.channel_matrix(params).abs().max()
    elif isinstance(ev, ShiftTerms):
        scale = max(float(params[name].abs().max()) for name, _, _ in ev.sources)
    elif isinstance(ev, DiagonalTerms):
        scale = max(float(s.channel_sq(params).max()) for s, _ in ev.terms)
    else:
        scale = max(float(s.channel_matrix(params).pow(2).sum(1).max()) for s, *_ in ev.terms)
    return float(value) / float(scale) if float(scale) > 0 else float(value)


def rebalance(model: nn.Module, ann: Annotation, *, tol: float = 1e-12, max_sweeps: int = 200,
              kinds: Optional[set[str]] = None) -> RebalanceResult:
    """Move every exact family of ``ann`` to its balanced point, **in place** on ``model``'s parameters.

    The function the model computes does not change (each move is a group element of
    docs/THEORY.md §2b). Optimizer state (momenta, Adam moments) was built for the old parameters:
    rebalance before creating the optimizer, or reset it.

    Args:
        model: the annotated model (its parameters are overwritten under ``torch.no_grad``).
        ann: its Annotation.
        tol: stop when every balanced family's value is below ``tol`` relative to its terms.
        max_sweeps: most passes over the families.
        kinds: only families of these kinds (default: every kind with an action).

    Returns:
        A :class:`RebalanceResult` (relative law values before/after per family, what was skipped).
    """
    model = unwrap(model)[0]
    live = dict(model.named_parameters())
    params = {n: p.detach().clone() for n, p in live.items()}
    result = RebalanceResult()
    families = []
    for fam in ann.laws:
        if kinds is not None and fam.kind not in kinds:
            continue
        if not fam.exact:
            result.skipped[fam.name] = "approximate (eps-broken): its balanced point moves the function"
        elif not has_action(fam):
            result.skipped[fam.name] = f"{fam.theory}: no group action yet"
        else:
            families.append(fam)
            result.before[fam.name] = _relative_value(fam, params)
    with torch.no_grad():
        last = {f.name: float("inf") for f in families}
        for sweep in range(max_sweeps if families else 0):
            result.sweeps = sweep + 1
            for fam in families:
                element = balancing_element(fam, params)
                if element is not None:
                    moved = act(fam, params, element)
                    if all(bool(torch.isfinite(t).all()) for t in moved.values()):
                        params.update(moved)
            now = {f.name: _relative_value(f, params) for f in families}
            # balanced, or no family still improving (what is left is not reachable: a zero unit)
            if all(v <= tol or v > 0.99 * last[n] for n, v in now.items()):
                break
            last = now
        for fam in families:
            result.after[fam.name] = _relative_value(fam, params)
        for name, value in params.items():
            live[name].copy_(value)
    return result
