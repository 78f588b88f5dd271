"""Attach-laws pass: turn coupling classes into :class:`~fxlaws.laws.LawFamily` objects.

Reads the partition (``state.partition``) and parameter facts (trainable, tied, shapes); writes
``state.laws``, a :class:`~fxlaws.laws.builder.LawBuilder` holding the families and, per module,
why a class carried no law. THEORY rows: R1–R3, S1, S2, G1 (channel couplings), N1–N3
(normalisations), T1/T2 (softmax translations), A1–A3 inside ``nn.MultiheadAttention``.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

import torch.fx as fx

from fxlaws.errors import PassOrderError
from fxlaws.laws.builder import LawBuilder, ParamFacts
from fxlaws.laws.slots import Piece, Slot
from fxlaws.meta import CanonicalOp, get_op
from fxlaws.vocabulary import OpKind

from .base import FxlawsPass, PassResult
from .partition import Coupling, NormSink, Space
from .pipeline import AnnotateState

__all__ = ["AttachLawsPass", "param_facts"]

_LOSSES = (None, "any", "cross_entropy")


def param_facts(state: AnnotateState) -> ParamFacts:
    """Shapes, trainable names, use counts and aliases of the captured model's parameters."""
    cap = state.capture
    canonical = {alias: name for name, aliases in cap.aliases.items() for alias in aliases}
    shapes = {name: tuple(p.shape) for name, p in state.model.named_parameters()}
    return ParamFacts(shapes=shapes, trainable=cap.trainable, uses=_param_uses(state.graph_module, canonical),
                      canonical=canonical)


def _param_uses(gm: fx.GraphModule, canonical) -> dict[str, int]:
    uses: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            for name, _ in gm.get_submodule(node.target).named_parameters(prefix=str(node.target), remove_duplicate=False):
                uses[canonical.get(name, name)] += 1
        elif node.op == "get_attr":  # reading only its shape (w.shape) is not a use of the values
            name = str(node.target)
            value_users = [u for u in node.users if get_op(u).kind.reads_values]
            uses[canonical.get(name, name)] += max(1, len(value_users))
    return dict(uses)


def _labels(spaces) -> str:
    return "+".join(dict.fromkeys(sp.module or sp.node for sp in spaces))


class AttachLawsPass(FxlawsPass[AnnotateState]):
    """Write ``state.laws`` from ``state.partition`` (and nn.MultiheadAttention nodes of the graph)."""

    def requires(self, state: AnnotateState) -> None:
        if state.partition is None:
            raise PassOrderError("AttachLawsPass reads state.partition: run PartitionPass first")
        if state.loss not in _LOSSES:
            raise ValueError(f"loss={state.loss!r} is not supported; use None, 'any' or 'cross_entropy'.")

    def call(self, state: AnnotateState) -> PassResult[AnnotateState]:
        laws = LawBuilder(param_facts(state))
        bilinear = {s for pair in state.partition.products for s in pair}
        for coupling in state.partition.couplings:
            _Coupled(laws, coupling, bilinear, state.loss).attach()
        for node in state.graph_module.graph.nodes:
            op = get_op(node)
            if op.kind is OpKind.MHA:
                _multihead_attention(laws, op)
        state.laws = laws
        return PassResult(state, bool(laws.families))


class _Coupled:
    """The laws of one coupling class (spaces merged by adds) and everything that uses it."""

    def __init__(self, laws: LawBuilder, c: Coupling, bilinear: set, loss: Optional[str]):
        self.laws, self.c, self.bilinear, self.loss = laws, c, bilinear, loss
        self.modules = ([sp.module for sp in c.spaces] + [s.module for s in c.sinks]
                        + [n.module for n in c.norms])
        # canonical (tied-alias-resolved) slots, read without touching the partition
        self.sources = {sp.id: [laws.canonical(s) for s in sp.sources] for sp in c.spaces}
        self.sinks = [(k, laws.canonical(k.slot)) for k in c.sinks]

    def attach(self) -> None:
        c = self.c
        if c.breaks:
            for b in c.breaks:
                self.laws.note(self.modules, b)
            return
        uses = bool(c.sinks) + bool(c.norms) + bool(c.terminals)
        if uses == 0:
            return  # channels never used: nothing to conserve that training can change
        if uses > 1 or len({t.node for t in c.terminals}) > 1 or len({n.node for n in c.norms}) > 1:
            self.laws.note(self.modules, "channels reach several kinds of use (consumer, normalisation, "
                                         "softmax/output): no common symmetry")
        elif c.sinks:
            self._rescale()
        elif c.norms:
            self._norm(c.norms[0])
        else:
            self._translation()

    def _all_sources(self) -> list[Slot]:
        return [s for sp in self.c.spaces for s in self.sources[sp.id]]

    def _rescale(self) -> None:
        """R1–R3, S1, S2, N3 (one λ per channel), or G1 when every op on the way admits mixing."""
        c, sources = self.c, self._all_sources()
        if not self.laws.usable(sources + [slot for _, slot in self.sinks], self.modules):
            return
        label = f"{_labels(c.spaces)}>{'+'.join(dict.fromkeys(k.module or k.node for k, _ in self.sinks))}"
        is_norm = any(sp.producer == "norm" for sp in c.spaces)
        terms = [(s, 1.0) for s in sources]
        if not is_norm and all(sp.allows_mixing for sp in c.spaces) and all(k.allows_mixing and slot.is_full for k, slot in self.sinks):
            self.laws.gram(terms + [(slot, -1.0) for _, slot in self.sinks], c.channels, label, self.modules)
            return
        terms += [(slot, -k.degree) for k, slot in self.sinks]
        self.laws.diagonal(terms, c.channels, label, self._rescale_row(is_norm), self.modules)

    def _rescale_row(self, is_norm: bool) -> str:
        c, sinks = self.c, [k for k, _ in self.sinks]
        if is_norm:
            return "N3"
        if any(sp.id in self.bilinear for sp in c.spaces):
            return "S2"
        if any(k.gated for k in sinks):
            return "S1"
        if any(k.degree != 1 for k in sinks):
            return "R3"
        if len(c.spaces) > 1 or _shared_channels([slot for _, slot in self.sinks], c.channels):
            return "R2"
        return "R1"

    def _norm(self, norm: NormSink) -> None:
        """N2 (a common scale per norm group, eps-broken) and N1 (translations the norm centres away)."""
        c = self.c
        mode = {"norm-train-mode"} if norm.op.mode_dependent else set()
        label = norm.module or norm.node
        sources = self._all_sources()
        if self.laws.usable(sources, self.modules):
            self.laws.group_scale(sources, c.channels, norm.group, f"{_labels(c.spaces)}>{label}", label,
                                  {"any-loss"} | mode, self.modules)
        if not norm.translations:
            return
        for sp in c.spaces:  # a norm producer's shift β is one too (LN -> LN, BN -> BN)
            candidates = [(sp.bias, "bias")]
            if norm.weight_translations and sp.producer == "linear":
                candidates.append((sp.weight, "weight"))
            self._sums(sp, candidates, norm.group, "N1", f"{sp.module or sp.node}>{label}", {"any-loss"} | mode)

    def _translation(self) -> None:
        """T1 (logits under softmax-cross-entropy) or T2 (a softmax inside the model)."""
        term = self.c.terminals[0]
        if not term.translations:
            self.laws.note(self.modules, f"channels reach {term.kind} through ops that do not preserve translations")
            return
        if term.kind == "output":
            if self.loss != "cross_entropy":
                self.laws.note(self.modules, "output logits: a translation law holds only under "
                                             "softmax-cross-entropy (pass loss='cross_entropy')")
                return
            if not term.single:
                self.laws.note(self.modules, "the model returns several values: which one is the logits is unknown")
                return
            theory, assumptions = "T1", {"softmax-cross-entropy"}
        else:
            theory, assumptions = "T2", {"any-loss"}
        for sp in self.c.spaces:
            if sp.producer == "linear":
                self._sums(sp, [(sp.weight, "weight"), (sp.bias, "bias")], sp.channels, theory,
                           sp.module or sp.node, assumptions)

    def _sums(self, sp: Space, candidates, group: int, theory: str, label: str, assumptions) -> None:
        for slot, role in candidates:
            if slot is not None:
                self.laws.sums(self.laws.canonical(slot), sp.channels, group, theory=theory, label=f"{label}:{role}",
                               assumptions=assumptions, modules=self.modules)


def _multihead_attention(laws: LawBuilder, op: CanonicalOp) -> None:
    """A1 (q/k per head), A2 (v/out per head), A3 (key bias) inside an nn.MultiheadAttention.

    ``in_proj_weight`` stacks the q, k, v projections (rows [0, E), [E, 2E), [2E, 3E)); head h
    owns rows h·dh … (h+1)·dh − 1 of each block and columns of the same range in out_proj.
    """
    shapes = laws.facts.shapes
    w, b, out_w = op.weight, op.bias, f"{op.module}.out_proj.weight"
    E = shapes[w][1] if w in shapes else None
    problems = [p for p in (laws.slot_problem(Slot.full(p, 0, 1)) for p in (w, b, out_w) if p is not None) if p]
    if E is None or problems:
        laws.note([op.module], "; ".join(problems) or f"{op.module}: parameters not found")
        return

    def block(param, k):  # channels [0, E) at rows k·E … of the packed parameter
        return Slot(param, 0, (Piece(0, E, offset=k * E),), E)

    heads = tuple(range(op.groups))
    q, k, v = ([block(w, i)] + ([block(b, i)] if b else []) for i in range(3))
    o = [Slot(out_w, 1, (Piece(0, E),), E)]
    dh = E // op.groups
    laws.block_gram("attention-qk", "A1", tuple([(s, 1.0, heads) for s in q] + [(s, -1.0, heads) for s in k]),
                    op.groups, dh, op.module, [op.module], "Q̄_h Q̄_hᵀ − K̄_h K̄_hᵀ")
    laws.block_gram("attention-vo", "A2", tuple([(s, 1.0, heads) for s in v] + [(s, -1.0, heads) for s in o]),
                    op.groups, dh, op.module, [op.module], "V̄_h V̄_hᵀ − O_hᵀ O_h")
    if b and "add_zero_attn" not in op.flags:  # an appended zero key would score q·0 and break A3
        laws.key_bias(block(b, 1), op.module, [op.module], f"{b}[{E}+j]  (key bias) for j < {E}")


def _shared_channels(slots, channels: int) -> bool:
    """Some channel reaches more than one consumer (R2 rather than R1)."""
    hits = [0] * channels
    for slot in slots:
        for piece in slot.pieces:
            for j in range(piece.start, piece.stop):
                hits[j] += 1
    return max(hits, default=0) > 1
