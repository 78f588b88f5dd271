"""The group behind each law family, acting on its parameters (docs/THEORY.md §2b).

Every exact family is the conserved quantity of a group acting on its parameter subset without
changing the model's function (or, for T1, its softmax cross-entropy loss). Here are the actions,
one per evaluator:

* :class:`~fxlaws.laws.family.DiagonalTerms` (R1–R3, S1, S2, N3; N2 approximately): an element is
  ``λ > 0`` per channel (per normalisation group for N2); a term with coefficient ``c`` scales its
  slot by ``λ^c`` (producer rows ``c = 1``, consumer columns ``c = −k``: the generator is the law's
  own quadratic form).
* :class:`~fxlaws.laws.family.GramTerms` (G1): ``A ∈ GL(r)``; producer rows ``M → A M``, consumer
  columns ``M → A^{-T} M``.
* :class:`~fxlaws.laws.family.BlockGramTerms` (A1, A2, A4): one ``A_g ∈ GL(d_h)`` per block (kv
  group); a term's head h is mixed by ``A_{g(h)}`` (coefficient +1) or ``A_{g(h)}^{-T}`` (−1).
* :class:`~fxlaws.laws.family.PairTerms` (A5): per block and rotary pair a scaled rotation
  ``s·R(φ)`` (it commutes with the position rotations); queries' pair rows ``→ s R(φ)``, keys'
  ``→ s⁻¹ R(φ)``. The element is ``(log s, φ)`` per block and pair, shape ``(blocks, pairs, 2)``.
* :class:`~fxlaws.laws.family.SumTerms` (N1, T1, T2, A3): a translation ``v`` of the family's shape;
  every channel of group g gets ``v[g]`` added.
* :class:`~fxlaws.laws.family.ShiftTerms` (T3): ``u`` of the family's shape ``(combinations, d)``;
  source i's rows (all of them, or its one row) get ``Σ_k C[k, i] u_k`` added. Each combination's
  shifts cancel in the value the sources are summed into (that is how they were found), and the
  generator is the law's own gradient: Noether for a linear law.

An element is a tensor (λ per channel, a stack of matrices, a translation); :func:`random_element`
draws one as the exponential of a random Lie-algebra element.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor

from .family import BlockGramTerms, DiagonalTerms, GramTerms, LawFamily, PairTerms, ShiftTerms, SumTerms

__all__ = ["act", "random_element", "has_action", "algebra_shape", "exp_element", "ApproximateActionError"]


class ApproximateActionError(ValueError):
    """The family's law is exact only as eps → 0 (N2): so is its action; pass ``approximate=True``."""


_ACTED = (DiagonalTerms, GramTerms, BlockGramTerms, PairTerms, SumTerms, ShiftTerms)


def has_action(fam: LawFamily) -> bool:
    """The family's evaluator has a group action here."""
    return isinstance(fam.evaluator, _ACTED)


def _evaluator(fam: LawFamily):
    ev = fam.evaluator
    if not isinstance(ev, _ACTED):
        raise NotImplementedError(f"{fam.name} ({fam.theory}): no group action implemented for this family yet")
    return ev


def algebra_shape(fam: LawFamily) -> tuple[int, ...]:
    """Shape of the family's Lie-algebra coordinates (zeros are the identity element): ``log λ`` per
    channel, one matrix per block, ``(log s, φ)`` per block and rotary pair, a translation."""
    ev = _evaluator(fam)
    if isinstance(ev, DiagonalTerms):
        return (ev.terms[0][0].channels // ev.group,)
    if isinstance(ev, GramTerms):
        r = ev.terms[0][0].channels
        return (r, r)
    if isinstance(ev, BlockGramTerms):
        d = ev.terms[0][0].channels // len(ev.terms[0][2])
        return (ev.blocks, d, d)
    if isinstance(ev, PairTerms):
        return (ev.blocks, len(ev.pairs), 2)
    return tuple(fam.shape)


def exp_element(fam: LawFamily, x: Tensor) -> Tensor:
    """The group element at Lie-algebra coordinates ``x`` (shape :func:`algebra_shape`): ``exp`` per
    channel, the matrix exponential per block; A5's ``(log s, φ)`` and translations are their own."""
    ev = _evaluator(fam)
    if isinstance(ev, DiagonalTerms):
        return torch.exp(x)
    if isinstance(ev, (GramTerms, BlockGramTerms)):
        return torch.linalg.matrix_exp(x)
    return x


def random_element(fam: LawFamily, scale: float = 0.3, generator: Optional[torch.Generator] = None,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """``exp`` of a random Lie-algebra element of entries ``N(0, scale²)``: λ per channel (rescale),
    an invertible matrix per block (GL), a scaled rotation per rotary pair, a translation."""
    gen = generator or torch.Generator().manual_seed(0)
    return exp_element(fam, scale * torch.randn(algebra_shape(fam), generator=gen, dtype=dtype))


def pair_matrices(ev: PairTerms, element: Tensor, inverse_transpose: bool = False) -> Tensor:
    """``(blocks, dh, dh)``: the identity with ``s R(φ)`` (or its inverse transpose ``s⁻¹ R(φ)``) on
    each rotary pair's two dimensions."""
    mats = torch.eye(ev.dh, dtype=element.dtype, device=element.device).repeat(ev.blocks, 1, 1)
    for f, (d1, d2) in enumerate(ev.pairs):
        s = torch.exp(-element[:, f, 0] if inverse_transpose else element[:, f, 0])
        c, n = torch.cos(element[:, f, 1]), torch.sin(element[:, f, 1])
        mats[:, d1, d1], mats[:, d1, d2], mats[:, d2, d1], mats[:, d2, d2] = s * c, -s * n, s * n, s * c
    return mats


def act(fam: LawFamily, params: Mapping[str, Tensor], element: Tensor, *,
        approximate: bool = False) -> dict[str, Tensor]:
    """New values of the family's parameters after ``element`` acts (nothing modified in place).

    Args:
        fam: the law family.
        params: parameter name -> tensor (must hold ``fam.params``).
        element: see the module docstring (``random_element(fam)`` has the right shape).
        approximate: allow the action of an eps-broken family (N2), which keeps the function only
            as eps → 0.

    Returns:
        name -> new tensor, for every parameter the action changes.

    Raises:
        ApproximateActionError: ``fam`` is approximate and ``approximate`` is False.
        NotImplementedError: the family's evaluator has no action here (a user-registered kind).
    """
    if not fam.exact and not approximate:
        raise ApproximateActionError(f"{fam.name} ({fam.theory}) is exact only as eps → 0, and so is its action "
                                     "(it keeps the function only approximately): pass approximate=True")
    ev = _evaluator(fam)
    out: dict[str, Tensor] = {}

    def current(name: str) -> Tensor:
        return out[name] if name in out else params[name]

    if isinstance(ev, DiagonalTerms):
        lam = element.repeat_interleave(ev.group) if ev.group > 1 else element
        for slot, coef in ev.terms:
            out[slot.param] = slot.scale_channels(current(slot.param), lam ** coef)
    elif isinstance(ev, GramTerms):
        inv_t = torch.linalg.inv(element).transpose(-2, -1)
        for slot, coef in ev.terms:
            out[slot.param] = slot.mix_channels(current(slot.param), (element if coef > 0 else inv_t)[None])
    elif isinstance(ev, BlockGramTerms):
        inv_t = torch.linalg.inv(element).transpose(-2, -1)
        for slot, coef, groups in ev.terms:
            mats = (element if coef > 0 else inv_t)[torch.tensor(groups, dtype=torch.long)]
            out[slot.param] = slot.mix_channels(current(slot.param), mats)
    elif isinstance(ev, PairTerms):
        for slot, coef, groups in ev.terms:
            mats = pair_matrices(ev, element, inverse_transpose=coef < 0)[torch.tensor(groups, dtype=torch.long)]
            out[slot.param] = slot.mix_channels(current(slot.param), mats)
    elif isinstance(ev, ShiftTerms):
        per_source = ev.coef_matrix(element.dtype, element.device).T @ element  # (sources, d): Σ_k C[k, i] u_k
        for (name, axis, row), shift in zip(ev.sources, per_source):
            p = current(name).movedim(axis, -1)
            flat = p.reshape(-1, p.shape[-1])
            flat = flat + shift if row is None else flat.index_add(0, torch.tensor([row], device=flat.device),
                                                                     shift[None])
            out[name] = flat.reshape(p.shape).movedim(-1, axis)
    else:  # SumTerms: every channel of group g moves by element[g]
        shifts = element.reshape(-1, *element.shape[1:]) if ev.slot.channels // ev.group > 1 else element[None]
        per_channel = shifts.repeat_interleave(ev.group, dim=0)
        p = current(ev.slot.param)
        rest = [n for d, n in enumerate(p.shape) if d != ev.slot.axis]
        out[ev.slot.param] = ev.slot.shift_channels(p, per_channel.reshape(ev.slot.channels, *rest))
    return out
