"""Attention pass: per-head laws of scaled-dot-product attention written with explicit projections.

Reads the graph (after normalise) and the example inputs; returns law families A1 (query/key Gram
per head, GQA groups: A4), A2 (value/output Gram per head) and A3 (key bias), THEORY §2.

An *attention core* is ``F.scaled_dot_product_attention(q, k, v)`` or
``matmul(softmax(matmul(q, kᵀ) [·scale] [+mask], dim=-1) [dropout], v)``. From each core argument
the pass walks back through pure data movement (view/reshape/transpose/permute/contiguous/split/
chunk/unbind/getitem/expand/repeat_interleave, and multiplication by a Python number) to a Linear
producer, and from the core output forward to the output projection. Which producer row sits at
which (head, head-dim) slot is read off by running the graph once with *index tensors* in place of
the producers' outputs (pure data movement carries indices unchanged). A law is attached only if
every use of the producer's output ends in this core (exclusivity), and — for A1 — if nothing but
data movement sits between the projection and the scores (RoPE or q/k-norm ⇒ no A1, with a reason).
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F

from fxlaws import meta as M
from fxlaws.capture import run_graph
from fxlaws.laws import symbolic as S
from fxlaws.laws.family import PairTerms, SumTerms
from fxlaws.laws.slots import Piece, Slot
from fxlaws.passes.normalise import torch_equivalent

__all__ = ["AttentionPass"]

_MOVE_METHODS = {"view", "reshape", "transpose", "permute", "contiguous", "flatten", "unflatten", "unsqueeze",
                 "squeeze", "expand", "repeat_interleave", "split", "chunk", "unbind", "swapaxes", "view_as"}
_MOVE_FUNCS = {torch.unflatten, torch.clone, torch.reshape, torch.transpose, torch.permute, torch.flatten, torch.unsqueeze, torch.squeeze,
               torch.split, torch.chunk, torch.unbind, torch.repeat_interleave, operator.getitem, torch.swapaxes}
_MATMUL = {operator.matmul, torch.matmul}
_VIEWS = {"view", torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default}
# aten data movement with no torch-function twin in normalise's table (export graphs)
_ATEN_MOVES = {op for op in (getattr(torch.ops.aten.expand, "default", None), getattr(torch.ops.aten.slice, "Tensor", None),
                             getattr(torch.ops.aten.select, "int", None)) if op is not None}
_SCORE_OPS = {"mul", "truediv", "div", "add", "sub", "masked_fill", "iadd", "imul", "itruediv"}


def _target(node: fx.Node):
    """The node's function, aten overloads mapped to their torch equivalents."""
    return torch_equivalent(node.target) if node.op == "call_function" else node.target


def _name(node: fx.Node) -> str:
    t = _target(node)
    return t if isinstance(t, str) else getattr(t, "__name__", "")


def _is_scalar_scale(node: fx.Node) -> bool:
    if node.op not in ("call_function", "call_method"):
        return False
    name = _name(node)
    return name in ("mul", "truediv", "div", "imul", "itruediv") and len(node.args) == 2 and M.is_number(node.args[1])


def _linear_input(node: fx.Node):
    """The activation a LINEAR node reads: F.linear(x, W), x @ W, addmm(b, x, W) (HF Conv1D)."""
    return next((a for a in node.args if isinstance(a, fx.Node) and a.op != "get_attr"), None)


def _keeps_key_shift(node: fx.Node, name: str) -> bool:
    """Scores s ↦ op(s) keeps "s + c·1 along keys" harmless for the softmax (A3): adding any fixed
    tensor, scaling by a number, or filling with -inf; not element-wise weights or finite fills."""
    if name in ("add", "sub", "iadd"):
        return True
    if name in ("mul", "truediv", "div", "imul", "itruediv"):
        return len(node.args) == 2 and M.is_number(node.args[1])
    if name == "masked_fill":
        value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value")
        return isinstance(value, float) and value == float("-inf")
    return False


def _value_users(node: fx.Node) -> set:
    """Users that read the node's values (not just its shape)."""
    return {u for u in node.users if M.get_op(u).kind != M.SHAPE}


def _is_move(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _MOVE_METHODS
    if node.op == "call_function":
        return _target(node) in _MOVE_FUNCS or node.target in _ATEN_MOVES
    return False


def _is_matmul(node: fx.Node) -> bool:
    return (node.op == "call_function" and _target(node) in _MATMUL) or (
        node.op == "call_method" and node.target == "matmul")


@contextlib.contextmanager
def _one_thread():
    """Run small index-tensor bookkeeping on one intra-op thread. Threads cannot speed it up, and
    where the cores are busy every parallel op waits for a scheduler slice (LLaMA-7B on meta, two
    busy cores: ~25 s instead of ~3 s). The caller's thread count is restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


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


class AttentionPass:
    """``AttentionPass(attach)(gm, model, inputs) -> None``; adds families through ``attach._family``.

    Args:
        attach: the AttachLawsPass that already ran (shares parameter facts, naming and reasons).
    """

    def __init__(self, attach):
        self.attach = attach

    def __call__(self, gm: fx.GraphModule, model, inputs) -> None:
        cores = [c for c in (self._core(n) for n in gm.graph.nodes) if c is not None]
        if not cores:
            return
        self.ropes: dict = {}
        for core in cores:
            for role, arg in (("q", core.q), ("k", core.k), ("v", core.v)):
                chain = self._back(arg)
                if chain is not None:
                    core.chains[role] = chain
        producers = {p for c in cores for p, _ in c.chains.values()}
        reads = {n for c in cores for n in (c.q, c.k, c.v)}
        outs = {c.node: self._forward_to_projection(c.node) for c in cores}
        reads |= {o for o in outs.values() if o is not None}
        passthrough = {n: n.args[0] for c in cores for _, ch in c.chains.values() for n in ch if _is_scalar_scale(n)}
        passthrough.update({r.out: r.x for r in self.ropes.values()})  # indices cross a rotary block unchanged
        reads |= {r.rot for r in self.ropes.values()} | {r.x for r in self.ropes.values()}
        chain_nodes = set().union(*(ch for c in cores for _, ch in c.chains.values()))
        # x·cos and rot(x)·sin only feed the rotary output, which passes x through: their values are
        # never read (and cannot be computed from index tensors on a meta-device model's tables).
        chain_nodes -= {a for r in self.ropes.values() for a in r.out.args}
        interp = _IndexInterpreter(gm, producers, set(outs), passthrough, reads | chain_nodes)
        on_meta = any(p.is_meta for p in model.parameters())  # then the run computes index tensors only
        try:
            with _one_thread() if on_meta else contextlib.nullcontext():
                run_graph(model, interp, inputs)
        except Exception as exc:  # fall back to no attention law rather than guess
            for c in cores:
                self.attach._note([M.get_op(c.node).module], f"attention layout could not be read ({exc})")
            return
        with _one_thread():
            for core in cores:
                self._laws(core, outs[core.node], interp.values)

    # --- finding cores ---------------------------------------------------------------------------
    def _core(self, node: fx.Node) -> Optional[_Core]:
        if node.op == "call_function" and _target(node) is F.scaled_dot_product_attention:
            q, k, v = (list(node.args) + [node.kwargs.get(n) for n in ("query", "key", "value")])[:3]
            return _Core(node, q, k, v, False, True, node, gqa=bool(node.kwargs.get("enable_gqa", False)))
        if not _is_matmul(node) or len(node.args) != 2:
            return None
        attn, v = node.args
        while isinstance(attn, fx.Node) and M.get_op(attn).kind == M.IDENTITY:  # dropout on the weights
            attn = attn.args[0]
        if not isinstance(attn, fx.Node) or M.get_op(attn).kind != M.SOFTMAX:
            return None
        scores = attn.args[0]
        shift_only = True
        while isinstance(scores, fx.Node) and not _is_matmul(scores):
            name = _name(scores)
            if name not in _SCORE_OPS or not isinstance(scores.args[0], fx.Node):
                return None
            shift_only &= len(scores.users) == 1 and _keeps_key_shift(scores, name)
            scores = scores.args[0]
        if not isinstance(scores, fx.Node) or len(scores.args) != 2:
            return None
        dim = M.get_op(attn).axis
        ndim = len(attn.meta["tensor_meta"].shape)
        over_keys = dim is not None and dim % ndim == ndim - 1
        return _Core(node, scores.args[0], scores.args[1], v, True,
                      over_keys and shift_only and len(scores.users) == 1, scores)

    def _back(self, node) -> Optional[tuple[fx.Node, set]]:
        """Walk back through data movement (and at most one rotary embedding) to a Linear producer:
        (producer, chain nodes) or None. A rotary block found on the way is stored in ``self.ropes``."""
        chain = set()
        while isinstance(node, fx.Node):
            op = M.get_op(node)
            if op.kind == M.LINEAR and op.weight is not None:
                return node, chain
            rope = self._rope(node)
            if rope is not None:
                self.ropes[node] = rope
                chain |= rope.nodes
                node = rope.x
                continue
            if not (_is_move(node) or _is_scalar_scale(node)):
                return None
            chain.add(node)
            node = node.args[0]
        return None

    def _rope(self, node: fx.Node) -> Optional["_Rope"]:
        """``x·cos + rot(x)·sin`` with ``rot`` pure data movement and negation of x (rotate_half or
        rotate-every-two), every intermediate used only inside the block (THEORY A5)."""
        if M.get_op(node).kind != M.ADD or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
            return None
        if "sub" in M.get_op(node).detail:
            return None
        for a, b in (node.args, node.args[::-1]):
            if M.get_op(a).kind != M.MUL or M.get_op(b).kind != M.MUL or "mul" not in M.get_op(a).detail or (
                    "mul" not in M.get_op(b).detail):
                continue
            for x in a.args:
                if not isinstance(x, fx.Node):
                    continue
                for y in b.args:
                    rot = self._rotation(y, x) if isinstance(y, fx.Node) else None
                    if rot is None:
                        continue
                    inside = rot | {a, b, node}
                    if all(_value_users(n) <= inside for n in rot | {a, b, x}):
                        return _Rope(node, x, y, frozenset(inside))
        return None

    @staticmethod
    def _rotation(y: fx.Node, x: fx.Node) -> Optional[set]:
        """Nodes of a pure rearrangement-with-negation of ``x`` ending in ``y`` (or None)."""
        nodes, stack = set(), [y]
        while stack:
            n = stack.pop()
            if n is x:
                continue
            op = M.get_op(n)
            neg = op.kind == M.MUL and op.detail == "neg"
            if not (neg or _is_move(n) or (op.kind == M.CAT) or (n.op == "call_function" and _target(n) is torch.stack)):
                return None
            nodes.add(n)
            args = n.args[0]
            inputs = list(args) if isinstance(args, (list, tuple)) else [args]
            if not all(isinstance(i, fx.Node) for i in inputs):
                return None
            stack.extend(inputs)
        return nodes if nodes else None

    def _forward_to_projection(self, out: fx.Node) -> Optional[fx.Node]:
        """The output projection reached from the core output through data movement only."""
        node = out
        while True:
            users = [u for u in node.users if M.get_op(u).kind != M.SHAPE]
            if len(users) != 1:
                return None
            (user,) = users
            op = M.get_op(user)
            if op.kind == M.LINEAR and _linear_input(user) is node:
                return node  # the projection's input value
            if not _is_move(user) or user.args[0] is not node:
                return None
            node = user

    # --- laws ------------------------------------------------------------------------------------
    def _exclusive(self, producer: fx.Node, allowed: set, ends: set) -> bool:
        """Every use of the producer's output is data movement inside ``allowed`` that ends in ``ends``
        (the scores / the core, whose outputs no longer carry the projections' channels)."""
        stack = [producer]
        while stack:
            node = stack.pop()
            for user in node.users:
                if M.get_op(user).kind == M.SHAPE or user in ends:
                    continue
                if user not in allowed:
                    return False
                stack.append(user)
        return True

    def _laws(self, core: _Core, proj_in: Optional[fx.Node], reads: dict) -> None:
        at = self.attach
        module = M.get_op(core.node).module
        # Every use of a producer must stay inside this core's chains (exclusivity); where q, k, v
        # come from one packed projection, the rows each reads are checked disjoint below.
        allowed = set().union(*(ch for _, ch in core.chains.values()))
        if "q" in core.chains and "k" in core.chains:
            self._qk(core, reads, module, allowed)
        else:
            at._note([module], "attention: something other than data movement sits between the q/k "
                               "projections and the scores (e.g. RoPE, q/k normalisation): no A1 law")
        if "v" in core.chains and proj_in is not None:
            self._vo(core, proj_in, reads, module, allowed)

    def _disjoint(self, core: _Core, reads: dict, roles: tuple[str, ...]) -> bool:
        """Rows the law's ``roles`` read share no row with any other role of one shared producer
        (q = k from a single projection cannot be transformed separately; v may still be)."""
        rows: dict = {}
        for role, arg, transposed in (("q", core.q, False), ("k", core.k, core.k_transposed), ("v", core.v, False)):
            if role not in core.chains:
                continue
            table = self._head_table(reads.get(arg), transposed)
            if table is None:
                return False
            rows[role] = (core.chains[role][0], set(table.flatten().tolist()))
        for role in roles:
            producer, mine = rows[role]
            if any(p is producer and mine & other for r, (p, other) in rows.items() if r != role):
                return False
        return True

    @staticmethod
    def _head_table(value, transposed: bool):
        """(heads, dh) table of producer rows from an index value (*batch, T, dh); None if inconsistent."""
        if value is None or value.dim() < 2:
            return None
        if transposed:
            value = value.transpose(-1, -2)
        per_b = value.reshape(value.shape[0] if value.dim() > 2 else 1, -1, value.shape[-2], value.shape[-1])
        if not bool((per_b == per_b[:1]).all()) or not bool((per_b == per_b[:, :, :1]).all()):
            return None  # differs across the batch or across tokens: not a head layout
        table = per_b[0, :, 0, :]
        if not bool((table == table.round()).all()):
            return None
        return table.long()

    @staticmethod
    def _rows_slot(param: str, table: torch.Tensor, channels: int, axis: int = 0) -> Optional[Slot]:
        """Slot whose virtual channel h·dh + d is index table[h, d] along ``axis`` of ``param``
        (contiguous per head): projection rows (or an [in, out] weight's columns, HF Conv1D)."""
        pieces = []
        dh = table.shape[1]
        for h, rows in enumerate(table.tolist()):
            if rows != list(range(rows[0], rows[0] + dh)):
                return None
            pieces.append(Piece(h * dh, (h + 1) * dh, rows[0]))
        return Slot(param, axis, tuple(pieces), channels)

    def _producer_slots(self, node: fx.Node, table: torch.Tensor) -> Optional[list[Slot]]:
        op = M.get_op(node)
        canon = self.attach.facts.canonical
        n = table.numel()
        slots = [self._rows_slot(canon.get(p, p), table, n, axis) for p, axis in
                 ((op.weight, op.w_out_axis), (op.bias, 0)) if p is not None]
        return None if any(s is None for s in slots) else slots

    def _qk(self, core: _Core, reads: dict, module, allowed: set) -> None:
        at = self.attach
        (pq, chain_q), (pk, chain_k) = core.chains["q"], core.chains["k"]
        q_tab = self._head_table(reads.get(core.q), False)
        k_tab = self._head_table(reads.get(core.k), core.k_transposed)
        if q_tab is None or k_tab is None or q_tab.shape[1] != k_tab.shape[1]:
            at._note([module], "attention: q/k head layout could not be read: no A1 law")
            return
        if core.gqa and k_tab.shape[0] != q_tab.shape[0]:  # SDPA(enable_gqa=True) repeats kv heads
            rep = q_tab.shape[0] // k_tab.shape[0]
            k_tab = k_tab.repeat_interleave(rep, dim=0)
        blocks = {}  # k block rows -> block index
        for row in k_tab.tolist():
            blocks.setdefault(tuple(row), len(blocks))
        k_blocks = torch.tensor(list(blocks), dtype=torch.long)
        q_groups = [blocks[tuple(row)] for row in k_tab.tolist()]
        q_rows = {tuple(r) for r in q_tab.tolist()}
        if len(q_rows) != q_tab.shape[0] or len(set(q_tab.flatten().tolist())) != q_tab.numel() or (
                len(set(k_blocks.flatten().tolist())) != k_blocks.numel()):
            at._note([module], "attention: query heads share rows: no A1 law")
            return
        ends = {core.scores, core.node}  # which rows reach which end is checked by _disjoint
        if not (self._exclusive(pq, allowed, ends) and self._exclusive(pk, allowed, ends) and self._disjoint(core, reads, ("q", "k"))):
            at._note([module], "attention: the q/k projections are also used outside the scores: no A1 law")
            return
        q_slots, k_slots = self._producer_slots(pq, q_tab), self._producer_slots(pk, k_blocks)
        if q_slots is None or k_slots is None:
            at._note([module], "attention: q/k rows of a head are not contiguous: no A1 law")
            return
        problems = [p for p in (at._slot_problem(s) for s in q_slots + k_slots) if p]
        if problems:
            for p in problems:
                at._note([module], p)
            return
        G = k_blocks.shape[0]
        terms = tuple((s, 1.0, tuple(q_groups)) for s in q_slots) + tuple(
            (s, -1.0, tuple(range(G))) for s in k_slots)
        qm, km = M.get_op(pq).module, M.get_op(pk).module
        gqa = q_tab.shape[0] != G
        rope_q = [r for r in self.ropes.values() if r.nodes <= chain_q]
        rope_k = [r for r in self.ropes.values() if r.nodes <= chain_k]
        if rope_q or rope_k:
            pairs = [self._pairs(r, reads) for r in rope_q + rope_k]
            if len(rope_q) != 1 or len(rope_k) != 1 or None in pairs or pairs[0] != pairs[1]:
                at._note([module], "attention: rotary embedding on q and k not recognised as one pairing: no A1/A5 law")
                return
            self._rope_family(q_slots, k_slots, tuple(q_groups), G, k_blocks.shape[1], pairs[0],
                              f"{qm}>{km}" if qm != km else f"{qm}:qk", [qm, km, module])
            return
        self.attach._block_gram_family("attention-qk", "A4" if gqa else "A1", terms, G, k_blocks.shape[1],
                          f"{qm}>{km}" if qm != km else f"{qm}:qk", [qm, km, module],
                          "Σ_{h∈G(g)} Q̄_h Q̄_hᵀ − K̄_g K̄_gᵀ" if gqa else "Q̄_h Q̄_hᵀ − K̄_h K̄_hᵀ")
        bias = M.get_op(pk).bias
        if core.softmax_over_keys and bias is not None:
            slot = k_slots[1]
            at._family(
                name=f"translation:{km}:key-bias", kind="translation", theory="A3", slots=[slot],
                modules=[km, module], expr=S.deferred(S.sum_expr, slot, at.facts.shapes, 1), shape=(slot.channels,),
                count=slot.channels, exact=True, assumptions={"any-loss"},
                formula=f"{slot.describe()}  (key bias under softmax over keys)", evaluator=SumTerms(slot, 1),
            )

    def _pairs(self, rope: _Rope, reads: dict) -> Optional[tuple[tuple[int, int], ...]]:
        """Head-dim positions the rotary block rotates together, e.g. ((0, 4), (1, 5), …) for
        rotate_half with dh = 8, ((0, 1), (2, 3), …) for rotate-every-two; None if unreadable."""
        x_tab = self._head_table(reads.get(rope.x), False)
        r_val = reads.get(rope.rot)
        r_tab = self._head_table(r_val.abs(), False) if r_val is not None else None
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

    def _rope_family(self, q_slots, k_slots, q_groups, G, dh, pairs, label, modules) -> None:
        """A5: per kv group g and frequency pair f, Σ_{h∈G(g)} ‖Q̄_h^{(f)}‖² − ‖K̄_g^{(f)}‖²."""
        at = self.attach
        terms = tuple((s, 1.0, q_groups) for s in q_slots) + tuple((s, -1.0, tuple(range(G))) for s in k_slots)
        problems = [p for p in (at._slot_problem(s) for s, _, _ in terms) if p]
        if problems:
            for p in problems:
                at._note(modules, p)
            return
        plain = tuple((s, c) for s, c, _ in terms)
        text = " ".join(f"{'+' if c > 0 else '−'} ‖{s.describe()}‖²" for s, c, _ in terms).lstrip("+ ")
        at._family(
            name=f"attention-qk:{label}:rope", kind="attention-qk", theory="A5", slots=[s for s, _, _ in terms],
            modules=modules, expr=S.deferred(S.diag_expr, plain, at.facts.shapes), shape=(G, len(pairs)), count=G * len(pairs),
            exact=True, assumptions={"any-loss"},
            formula=f"Σ_{{h∈G(g)}} ‖Q̄_h^(f)‖² − ‖K̄_g^(f)‖² per rotary pair f {list(pairs)[:3]}…: {text} "
                    f"summed over each pair",
            evaluator=PairTerms(terms, G, dh, pairs),
        )

    def _vo(self, core: _Core, proj_in: fx.Node, reads: dict, module, allowed: set) -> None:
        at = self.attach
        pv, chain_v = core.chains["v"]
        v_tab = self._head_table(reads.get(core.v), False)
        out = reads.get(proj_in)
        if v_tab is None or out is None:
            return
        q_tab = self._head_table(reads.get(core.q), False)
        if core.gqa and q_tab is not None and q_tab.shape[0] != v_tab.shape[0]:
            v_tab = v_tab.repeat_interleave(q_tab.shape[0] // v_tab.shape[0], dim=0)
        dh = v_tab.shape[1]
        cols = out.reshape(-1, out.shape[-1])
        if not bool((cols == cols[:1]).all()):
            return
        cols = cols[0].long()  # projection input column -> head·dh + d of the core output
        n_heads = v_tab.shape[0]
        if sorted(cols.tolist()) != list(range(n_heads * dh)):
            return
        blocks = {}
        for row in v_tab.tolist():
            blocks.setdefault(tuple(row), len(blocks))
        v_blocks = torch.tensor(list(blocks), dtype=torch.long)
        groups = tuple(blocks[tuple(row)] for row in v_tab.tolist())
        proj = next(iter(proj_in.users))
        if not (self._exclusive(pv, allowed, {core.scores, core.node}) and self._disjoint(core, reads, ("v",))):
            at._note([module], "attention: the v projection is also used elsewhere: no A2 law")
            return
        v_slots = self._producer_slots(pv, v_blocks)
        o_param = at.facts.canonical.get(M.get_op(proj).weight, M.get_op(proj).weight)
        order = torch.argsort(cols).view(n_heads, dh)  # column of (head h, dim d)
        o_slot = self._rows_slot(o_param, order, n_heads * dh, M.get_op(proj).w_in_axis)
        if v_slots is None or o_slot is None:
            return
        problems = [p for p in (at._slot_problem(s) for s in v_slots + [o_slot]) if p]
        if problems:
            for p in problems:
                at._note([module], p)
            return
        G = v_blocks.shape[0]
        terms = tuple((s, 1.0, tuple(range(G))) for s in v_slots) + ((o_slot, -1.0, groups),)
        vm, om = M.get_op(pv).module, M.get_op(proj).module
        self.attach._block_gram_family("attention-vo", "A4" if G != n_heads else "A2", terms, G, dh, f"{vm}>{om}",
                          [vm, om, module], "V̄_g V̄_gᵀ − Σ_{h∈G(g)} O_hᵀ O_h" if G != n_heads else
                          "V̄_h V̄_hᵀ − O_hᵀ O_h")


class _IndexInterpreter(fx.Interpreter):
    """Runs the graph with index tensors: producers emit their channel index, cores their
    (head·dh + d) index, scalar scales and rotary blocks pass values through; nodes off the chains that fail on
    index values yield zeros of their recorded shape. ``values`` holds the tensors at ``reads``."""

    def __init__(self, gm, producers, cores, passthrough, reads):
        super().__init__(gm)
        # Values are freed after their last use (memory stays O(width), not O(depth x width)), except
        # those a pass-through hands on later.
        keep = set(passthrough.values())
        for uses in getattr(self, "user_to_last_uses", {}).values():
            uses[:] = [u for u in uses if u not in keep]
        self.producers, self.cores, self.passthrough, self.reads = producers, cores, passthrough, reads
        self.values: dict = {}

    def run_node(self, n: fx.Node):
        tm = n.meta.get("tensor_meta")
        if n in self.producers:
            value = torch.arange(tm.shape[-1], dtype=torch.float64).expand(*tm.shape).clone()
        elif n in self.cores:
            shape = tuple(tm.shape)  # (batch, *heads, T, dh)
            hs, dh = shape[1:-2], shape[-1]
            n_heads = 1
            for h in hs:
                n_heads *= h
            head = torch.arange(n_heads, dtype=torch.float64).view(1, *hs, 1, 1) if hs else torch.zeros(1, 1, 1)
            value = (head * dh + torch.arange(dh, dtype=torch.float64)).expand(*shape).clone()
        elif n in self.passthrough:
            value = self.env[self.passthrough[n]]
        elif n.target in _VIEWS and isinstance(n.args[0], fx.Node):
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
            self.values[n] = value.to(torch.float64)
        return value
