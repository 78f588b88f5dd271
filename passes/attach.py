"""Attach-laws pass: turn coupling classes into :class:`~fxlaws.laws.LawFamily` objects.

Reads a :class:`~fxlaws.passes.partition.Partition` and parameter facts (trainable, tied, shapes);
writes the law names into ``node.meta["fxlaws"].laws`` of the nodes whose parameters they read, and
returns the families plus, per module, why a class carried no law. THEORY rows: R1–R3, G1 (channel
couplings), N1–N3 (normalisations), T1/T2 (softmax translations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch.fx as fx

from fxlaws import meta as M
from fxlaws.laws import symbolic as S
from fxlaws.laws.family import BlockGramTerms, DiagonalTerms, GramTerms, LawFamily, SumTerms
from fxlaws.laws.slots import Piece
from fxlaws.laws.slots import Slot

from .partition import Coupling, NormSink, Partition, Space

__all__ = ["AttachLawsPass", "ParamFacts"]


@dataclass
class ParamFacts:
    """What attach needs to know about parameters.

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


class AttachLawsPass:
    """``AttachLawsPass(facts, loss=None)(gm, partition) -> (families, reasons)``.

    Args:
        facts: parameter facts (see :class:`ParamFacts`).
        loss: None / "any" (laws for every loss) or "cross_entropy" (adds T1 on the logits layer).
    """

    def __init__(self, facts: ParamFacts, loss: Optional[str] = None):
        if loss not in (None, "any", "cross_entropy"):
            raise ValueError(f"loss={loss!r} is not supported; use None, 'any' or 'cross_entropy'.")
        self.facts = facts
        self.loss = loss

    def __call__(self, gm: fx.GraphModule, partition: Partition):
        self.families: list[LawFamily] = []
        self.reasons: dict[str, list[str]] = {}
        self.names: set[str] = set()
        self.bilinear = {s for pair in partition.products for s in pair}
        for coupling in partition.couplings:
            self._coupling(coupling)
        for node in gm.graph.nodes:
            op = M.get_op(node)
            if op.kind == M.MHA:
                self._multihead_attention(op)
        self._mark_nodes(gm, partition)
        return self.families, self.reasons

    # --- helpers ---------------------------------------------------------------------------------
    def _canon(self, slot: Slot) -> Slot:
        name = self.facts.canonical.get(slot.param, slot.param)
        return slot if name == slot.param else dataclasses.replace(slot, param=name)

    def _slot_problem(self, slot: Slot) -> Optional[str]:
        name = slot.param
        if name not in self.facts.shapes:
            return f"{name} is not a parameter (a buffer or a computed tensor, e.g. a parametrization)"
        if name not in self.facts.trainable:
            return f"{name} is frozen (requires_grad=False): it is not a coordinate of training"
        if self.facts.uses.get(name, 0) > 1:
            return f"{name} is used at {self.facts.uses[name]} places (tied/shared weights)"
        return None

    def _note(self, modules, reason: str) -> None:
        for m in modules:
            if m is None:
                continue
            bucket = self.reasons.setdefault(m, [])
            if reason not in bucket:
                bucket.append(reason)

    def _unique(self, name: str) -> str:
        base, i = name, 2
        while name in self.names:
            name, i = f"{base}#{i}", i + 1
        self.names.add(name)
        return name

    def _family(self, *, name, kind, theory, slots, modules, expr, shape, count, exact, assumptions,
                formula, evaluator) -> LawFamily:
        params = tuple(dict.fromkeys(s.param for s in slots))
        fam = LawFamily(
            name=self._unique(name), kind=kind, theory=theory, params=params,
            modules=tuple(dict.fromkeys(m for m in modules if m)), expr=expr,
            symbols={S.symbol_name(p): p for p in params}, shape=tuple(shape), count=int(count),
            exact=exact, assumptions=frozenset(assumptions), formula=formula, _evaluator=evaluator,
            slots=tuple(slots),
        )
        self.families.append(fam)
        return fam

    # --- one coupling class ----------------------------------------------------------------------
    def _coupling(self, c: Coupling) -> None:
        src_modules = [sp.module for sp in c.spaces]
        sink_modules = [s.module for s in c.sinks] + [n.module for n in c.norms]
        modules = src_modules + sink_modules
        for sp in c.spaces:
            if sp.weight is not None:
                sp.weight = self._canon(sp.weight)
            if sp.bias is not None:
                sp.bias = self._canon(sp.bias)
        for s in c.sinks:
            s.slot = self._canon(s.slot)

        if c.breaks:
            for b in c.breaks:
                self._note(modules, b)
            return
        uses = bool(c.sinks) + bool(c.norms) + bool(c.terminals)
        if uses == 0:
            return  # channels never used: nothing to conserve that training can change
        if uses > 1 or len({t.node for t in c.terminals}) > 1 or len({n.node for n in c.norms}) > 1:
            self._note(modules, "channels reach several kinds of use (consumer, normalisation, softmax/output): "
                                "no common symmetry")
            return
        if c.sinks:
            self._rescale(c, modules)
        elif c.norms:
            self._norm(c, c.norms[0], modules)
        else:
            self._translation(c, modules)

    def _rescale(self, c: Coupling, modules) -> None:
        sources = [s for sp in c.spaces for s in sp.sources]
        sinks = c.sinks
        problems = [p for p in (self._slot_problem(s) for s in sources + [k.slot for k in sinks]) if p]
        if problems:
            for p in problems:
                self._note(modules, p)
            return
        shapes = self.facts.shapes
        C = c.channels
        src_names = "+".join(dict.fromkeys(sp.module or sp.node for sp in c.spaces))
        sink_names = "+".join(dict.fromkeys(k.module or k.node for k in sinks))
        is_norm = any(sp.producer == "norm" for sp in c.spaces)
        gl = (not is_norm and all(sp.gl for sp in c.spaces) and all(k.gl and k.slot.is_full for k in sinks))
        terms = [(s, 1.0) for s in sources]
        if gl:
            terms += [(k.slot, -1.0) for k in sinks]
            cols = sum(_cols(s, shapes) for s, _ in terms)
            free = C - min(C, cols)
            count = C * (C + 1) // 2 - free * (free + 1) // 2
            text = " ".join(
                f"{'+' if coef > 0 else '−'} ⟨{s.describe('j')}, {s.describe('k')}⟩" for s, coef in terms
            ).lstrip("+ ")
            self._family(
                name=f"gl:{src_names}>{sink_names}", kind="gl", theory="G1", slots=[s for s, _ in terms],
                modules=modules, expr=S.deferred(S.gram_expr, terms, shapes), shape=(C, C), count=count, exact=True,
                assumptions={"any-loss"}, formula=f"{text}  for j, k < {C}", evaluator=GramTerms(tuple(terms)),
            )
            return
        terms += [(k.slot, -k.degree) for k in sinks]
        if is_norm:
            theory = "N3"
        elif any(sp.id in self.bilinear for sp in c.spaces):
            theory = "S2"
        elif any(k.gated for k in sinks):
            theory = "S1"
        elif any(k.degree != 1 for k in sinks):
            theory = "R3"
        elif len(c.spaces) > 1 or _shared_channels(sinks, C):
            theory = "R2"
        else:
            theory = "R1"
        text = " ".join(
            f"{'+' if coef > 0 else '−'} {_fmt_coef(coef)}{_sq_text(s, len(shapes[s.param]))}" for s, coef in terms
        ).lstrip("+ ")
        self._family(
            name=f"rescale:{src_names}>{sink_names}", kind="rescale", theory=theory, slots=[s for s, _ in terms],
            modules=modules, expr=S.deferred(S.diag_expr, terms, shapes), shape=(C,), count=C, exact=True,
            assumptions={"any-loss"}, formula=f"{text}  for j < {C}", evaluator=DiagonalTerms(tuple(terms)),
        )

    def _norm(self, c: Coupling, norm: NormSink, modules) -> None:
        shapes = self.facts.shapes
        C, group = c.channels, norm.group
        mode = {"norm-train-mode"} if norm.op.mode_dependent else set()
        label = norm.module or norm.node
        src_names = "+".join(dict.fromkeys(sp.module or sp.node for sp in c.spaces))
        sources = [s for sp in c.spaces for s in sp.sources]
        problems = [p for p in (self._slot_problem(s) for s in sources) if p]
        if problems:
            for p in problems:
                self._note(modules, p)
        else:  # N2: a common scale per norm group is absorbed (exact only as eps -> 0)
            terms = tuple((s, 1.0) for s in sources)
            inner = " + ".join(_sq_text(s, len(shapes[s.param])) for s, _ in terms)
            where = f"for j < {C}" if group == 1 else f"summed over each group of {group} channels ({C // group} groups)"
            self._family(
                name=f"scale:{src_names}>{label}", kind="scale", theory="N2", slots=list(sources),
                modules=modules, expr=S.deferred(S.diag_expr, terms, shapes, group), shape=(C // group,) if C // group > 1 else (),
                count=C // group, exact=False, assumptions={"any-loss"} | mode,
                formula=f"{inner}  {where}  (eps-broken: exact only as {label}.eps → 0)",
                evaluator=_Squeezed(DiagonalTerms(terms, group)) if C // group == 1 else DiagonalTerms(terms, group),
            )
        if not norm.shift:
            return
        for sp in c.spaces:  # N1: translations constant over the averaged axes (a norm producer's
            candidates = [(sp.bias, "bias")]  # shift β is one: LN -> LN, BN -> BN)
            if norm.weight_shift and sp.producer == "linear":
                candidates.append((sp.weight, "weight"))
            self._sums(sp, candidates, group, theory="N1", kind_label=f"{sp.module or sp.node}>{label}",
                       assumptions={"any-loss"} | mode, modules=modules)

    def _translation(self, c: Coupling, modules) -> None:
        term = c.terminals[0]
        if not term.shift:
            self._note(modules, f"channels reach {term.kind} through ops that do not preserve translations")
            return
        if term.kind == "output":
            if self.loss != "cross_entropy":
                self._note(modules, "output logits: a translation law holds only under softmax-cross-entropy "
                                    "(pass loss='cross_entropy')")
                return
            if not term.single:
                self._note(modules, "the model returns several values: which one is the logits is unknown")
                return
            theory, assumptions = "T1", {"softmax-cross-entropy"}
        else:
            theory, assumptions = "T2", {"any-loss"}
        for sp in c.spaces:
            if sp.producer != "linear":
                continue
            self._sums(sp, [(sp.weight, "weight"), (sp.bias, "bias")], sp.channels, theory=theory,
                       kind_label=sp.module or sp.node, assumptions=assumptions, modules=modules)

    def _sums(self, sp: Space, candidates, group: int, *, theory, kind_label, assumptions, modules) -> None:
        shapes = self.facts.shapes
        for slot, role in candidates:
            if slot is None:
                continue
            problem = self._slot_problem(slot)
            if problem:
                self._note(modules, problem)
                continue
            p_shape = shapes[slot.param]
            rest = [n for d, n in enumerate(p_shape) if d != slot.axis]
            rest_n = 1
            for n in rest:
                rest_n *= n
            groups = sp.channels // group
            shape = ((groups,) if groups > 1 else ()) + (tuple(rest) if rest else ())
            if group == 1:
                text = f"{slot.describe()}  for j < {sp.channels}"
            else:
                sel = ":" if groups == 1 else "j ∈ g"
                text = f"Σ_{{{sel if groups > 1 else 'j'}}} {slot.describe()}" + (
                    f"  for each group g of {group} channels" if groups > 1 else "")
            self._family(
                name=f"translation:{kind_label}:{role}", kind="translation", theory=theory, slots=[slot],
                modules=modules, expr=S.deferred(S.sum_expr, slot, shapes, group), shape=shape, count=groups * rest_n,
                exact=True, assumptions=assumptions, formula=text, evaluator=SumTerms(slot, group),
            )

    def _multihead_attention(self, op) -> None:
        """A1 (q/k per head), A2 (v/out per head), A3 (key bias) inside an nn.MultiheadAttention.

        ``in_proj_weight`` stacks the q, k, v projections (rows [0, E), [E, 2E), [2E, 3E)); head h
        owns rows h·dh … (h+1)·dh − 1 of each block and columns of the same range in out_proj.
        """
        shapes = self.facts.shapes
        w, b = op.weight, op.bias
        out_w = f"{op.module}.out_proj.weight"
        E = shapes[w][1] if w in shapes else None
        params = [p for p in (w, b, out_w) if p is not None]
        problems = [p for p in (self._slot_problem(Slot.full(p, 0, 1)) for p in params) if p]
        if E is None or problems:
            self._note([op.module], "; ".join(problems) or f"{op.module}: parameters not found")
            return
        H = op.groups
        dh = E // H

        def block(param, k):  # channels [0, E) at rows k·E … of the packed parameter
            return Slot(param, 0, (Piece(0, E, offset=k * E),), E)

        q = [block(w, 0)] + ([block(b, 0)] if b else [])
        k = [block(w, 1)] + ([block(b, 1)] if b else [])
        v = [block(w, 2)] + ([block(b, 2)] if b else [])
        heads = tuple(range(H))
        o = [Slot(out_w, 1, (Piece(0, E),), E)]
        self._block_gram_family("attention-qk", "A1", tuple((s, c, heads) for s, c in [(s, 1.0) for s in q] + [
            (s, -1.0) for s in k]), H, dh, op.module, [op.module], "Q̄_h Q̄_hᵀ − K̄_h K̄_hᵀ")
        self._block_gram_family("attention-vo", "A2", tuple((s, c, heads) for s, c in [(s, 1.0) for s in v] + [
            (s, -1.0) for s in o]), H, dh, op.module, [op.module], "V̄_h V̄_hᵀ − O_hᵀ O_h")
        if b and "add_zero_attn" not in op.flags:  # A3: softmax over keys ignores a common key shift
            # (an appended zero key would score q·0 and break it)
            slot = block(b, 1)
            self._family(
                name=f"translation:{op.module}:key-bias", kind="translation", theory="A3", slots=[slot],
                modules=[op.module], expr=S.deferred(S.sum_expr, slot, shapes, 1), shape=(E,), count=E, exact=True,
                assumptions={"any-loss"}, formula=f"{b}[{E}+j]  (key bias) for j < {E}",
                evaluator=SumTerms(slot, 1),
            )

    def _block_gram_family(self, kind, theory, terms, blocks, dh, label, modules, math) -> None:
        """Per-group Gram family (rows A1, A2, A4): terms are (slot, coef, group of each head).

        ``count``: per group, dh(dh+1)/2 − s(s+1)/2 with s = dh − min(dh, columns in the group).
        """
        shapes = self.facts.shapes
        per_block_cols = [0] * blocks
        for slot, _, groups in terms:
            rest = 1
            for d, n in enumerate(shapes[slot.param]):
                if d != slot.axis:
                    rest *= n
            for g in groups:
                per_block_cols[g] += rest
        count = 0
        for cols in per_block_cols:
            free = dh - min(dh, cols)
            count += dh * (dh + 1) // 2 - free * (free + 1) // 2
        plain = tuple((s, c) for s, c, _ in terms)
        text = " ".join(f"{'+' if c > 0 else '−'} ⟨{s.describe('j')}, {s.describe('k')}⟩" for s, c, _ in terms)
        self._family(
            name=f"{kind}:{label}", kind=kind, theory=theory, slots=[s for s, _, _ in terms], modules=modules,
            expr=S.deferred(S.gram_expr, plain, shapes), shape=(blocks, dh, dh), count=count, exact=True,
            assumptions={"any-loss"},
            formula=f"{math}: {text.lstrip('+ ')}  for j, k in one head, {blocks} group(s) of {dh}",
            evaluator=BlockGramTerms(tuple(terms), blocks),
        )

    def _mark_nodes(self, gm: fx.GraphModule, partition: Partition) -> None:
        by_param: dict[str, list[str]] = {}
        for fam in self.families:
            for p in fam.params:
                by_param.setdefault(p, []).append(fam.name)
        for node in gm.graph.nodes:
            meta = node.meta.get(M.META_KEY)
            if meta is None:
                continue
            names = []
            for p in (meta.op.weight, meta.op.bias):
                if p is not None:
                    names.extend(by_param.get(self.facts.canonical.get(p, p), ()))
            if names:
                node.meta[M.META_KEY] = dataclasses.replace(meta, laws=tuple(dict.fromkeys(names)))


@dataclass(frozen=True)
class _Squeezed:
    inner: DiagonalTerms

    def __call__(self, params):
        return self.inner(params).reshape(())


def _cols(slot: Slot, shapes) -> int:
    shape = shapes[slot.param]
    rest = 1
    for d, n in enumerate(shape):
        if d != slot.axis:
            rest *= n
    return sum(p.inner for p in slot.pieces) * rest


def _shared_channels(sinks, channels: int) -> bool:
    """Some channel reaches more than one consumer (R2 rather than R1)."""
    hits = [0] * channels
    for sink in sinks:
        for piece in sink.slot.pieces:
            for j in range(piece.start, piece.stop):
                hits[j] += 1
    return max(hits, default=0) > 1
