"""Discovery of unknown conservation laws of degree ≤ 2 (THEORY §4.3).

Solves for every ``h(θ) = θᵀAθ + bᵀθ`` (A symmetric) with ``∇h(θ) = 2Aθ + b ⊥ W_θ`` at many random
(θ, inputs): a linear system in the entries of (A, b); its null space is the space of such laws.
The basis is reduced (row echelon form, rational coefficients) so laws print readably in the
module's parameter names.
"""

from __future__ import annotations

from typing import Any, Optional

import sympy
import torch
from torch import Tensor, nn

from ..laws.symbolic import symbol_name
from .completeness import numeric_rank
from .fields import FlatModule, field_values, single_threaded_when_small

__all__ = ["discover"]


def _coordinate_symbols(flat: FlatModule) -> list[sympy.Symbol]:
    syms = []
    for name, shape in zip(flat.names, flat.shapes):
        base = symbol_name(name)
        for idx in (torch.cartesian_prod(*[torch.arange(s) for s in shape]).reshape(-1, len(shape)).tolist()
                    if len(shape) > 1 else [[i] for i in range(shape[0])] if len(shape) == 1 else [[]]):
            syms.append(sympy.Symbol(base + "".join(f"_{i}" for i in idx)))
    return syms


def _rref(basis: Tensor, tol: float = 1e-9) -> Tensor:
    """Reduced row echelon form with partial pivoting (float64)."""
    m = basis.clone()
    rows, cols = m.shape
    r = 0
    for c in range(cols):
        if r == rows:
            break
        pivot = int(torch.argmax(m[r:, c].abs())) + r
        if m[pivot, c].abs() < tol:
            continue
        m[[r, pivot]] = m[[pivot, r]]
        m[r] = m[r] / m[r, c]
        others = torch.arange(rows) != r
        m[others] -= m[others, c:c + 1] * m[r]
        r += 1
    return m[:r]


def _drop_products(reduced: Tensor, iu: Tensor, D: int) -> Tensor:
    """Keep a basis of laws that are not combinations of products of linear laws.

    Products of conserved linear forms are conserved too but carry no new information. Rows of the
    reduced basis are kept greedily (linear laws first) while they add a direction outside the span
    of those products and of the rows kept so far, so the kept laws stay the readable basis rows.
    """
    n_quad = iu.shape[1]
    is_linear = (reduced[:, :n_quad].abs() < 1e-9).all(1)
    linear = reduced[is_linear]
    if linear.shape[0] == 0:
        return reduced
    span = []
    for a in range(linear.shape[0]):
        for b in range(a, linear.shape[0]):
            outer = torch.outer(linear[a, n_quad:], linear[b, n_quad:])
            sym = outer + outer.T
            sym.diagonal().mul_(0.5)
            span.append(torch.cat([sym[iu[0], iu[1]], torch.zeros(D, dtype=sym.dtype)]))
    kept = list(linear)
    span.extend(kept)
    rank, _ = numeric_rank(torch.stack(span))
    for row in reduced[~is_linear]:
        new_rank, _ = numeric_rank(torch.stack(span + [row]))
        if new_rank > rank:
            span.append(row)
            kept.append(row)
            rank = new_rank
    return torch.stack(kept)


@single_threaded_when_small
def discover(
    module: nn.Module,
    example_inputs: Any = None,
    degree: int = 2,
    *,
    loss: str = "any",
    train: bool = True,
    seed: int = 0,
    samples: Optional[int] = None,
    tol: float = 1e-8,
) -> list[sympy.Expr]:
    """All conservation laws of ``module`` that are polynomials of degree ≤ ``degree`` (1 or 2).

    Args:
        module: a small module (the unknowns number ``D(D+1)/2 + D``; keep D ≲ 60).
        example_inputs: inputs of one forward call (shapes/dtypes of the random inputs).
        degree: 1 (linear laws ``bᵀθ``) or 2 (adds quadratic forms ``θᵀAθ``).
        loss: "any" or "cross_entropy" (fields with zero-sum output directions).
        train: module mode (BatchNorm batch statistics when True).
        seed: seeds every random draw.
        samples: random (θ, inputs) draws (default: enough for twice as many equations as unknowns).
        tol: relative singular-value threshold for the null space.

    Products of linear laws (also conserved) are left out: the result is a basis of the laws that
    are not functions of lower-degree ones.

    Returns:
        Sympy expressions in symbols ``<param>_<i>_<j>`` (e.g. ``fc1_weight_2_0``), one per law of a
        reduced basis (unique up to the basis choice: each has a leading coefficient 1).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> len(discover(net, (torch.randn(2, 3),)))
        2
    """
    if degree not in (1, 2):
        raise ValueError("degree must be 1 or 2")
    if example_inputs is None:
        example_inputs = module.example_inputs()
    gen = torch.Generator().manual_seed(seed)
    flat = FlatModule(module, example_inputs, train=train, generator=gen)
    D = flat.D
    iu = torch.triu_indices(D, D) if degree == 2 else torch.zeros(2, 0, dtype=torch.long)
    unknowns = iu.shape[1] + D
    rows: list[Tensor] = []
    per_draw = min(D, flat.out_per_example * 8) + 4
    rank, stalled, draws = 0, 0, 0
    # Draw (θ, inputs) until the rank of the system stops growing (or a fixed budget is spent).
    while rank < unknowns and stalled < 3 and (samples is None or draws < samples):
        theta, inputs = flat.random_theta(), flat.random_inputs()
        scalar, sample = flat.data_scalar(inputs, loss)
        for x in field_values(scalar, theta, sample(per_draw)[:, None, :]):
            # h = Σ_{p≤q} a_pq θ_p θ_q + Σ_p b_p θ_p:  ⟨∇h, x⟩ = Σ a_pq (θ_p x_q + θ_q x_p) + Σ b_p x_p
            quad = (torch.outer(theta, x) + torch.outer(x, theta))[iu[0], iu[1]] if degree == 2 else x[:0]
            rows.append(torch.cat([quad, x]))
        draws += 1
        system = torch.stack(rows)
        system = system / system.norm(dim=1, keepdim=True).clamp_min(1e-300)
        _, s, vh = torch.linalg.svd(system, full_matrices=True)
        new_rank = int((s > tol * s[0]).sum())
        stalled = stalled + 1 if new_rank == rank else 0
        rank = new_rank
    null = vh[rank:]
    if null.shape[0] == 0:
        return []
    reduced = _rref(null)
    if degree == 2:
        reduced = _drop_products(reduced, iu, D)
    syms = _coordinate_symbols(flat)
    monomials = [syms[int(p)] * syms[int(q)] for p, q in zip(iu[0], iu[1])] + syms
    laws = []
    for row in reduced:
        expr = sympy.Integer(0)
        for coef, mono in zip(row.tolist(), monomials):
            if abs(coef) > 1e-7:
                expr += sympy.nsimplify(round(coef, 6), rational=True) * mono
        laws.append(expr)
    return laws
