"""``LawBuilder``: makes :class:`~fxlaws.laws.LawFamily` objects from parameter slots.

The attach and attention passes decide *which* law holds (which THEORY row); the builder turns
that decision into a family (name, sympy template, text, count, vectorised evaluator), checks that
every slot it reads is a trainable, unshared parameter, and keeps the reasons why a law was refused.
It knows nothing about graphs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from . import symbolic
from .family import BlockGramTerms, DiagonalTerms, GramTerms, LawFamily, PairTerms, ShiftTerms, SumTerms
from .slots import Slot

__all__ = ["LawBuilder", "ParamFacts"]


@dataclass
class ParamFacts:
    """What law building needs to know about parameters.

    Attributes:
        shapes: canonical name -> shape.
        trainable: canonical names with requires_grad.
        uses: canonical name -> number of graph nodes reading it (> 1: tied / reused).
        canonical: any qualified name (alias) -> canonical name.
    """

    shapes: Mapping[str, tuple[int, ...]]
    trainable: frozenset[str]
    uses: Mapping[str, int]
    canonical: Mapping[str, str] = field(default_factory=dict)


def _fmt_coef(c: float) -> str:
    return "" if abs(c) == 1 else f"{abs(c):g}·"


def _sq_text(slot: Slot, ndim: int) -> str:
    return f"{slot.describe()}²" if ndim == 1 else f"‖{slot.describe()}‖²"


def _gram_text(terms) -> str:
    return " ".join(f"{'+' if coef > 0 else '−'} ⟨{s.describe('j')}, {s.describe('k')}⟩" for s, coef in terms)


def _rest(slot: Slot, shapes) -> int:
    """Entries of the parameter per position along the slot's axis (of its grouped view when grouped)."""
    rest = 1
    for d, n in enumerate(shapes[slot.param]):
        if d != slot.axis:
            rest *= n
    return rest // slot.groups


def _gram_count(dim: int, cols: int) -> int:
    """Independent entries of a dim×dim Gram difference whose factors have ``cols`` columns."""
    free = dim - min(dim, cols)
    return dim * (dim + 1) // 2 - free * (free + 1) // 2


class LawBuilder:
    """Collects law families and the reasons laws were refused, for one annotate run.

    Args:
        facts: parameter facts (shapes, trainable, uses, aliases).

    Attributes:
        families: the families built so far, in order.
        reasons: module path -> why a law touching it was refused.
    """

    def __init__(self, facts: ParamFacts):
        self.facts = facts
        self.families: list[LawFamily] = []
        self.reasons: dict[str, list[str]] = {}
        self._names: set[str] = set()

    # --- checks and reasons ------------------------------------------------------------------------
    def canonical(self, slot: Slot) -> Slot:
        """The slot with its parameter's canonical name (tied aliases resolve to one name)."""
        name = self.facts.canonical.get(slot.param, slot.param)
        return slot if name == slot.param else dataclasses.replace(slot, param=name)

    def slot_problem(self, slot: Slot) -> Optional[str]:
        """Why a law may not read ``slot`` (not a parameter, frozen, tied), or None."""
        name = slot.param
        if name not in self.facts.shapes:
            return f"{name} is not a parameter (a buffer or a computed tensor, e.g. a parametrization)"
        if name not in self.facts.trainable:
            return f"{name} is frozen (requires_grad=False): it is not a coordinate of training"
        if self.facts.uses.get(name, 0) > 1:
            return f"{name} is used at {self.facts.uses[name]} places (tied/shared weights)"
        return None

    def usable(self, slots: Iterable[Slot], modules) -> bool:
        """True when every slot may carry a law; otherwise note each problem on ``modules``."""
        problems = [p for p in (self.slot_problem(s) for s in slots) if p]
        for p in problems:
            self.note(modules, p)
        return not problems

    def note(self, modules, reason: str) -> None:
        """Record ``reason`` (once) for every module path in ``modules``."""
        for m in modules:
            if m is None:
                continue
            bucket = self.reasons.setdefault(m, [])
            if reason not in bucket:
                bucket.append(reason)

    def _unique(self, name: str) -> str:
        base, i = name, 2
        while name in self._names:
            name, i = f"{base}#{i}", i + 1
        self._names.add(name)
        return name

    # --- families ------------------------------------------------------------------------------------
    def family(self, *, name, kind, theory, slots, modules, expr, shape, count, exact, assumptions, formula,
               evaluator) -> LawFamily:
        """Add one family (the general form every helper below goes through)."""
        params = tuple(dict.fromkeys(s.param for s in slots))
        fam = LawFamily(
            name=self._unique(name), kind=kind, theory=theory, params=params,
            modules=tuple(dict.fromkeys(m for m in modules if m)), expr=expr,
            symbols={symbolic.symbol_name(p): p for p in params}, shape=tuple(shape), count=int(count),
            exact=exact, assumptions=frozenset(assumptions), formula=formula, _evaluator=evaluator,
            slots=tuple(slots),
        )
        self.families.append(fam)
        return fam

    def gram(self, terms: Sequence[tuple[Slot, float]], channels: int, label: str, modules) -> LawFamily:
        """G1: ``Σ ± M M^T`` over a channel space mixed by any invertible matrix (channels × channels)."""
        shapes = self.facts.shapes
        cols = sum(sum(p.inner for p in s.pieces) * _rest(s, shapes) for s, _ in terms)
        return self.family(
            name=f"gl:{label}", kind="gl", theory="G1", slots=[s for s, _ in terms], modules=modules,
            expr=symbolic.deferred(symbolic.gram_expr, terms, shapes), shape=(channels, channels),
            count=_gram_count(channels, cols), exact=True, assumptions={"any-loss"},
            formula=f"{_gram_text(terms).lstrip('+ ')}  for j, k < {channels}", evaluator=GramTerms(tuple(terms)),
        )

    def diagonal(self, terms: Sequence[tuple[Slot, float]], channels: int, label: str, theory: str,
                 modules) -> LawFamily:
        """Rescale laws (R1–R3, S1, S2, N3): per channel j, ``Σ coef · ‖slot[j]‖²``."""
        shapes = self.facts.shapes
        text = " ".join(
            f"{'+' if coef > 0 else '−'} {_fmt_coef(coef)}{_sq_text(s, len(shapes[s.param]))}" for s, coef in terms
        ).lstrip("+ ")
        return self.family(
            name=f"rescale:{label}", kind="rescale", theory=theory, slots=[s for s, _ in terms], modules=modules,
            expr=symbolic.deferred(symbolic.diag_expr, terms, shapes), shape=(channels,), count=channels, exact=True,
            assumptions={"any-loss"}, formula=f"{text}  for j < {channels}", evaluator=DiagonalTerms(tuple(terms)),
        )

    def group_scale(self, sources: Sequence[Slot], channels: int, group: int, label: str, eps_of: str,
                    assumptions, modules) -> LawFamily:
        """N2: ``Σ_{j∈group} ‖source[j]‖²`` per normalisation group (exact only as eps → 0)."""
        shapes = self.facts.shapes
        terms = tuple((s, 1.0) for s in sources)
        inner = " + ".join(_sq_text(s, len(shapes[s.param])) for s, _ in terms)
        groups = channels // group
        where = f"for j < {channels}" if group == 1 else f"summed over each group of {group} channels ({groups} groups)"
        evaluator = DiagonalTerms(terms, group)
        return self.family(
            name=f"scale:{label}", kind="scale", theory="N2", slots=list(sources), modules=modules,
            expr=symbolic.deferred(symbolic.diag_expr, terms, shapes, group), shape=(groups,) if groups > 1 else (),
            count=groups, exact=False, assumptions=assumptions,
            formula=f"{inner}  {where}  (eps-broken: exact only as {eps_of}.eps → 0)",
            evaluator=_Squeezed(evaluator) if groups == 1 else evaluator,
        )

    def sums(self, slot: Slot, channels: int, group: int, *, theory: str, label: str, assumptions,
             modules) -> Optional[LawFamily]:
        """Translation laws (N1, T1, T2): ``Σ_{j∈group} slot[j]`` (each remaining entry separately).
        Notes the slot's problem and returns None when it may not carry a law."""
        if not self.usable([slot], modules):
            return None
        p_shape = self.facts.shapes[slot.param]
        rest = [n for d, n in enumerate(p_shape) if d != slot.axis]
        groups = channels // group
        shape = ((groups,) if groups > 1 else ()) + tuple(rest)
        if group == 1:
            text = f"{slot.describe()}  for j < {channels}"
        else:
            sel = "_(j ∈ g)" if groups > 1 else "_j"  # plain text: no LaTeX braces
            text = f"Σ{sel} {slot.describe()}" + (f"  for each group g of {group} channels" if groups > 1 else "")
        return self.family(
            name=f"translation:{label}", kind="translation", theory=theory, slots=[slot], modules=modules,
            expr=symbolic.deferred(symbolic.sum_expr, slot, self.facts.shapes, group), shape=shape,
            count=groups * _rest(slot, self.facts.shapes), exact=True, assumptions=assumptions, formula=text,
            evaluator=SumTerms(slot, group),
        )

    def shifts(self, sources, coefs, count: int, label: str, modules) -> Optional[LawFamily]:
        """T3: parameters summed into one value; each row of ``coefs`` combines the sources' row sums
        (``(param, feature axis, row or None)``) into a vector whose shifts cancel. Notes and returns
        None when a source may not carry a law (tied, frozen)."""
        slots = [Slot.full(p, axis, self.facts.shapes[p][axis]) for p, axis, _ in sources if p in self.facts.shapes]
        if len(slots) != len(sources) or not self.usable(slots, modules):
            return None
        d = self.facts.shapes[sources[0][0]][sources[0][1]]
        shapes = self.facts.shapes
        names = [p if len(shapes[p]) == 1 else f"{p}[{'Σ rows' if row is None else f'row {row}'}]" for p, _, row in sources]
        text = "; ".join(" ".join(f"{'+' if c > 0 else '−'} {'' if abs(abs(c) - 1) < 1e-9 else f'{abs(c):.3g}·'}{n}"
                                  for c, n in zip(row, names) if abs(c) > 1e-12).lstrip("+ ") for row in coefs[:2])
        return self.family(
            name=f"translation:{label}:shared", kind="translation", theory="T3", slots=slots, modules=modules,
            expr=symbolic.deferred(symbolic.shift_expr, sources, coefs, self.facts.shapes), shape=(len(coefs), d),
            count=count, exact=True, assumptions={"any-loss"},
            formula=f"{text}{' …' if len(coefs) > 2 else ''}  (vectors over the {d} features; shifts that cancel in "
                    f"the sum)", evaluator=ShiftTerms(tuple(sources), tuple(tuple(r) for r in coefs)),
        )

    def key_bias(self, slot: Slot, label: str, modules, formula: str) -> LawFamily:
        """A3: every entry of a key bias under a softmax over keys (a shift of all scores of a query)."""
        return self.family(
            name=f"translation:{label}:key-bias", kind="translation", theory="A3", slots=[slot], modules=modules,
            expr=symbolic.deferred(symbolic.sum_expr, slot, self.facts.shapes, 1), shape=(slot.channels,),
            count=slot.channels, exact=True, assumptions={"any-loss"}, formula=formula, evaluator=SumTerms(slot, 1),
        )

    def block_gram(self, kind: str, theory: str, terms, blocks: int, dh: int, label: str, modules,
                   math: str) -> LawFamily:
        """Per-group Gram family (A1, A2, A4): ``terms`` are (slot, coef, group of each head).

        ``count``: per group, dh(dh+1)/2 − s(s+1)/2 with s = dh − min(dh, columns in the group).
        """
        per_block_cols = [0] * blocks
        for slot, _, groups in terms:
            rest = _rest(slot, self.facts.shapes)
            for g in groups:
                per_block_cols[g] += rest
        plain = tuple((s, c) for s, c, _ in terms)
        return self.family(
            name=f"{kind}:{label}", kind=kind, theory=theory, slots=[s for s, _, _ in terms], modules=modules,
            expr=symbolic.deferred(symbolic.gram_expr, plain, self.facts.shapes), shape=(blocks, dh, dh),
            count=sum(_gram_count(dh, cols) for cols in per_block_cols), exact=True, assumptions={"any-loss"},
            formula=f"{math}: {_gram_text(plain).lstrip('+ ')}  for j, k in one head, {blocks} group(s) of {dh}",
            evaluator=BlockGramTerms(tuple(terms), blocks),
        )

    def rotary_pairs(self, terms, groups: int, dh: int, pairs, label: str, modules) -> LawFamily:
        """A5: per kv group g and rotary pair f, ``Σ_{h∈G(g)} ‖Q̄_h^{(f)}‖² − ‖K̄_g^{(f)}‖²``."""
        plain = tuple((s, c) for s, c, _ in terms)
        text = " ".join(f"{'+' if c > 0 else '−'} ‖{s.describe()}‖²" for s, c, _ in terms).lstrip("+ ")
        return self.family(
            name=f"attention-qk:{label}:rope", kind="attention-qk", theory="A5", slots=[s for s, _, _ in terms],
            modules=modules, expr=symbolic.deferred(symbolic.diag_expr, plain, self.facts.shapes),
            shape=(groups, len(pairs)), count=groups * len(pairs), exact=True, assumptions={"any-loss"},
            formula=f"Σ_(h∈G(g)) ‖Q̄_h^(f)‖² − ‖K̄_g^(f)‖² per rotary pair f {list(pairs)[:3]}…: {text} "
                    f"summed over each pair",
            evaluator=PairTerms(terms, groups, dh, pairs),
        )


@dataclass(frozen=True)
class _Squeezed:
    inner: DiagonalTerms

    def __call__(self, params):
        return self.inner(params).reshape(())
