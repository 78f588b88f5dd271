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

Spaces merged by adds form coupling classes (connected components of the networkx graph).
Reads: ``node.meta["fxlaws"]`` (normalise) and ``node.meta["tensor_meta"]`` (capture).
Returns: a :class:`Partition`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import networkx as nx
import torch
import torch.fx as fx

from fxlaws import meta as M
from fxlaws.laws.slots import Piece, Slot
from fxlaws.meta import CanonicalOp, get_op

__all__ = ["PartitionPass", "Partition", "Space", "Coupling", "Sink", "NormSink", "Terminal"]


@dataclass
class Sink:
    """A compensating consumer: ``slot`` scales by λ^{-degree}."""

    node: str
    module: Optional[str]
    slot: Slot
    degree: float
    gl: bool  # the carried value and the consumer both admit channel mixing
    gated: bool = False  # the value was multiplied by an invariant tensor on the way (S1)


@dataclass
class NormSink:
    """A normalisation that absorbs a common scale per group of ``group`` channels (N2) and, when
    ``shift`` holds, translations constant over its averaged axes (N1)."""

    node: str
    module: Optional[str]
    op: CanonicalOp
    group: int
    shift: bool
    weight_shift: bool  # Linear weight directions are constant over the averaged axes too


@dataclass
class Terminal:
    """A use that is invariant to translations only: softmax over the channel axis, or the output."""

    node: str
    kind: str  # "softmax" | "output"
    shift: bool
    single: bool  # the value itself is the model's (only) output


@dataclass
class Space:
    """Output channels of one producer node."""

    id: int
    node: str
    module: Optional[str]
    producer: str  # "linear" | "conv" | "norm"
    channels: int
    weight: Optional[Slot]
    bias: Optional[Slot]
    gl: bool
    sinks: list[Sink] = field(default_factory=list)
    norms: list[NormSink] = field(default_factory=list)
    terminals: list[Terminal] = field(default_factory=list)
    breaks: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[Slot]:
        return [s for s in (self.weight, self.bias) if s is not None]


@dataclass
class Coupling:
    """A coupling class: spaces merged by adds (identity channel maps)."""

    spaces: list[Space]

    @property
    def channels(self) -> int:
        return self.spaces[0].channels

    @property
    def sinks(self) -> list[Sink]:
        return [s for sp in self.spaces for s in sp.sinks]

    @property
    def norms(self) -> list[NormSink]:
        return [s for sp in self.spaces for s in sp.norms]

    @property
    def terminals(self) -> list[Terminal]:
        return [s for sp in self.spaces for s in sp.terminals]

    @property
    def breaks(self) -> list[str]:
        return [s for sp in self.spaces for s in sp.breaks]


@dataclass
class Partition:
    """Result of :class:`PartitionPass`: the spaces, the networkx coupling graph and its classes."""

    spaces: list[Space]
    graph: nx.Graph
    couplings: list[Coupling]
    products: list[tuple[int, int]] = field(default_factory=list)  # spaces multiplied together (S2)


@dataclass(frozen=True)
class _Flow:
    """How the channels of some spaces sit in one tensor value."""

    axis: int
    ndim: int
    pieces: tuple[tuple[int, Piece], ...]  # (space id, piece)
    degree: float = 1.0
    gl: bool = True
    shift: bool = True  # only value-preserving ops since the producer (translations survive)
    gated: bool = False  # multiplied element-wise by a value the symmetry leaves alone (GLU, S1)

    def with_(self, **kw) -> "_Flow":
        d = dict(axis=self.axis, ndim=self.ndim, pieces=self.pieces, degree=self.degree, gl=self.gl,
                 shift=self.shift, gated=self.gated)
        d.update(kw)
        return _Flow(**d)

    def same_layout(self, other: "_Flow") -> bool:
        return (self.axis, self.ndim, self.degree) == (other.axis, other.ndim, other.degree) and [
            p for _, p in self.pieces] == [p for _, p in other.pieces]


def _shape(node: Any) -> Optional[tuple[int, ...]]:
    if not isinstance(node, fx.Node):
        return None
    tm = node.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


def _map_reshape(in_shape, out_shape, axis) -> Optional[tuple[int, int]]:
    """Where channel axis ``axis`` of ``in_shape`` lands after a contiguous reshape to ``out_shape``.

    Returns ``(new_axis, inner)`` where channel j now spans ``inner`` consecutive positions, or None
    when the channel axis is split or merged with axes before it.
    """
    stride_in = math.prod(in_shape[axis + 1:])
    hi = stride_in * in_shape[axis]
    stride = 1
    found = None
    for b in range(len(out_shape) - 1, -1, -1):
        if stride <= stride_in and stride * out_shape[b] == hi and stride_in % stride == 0:
            if found is None or out_shape[b] != 1:
                found = (b, stride_in // stride)
        stride *= out_shape[b]
    return found


class PartitionPass:
    """Analysis pass: ``PartitionPass()(gm) -> Partition``. See the module docstring."""

    def __call__(self, gm: fx.GraphModule) -> Partition:
        self.gm = gm
        self.spaces: list[Space] = []
        self.flows: dict[fx.Node, Any] = {}
        self.graph = nx.Graph()
        self.products: list[tuple[int, int]] = []
        for node in gm.graph.nodes:
            self._visit(node)
        space_graph = nx.Graph()
        space_graph.add_nodes_from(("space", s.id) for s in self.spaces)
        space_graph.add_edges_from((u, v) for u, v, d in self.graph.edges(data=True) if d.get("role") == "merge")
        couplings = [
            Coupling(sorted((self.spaces[n[1]] for n in comp), key=lambda s: s.id))
            for comp in nx.connected_components(space_graph)
        ]
        couplings.sort(key=lambda c: c.spaces[0].id)
        where = {s.id: i for i, c in enumerate(couplings) for s in c.spaces}
        for x, y in self.products:  # a product of two spaces that ended up merged scales by λ²
            if where[x] == where[y]:
                for sp in couplings[where[x]].spaces:
                    sp.breaks.append("a product of two values from the same coupling class (degree 2)")
        return Partition(self.spaces, self.graph, couplings, self.products)

    # --- bookkeeping ---------------------------------------------------------------------------
    def _break(self, flow: _Flow, reason: str) -> None:
        for sid in {sid for sid, _ in flow.pieces}:
            if reason not in self.spaces[sid].breaks:
                self.spaces[sid].breaks.append(reason)

    def _merge(self, a: _Flow, b: _Flow, node: fx.Node) -> None:
        for (sa, _), (sb, _) in zip(a.pieces, b.pieces):
            if sa != sb:
                self.graph.add_edge(("space", sa), ("space", sb), role="merge", node=node.name)

    def _new_space(self, node: fx.Node, op: CanonicalOp, channels: int, axis_w: int, producer: str, gl: bool) -> None:
        sid = len(self.spaces)
        weight = Slot.full(op.weight, axis_w, channels) if op.weight else None
        bias = Slot.full(op.bias, 0, channels) if op.bias else None
        space = Space(sid, node.name, op.module, producer, channels, weight, bias, gl)
        self.spaces.append(space)
        self.graph.add_node(("space", sid), node=node.name, module=op.module, channels=channels, producer=producer)
        for slot in space.sources:
            self.graph.add_edge(("space", sid), ("slot", slot.param, slot.axis), role="source")

    def _add_sink(self, node: fx.Node, op: CanonicalOp, flow: _Flow, param: str, axis: int, gl: bool,
                  scale: int = 1) -> None:
        by_space: dict[int, list[Piece]] = {}
        for sid, p in flow.pieces:
            by_space.setdefault(sid, []).append(Piece(p.start, p.stop, p.offset * scale, p.inner * scale))
        for sid, pieces in by_space.items():
            slot = Slot(param, axis, tuple(pieces), self.spaces[sid].channels)
            self.spaces[sid].sinks.append(Sink(node.name, op.module, slot, flow.degree,
                                               gl and flow.gl and flow.degree == 1, flow.gated))
            self.graph.add_edge(("space", sid), ("slot", param, axis), role="sink", degree=flow.degree)

    # --- the transfer function -----------------------------------------------------------------
    def _dead(self, flow: _Flow) -> bool:
        """Every space the value carries is already broken: no law will be claimed for them, so
        the value can be treated as carrying nothing (later producers may open spaces on it)."""
        return all(self.spaces[sid].breaks for sid, _ in flow.pieces)

    def _visit(self, node: fx.Node) -> None:
        op = get_op(node)
        ins = [(a, self.flows[a]) for a in node.all_input_nodes
               if isinstance(self.flows.get(a), _Flow) and not self._dead(self.flows[a])]
        tuples = [self.flows[a] for a in node.all_input_nodes if isinstance(self.flows.get(a), tuple)]
        out: Any = None
        if tuples:
            idx = node.args[1] if op.kind == M.GETITEM and len(node.args) > 1 else None
            if op.kind == M.GETITEM and isinstance(idx, int) and not ins and len(tuples) == 1:
                out = tuples[0][idx]
            else:
                for fl in (fl for tup in tuples for fl in tup if fl is not None):
                    self._break(fl, f"split channels reach {op.detail or node.name}, which fxlaws cannot follow")
                for _, fl in ins:
                    self._break(fl, f"channels reach {op.detail or node.name}, which fxlaws cannot follow")
        elif ins:
            out = self._transfer(node, op, ins)
        if out is None:
            self._maybe_open_space(node, op)
        else:
            self.flows[node] = out

    def _maybe_open_space(self, node: fx.Node, op: CanonicalOp) -> None:
        shape = _shape(node)
        if shape is not None and op.kind == M.MUL:
            self._maybe_scale_space(node, op, shape)
            return
        if shape is None or op.weight is None:
            return
        if op.kind == M.LINEAR and len(shape) >= 1:
            self._new_space(node, op, shape[-1], op.w_out_axis, "linear", gl=True)
            self.flows[node] = _Flow(len(shape) - 1, len(shape), ((len(self.spaces) - 1, Piece(0, shape[-1])),))
        elif op.kind == M.CONV:
            axis = len(shape) - op.dims[0] - 1
            self._new_space(node, op, shape[axis], 0, "conv", gl=op.groups == 1)
            self.flows[node] = _Flow(axis, len(shape), ((len(self.spaces) - 1, Piece(0, shape[axis])),))
        elif op.kind == M.MHA:
            metas = node.meta.get("tensor_meta")
            out = tuple(metas[0].shape) if isinstance(metas, tuple) and metas[0] is not None else None
            if out is None:
                return
            proj = dataclasses.replace(op, weight=f"{op.module}.out_proj.weight",
                                       bias=f"{op.module}.out_proj.bias" if op.bias else None)
            self._new_space(node, proj, out[-1], 0, "linear", gl=True)
            flow = _Flow(len(out) - 1, len(out), ((len(self.spaces) - 1, Piece(0, out[-1])),))
            self.flows[node] = (flow,) + (None,) * (len(metas) - 1)
        elif op.kind == M.NORM:
            if op.norm in ("layer", "rms"):
                if op.axis != 1:
                    return  # multi-dim affine: element-wise over several axes, no channel space
                axis = len(shape) - 1
            else:
                axis = 1
            self._new_space(node, op, shape[axis], 0, "norm", gl=False)
            self.flows[node] = _Flow(axis, len(shape), ((len(self.spaces) - 1, Piece(0, shape[axis])),), gl=False)

    def _maybe_scale_space(self, node: fx.Node, op: CanonicalOp, shape) -> None:
        """``y = v ⊙ γ`` with γ a 1-D parameter along the last axis and v carrying no channels (the
        affine step of a hand-written RMSNorm, LayerScale): γ_j scales channel j, a diagonal
        producer like a norm's affine (THEORY N3)."""
        if "mul" not in op.detail or len(node.args) != 2:
            return
        params = self._params()
        for gamma, value in (node.args, node.args[::-1]):
            if (isinstance(gamma, fx.Node) and gamma.op == "get_attr" and str(gamma.target) in params
                    and params[str(gamma.target)].dim() == 1 and isinstance(value, fx.Node)
                    and _shape(value) == shape and params[str(gamma.target)].shape[0] == shape[-1] > 1):
                scale = dataclasses.replace(op, weight=str(gamma.target), bias=None, module=op.module)
                self._new_space(node, scale, shape[-1], 0, "norm", gl=False)
                self.flows[node] = _Flow(len(shape) - 1, len(shape), ((len(self.spaces) - 1, Piece(0, shape[-1])),),
                                         gl=False)
                return

    def _params(self) -> dict:
        """The graph's parameters by name, built once per graph (one lookup per mul stays O(1))."""
        if getattr(self, "_params_of", None) is not self.gm:
            self._params_of, self._params_by_name = self.gm, dict(self.gm.named_parameters())
        return self._params_by_name

    def _transfer(self, node: fx.Node, op: CanonicalOp, ins) -> Any:
        kind = op.kind
        main = node.args[0] if node.args else None
        f = self.flows.get(main) if isinstance(main, fx.Node) else None
        others = [(a, fl) for a, fl in ins if a is not main]
        if kind == M.SHAPE:
            return None
        if kind in (M.ADD, M.CAT, M.OUTPUT, M.MUL):
            return getattr(self, f"_t_{kind}")(node, op, ins)
        if not isinstance(f, _Flow) or others:
            for _, fl in ins:
                self._break(fl, f"channels reach {op.detail or node.name} in an unsupported position")
            return None
        handler = getattr(self, f"_t_{kind}", None)
        if handler is None:
            self._break(f, f"channels reach {op.detail or node.name}, which carries no symmetry")
            return None
        return handler(node, op, f)

    def _t_linear(self, node, op, f: _Flow):
        if f.axis == f.ndim - 1:
            self._add_sink(node, op, f, op.weight, op.w_in_axis, gl=True)
            return None
        if op.bias is None:
            return f  # acts on another axis, no bias: linear and channel-wise for the carried axis
        self._break(f, f"{op.detail} adds its bias along an axis that carries other channels")
        return None

    def _t_mha(self, node, op, f: _Flow):
        # self-attention on one tensor: its channels feed q, k and v through in_proj's columns
        q, k, v = (list(node.args) + [node.kwargs.get(n) for n in ("query", "key", "value")])[:3]
        if q is k is v and f.axis == f.ndim - 1:
            self._add_sink(node, op, f, op.weight, 1, gl=True)
        else:
            self._break(f, f"{op.detail}: channels enter query, key and value differently")
        return None

    def _t_conv(self, node, op, f: _Flow):
        channel_axis = f.ndim - op.dims[0] - 1
        if f.axis != channel_axis:
            self._break(f, f"{op.detail} mixes the axis that carries the channels")
            return None
        w_shape = tuple(self.gm.get_parameter(op.weight).shape)
        if op.groups == 1:
            self._add_sink(node, op, f, op.weight, 1, gl=True)
        elif w_shape[1] == 1 and _shape(node.args[0])[channel_axis] == op.groups:
            # depthwise: input channel c feeds weight rows c*m .. (c+1)*m - 1
            self._add_sink(node, op, f, op.weight, 0, gl=False, scale=w_shape[0] // op.groups)
        else:
            self._break(f, f"{op.detail} is a grouped conv (groups={op.groups}); its input laws are not implemented")
        return None

    def _t_norm(self, node, op, f: _Flow):
        shape = _shape(node.args[0])
        n = len(shape)
        if op.norm == "affine":
            self._break(f, f"{op.detail} is a fixed affine map (running statistics): no scale invariance")
            return None
        full = len(f.pieces) == 1 and f.pieces[0][1] == Piece(0, shape[f.axis])
        if op.norm in ("layer", "rms"):
            averaged = set(range(n - op.axis, n))
            ok = f.axis in averaged
            group = shape[f.axis]
        else:  # batch / instance / group: channel axis 1
            ok = f.axis == 1 and n >= 2
            averaged = ({0} if op.norm == "batch" else set()) | set(range(2, n))
            group = 1
            if op.norm == "group":
                averaged.add(1)
                group = shape[1] // op.groups
        if not ok or not full:
            self._break(f, f"{op.detail} normalises over axes that do not match the channels it receives")
            return None
        sink = NormSink(node.name, op.module, op, group, shift=f.shift and op.centered,
                        weight_shift=averaged == {f.axis})
        for sid, _ in f.pieces:
            self.spaces[sid].norms.append(sink)
        return None

    def _t_act(self, node, op, f: _Flow):
        if op.degree is None:
            self._break(f, f"{op.detail} is not positively homogeneous")
            return None
        return f.with_(degree=f.degree * op.degree, gl=f.gl and op.gl and op.degree == 1, shift=False)

    def _t_identity(self, node, op, f: _Flow):
        return f.with_(gl=f.gl and op.gl, shift=f.shift and op.gl)

    def _t_pool(self, node, op, f: _Flow):
        out = _shape(node)
        if f.axis >= f.ndim - op.dims[0] or out is None or len(out) != f.ndim:
            self._break(f, f"{op.detail} pools over the axis that carries the channels")
            return None
        return f.with_(gl=f.gl and op.gl, shift=False)

    def _t_reduce(self, node, op, f: _Flow):
        dims = {d % f.ndim for d in op.dims}
        if f.axis in dims:
            self._break(f, f"{op.detail} reduces the axis that carries the channels")
            return None
        if op.keepdim:
            return f.with_(shift=False)
        return f.with_(axis=f.axis - sum(d < f.axis for d in dims), ndim=f.ndim - len(dims), shift=False)

    def _t_reshape(self, node, op, f: _Flow):
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        mapped = _map_reshape(in_shape, out_shape, f.axis) if in_shape and out_shape else None
        if mapped is None:
            self._break(f, f"{op.detail} splits or merges the channel axis with leading axes")
            return None
        axis, k = mapped
        pieces = tuple((sid, Piece(p.start, p.stop, p.offset * k, p.inner * k)) for sid, p in f.pieces)
        return f.with_(axis=axis, ndim=len(out_shape), pieces=pieces)

    def _t_permute(self, node, op, f: _Flow):
        probe = torch.empty(tuple(range(2, f.ndim + 2)), device="meta")
        args = node.args[1:]
        try:
            if node.op == "call_method":
                moved = getattr(probe, str(node.target))(*args, **node.kwargs)
            else:
                moved = node.target(probe, *args, **node.kwargs)
        except Exception:
            self._break(f, f"{op.detail} with arguments fxlaws cannot read")
            return None
        return f.with_(axis=list(moved.shape).index(f.axis + 2))

    def _t_split(self, node, op, f: _Flow):
        metas = node.meta.get("tensor_meta")
        if not isinstance(metas, tuple):
            self._break(f, f"{op.detail} with an output fxlaws cannot read")
            return None
        dim = op.axis % f.ndim
        if dim != f.axis:
            return tuple(f for _ in metas)
        outs, lo = [], 0
        for tm in metas:
            hi = lo + tm.shape[dim]
            pieces = []
            for sid, p in f.pieces:
                a, b = max(lo, p.offset), min(hi, p.offset + p.width)
                if a >= b:
                    continue
                if (a - p.offset) % p.inner or (b - p.offset) % p.inner:
                    self._break(f, f"{op.detail} cuts through a channel's positions")
                    return None
                start = p.start + (a - p.offset) // p.inner
                pieces.append((sid, Piece(start, start + (b - a) // p.inner, a - lo, p.inner)))
            outs.append(f.with_(pieces=tuple(pieces)) if pieces else None)
            lo = hi
        return tuple(outs)

    def _t_getitem(self, node, op, f: _Flow):
        if node.target is torch.ops.aten.select.int:  # select(x, dim, i) ≡ x[(:,)*dim, i]
            index = (slice(None),) * (node.args[1] % f.ndim) + (node.args[2],)
        elif node.target is torch.ops.aten.slice.Tensor:  # slice(x, dim, start, end, step)
            dim, start, end, step = (list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1:])[:4]
            index = (slice(None),) * (dim % f.ndim) + (slice(start, end, step),)
        else:
            index = node.args[1]
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            n_ellipsis = f.ndim - sum(1 for i in index if i is not None and i is not Ellipsis)
            pos = index.index(Ellipsis)
            index = index[:pos] + (slice(None),) * n_ellipsis + index[pos + 1:]
        in_axis, out_axis, new_axis = 0, 0, None
        pieces = f.pieces
        for item in index:
            if item is None:
                out_axis += 1
                continue
            if in_axis == f.axis:
                if not isinstance(item, slice) or item.step not in (None, 1) or isinstance(item.start, fx.Node) or isinstance(item.stop, fx.Node):
                    self._break(f, f"indexing {node.name} selects single channels")
                    return None
                length = _shape(node.args[0])[f.axis]
                lo, hi, _ = item.indices(length)
                cut = self._cut(pieces, lo, hi)
                if cut is None:
                    self._break(f, f"indexing {node.name} cuts through a channel's positions")
                    return None
                pieces, new_axis = cut, out_axis
            if isinstance(item, slice):
                out_axis += 1
            elif not isinstance(item, int):
                self._break(f, f"advanced indexing {node.name}")
                return None
            in_axis += 1
        if new_axis is None:
            new_axis = out_axis + (f.axis - in_axis)
        out = _shape(node)
        if out is None:
            self._break(f, f"indexing {node.name} returns a value fxlaws cannot read")
            return None
        if not pieces:
            return None  # the selection holds none of the carried channels
        return f.with_(axis=new_axis, ndim=len(out), pieces=pieces)

    @staticmethod
    def _cut(pieces, lo, hi):
        out = []
        for sid, p in pieces:
            a, b = max(lo, p.offset), min(hi, p.offset + p.width)
            if a >= b:
                continue
            if (a - p.offset) % p.inner or (b - p.offset) % p.inner:
                return None
            start = p.start + (a - p.offset) // p.inner
            out.append((sid, Piece(start, start + (b - a) // p.inner, a - lo, p.inner)))
        return tuple(out)

    def _t_softmax(self, node, op, f: _Flow):
        dim = op.axis % f.ndim if op.axis is not None else None
        if dim == f.axis and len(f.pieces) == 1 and f.pieces[0][1] == Piece(0, _shape(node)[f.axis]):
            # invariant to translations along the channel axis only: a terminal, not a break
            self.spaces[f.pieces[0][0]].terminals.append(Terminal(node.name, "softmax", f.shift, False))
        else:
            self._break(f, f"channels reach {op.detail} on another axis")
        return None

    # multi-input ops -----------------------------------------------------------------------------
    def _t_add(self, node, op, ins):
        a, b = (node.args + (None, None))[:2]
        fa, fb = self.flows.get(a) if isinstance(a, fx.Node) else None, self.flows.get(b) if isinstance(b, fx.Node) else None
        fa, fb = (fa if isinstance(fa, _Flow) else None), (fb if isinstance(fb, _Flow) else None)
        out = _shape(node)
        if fa is not None and fb is not None:
            if fa.same_layout(fb) and _shape(a) == _shape(b) == out and len(ins) == 2:
                self._merge(fa, fb, node)
                return fa.with_(gl=fa.gl and fb.gl, shift=fa.shift and fb.shift)
            for fl in (fa, fb):
                self._break(fl, f"{op.detail} adds channels that do not line up")
            return None
        carried = fa or fb
        other = b if fa is not None else a
        if isinstance(other, (int, float)) and other == 0 and len(ins) == 1:
            return carried
        what = f"residual connection with {other.name}" if isinstance(other, fx.Node) else f"constant {other}"
        for _, fl in ins:
            self._break(fl, f"{op.detail} adds a value that does not scale with the channels ({what})")
        return None

    def _t_mul(self, node, op, ins):
        if len(ins) == 2 and "mul" in op.detail and not node.kwargs:
            product = self._bilinear(node, ins)
            if product is not None:
                return product
        if len(ins) != 1 or node.kwargs.get("rounding_mode") is not None:
            for _, fl in ins:
                self._break(fl, f"channels meet another carried value in {op.detail} ({node.name})")
            return None
        arg, f = ins[0]
        if op.detail in ("neg",) or node.target in ("neg",):
            return f.with_(shift=False)
        is_div = "div" in op.detail
        if is_div and node.args[0] is not arg:
            self._break(f, f"channels divide another value in {op.detail} ({node.name})")
            return None
        other = node.args[1] if node.args[0] is arg else node.args[0]
        if other is arg:  # x * x: degree doubles; x / x: invariant ratio we do not model
            if is_div:
                self._break(f, f"{op.detail} divides the channels by themselves ({node.name})")
                return None
            return f.with_(degree=2 * f.degree, gl=False, shift=False)
        out = _shape(node)
        if M.is_number(other):
            return f.with_(shift=False)
        other_shape = _shape(other)
        if out is None or other_shape is None or out[len(out) - f.ndim + f.axis] != _shape(arg)[f.axis]:
            self._break(f, f"{op.detail} ({node.name}) broadcasts the channel axis")
            return None
        axis = len(out) - f.ndim + f.axis
        k = axis - (len(out) - len(other_shape))
        flat_on_axis = k < 0 or other_shape[k] == 1
        return f.with_(axis=axis, ndim=len(out), gl=f.gl and flat_on_axis, shift=False, gated=True)

    def _bilinear(self, node, ins) -> Optional[_Flow]:
        """a ⊙ b with a, b carrying different spaces on the same positions (ReGLU, bilinear GLU, S2):
        each space's symmetry scales the product by its own λ (the other factor is left alone),
        so the product carries both spaces. Spaces multiplied together must stay separate
        couplings (checked in ``__call__``): scaling both at once would scale the product by λ²."""
        (a, fa), (b, fb) = ins
        out = _shape(node)
        if not (fa.axis == fb.axis and fa.ndim == fb.ndim and fa.degree == fb.degree
                and _shape(a) == _shape(b) == out):
            return None
        spaces_a, spaces_b = {s for s, _ in fa.pieces}, {s for s, _ in fb.pieces}
        if spaces_a & spaces_b:
            return None
        self.products.extend((x, y) for x in spaces_a for y in spaces_b)
        return fa.with_(pieces=fa.pieces + fb.pieces, gl=False, shift=False, gated=True)

    def _t_cat(self, node, op, ins):
        tensors = list(node.args[0])
        out = _shape(node)
        dim = op.axis % len(out)
        flows = [self.flows.get(t) if isinstance(t, fx.Node) else None for t in tensors]
        flows = [fl if isinstance(fl, _Flow) else None for fl in flows]
        carried = [fl for fl in flows if fl is not None]
        axis = carried[0].axis
        if any(fl.axis != axis or fl.ndim != len(out) for fl in carried):
            for fl in carried:
                self._break(fl, f"{op.detail} joins values carrying channels on different axes")
            return None
        if dim != axis:
            if all(fl is not None and fl.same_layout(carried[0]) for fl in flows):
                for fl in carried[1:]:
                    self._merge(carried[0], fl, node)
                return carried[0].with_(gl=all(fl.gl for fl in carried), shift=all(fl.shift for fl in carried))
            for fl in carried:
                self._break(fl, f"{op.detail} joins the channels with values that do not scale along axis {dim}")
            return None
        if len({fl.degree for fl in carried}) > 1:
            for fl in carried:
                self._break(fl, f"{op.detail} joins channels of different homogeneity degrees")
            return None
        pieces, offset = [], 0
        for t, fl in zip(tensors, flows):
            if fl is not None:
                pieces.extend((sid, Piece(p.start, p.stop, p.offset + offset, p.inner)) for sid, p in fl.pieces)
            offset += _shape(t)[dim]
        return carried[0].with_(pieces=tuple(pieces), gl=all(fl.gl for fl in carried),
                                shift=all(fl.shift for fl in carried))

    def _t_output(self, node, op, ins):
        out = node.args[0]
        if isinstance(out, (tuple, list)) and len(out) == 1:  # torch.export graphs return a 1-tuple
            out = out[0]
        single = len(ins) == 1 and out is ins[0][0]
        for arg, fl in ins:
            if fl.axis == fl.ndim - 1 and len(fl.pieces) == 1 and fl.pieces[0][1] == Piece(0, _shape(arg)[fl.axis]):
                self.spaces[fl.pieces[0][0]].terminals.append(Terminal(node.name, "output", fl.shift, single))
            else:
                self._break(fl, f"channels reach the model output ({arg.name})")
        return None
