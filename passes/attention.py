"""Attention pass: per-head laws of scaled-dot-product attention written with explicit projections.

Reads the graph (after normalise), the example inputs and ``state.laws``; adds law families A1
(query/key Gram per head, GQA groups: A4, rotary pairs: A5), A2 (value/output Gram per head) and A3
(key bias), THEORY §2, to ``state.laws``, with a reason where a core carries none.

An *attention core* is ``F.scaled_dot_product_attention(q, k, v)`` or
``matmul(softmax(matmul(q, kᵀ) [·scale] [+mask], dim=-1) [dropout], v)``. From each core argument
the pass walks back through pure data movement (the op vocabulary's layout kinds — reshape, permute,
split, getitem, repeat, unbind — value-preserving copies and casts, and multiplication by a Python
number) to a Linear
producer, and from the core output forward to the output projection. Which producer row sits at
which (head, head-dim) slot is read off by running the graph once with *index tensors* in place of
the producers' outputs (pure data movement carries indices unchanged). A law is attached only if
every use of the producer's output ends in this core (exclusivity), and — for A1 — if nothing but
data movement sits between the projection and the scores (RoPE or q/k-norm ⇒ no A1, with a reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import TensorMetadata

from fxlaws.capture import one_thread, run_graph
from fxlaws.errors import PassOrderError
from fxlaws.laws.builder import LawBuilder
from fxlaws.laws.slots import Piece, Slot
from fxlaws.meta import CanonicalOp, get_op, is_number
from fxlaws.rules import mask_fill_value
from fxlaws.vocabulary import Arith, OpKind

from .base import FxlawsPass, PassResult
from .pipeline import AnnotateState
from .spaces import map_reshape, shape_of

__all__ = ["AttentionPass"]

#: kinds that only rearrange values (checked faithfully by the run on index tensors)
_LAYOUT = frozenset({OpKind.RESHAPE, OpKind.PERMUTE, OpKind.SPLIT, OpKind.GETITEM, OpKind.REPEAT, OpKind.UNBIND})


def _is_scalar_scale(node: fx.Node) -> bool:
    """Multiplication or division by a Python number (the 1/√dh scale)."""
    op = get_op(node)
    return op.variant in (Arith.MUL, Arith.DIV) and len(node.args) == 2 and is_number(node.args[1])


def _linear_input(node: fx.Node):
    """The activation a LINEAR node reads: F.linear(x, W), x @ W, addmm(b, x, W) (HF Conv1D)."""
    return next((a for a in node.args if isinstance(a, fx.Node) and a.op != "get_attr"), None)


def _is_score_op(op: CanonicalOp) -> bool:
    """What may sit between q·kᵀ and the softmax: adds of masks/biases, scales, masked fills, and
    element-wise functions of the scores (Gemma 2's soft-capping ``c·tanh(s/c)``): any function of
    q·kᵀ alone keeps the q/k symmetries (A1/A4/A5); only shifts keep A3 (``_keeps_key_shift``)."""
    return (op.kind in (OpKind.ADD, OpKind.MASK, OpKind.ACT)
            or (op.kind is OpKind.MUL and op.variant is not Arith.NEG))


def _keeps_key_shift(node: fx.Node, op: CanonicalOp) -> bool:
    """Scores s ↦ op(s) keeps "s + c·1 along keys" harmless for the softmax (A3): adding any fixed
    tensor, scaling by a number, or filling with -inf; not element-wise weights or finite fills."""
    if op.kind is OpKind.ADD:
        return True
    if op.kind is OpKind.MUL:
        return len(node.args) == 2 and is_number(node.args[1])
    if op.kind is OpKind.MASK:
        value = mask_fill_value(node, op)
        return isinstance(value, float) and value == float("-inf")
    return False


def _keeps_rows(node: fx.Node) -> bool:
    """A reshape of the scores that keeps every query's row of keys whole (the last axis unchanged)."""
    in_shape, out_shape = shape_of(node.args[0]) if isinstance(node.args[0], fx.Node) else None, shape_of(node)
    return (bool(in_shape) and bool(out_shape) and in_shape[-1] == out_shape[-1]
            and map_reshape(in_shape, out_shape, len(in_shape) - 1) == (len(out_shape) - 1, 1))


def _value_users(node: fx.Node) -> set:
    """Users that read the node's values (not just its shape)."""
    return {u for u in node.users if get_op(u).kind.reads_values}


def _is_move(node: fx.Node) -> bool:
    """Pure data movement: layout ops, and value-preserving copies and casts (not dropout)."""
    op = get_op(node)
    if op.kind is OpKind.GETITEM and any(isinstance(a, fx.Node) and shape_of(a) is not None
                                         for a in node.all_input_nodes[1:]):
        return False  # rows gathered by a tensor of indices (data, not layout)
    return op.kind in _LAYOUT or (op.kind is OpKind.IDENTITY and op.allows_mixing)


@dataclass(frozen=True)
class _Rope:
    out: fx.Node  # x·cos + rot(x)·sin
    x: fx.Node
    rot: fx.Node  # rot(x)
    nodes: frozenset


@dataclass
class _Core:
    node: fx.Node  # the core output (sdpa node or the second matmul)
    q: fx.Node
    k: fx.Node
    v: fx.Node
    k_transposed: bool  # explicit form reads kᵀ
    softmax_over_keys: bool  # the scores reach softmax(dim=-1) through shifts/scales only (A3)
    scores: Optional[fx.Node] = None  # the q·kᵀ matmul (the core itself for SDPA)
    gqa: bool = False
    chains: dict = field(default_factory=dict)  # "q"/"k"/"v" -> (producer node, set of chain nodes)


def _core(node: fx.Node) -> Optional[_Core]:
    """The attention core ending at ``node``: SDPA, or ``softmax(q·kᵀ …) [dropout] @ v``; else None."""
    op = get_op(node)
    if op.kind is OpKind.ATTENTION:
        q, k, v = (list(node.args) + [node.kwargs.get(n) for n in ("query", "key", "value")])[:3]
        return _Core(node, q, k, v, False, True, node, gqa="enable_gqa" in op.flags)
    if op.kind is not OpKind.MATMUL or len(node.args) != 2:
        return None
    attn, v = node.args
    while isinstance(attn, fx.Node) and get_op(attn).kind is OpKind.IDENTITY:  # dropout on the weights
        attn = attn.args[0]
    if not isinstance(attn, fx.Node) or get_op(attn).kind is not OpKind.SOFTMAX:
        return None
    scores = attn.args[0]
    shift_only = True
    while isinstance(scores, fx.Node) and get_op(scores).kind is not OpKind.MATMUL:
        op = get_op(scores)
        if op.kind is OpKind.RESHAPE and _keeps_rows(scores):  # e.g. Swin's (windows, heads) split to add its mask
            shift_only &= len(scores.users) == 1
            scores = scores.args[0]
            continue
        if not _is_score_op(op) or not isinstance(scores.args[op.data_arg], fx.Node):
            return None
        shift_only &= len(scores.users) == 1 and _keeps_key_shift(scores, op)
        scores = scores.args[op.data_arg]
    if not isinstance(scores, fx.Node) or len(scores.args) != 2:
        return None
    dim = get_op(attn).axis
    ndim = len(attn.meta["tensor_meta"].shape)
    over_keys = dim is not None and dim % ndim == ndim - 1
    return _Core(node, scores.args[0], scores.args[1], v, True, over_keys and shift_only and len(scores.users) == 1,
                 scores)


def _back(node, ropes: dict) -> Optional[tuple[fx.Node, set]]:
    """Walk back through data movement (and at most one rotary embedding) to a Linear producer:
    (producer, chain nodes) or None. A rotary block found on the way is stored in ``ropes``."""
    chain = set()
    while isinstance(node, fx.Node):
        op = get_op(node)
        if op.kind is OpKind.LINEAR and op.weight is not None:
            return node, chain
        rope = _rope(node)
        if rope is not None:
            ropes[node] = rope
            chain |= rope.nodes
            node = rope.x
            continue
        if not (_is_move(node) or _is_scalar_scale(node)):
            return None
        chain.add(node)
        node = node.args[0]
    return None


def _is_product(node) -> bool:
    return isinstance(node, fx.Node) and get_op(node).variant is Arith.MUL


def _rope(node: fx.Node) -> Optional[_Rope]:
    """``x·cos + rot(x)·sin`` with ``rot`` pure data movement and negation of x (rotate_half or
    rotate-every-two), every intermediate used only inside the block (THEORY A5)."""
    if get_op(node).variant is not Arith.ADD or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
        return None
    for a, b in (node.args, node.args[::-1]):
        if not (_is_product(a) and _is_product(b)):
            continue
        for x in (x for x in a.args if isinstance(x, fx.Node)):
            for y in b.args:
                rot = _rotation(y, x) if isinstance(y, fx.Node) else None
                if rot is None:
                    continue
                inside = rot | {a, b, node}
                if all(_value_users(n) <= inside for n in rot | {a, b, x}):
                    return _Rope(node, x, y, frozenset(inside))
    return None


def _rotation(y: fx.Node, x: fx.Node) -> Optional[set]:
    """Nodes of a pure rearrangement-with-negation of ``x`` ending in ``y`` (or None)."""
    nodes, stack = set(), [y]
    while stack:
        n = stack.pop()
        if n is x:
            continue
        op = get_op(n)
        if not (op.variant is Arith.NEG or _is_move(n) or op.kind in (OpKind.CAT, OpKind.STACK)):
            return None
        nodes.add(n)
        args = n.args[0]
        inputs = list(args) if isinstance(args, (list, tuple)) else [args]
        if not all(isinstance(i, fx.Node) for i in inputs):
            return None
        stack.extend(inputs)
    return nodes if nodes else None


def _forward_to_projection(out: fx.Node) -> Optional[fx.Node]:
    """The output projection's input value, reached from the core output through data movement only."""
    node = out
    while True:
        users = list(_value_users(node))
        if len(users) != 1:
            return None
        (user,) = users
        if get_op(user).kind is OpKind.LINEAR and _linear_input(user) is node:
            return node
        if not _is_move(user) or user.args[0] is not node:
            return None
        node = user


def _exclusive(producer: fx.Node, allowed: set, ends: set) -> bool:
    """Every use of the producer's output is data movement inside ``allowed`` that ends in ``ends``
    (the scores / the core, whose outputs no longer carry the projections' channels)."""
    stack = [producer]
    while stack:
        node = stack.pop()
        for user in node.users:
            if not get_op(user).kind.reads_values or user in ends:
                continue
            if user not in allowed:
                return False
            stack.append(user)
    return True


def _head_table(value, transposed: bool):
    """(heads, dh) table of producer rows from an index value (*batch, T, dh); None if inconsistent."""
    if value is None or value.is_meta or value.dim() < 2:  # meta: computed off the chains (e.g. a q/k norm)
        return None
    if transposed:
        value = value.transpose(-1, -2)
    per_b = value.reshape(value.shape[0] if value.dim() > 2 else 1, -1, value.shape[-2], value.shape[-1])
    if not torch.equal(per_b, per_b[:1, :, :1].expand_as(per_b)):
        return None  # differs across the batch or across tokens: not a head layout
    table = per_b[0, :, 0, :]
    if not bool((table == table.round()).all()):
        return None
    return table.long()


def _rows_slot(param: str, table: torch.Tensor, channels: int, axis: int = 0) -> Optional[Slot]:
    """Slot whose virtual channel h·dh + d is index table[h, d] along ``axis`` of ``param``
    (contiguous per head): projection rows (or an [in, out] weight's columns, HF Conv1D)."""
    dh = table.shape[1]
    if not torch.equal(table - table[:, :1], torch.arange(dh).expand_as(table)):
        return None
    pieces = tuple(Piece(h * dh, (h + 1) * dh, first) for h, first in enumerate(table[:, 0].tolist()))
    return Slot(param, axis, pieces, channels)


def _blocks(table: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The distinct rows of a head table (kv blocks, in order of appearance) and each head's block."""
    blocks: dict = {}
    first: list[int] = []
    for h, row in enumerate(map(tuple, table.tolist())):
        if row not in blocks:
            blocks[row] = len(blocks)
            first.append(h)
    return table[first], [blocks[row] for row in map(tuple, table.tolist())]


def _pairs(rope: _Rope, reads: dict) -> Optional[tuple[tuple[int, int], ...]]:
    """Head-dim positions the rotary block rotates together, e.g. ((0, 4), (1, 5), …) for
    rotate_half with dh = 8, ((0, 1), (2, 3), …) for rotate-every-two; None if unreadable."""
    x_tab = _head_table(reads.get(rope.x), False)
    r_val = reads.get(rope.rot)
    r_tab = _head_table(r_val.abs(), False) if r_val is not None else None
    if x_tab is None or r_tab is None or x_tab.shape != r_tab.shape:
        return None
    partners = None
    for xs, rs in zip(x_tab.tolist(), r_tab.tolist()):
        where = {row: d for d, row in enumerate(xs)}
        if any(row not in where for row in rs):
            return None
        p = [where[row] for row in rs]
        if any(p[p[d]] != d or p[d] == d for d in range(len(p))) or (partners is not None and p != partners):
            return None
        partners = p
    return tuple((d, partners[d]) for d in range(len(partners)) if d < partners[d])


@dataclass
class _Search:
    """What one run of the pass finds: the cores, the rotary blocks on their chains, the output
    projections' inputs, and the index values read by running the graph on index tensors."""

    cores: list
    ropes: dict = field(default_factory=dict)
    outs: dict = field(default_factory=dict)
    reads: dict = field(default_factory=dict)

    @classmethod
    def of(cls, gm: fx.GraphModule) -> "_Search":
        search = cls([c for c in (_core(n) for n in gm.graph.nodes) if c is not None])
        for core in search.cores:
            for role, arg in (("q", core.q), ("k", core.k), ("v", core.v)):
                chain = _back(arg, search.ropes)
                if chain is not None:
                    core.chains[role] = chain
            search.outs[core.node] = _forward_to_projection(core.node)
        return search

    def interpreter(self, gm: fx.GraphModule) -> "_IndexInterpreter":
        """An interpreter that reads the head layout: producers emit channel indices, cores emit
        head·dh + d; scalar scales, copies and rotary blocks hand their input through unchanged."""
        chains = [ch for c in self.cores for _, ch in c.chains.values()]
        producers = {p for c in self.cores for p, _ in c.chains.values()}
        passthrough = {n: n.args[0] for ch in chains for n in ch
                       if _is_scalar_scale(n) or get_op(n).kind is OpKind.IDENTITY}
        passthrough.update({r.out: r.x for r in self.ropes.values()})  # indices cross a rotary block unchanged
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        reads, needed = set(), set(passthrough.values())
        for core in self.cores:  # per core: a core's index values come from its own chains only
            chain_nodes = set().union(*(ch for _, ch in core.chains.values()))
            ropes = [r for r in self.ropes.values() if r.out in chain_nodes]
            # x·cos and rot(x)·sin only feed the rotary output, which passes x through: their values are
            # never read (and cannot be computed from index tensors on a meta-device model's tables).
            chain_nodes -= {a for r in ropes for a in r.out.args}
            own = {core.q, core.k, core.v} | {r.rot for r in ropes} | {r.x for r in ropes} | chain_nodes
            if self.outs.get(core.node) is not None:
                own.add(self.outs[core.node])
            reads |= own
            needed |= _between(order, {p for p, _ in core.chains.values()} | {core.node}, own)
        return _IndexInterpreter(gm, producers, set(self.outs), passthrough, reads, needed)


class AttentionPass(FxlawsPass[AnnotateState]):
    """Add attention laws (A1–A5) to ``state.laws``: finds the cores, reads their head layout by one
    run of the graph on index tensors, and derives the laws per core."""

    def requires(self, state: AnnotateState) -> None:
        if state.laws is None:
            raise PassOrderError("AttentionPass adds to state.laws: run AttachLawsPass first")

    def call(self, state: AnnotateState) -> PassResult[AnnotateState]:
        gm, laws = state.graph_module, state.laws
        search = _Search.of(gm)
        if not search.cores:
            return PassResult(state, False)
        before = len(laws.families)
        interp = search.interpreter(gm)
        try:  # parameters and inputs on meta: the run computes the chains' index tensors only
            with one_thread():
                run_graph(state.model, interp, state.capture.inputs, meta=True)
        except Exception as exc:  # fall back to no attention law rather than guess
            for c in search.cores:
                laws.note([get_op(c.node).module], f"attention layout could not be read ({exc})")
            return PassResult(state, False)
        search.reads = interp.values
        with one_thread():
            for core in search.cores:
                _HeadLaws(laws, core, search).attach()
        return PassResult(state, len(laws.families) > before)


class _HeadLaws:
    """The laws of one attention core: A1/A4/A5 on q, k and A2/A4 on v, o (THEORY §2)."""

    def __init__(self, laws: LawBuilder, core: _Core, search: _Search):
        self.laws, self.core, self.reads, self.ropes = laws, core, search.reads, search.ropes
        self.proj_in = search.outs[core.node]
        self.module = get_op(core.node).module
        self._tables: dict = {}
        self._rows: dict = {}  # role -> the producer rows its table reads (_disjoint, per law)
        # Every use of a producer must stay inside this core's chains (exclusivity); where q, k, v
        # come from one packed projection, the rows each reads are checked disjoint (_disjoint).
        self.allowed = set().union(*(ch for _, ch in core.chains.values()))
        self.ends = {core.scores, core.node}

    def note(self, reason: str, modules=None) -> None:
        self.laws.note(modules or [self.module], reason)

    def attach(self) -> None:
        if "q" in self.core.chains and "k" in self.core.chains:
            self._qk()
        else:
            self.note("attention: something other than data movement sits between the q/k projections and the "
                      "scores (e.g. RoPE, q/k normalisation): no A1 law")
        if "v" in self.core.chains and self.proj_in is not None:
            self._vo()

    def _table(self, role: str):
        if role not in self._tables:  # read by _disjoint and by each law: compared once
            core = self.core
            arg, transposed = {"q": (core.q, False), "k": (core.k, core.k_transposed), "v": (core.v, False)}[role]
            self._tables[role] = _head_table(self.reads.get(arg), transposed)
        return self._tables[role]

    def _disjoint(self, roles: tuple[str, ...]) -> bool:
        """Rows the law's ``roles`` read share no row with any other role of one shared producer
        (q = k from a single projection cannot be transformed separately; v may still be)."""
        rows: dict = {}
        for role in ("q", "k", "v"):
            if role not in self.core.chains:
                continue
            table = self._table(role)
            if table is None:
                return False
            if role not in self._rows:
                self._rows[role] = set(table.flatten().tolist())
            rows[role] = (self.core.chains[role][0], self._rows[role])
        for role in roles:
            producer, mine = rows[role]
            if any(p is producer and mine & other for r, (p, other) in rows.items() if r != role):
                return False
        return True

    def _producer_slots(self, node: fx.Node, table: torch.Tensor) -> Optional[list[Slot]]:
        op = get_op(node)
        canon = self.laws.facts.canonical
        slots = [_rows_slot(canon.get(p, p), table, table.numel(), axis) for p, axis in
                 ((op.weight, op.w_out_axis), (op.bias, 0)) if p is not None]
        return None if any(s is None for s in slots) else slots

    def _qk_tables(self):
        """(q head table, k blocks, each query head's kv block), or None after noting why."""
        q_tab, k_tab = self._table("q"), self._table("k")
        if q_tab is None or k_tab is None or q_tab.shape[1] != k_tab.shape[1]:
            self.note("attention: q/k head layout could not be read: no A1 law")
            return None
        if self.core.gqa and k_tab.shape[0] != q_tab.shape[0]:  # SDPA(enable_gqa=True) repeats kv heads
            k_tab = k_tab.repeat_interleave(q_tab.shape[0] // k_tab.shape[0], dim=0)
        k_blocks, q_groups = _blocks(k_tab)
        if len({tuple(r) for r in q_tab.tolist()}) != q_tab.shape[0] or len(set(q_tab.flatten().tolist())) != (
                q_tab.numel()) or len(set(k_blocks.flatten().tolist())) != k_blocks.numel():
            self.note("attention: query heads share rows: no A1 law")
            return None
        return q_tab, k_blocks, q_groups

    def _qk(self) -> None:
        tables = self._qk_tables()
        if tables is None:
            return
        q_tab, k_blocks, q_groups = tables
        (pq, chain_q), (pk, chain_k) = self.core.chains["q"], self.core.chains["k"]
        if not (_exclusive(pq, self.allowed, self.ends) and _exclusive(pk, self.allowed, self.ends)
                and self._disjoint(("q", "k"))):
            self.note("attention: the q/k projections are also used outside the scores: no A1 law")
            return
        q_slots, k_slots = self._producer_slots(pq, q_tab), self._producer_slots(pk, k_blocks)
        if q_slots is None or k_slots is None:
            self.note("attention: q/k rows of a head are not contiguous: no A1 law")
            return
        if not self.laws.usable(q_slots + k_slots, [self.module]):
            return
        G, dh = k_blocks.shape
        terms = tuple((s, 1.0, tuple(q_groups)) for s in q_slots) + tuple((s, -1.0, tuple(range(G))) for s in k_slots)
        qm, km = get_op(pq).module, get_op(pk).module
        label, modules = (f"{qm}>{km}" if qm != km else f"{qm}:qk"), [qm, km, self.module]
        rope_q = [r for r in self.ropes.values() if r.nodes <= chain_q]
        rope_k = [r for r in self.ropes.values() if r.nodes <= chain_k]
        if rope_q or rope_k:
            self._rotary(rope_q, rope_k, terms, G, dh, label, modules)
            return
        gqa = q_tab.shape[0] != G
        self.laws.block_gram("attention-qk", "A4" if gqa else "A1", terms, G, dh, label, modules,
                             "Σ_(h∈G(g)) Q̄_h Q̄_hᵀ − K̄_g K̄_gᵀ" if gqa else "Q̄_h Q̄_hᵀ − K̄_h K̄_hᵀ")
        if self.core.softmax_over_keys and get_op(pk).bias is not None:
            slot = k_slots[1]
            self.laws.key_bias(slot, km, [km, self.module], f"{slot.describe()}  (key bias under softmax over keys)")

    def _rotary(self, rope_q, rope_k, terms, groups: int, dh: int, label: str, modules) -> None:
        """A5 when q and k carry one rotary block each with the same pairing (replaces A1/A4)."""
        pairs = [_pairs(r, self.reads) for r in rope_q + rope_k]
        if len(rope_q) != 1 or len(rope_k) != 1 or None in pairs or pairs[0] != pairs[1]:
            self.note("attention: rotary embedding on q and k not recognised as one pairing: no A1/A5 law")
            return
        self.laws.rotary_pairs(terms, groups, dh, pairs[0], label, modules)

    def _vo(self) -> None:
        core, reads = self.core, self.reads
        pv, _ = core.chains["v"]
        v_tab, out = self._table("v"), reads.get(self.proj_in)
        if v_tab is None or out is None:
            return
        q_tab = self._table("q")
        if core.gqa and q_tab is not None and q_tab.shape[0] != v_tab.shape[0]:
            v_tab = v_tab.repeat_interleave(q_tab.shape[0] // v_tab.shape[0], dim=0)
        n_heads, dh = v_tab.shape
        cols = out.reshape(-1, out.shape[-1])
        if not bool((cols == cols[:1]).all()):
            return
        cols = cols[0].long()  # projection input column -> head·dh + d of the core output
        if sorted(cols.tolist()) != list(range(n_heads * dh)):
            return
        v_blocks, groups = _blocks(v_tab)
        proj = next(iter(self.proj_in.users))
        if not (_exclusive(pv, self.allowed, self.ends) and self._disjoint(("v",))):
            self.note("attention: the v projection is also used elsewhere: no A2 law")
            return
        proj_op = get_op(proj)
        order = torch.argsort(cols).view(n_heads, dh)  # column of (head h, dim d)
        v_slots = self._producer_slots(pv, v_blocks)
        o_slot = _rows_slot(self.laws.facts.canonical.get(proj_op.weight, proj_op.weight), order, n_heads * dh,
                            proj_op.w_in_axis)
        if v_slots is None or o_slot is None or not self.laws.usable(v_slots + [o_slot], [self.module]):
            return
        G = v_blocks.shape[0]
        terms = tuple((s, 1.0, tuple(range(G))) for s in v_slots) + ((o_slot, -1.0, tuple(groups)),)
        vm, om = get_op(pv).module, proj_op.module
        self.laws.block_gram("attention-vo", "A4" if G != n_heads else "A2", terms, G, dh, f"{vm}>{om}",
                             [vm, om, self.module],
                             "V̄_g V̄_gᵀ − Σ_(h∈G(g)) O_hᵀ O_h" if G != n_heads else "V̄_h V̄_hᵀ − O_hᵀ O_h")


def _between(order: dict, starts: set, ends: set) -> set:
    """Nodes on a path from ``starts`` to ``ends`` (both included; ``order``: each node's position in
    the graph): the only values the index run computes. The searches stop at the last end (forward)
    and the first start (backward), so one core's chains cost what they hold, not the whole graph."""
    ends = {e for e in ends if e is not None}
    if not starts or not ends:
        return set(starts) | ends
    last, first = max(order[n] for n in ends), min(order[n] for n in starts)

    def reach(seeds: set, step, inside) -> set:
        seen, stack = set(seeds), list(seeds)
        while stack:
            for nxt in step(stack.pop()):
                if nxt not in seen and inside(order[nxt]):
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    below = reach(set(starts), lambda n: n.users, lambda i: i <= last)
    above = reach(ends, lambda n: n.all_input_nodes, lambda i: i >= first)
    return (below & above) | set(starts) | ends


def _index_dtype(count: int) -> torch.dtype:
    """float32 holds every integer below 2²⁴ exactly (and moves half the bytes of float64)."""
    return torch.float32 if count < 2 ** 24 else torch.float64


class _IndexInterpreter(fx.Interpreter):
    """Runs the graph with index tensors: producers emit their channel index, cores their
    (head·dh + d) index, scalar scales and rotary blocks pass values through; nodes off the chains that fail on
    index values yield zeros of their recorded shape. ``values`` holds the tensors at ``reads``."""

    def __init__(self, gm, producers, cores, passthrough, reads, needed=None):
        super().__init__(gm)
        self.needed = needed
        # Values are freed after their last use (memory stays O(width), not O(depth x width)), except
        # those a pass-through hands on later.
        keep = set(passthrough.values())
        for uses in getattr(self, "user_to_last_uses", {}).values():
            uses[:] = [u for u in uses if u not in keep]
        self.producers, self.cores, self.passthrough, self.reads = producers, cores, passthrough, reads
        self.values: dict = {}

    def run(self, *args, **kwargs):
        """Run only the nodes on the chains (``needed``) and what they read: values off the chains
        become meta tensors of their recorded shape without running anything (a full pass over a
        ViT-B graph cost as much as tracing it)."""
        if self.needed is None:
            return super().run(*args, **kwargs)
        inputs = iter(args)
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = next(inputs, None)
        for node in self.graph.nodes:
            if node in self.needed and node.op != "placeholder":
                self._ensure(node)
        return None

    def _ensure(self, target: fx.Node) -> None:
        """Compute ``target`` after whatever it reads (iteratively: no recursion depth limit)."""
        stack = [target]
        while stack:
            node = stack[-1]
            if node in self.env:
                stack.pop()
                continue
            tm = node.meta.get("tensor_meta")
            if (node not in self.needed and isinstance(tm, TensorMetadata)
                    and node.op in ("call_function", "call_module", "call_method")):
                self.env[node] = torch.empty(tm.shape, dtype=tm.dtype, device="meta")  # off the chains
                stack.pop()
                continue
            missing = [a for a in node.all_input_nodes if a not in self.env]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            self.env[node] = self.run_node(node)

    def run_node(self, n: fx.Node):
        tm = n.meta.get("tensor_meta")
        if n in self.producers:
            # expanded views, not copies: only layout ops (views) and the readers below touch them
            value = torch.arange(tm.shape[-1], dtype=_index_dtype(tm.shape[-1])).expand(*tm.shape)
        elif n in self.cores:
            shape = tuple(tm.shape)  # (batch, *heads, T, dh)
            hs, dh = shape[1:-2], shape[-1]
            n_heads = 1
            for h in hs:
                n_heads *= h
            dtype = _index_dtype(n_heads * dh)
            head = torch.arange(n_heads, dtype=dtype).view(1, *hs, 1, 1) if hs else torch.zeros(1, 1, 1, dtype=dtype)
            value = (head * dh + torch.arange(dh, dtype=dtype)).expand(*shape)
        elif n in self.passthrough:
            value = self.env[self.passthrough[n]]
        elif get_op(n).kind is OpKind.RESHAPE and isinstance(n.args[0], fx.Node):
            # index tensors may be laid out differently from the real values: view ≡ reshape here
            value = self.env[n.args[0]].reshape(tm.shape)
        else:
            try:
                value = super().run_node(n)
            except Exception:
                if not n.users and n not in self.reads:
                    return None  # e.g. export's _assert_tensor_metadata (device: meta) on a stand-in
                if tm is None or not hasattr(tm, "shape") or n in self.reads:
                    raise  # a chain node must carry indices faithfully: no law rather than a guess
                value = torch.zeros(tm.shape, dtype=tm.dtype)  # off the chains: any value will do
        if n in self.reads and isinstance(value, torch.Tensor):
            self.values[n] = value if value.dtype in (torch.float32, torch.float64) else value.to(torch.float64)
        return value
