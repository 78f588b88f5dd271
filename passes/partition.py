"""Partition pass: find the hidden channel spaces of a GraphModule and everything that touches them.

Analysis only (writes nothing into the graph). For every producer (Linear / Conv output, affine
norm output) it opens a *channel space*: the symmetry "scale (or mix) output channel j" of that
producer. The space is followed forward through every use of the value:

* ops that commute with the symmetry carry it on (positively homogeneous activations raise the
  degree k, THEORY R3; reshape/flatten/cat/split change where channel j sits; adds of two carried
  values merge their spaces, THEORY R2);
* Linear / Conv inputs *compensate* it (consumer slots: ``C.weight[:, j]``);
* a normalisation absorbs it (N1/N2), softmax or the model output absorb translations (T1/T2);
* anything else *breaks* it, with the reason (GELU, residual add, opaque op, ...).

What each op kind does to a carried value is one entry of :data:`TRANSFER` (single carried input)
or :data:`JOIN` (ops that read several values); which kinds open a space is :data:`OPEN`.
Spaces merged by adds form coupling classes (connected components of the networkx graph).
Reads: ``node.meta["fxlaws"]`` (normalise) and ``node.meta["tensor_meta"]`` (capture).
Writes: ``state.partition``, a :class:`Partition`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import networkx as nx
import torch.fx as fx

from fxlaws.errors import PassOrderError
from fxlaws.laws.slots import Piece, Slot
from fxlaws.meta import CanonicalOp, get_op, has_ops
from fxlaws.vocabulary import OpKind

from . import transfer
from .base import FxlawsPass, PassResult
from .pipeline import AnnotateState
from .spaces import Coupling, Flow, NormSink, Partition, Sink, Space, Terminal, map_reshape, shape_of

__all__ = ["PartitionPass", "Partition", "Space", "Coupling", "Sink", "NormSink", "Terminal", "Flow", "Walk",
           "map_reshape"]


class Walk:
    """The state of one partition run: the spaces opened so far and the flow each value carries.

    The transfer rules (:mod:`fxlaws.passes.transfer`) read and extend it through the methods below.
    """

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.spaces: list[Space] = []
        self.flows: dict[fx.Node, Any] = {}  # a Flow, or a tuple of Flow/None for tuple-valued nodes
        self.graph = nx.Graph()
        self.products: list[tuple[int, int]] = []
        self._params: Optional[dict] = None

    @property
    def params(self) -> dict:
        """The graph's parameters by name, built once per run (one lookup per node stays O(1))."""
        if self._params is None:
            self._params = dict(self.gm.named_parameters())
        return self._params

    def flow(self, node: Any) -> Optional[Flow]:
        """The single flow ``node`` carries, or None."""
        flow = self.flows.get(node) if isinstance(node, fx.Node) else None
        return flow if isinstance(flow, Flow) else None

    # --- bookkeeping -------------------------------------------------------------------------------
    def break_(self, flow: Flow, reason: str) -> None:
        """Every space ``flow`` carries loses its symmetry, for ``reason``."""
        for sid in flow.space_ids:
            if reason not in self.spaces[sid].breaks:
                self.spaces[sid].breaks.append(reason)

    def merge(self, a: Flow, b: Flow, node: fx.Node) -> None:
        for (sa, _), (sb, _) in zip(a.pieces, b.pieces):
            if sa != sb:
                self.graph.add_edge(("space", sa), ("space", sb), role="merge", node=node.name)

    def open_space(self, node: fx.Node, op: CanonicalOp, shape, axis: int, axis_w: int, producer: str,
                   allows_mixing: bool, constant: float = 0.0, experts: int = 1, route: Optional[str] = None) -> None:
        """A new channel space: ``op``'s weight rows along ``axis_w`` (plus ``constant``, see
        :class:`~fxlaws.laws.slots.Slot`) and its bias make the channels on ``axis`` of the node's value.
        ``experts`` > 1: a stacked weight (E, ...) applied to the rows grouped by ``route`` (one
        channel per expert and position, see :class:`~fxlaws.passes.spaces.Flow`)."""
        channels = shape[axis] * experts
        weight = Slot(op.weight, axis_w, (Piece(0, channels),), channels, experts, constant) if op.weight else None
        bias = Slot.full(op.bias, 0, channels) if op.bias and experts == 1 else None
        sid = self._add_space(Space(len(self.spaces), node.name, op.module, producer, channels, weight, bias,
                                    allows_mixing))
        # a norm's affine scales channels one by one: its values admit no channel mixing
        self.flows[node] = Flow(axis, len(shape), ((sid, Piece(0, channels)),), allows_mixing=producer != "norm",
                                route=route, experts=experts)

    def _add_space(self, space: Space) -> int:
        self.spaces.append(space)
        self.graph.add_node(("space", space.id), node=space.node, module=space.module, channels=space.channels,
                            producer=space.producer)
        for slot in space.sources:
            self.graph.add_edge(("space", space.id), ("slot", slot.param, slot.axis), role="source")
        return space.id

    def fresh(self, flow: Flow, value: fx.Node) -> Optional[Space]:
        """The space ``flow`` carries when ``value`` is its producer's output, read only by the node
        being visited, and nothing has used the space yet (so its channels can still go separate ways)."""
        if len(flow.pieces) != 1 or len(value.users) != 1:
            return None
        sid, piece = flow.pieces[0]
        space = self.spaces[sid]
        if (space.node != value.name or piece != Piece(0, space.channels) or space.sinks or space.norms
                or space.terminals or space.breaks or space.parts):
            return None
        return space

    def open_part(self, parent: Space, node: fx.Node, lo: int, hi: int, flow: Flow) -> Flow:
        """Positions ``[lo, hi)`` of a :meth:`fresh` space's channel axis (in every expert's block) as a
        space of their own: a split sends them different ways (a fused gate/up projection's halves)."""
        n, width = parent.channels // flow.experts, hi - lo

        def part(slot: Optional[Slot]) -> Optional[Slot]:
            if slot is None:
                return None
            pieces = tuple(Piece(e * width, (e + 1) * width, e * n + lo) for e in range(flow.experts))
            return Slot(slot.param, slot.axis, pieces, flow.experts * width, slot.groups, slot.constant)

        sid = self._add_space(Space(len(self.spaces), node.name, parent.module, parent.producer, flow.experts * width,
                                    part(parent.weight), part(parent.bias), parent.allows_mixing))
        parent.parts.append(sid)
        return flow.with_(pieces=((sid, Piece(0, flow.experts * width)),))

    def add_sink(self, node: fx.Node, op: CanonicalOp, flow: Flow, param: str, axis: int, allows_mixing: bool,
                 scale: int = 1, groups: int = 1) -> None:
        """``param``'s positions along ``axis`` compensate the carried channels (a consumer);
        ``groups``: a grouped conv's input side (:class:`~fxlaws.laws.slots.Slot`)."""
        by_space: dict[int, list[Piece]] = {}
        for sid, p in flow.pieces:
            by_space.setdefault(sid, []).append(Piece(p.start, p.stop, p.offset * scale, p.inner * scale))
        for sid, pieces in by_space.items():
            slot = Slot(param, axis, tuple(pieces), self.spaces[sid].channels, groups)
            mixing = allows_mixing and flow.allows_mixing and flow.degree == 1
            self.spaces[sid].sinks.append(Sink(node.name, op.module, slot, flow.degree, mixing, flow.gated))
            self.graph.add_edge(("space", sid), ("slot", param, axis), role="sink", degree=flow.degree)

    def dead(self, flow: Flow) -> bool:
        """Every space the value carries is already broken: no law will be claimed for them, so
        the value can be treated as carrying nothing (later producers may open spaces on it)."""
        return all(self.spaces[sid].breaks for sid in flow.space_ids)

    # --- the walk ----------------------------------------------------------------------------------
    def visit(self, node: fx.Node) -> None:
        """Compute the flow of ``node`` from its inputs' flows, or open a space on it."""
        op = get_op(node)
        ins = [(a, self.flows[a]) for a in node.all_input_nodes
               if isinstance(self.flows.get(a), Flow) and not self.dead(self.flows[a])]
        tuples = [self.flows[a] for a in node.all_input_nodes if isinstance(self.flows.get(a), tuple)]
        out: Any = None
        if tuples:
            out = self._from_tuples(node, op, ins, tuples)
        elif ins:
            out = self._transfer(node, op, ins)
        if out is not None:
            self.flows[node] = out
            return
        opener = OPEN.get(op.kind)
        shape = shape_of(node)
        if opener is not None and shape is not None:
            opener(self, node, op, shape)

    def _from_tuples(self, node: fx.Node, op: CanonicalOp, ins, tuples) -> Any:
        """``tuple[i]`` of a split's output; any other read of a tuple of flows breaks them."""
        idx = node.args[1] if op.kind is OpKind.GETITEM and len(node.args) > 1 else None
        if op.kind is OpKind.GETITEM and isinstance(idx, int) and not ins and len(tuples) == 1:
            return tuples[0][idx]
        for flow in (flow for tup in tuples for flow in tup if flow is not None):
            self.break_(flow, f"split channels reach {op.detail or node.name}, which fxlaws cannot follow")
        for _, flow in ins:
            self.break_(flow, f"channels reach {op.detail or node.name}, which fxlaws cannot follow")
        return None

    def _transfer(self, node: fx.Node, op: CanonicalOp, ins) -> Any:
        if op.kind is OpKind.SHAPE:
            return None
        routed = [f for _, f in ins if f.route is not None]
        if routed and op.kind not in _ROW_WISE:
            for f in routed:
                self.break_(f, f"channels of rows routed to experts reach {op.detail or node.name}, "
                               "which may move rows between experts")
            return None
        if op.kind in JOIN:
            return JOIN[op.kind](self, node, op, ins)
        main = node.args[op.data_arg] if len(node.args) > op.data_arg else None
        flow = self.flow(main)
        if flow is None or any(a is not main for a, _ in ins):
            for _, f in ins:
                self.break_(f, f"channels reach {op.detail or node.name} in an unsupported position")
            return None
        rule = TRANSFER.get(op.kind)
        if rule is None:
            self.break_(flow, f"channels reach {op.detail or node.name}, which carries no symmetry")
            return None
        return rule(self, node, op, flow)

    def result(self) -> Partition:
        """The spaces grouped into coupling classes (connected by "merge" edges)."""
        space_graph = nx.Graph()
        space_graph.add_nodes_from(("space", s.id) for s in self.spaces)
        space_graph.add_edges_from((u, v) for u, v, d in self.graph.edges(data=True) if d.get("role") == "merge")
        couplings = [Coupling(sorted((self.spaces[n[1]] for n in comp), key=lambda s: s.id))
                     for comp in nx.connected_components(space_graph)]
        couplings.sort(key=lambda c: c.spaces[0].id)
        where = {s.id: i for i, c in enumerate(couplings) for s in c.spaces}
        for x, y in self.products:  # a product of two spaces that ended up merged scales by λ²
            if where[x] == where[y]:
                for sp in couplings[where[x]].spaces:
                    sp.breaks.append("a product of two values from the same coupling class (degree 2)")
        return Partition(self.spaces, self.graph, couplings, self.products)


#: kinds that keep every row where it is (the only ones a flow of routed rows may pass, Flow.route)
_ROW_WISE = frozenset({OpKind.ACT, OpKind.IDENTITY, OpKind.SPLIT, OpKind.MUL, OpKind.GROUPED_MM})
#: op kind -> rule(walk, node, op, flow) for a node whose one carried input is its first argument.
TRANSFER: dict[OpKind, Callable] = transfer.SINGLE
#: op kind -> rule(walk, node, op, ins) for ops that combine several values.
JOIN: dict[OpKind, Callable] = transfer.JOIN
#: op kind -> opener(walk, node, op, shape) for nodes that may start a channel space.
OPEN: dict[OpKind, Callable] = transfer.OPEN


class PartitionPass(FxlawsPass[AnnotateState]):
    """Analysis pass: writes ``state.partition``. See the module docstring."""

    def requires(self, state: AnnotateState) -> None:
        if not has_ops(state.graph_module.graph):
            raise PassOrderError("PartitionPass reads node.meta['fxlaws'].op: run NormalisePass first")

    def call(self, state: AnnotateState) -> PassResult[AnnotateState]:
        walk = Walk(state.graph_module)
        for node in state.graph_module.graph.nodes:
            walk.visit(node)
        state.partition = walk.result()
        return PassResult(state, False)
