"""``LawFamily``: one vector- or matrix-valued conservation law on a parameter subset.

A family is data: its math (sympy template and a one-line text), where it lives (parameter
slots), what it assumes, how many independent scalar laws it holds, and a vectorised torch
evaluator. Families are built by :class:`fxlaws.laws.builder.LawBuilder`; nothing here knows about graphs.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Mapping

import sympy
import torch
from torch import Tensor

from .slots import Slot, SquareSums
from .symbolic import Deferred

__all__ = ["LawFamily", "evaluate_all", "full_precision", "square_needs", "DiagonalTerms", "GramTerms", "BlockGramTerms", "PairTerms", "SumTerms",
           "ShiftTerms"]


@functools.lru_cache(maxsize=4096)
def index_tensor(values: tuple[int, ...], device: torch.device) -> Tensor:
    """An int64 index tensor on ``device``, made once: a host-to-device copy inside a training
    forward would synchronise the device (the instrument pass must not)."""
    return torch.tensor(values, dtype=torch.long, device=device)


@dataclass(frozen=True)
class DiagonalTerms:
    """``h[j] = Σ_t coef_t · ‖slot_t[j]‖²``, then summed over equal consecutive groups when ``group`` > 1.

    Rows R1–R3, N3 (``group == 1``) and N2 (``group`` = channels per norm group).
    """

    terms: tuple[tuple[Slot, float], ...]
    group: int = 1

    def squares(self) -> list[tuple[str, int]]:
        return [(slot.param, slot.axis) for slot, _ in self.terms if slot.reads_squares]

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        out = None
        for slot, coef in self.terms:
            v = slot.channel_sq(params)
            if out is not None and coef in (1, -1):  # one op per term (the common ±1 case)
                out = out + v if coef == 1 else out - v
                continue
            v = v if coef == 1 else v * coef
            out = v if out is None else out + v
        if self.group > 1:
            out = out.view(-1, self.group).sum(1)
        return out


@dataclass(frozen=True)
class GramTerms:
    """``H = Σ_t coef_t · M_t M_tᵀ`` with ``M_t`` the slot's channel-rows matrix (row G1)."""

    terms: tuple[tuple[Slot, float], ...]

    def term_grams(self, params: Mapping[str, Tensor]) -> list[tuple[float, Tensor]]:
        """``(coef_t, M_t M_tᵀ)`` per term (also read by the group actions' checks and rebalancing)."""
        return [(coef, m @ m.transpose(0, 1)) for slot, coef in self.terms for m in [slot.channel_matrix(params)]]

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        out = None
        for coef, g in self.term_grams(params):
            g = g if coef == 1 else g * coef
            out = g if out is None else out + g
        return out


def _summed_blocks(per_term, blocks: int) -> Tensor:
    """``Σ_t coef_t · (term t's per-head values summed into blocks)`` from ``(coef, groups, per head)``."""
    out = None
    for coef, groups, per_head in per_term:
        g = _into_blocks(per_head, groups, blocks)
        g = g if coef == 1 else g * coef
        out = g if out is None else out + g
    return out


def _into_blocks(per_head: Tensor, groups: tuple[int, ...], blocks: int) -> Tensor:
    """Head h's slice of ``per_head`` added into block ``groups[h]``: shape ``(blocks, …)``."""
    return per_head.new_zeros(blocks, *per_head.shape[1:]).index_add(0, index_tensor(groups, per_head.device), per_head)


@dataclass(frozen=True)
class BlockGramTerms:
    """Per-group Gram laws over heads: ``H[g] = Σ_t coef_t Σ_{h: groups_t[h] = g} M_t^{(h)} M_t^{(h)ᵀ}``.

    Each term's slot has ``len(groups_t)`` heads of ``dh`` consecutive channels; ``groups_t[h]`` is
    the group (kv head) head h belongs to (rows A1, A2, A4). Result shape ``(blocks, dh, dh)``.
    """

    terms: tuple[tuple[Slot, float, tuple[int, ...]], ...]
    blocks: int

    def head_grams(self, params: Mapping[str, Tensor]) -> list[tuple[float, tuple[int, ...], Tensor]]:
        """``(coef_t, groups_t, M_t^{(h)} M_t^{(h)ᵀ} per head)`` per term, shape ``(heads, dh, dh)``."""
        out = []
        for slot, coef, groups in self.terms:
            m = slot.channel_matrix(params)
            m = m.reshape(len(groups), m.shape[0] // len(groups), m.shape[1])
            out.append((coef, groups, m @ m.transpose(1, 2)))
        return out

    def to_blocks(self, per_head: Tensor, groups: tuple[int, ...]) -> Tensor:
        """Per-head matrices summed into their blocks: ``(blocks, dh, dh)``."""
        return _into_blocks(per_head, groups, self.blocks)

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        return _summed_blocks(self.head_grams(params), self.blocks)


@dataclass(frozen=True)
class PairTerms:
    """Rotary-pair laws (row A5): per group g and pair f = (d1, d2) of head dims,
    ``Σ_t coef_t Σ_{h: groups_t[h] = g} (‖slot_t[h·dh + d1]‖² + ‖slot_t[h·dh + d2]‖²)``; shape (blocks, pairs)."""

    terms: tuple[tuple[Slot, float, tuple[int, ...]], ...]
    blocks: int
    dh: int
    pairs: tuple[tuple[int, int], ...]

    def squares(self) -> list[tuple[str, int]]:
        return [(slot.param, slot.axis) for slot, _, _ in self.terms if slot.reads_squares]

    def pair_squares(self, params: Mapping[str, Tensor]) -> list[tuple[float, tuple[int, ...], Tensor]]:
        """``(coef_t, groups_t, per head and pair ‖row d1‖² + ‖row d2‖²)`` per term, shape ``(heads, pairs)``
        (also read by the group action's check and by rebalancing)."""
        out = []
        for slot, coef, groups in self.terms:
            v = slot.channel_sq(params).view(len(groups), self.dh)
            first = index_tensor(tuple(a for a, _ in self.pairs), v.device)
            second = index_tensor(tuple(b for _, b in self.pairs), v.device)
            out.append((coef, groups, v[:, first] + v[:, second]))
        return out

    def to_blocks(self, per_head: Tensor, groups: tuple[int, ...]) -> Tensor:
        """Per-head values summed into their blocks: ``(blocks, pairs)``."""
        return _into_blocks(per_head, groups, self.blocks)

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        return _summed_blocks(self.pair_squares(params), self.blocks)


@dataclass(frozen=True)
class SumTerms:
    """``h = Σ_{j ∈ group} slot[j, ...]``: linear laws (N1, T1, T2). ``group`` = channels per group."""

    slot: Slot
    group: int

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        p = self.slot.channel_matrix(params)  # (C, rest)
        p = p.reshape(-1, self.group, p.shape[1]).sum(1)  # (G, rest)
        if p.shape[1] == 1:
            p = p[:, 0]
        return p[0] if p.shape[0] == 1 else p


@functools.lru_cache(maxsize=1024)
def _coef_matrix(values: tuple[tuple[float, ...], ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


@dataclass(frozen=True)
class ShiftTerms:
    """``h[k] = Σ_i C[k, i] · S_i``: combinations of parameter rows summed into one value (T3).

    ``sources`` are ``(param, feature axis, row)``: ``S_i`` is the sum of every row of ``param`` along
    the other axes (``row`` None) or that one flattened row, a vector over the feature axis. Each row
    of ``coefs`` is a combination whose shifts cancel in the value they are summed into.
    """

    sources: tuple[tuple[str, int, object], ...]
    coefs: tuple[tuple[float, ...], ...]

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        rows = []
        for name, axis, row in self.sources:
            p = params[name].movedim(axis, -1)
            p = p.reshape(-1, p.shape[-1])
            rows.append(p.sum(0) if row is None else p[row])
        s = torch.stack(rows)  # (sources, d)
        return _coef_matrix(self.coefs, s.device, s.dtype) @ s

    def coef_matrix(self, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
        """``C``, shape ``(combinations, sources)``."""
        return _coef_matrix(self.coefs, torch.device("cpu") if device is None else device, dtype)

    def rows_summed(self, params: Mapping[str, Tensor]) -> list[int]:
        """How many rows each source's ``S_i`` adds up (1 for a single row): a shift ``w`` of every
        summed row moves ``S_i`` by ``n_i w``."""
        return [1 if row is not None else params[name].numel() // params[name].shape[axis]
                for name, axis, row in self.sources]

    def shift_gram(self, params: Mapping[str, Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
        """``C N Cᵀ`` (N = :meth:`rows_summed` on the diagonal): the group element ``u`` moves the law
        to ``h + C N Cᵀ u`` (read by the action's check and by rebalancing)."""
        c = self.coef_matrix(dtype, device)
        return c @ torch.diag(torch.tensor(self.rows_summed(params), dtype=dtype, device=device)) @ c.T


class _Template:
    """Data descriptor of ``LawFamily.expr``: a :class:`~fxlaws.laws.symbolic.Deferred` given at
    construction is built on first read and kept (the family stays immutable to its users)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            raise AttributeError(self.name)  # no class-level default: the dataclass field stays required
        value = obj.__dict__[self.name]
        if isinstance(value, Deferred):
            value = obj.__dict__[self.name] = value()
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.name] = value


@dataclass(frozen=True, eq=False)
class LawFamily:
    """A family of conservation laws sharing one formula, evaluated vectorised.

    Attributes:
        name: unique, stable name (``"rescale:layer1.0.bn1>layer1.0.conv2"``).
        kind: "rescale", "gl", "scale", "translation", "attention-qk" or "attention-vo".
        theory: docs/THEORY.md row id (R1, R2, R3, G1, N1, N2, N3, T1, T2).
        params: canonical qualified names of the parameters it reads.
        modules: module paths it touches (for reports).
        expr: sympy template (index symbols ``j``/``k``; parameter symbols named in ``symbols``),
            built on first read (annotate passes a ``Deferred``: no sympy work for laws nobody prints).
        symbols: sympy symbol name -> parameter name (symbols are valid identifiers).
        shape: shape of ``evaluate``'s result.
        count: number of independent scalar laws in the family (generic parameters).
        exact: False for eps-broken normalisation laws (N2).
        assumptions: e.g. {"any-loss"}, {"softmax-cross-entropy"}, {"norm-train-mode"}.
        formula: one-line text of the math.
    """

    name: str
    kind: str
    theory: str
    params: tuple[str, ...]
    modules: tuple[str, ...]
    expr: sympy.Basic = _Template()  # type: ignore[assignment]  # may be given Deferred; built on first read
    symbols: Mapping[str, str]
    shape: tuple[int, ...]
    count: int
    exact: bool
    assumptions: frozenset[str]
    formula: str
    _evaluator: object = field(repr=False)
    slots: tuple[Slot, ...] = field(default=(), repr=False)

    def evaluate(self, params: Mapping[str, Tensor]) -> Tensor:
        """Current value of every law in the family.

        Args:
            params: parameter name -> tensor (e.g. ``dict(model.named_parameters())``); must hold
                every name in ``self.params``. Differentiable; reads nothing else.

        Returns:
            A tensor of shape ``self.shape`` (computed in the parameters' dtype; bf16/fp16 are
            promoted to float32).
        """
        missing = [p for p in self.params if p not in params]
        if missing:
            from ..errors import StaleAnnotationError

            raise StaleAnnotationError(
                f"law family {self.name!r} reads parameters {missing} that the given model does not "
                "have; re-run fxlaws.annotate on this model."
            )
        if isinstance(params, SquareSums):  # already promoted, squares shared, autocast off (evaluate_all)
            return self._evaluator(params)
        cast = {n: _promote(params[n]) for n in self.params}
        with full_precision(cast.values()):
            return self._evaluator(cast)

    @property
    def evaluator(self):
        """The evaluator (``DiagonalTerms``, ``GramTerms`` …), unwrapped from a scalar family's squeeze."""
        return getattr(self._evaluator, "inner", self._evaluator)

    def act(self, params: Mapping[str, Tensor], element: Tensor, *, approximate: bool = False) -> dict[str, Tensor]:
        """The family's parameters after a group element acts (see :func:`fxlaws.laws.actions.act`)."""
        from .actions import act

        return act(self, params, element, approximate=approximate)

    def random_element(self, scale: float = 0.3, generator: torch.Generator | None = None) -> Tensor:
        """A random element of the family's group (see :func:`fxlaws.laws.actions.random_element`)."""
        from .actions import random_element

        return random_element(self, scale, generator)

    def squares(self) -> list[tuple[str, int]]:
        """(parameter, axis) pairs whose per-position sums of squares the evaluator reads."""
        squares = getattr(self._evaluator, "squares", None)
        return squares() if squares else []

    def __str__(self) -> str:
        return f"{self.formula}  [{self.theory}]"


def square_needs(families) -> dict[str, set[int]]:
    """Parameter name -> the axes along which some family reads per-position sums of squares."""
    needs: dict[str, set[int]] = {}
    for fam in families:
        for name, axis in fam.squares():
            needs.setdefault(name, set()).add(axis)
    return needs


def evaluate_all(families, params: Mapping[str, Tensor], scratch: Tensor | None = None,
                 needs: Mapping[str, set[int]] | None = None, kernel: str = "eager") -> list[Tensor]:
    """Every family's value, each parameter tensor reduced once for all the families that square it.

    Reads ``params`` (name -> tensor, must hold every family's parameters); returns one tensor per
    family, in order (bf16/fp16 promoted to float32). Differentiable unless ``scratch`` (a flat
    buffer for the squares, see :class:`SquareSums`) is given. ``needs``: ``square_needs(families)``
    when the caller evaluates the same families repeatedly (computed here otherwise). ``kernel``:
    "eager" or "cpp" (see :class:`SquareSums`).
    """
    names = {n for fam in families for n in fam.params}
    missing = sorted(n for n in names if n not in params)
    if missing:
        from ..errors import StaleAnnotationError

        raise StaleAnnotationError(f"the law families read parameters {missing[:3]} that the given model "
                                   "does not have; re-run fxlaws.annotate on this model.")
    needs = square_needs(families) if needs is None else needs
    with full_precision(params[n] for n in names):
        cache = SquareSums({n: _promote(params[n]) for n in names}, needs, scratch, kernel)
        return [fam.evaluate(cache) for fam in families]


def full_precision(tensors) -> contextlib.AbstractContextManager:
    """Autocast off on the tensors' device while law values are computed: autocast is about
    activations, and in a training forward under ``torch.autocast`` it ran the Gram laws' matmuls in
    bf16 (4.6% off on gpt-tiny, all of it read as drift). A no-op context when autocast is off."""
    first = next(iter(tensors), None)
    device = first.device.type if first is not None else "cpu"
    try:
        enabled = torch.is_autocast_enabled(device)
    except RuntimeError:  # a device type autocast does not know (meta): nothing to turn off
        return contextlib.nullcontext()
    return torch.autocast(device, enabled=False) if enabled else contextlib.nullcontext()


def _promote(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
