"""Sympy templates of law families (display, LaTeX, verification on tiny instances).

Never expanded at full size: a template holds index symbols (``j``, ``k``, ``g``) and
``IndexedBase`` parameters; ``substitute`` evaluates one entry on tiny instances for tests.
Symbols are valid identifiers (``layer1_0_conv1_weight``); the parameter names live in the
``symbols`` side map.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

import sympy
from sympy import IndexedBase, Integer, Piecewise, Sum, Symbol, And

from .slots import Piece, Slot

__all__ = ["J", "K", "G", "Deferred", "deferred", "symbol_name", "diag_expr", "gram_expr", "sum_expr", "substitute"]

J = Symbol("j", integer=True, nonnegative=True)
K = Symbol("k", integer=True, nonnegative=True)
G = Symbol("g", integer=True, nonnegative=True)


class Deferred:
    """A template not built yet: ``fn(*args)``, called by :class:`~fxlaws.laws.LawFamily` on the first
    read of ``.expr``. Annotate then builds no sympy (a 10,000-layer MLP: half its time); reports and
    tests build the templates they read, once."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., sympy.Basic], args: tuple):
        self.fn, self.args = fn, args

    def __call__(self) -> sympy.Basic:
        return self.fn(*self.args)


def deferred(fn: Callable[..., sympy.Basic], *args) -> Deferred:
    """``Deferred(fn, args)``; list arguments are copied (callers may extend theirs afterwards)."""
    return Deferred(fn, tuple(tuple(a) if isinstance(a, list) else a for a in args))


def symbol_name(param: str) -> str:
    """``layer1.0.conv1.weight`` -> ``layer1_0_conv1_weight`` (a valid identifier)."""
    name = re.sub(r"\W", "_", param)
    return name if name[:1].isalpha() else f"p_{name}"


def _dummy(i: int) -> Symbol:
    return Symbol(f"i{i}", integer=True, nonnegative=True)


def _index(slot: Slot, piece: Piece, ch: Symbol, shape: Sequence[int], sub: Symbol | None):
    """Index tuple into the parameter for channel ``ch`` and the summed dummies with their limits."""
    idx, limits = [], []
    pos = piece.offset + (ch - piece.start) * piece.inner + (sub if piece.inner > 1 else 0)
    for d, n in enumerate(shape):
        if d == slot.axis:
            if piece.inner > 1:
                limits.append((sub, 0, piece.inner - 1))
            idx.append(pos if slot.groups == 1 else sympy.Mod(pos, n))
        elif d == 0 and slot.groups > 1:  # the rows of position pos's block (Slot.groups)
            rows, dummy = n // slot.groups, _dummy(d)
            idx.append(sympy.floor(pos / shape[slot.axis]) * rows + dummy)
            limits.append((dummy, 0, rows - 1))
        else:
            dummy = _dummy(d)
            idx.append(dummy)
            limits.append((dummy, 0, n - 1))
    return tuple(idx), limits


def _coef(c) -> sympy.Expr:
    """``nsimplify(c)``, without its string parsing for the usual integer coefficients (±1, 2 …)."""
    return Integer(int(c)) if float(c).is_integer() else sympy.nsimplify(c)


def _times(c, expr: sympy.Expr) -> sympy.Expr:
    return expr if c == 1 else _coef(c) * expr


def _guard(piece: Piece, slot: Slot, ch: Symbol, term):
    if piece.start == 0 and piece.stop == slot.channels:
        return term
    cond = And(ch >= piece.start, ch < piece.stop)
    if isinstance(cond, sympy.logic.boolalg.BooleanAtom):
        return Piecewise((term, cond), (0, True))
    # A relational range and a non-zero term: Piecewise.eval would return it unchanged, at ~10x the cost
    # (one guard per attention head and layer).
    return Piecewise((term, cond), (0, True), evaluate=False)


def _slot_sq(slot: Slot, shape: Sequence[int]) -> sympy.Expr:
    base = IndexedBase(symbol_name(slot.param))
    terms = []
    for piece in slot.pieces:
        idx, limits = _index(slot, piece, J, shape, Symbol("s", integer=True, nonnegative=True))
        term = (base[idx] + _coef(slot.constant)) ** 2 if slot.constant else base[idx] ** 2
        term = Sum(term, *limits) if limits else term
        terms.append(_guard(piece, slot, J, term))
    return sympy.Add(*terms)  # one flatten, not one per piece (attention slots have a piece per head)


def diag_expr(terms, shapes: Mapping[str, Sequence[int]], group: int = 1) -> sympy.Expr:
    """``Σ_t coef_t ‖slot_t[j]‖²`` (summed over ``j`` in group ``g`` when ``group > 1``)."""
    expr = sympy.Add(*(_times(c, _slot_sq(s, shapes[s.param])) for s, c in terms))
    if group > 1:
        expr = Sum(expr, (J, G * group, G * group + group - 1))
    return expr


def gram_expr(terms, shapes: Mapping[str, Sequence[int]]) -> sympy.Expr:
    """Entry ``(j, k)`` of ``Σ_t coef_t M_t M_tᵀ``."""
    parts = []
    s = Symbol("s", integer=True, nonnegative=True)
    for slot, coef in terms:
        base = IndexedBase(symbol_name(slot.param))
        for piece in slot.pieces:
            idx_j, limits = _index(slot, piece, J, shapes[slot.param], s)
            idx_k, _ = _index(slot, piece, K, shapes[slot.param], s)
            c = _coef(slot.constant)
            term = (base[idx_j] + c) * (base[idx_k] + c)
            parts.append(_times(coef, Sum(term, *limits) if limits else term))
    return sympy.Add(*parts)


def sum_expr(slot: Slot, shapes: Mapping[str, Sequence[int]], group: int) -> sympy.Expr:
    """``Σ_{j ∈ group g} slot[j, i...]`` with the other indices free (``i1``, ``i2`` …); groups of one
    channel are the entry ``slot[j, i...]`` itself (not a sum from g to g)."""
    base = IndexedBase(symbol_name(slot.param))
    idx = tuple(J if d == slot.axis else _dummy(d) for d in range(len(shapes[slot.param])))
    if group == 1:
        return base[idx]
    lo = G * group if group < slot.channels else 0
    return Sum(base[idx], (J, lo, lo + group - 1))


def shift_expr(sources, coefs, shapes: Mapping[str, Sequence[int]]) -> sympy.Expr:
    """Entry ``(g, j)`` of ``Σ_i coefs[g][i] · S_i[j]``, S_i the row sum (or one row) of source i at feature j
    (the first combination, ``g = 0``, as the template)."""
    terms = []
    for (param, axis, row), c in zip(sources, coefs[0]):
        if abs(c) < 1e-12:
            continue
        shape = shapes[param]
        base = IndexedBase(symbol_name(param))
        others = [d for d in range(len(shape)) if d != axis]
        if row is None:
            idx = tuple(J if d == axis else _dummy(d) for d in range(len(shape)))
            expr = base[idx]
            for d in others:
                expr = Sum(expr, (_dummy(d), 0, shape[d] - 1))
        else:
            flat, pos = int(row), {}
            for d in reversed(others):
                flat, pos[d] = divmod(flat, shape[d])
            expr = base[tuple(J if d == axis else pos[d] for d in range(len(shape)))]
        terms.append(_times(sympy.nsimplify(c, rational=False, tolerance=1e-9), expr))
    return sympy.Add(*terms)


def substitute(expr: sympy.Basic, symbols: Mapping[str, str], params: Mapping, **indices) -> float:
    """Numeric value of one entry of ``expr`` (tiny instances only): indices by name, e.g. ``j=2``."""
    subs = {Symbol(k, integer=True, nonnegative=True): v for k, v in indices.items()}
    e = expr.subs(subs).doit()
    values = {}
    for ind in e.atoms(sympy.Indexed):
        t = params[symbols[str(ind.base.label)]]
        values[ind] = float(t[tuple(int(i) for i in ind.indices)])
    return float(e.xreplace(values))
