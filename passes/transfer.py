"""The partition pass's transfer rules: what each op kind does to the channels a value carries.

Three tables, keyed by :class:`~fxlaws.vocabulary.OpKind`:

* :data:`SINGLE`: ``rule(walk, node, op, flow) -> Flow | tuple | None`` for a node whose only
  carried input is its first argument. Return the output's flow (the symmetry carries on), None
  after recording a sink / norm / terminal (it is compensated or absorbed), or None after
  ``walk.break_(flow, reason)`` (it is broken). A kind with no entry breaks every flow it reads.
* :data:`JOIN`: ``rule(walk, node, op, ins)`` for ops that combine values (add, mul, cat, output);
  ``ins`` is ``[(input node, flow), ...]``.
* :data:`OPEN`: ``opener(walk, node, op, shape)`` for nodes that start a channel space.

To add a rule: write a function of that form and put it in the table under its kind (and give the
kind its lookup entries in :mod:`fxlaws.rules`); test it on a tiny graph (tests/test_passes.py).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.fx as fx

from fxlaws.laws.slots import Piece
from fxlaws.meta import CanonicalOp, get_op, is_number
from fxlaws.vocabulary import Arith, NormKind, OpKind

from .spaces import Flow, NormSink, Terminal, map_reshape, permuted_axes, shape_of

if TYPE_CHECKING:
    from .partition import Walk

__all__ = ["SINGLE", "JOIN", "OPEN"]


# --- ops with one carried input ------------------------------------------------------------------
def _linear(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    if flow.axis == flow.ndim - 1:
        walk.add_sink(node, op, flow, op.weight, op.w_in_axis, allows_mixing=True)
        return None
    if op.bias is None:
        return flow  # acts on another axis, no bias: linear and channel-wise for the carried axis
    walk.break_(flow, f"{op.detail} adds its bias along an axis that carries other channels")
    return None


def _mha(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    # self-attention on one tensor: its channels feed q, k and v through in_proj's columns
    q, k, v = (list(node.args) + [node.kwargs.get(n) for n in ("query", "key", "value")])[:3]
    if q is k is v and flow.axis == flow.ndim - 1:
        walk.add_sink(node, op, flow, op.weight, 1, allows_mixing=True)
    else:
        walk.break_(flow, f"{op.detail}: channels enter query, key and value differently")
    return None


def _conv(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    channel_axis = flow.ndim - op.dims[0] - 1
    if flow.axis != channel_axis:
        walk.break_(flow, f"{op.detail} mixes the axis that carries the channels")
        return None
    w_shape = tuple(walk.gm.get_parameter(op.weight).shape)
    if op.groups == 1:
        walk.add_sink(node, op, flow, op.weight, 1, allows_mixing=True)
    elif w_shape[1] == 1 and shape_of(node.args[0])[channel_axis] == op.groups:
        # depthwise: input channel c feeds weight rows c*m .. (c+1)*m - 1
        walk.add_sink(node, op, flow, op.weight, 0, allows_mixing=False, scale=w_shape[0] // op.groups)
    else:  # input channel g·width + i feeds column i of block g's rows only (Slot.groups)
        walk.add_sink(node, op, flow, op.weight, 1, allows_mixing=False, groups=op.groups)
    return None


def _averaged_axes(op: CanonicalOp, shape, axis: int) -> tuple[bool, set, int]:
    """(the norm's statistics run along the carried axis as THEORY N1/N2 need, the axes it averages,
    channels per normalisation group)."""
    n = len(shape)
    if op.norm.channel_axis_last:
        averaged = set(range(n - op.axis, n))
        return axis in averaged, averaged, shape[axis]
    averaged = ({0} if op.norm is NormKind.BATCH else set()) | set(range(2, n))  # batch / instance / group
    if op.norm is NormKind.GROUP:
        averaged.add(1)
        return axis == 1 and n >= 2, averaged, shape[1] // op.groups
    return axis == 1 and n >= 2, averaged, 1


def _norm(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    if op.norm is NormKind.AFFINE:
        walk.break_(flow, f"{op.detail} is a fixed affine map (running statistics): no scale invariance")
        return None
    shape = shape_of(node.args[0])
    ok, averaged, group = _averaged_axes(op, shape, flow.axis)
    full = len(flow.pieces) == 1 and flow.pieces[0][1] == Piece(0, shape[flow.axis])
    if not ok or not full:
        walk.break_(flow, f"{op.detail} normalises over axes that do not match the channels it receives")
        return None
    sink = NormSink(node.name, op.module, op, group, translations=flow.translations and op.centered,
                    weight_translations=averaged == {flow.axis})
    for sid in flow.space_ids:
        walk.spaces[sid].norms.append(sink)
    return None


def _act(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    if op.degree is None:
        walk.break_(flow, f"{op.detail} is not positively homogeneous")
        return None
    return flow.with_(degree=flow.degree * op.degree, translations=False,
                      allows_mixing=flow.allows_mixing and op.allows_mixing and op.degree == 1)


def _identity(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    return flow.with_(allows_mixing=flow.allows_mixing and op.allows_mixing,
                      translations=flow.translations and op.allows_mixing)


def _pool(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    out = shape_of(node)
    if flow.axis >= flow.ndim - op.dims[0] or out is None or len(out) != flow.ndim:
        walk.break_(flow, f"{op.detail} pools over the axis that carries the channels")
        return None
    return flow.with_(allows_mixing=flow.allows_mixing and op.allows_mixing, translations=False)


def _reduce(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    dims = {d % flow.ndim for d in op.dims}
    if flow.axis in dims:
        walk.break_(flow, f"{op.detail} reduces the axis that carries the channels")
        return None
    if op.keepdim:
        return flow.with_(translations=False)
    return flow.with_(axis=flow.axis - sum(d < flow.axis for d in dims), ndim=flow.ndim - len(dims),
                      translations=False)


def _reshape(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
    mapped = map_reshape(in_shape, out_shape, flow.axis) if in_shape and out_shape else None
    if mapped is None:
        walk.break_(flow, f"{op.detail} splits or merges the channel axis with leading axes")
        return None
    axis, k = mapped
    pieces = tuple((sid, Piece(p.start, p.stop, p.offset * k, p.inner * k)) for sid, p in flow.pieces)
    return flow.with_(axis=axis, ndim=len(out_shape), pieces=pieces)


def _permute(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    """Where the carried axis goes (:func:`~fxlaws.passes.spaces.permuted_axes`)."""
    axes = permuted_axes(node, flow.ndim)
    if axes is None:
        walk.break_(flow, f"{op.detail} with arguments fxlaws cannot read")
        return None
    return flow.with_(axis=axes[flow.axis])


def _positions(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    """roll / flip / pad along other axes: each channel keeps its values, at moved positions. A zero
    fill is linear and homogeneous (rescaling and mixing cross it) but adds entries no translation
    reaches."""
    if flow.axis in op.dims:
        walk.break_(flow, f"{op.detail} moves values along the axis that carries the channels")
        return None
    return flow.with_(translations=flow.translations and "zero-fill" not in op.flags)


def _cut(pieces, lo: int, hi: int):
    """The pieces' channels inside positions [lo, hi), re-based at lo; None if a channel is cut."""
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


def _split(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    metas = node.meta.get("tensor_meta")
    if not isinstance(metas, tuple):
        walk.break_(flow, f"{op.detail} with an output fxlaws cannot read")
        return None
    dim = op.axis % flow.ndim
    if dim != flow.axis:
        if flow.route is not None:
            walk.break_(flow, f"{op.detail} splits rows routed to experts")
            return None
        return tuple(flow for _ in metas)
    # a producer's own output split along its channels (fused gate/up): each part a space of its own,
    # so the parts may go different ways (the gate through SiLU, the up half on to the product)
    fresh = walk.fresh(flow, node.args[0])
    if fresh is None and flow.route is not None:
        walk.break_(flow, f"{op.detail} splits channels of experts that were used before")
        return None
    outs, lo = [], 0
    for tm in metas:
        hi = lo + tm.shape[dim]
        if fresh is not None:
            outs.append(walk.open_part(fresh, node, lo, hi, flow))
            lo = hi
            continue
        pieces = _cut(flow.pieces, lo, hi)
        if pieces is None:
            walk.break_(flow, f"{op.detail} cuts through a channel's positions")
            return None
        outs.append(flow.with_(pieces=pieces) if pieces else None)
        lo = hi
    return tuple(outs)


def _index_of(node: fx.Node, ndim: int) -> tuple:
    """The indexing a getitem / aten select / aten slice node does, as a Python index tuple with the
    ellipsis expanded."""
    if node.target is torch.ops.aten.select.int:  # select(x, dim, i) ≡ x[(:,)*dim, i]
        index = (slice(None),) * (node.args[1] % ndim) + (node.args[2],)
    elif node.target is torch.ops.aten.slice.Tensor:  # slice(x, dim, start, end, step)
        dim, start, end, step = (list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1:])[:4]
        index = (slice(None),) * (dim % ndim) + (slice(start, end, step),)
    elif node.target is torch.ops.aten.index.Tensor:  # index(x, [i0, None, i2]): None keeps an axis
        index = tuple(slice(None) if i is None else i for i in node.args[1])
    else:
        index = node.args[1]
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        n_ellipsis = ndim - sum(1 for i in index if i is not None and i is not Ellipsis)
        pos = index.index(Ellipsis)
        index = index[:pos] + (slice(None),) * n_ellipsis + index[pos + 1:]
    return index


def _plain_slice(item) -> bool:
    return (isinstance(item, slice) and item.step in (None, 1) and not isinstance(item.start, fx.Node)
            and not isinstance(item.stop, fx.Node))


def _getitem(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    in_axis, out_axis, new_axis, pieces = 0, 0, None, flow.pieces
    for item in _index_of(node, flow.ndim):
        if item is None:
            out_axis += 1
            continue
        if in_axis == flow.axis:
            if not _plain_slice(item):
                walk.break_(flow, f"indexing {node.name} selects single channels")
                return None
            lo, hi, _ = item.indices(shape_of(node.args[0])[flow.axis])
            pieces = _cut(pieces, lo, hi)
            if pieces is None:
                walk.break_(flow, f"indexing {node.name} cuts through a channel's positions")
                return None
            new_axis = out_axis
        if isinstance(item, slice):
            out_axis += 1
        elif _row_gather(item, in_axis, flow, node):  # x[idx] on an axis before the channels: rows gathered
            out_axis += 1
        elif not isinstance(item, int):
            walk.break_(flow, f"advanced indexing {node.name}")
            return None
        in_axis += 1
    out = shape_of(node)
    if out is None:
        walk.break_(flow, f"indexing {node.name} returns a value fxlaws cannot read")
        return None
    if not pieces:
        return None  # the selection holds none of the carried channels
    return flow.with_(axis=out_axis + (flow.axis - in_axis) if new_axis is None else new_axis, ndim=len(out),
                      pieces=pieces)


def _row_gather(item, axis: int, flow: Flow, node: fx.Node) -> bool:
    """``item`` is the one tensor index of ``node``, 1-D, on an axis before the channel axis: whole
    rows are gathered (copied, maybe repeated), each channel stays a channel of its own."""
    tensors = [i for i in _index_of(node, flow.ndim) if isinstance(i, fx.Node)]
    return (isinstance(item, fx.Node) and tensors == [item] and axis < flow.axis
            and len(shape_of(item) or ()) == 1)


def _softmax(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    dim = op.axis % flow.ndim if op.axis is not None else None
    if dim == flow.axis and len(flow.pieces) == 1 and flow.pieces[0][1] == Piece(0, shape_of(node)[flow.axis]):
        # invariant to translations along the channel axis only: a terminal, not a break
        walk.spaces[flow.pieces[0][0]].terminals.append(Terminal(node.name, "softmax", flow.translations, False))
    else:
        walk.break_(flow, f"channels reach {op.detail} on another axis")
    return None


def _stacked_weight(walk: "Walk", node) -> Optional[tuple[str, list[int]]]:
    """``(parameter, where its axes land)`` when the weight operand ``node`` of a grouped matmul is a
    3-D parameter read through transposes / casts (transformers passes ``W.transpose(-2, -1)``)."""
    order = [0, 1, 2]
    while isinstance(node, fx.Node) and node.op != "get_attr":
        if len(node.users) != 1:  # the same transposed weight read twice: a shared parameter
            return None
        op = get_op(node)
        if op.kind is OpKind.PERMUTE:
            moved = permuted_axes(node, 3)
            if moved is None:
                return None
            order = [order[moved[a]] for a in range(3)]  # this node's input axis a lands at moved[a]
        elif not (op.kind is OpKind.IDENTITY and op.allows_mixing):
            return None
        node = node.args[0]
    name = str(node.target) if isinstance(node, fx.Node) else None
    param = walk.params.get(name) if name else None
    return (name, order) if param is not None and param.dim() == 3 else None


def _grouped_operands(walk: "Walk", node) -> Optional[tuple[str, list[int], Any]]:
    """(stacked parameter, its axes' places in the weight operand, the offsets node) of a grouped matmul."""
    args = list(node.args) + [None] * 3
    offs = node.kwargs.get("offs", args[2])
    found = _stacked_weight(walk, args[1])
    if found is None or not isinstance(offs, fx.Node) or node.kwargs.get("bias") is not None:
        return None
    return found[0], found[1], offs


def _grouped_mm(walk: "Walk", node, op: CanonicalOp, flow: Flow):
    """x (S, K) into a grouped matmul: channel k of every row meets row k of its expert's W[e] (K, N).
    Channels of all rows alike (the norm before the experts): a consumer reading axis k of every
    expert. Channels routed by the same offsets (an expert's hidden units): expert e's own slice."""
    found = _grouped_operands(walk, node)
    if found is None or flow.axis != flow.ndim - 1 or flow.ndim != 2:
        walk.break_(flow, f"{op.detail}: a grouped matmul whose weight or rows fxlaws cannot read")
        return None
    param, order, offs = found
    axis_in = order.index(1)  # the parameter axis that lands on the operand's K axis
    if order[0] != 0:
        walk.break_(flow, f"{op.detail}: the stacked weight's expert axis is not its first")
        return None
    if flow.route is None:
        walk.add_sink(node, op, flow, param, axis_in, allows_mixing=True)
    elif flow.route == offs.name:
        walk.add_sink(node, op, flow, param, axis_in, allows_mixing=False, groups=flow.experts)
    else:
        walk.break_(flow, f"{op.detail} groups rows other than the ones its channels were routed by")
    return None


SINGLE: dict[OpKind, Callable] = {
    OpKind.LINEAR: _linear, OpKind.MHA: _mha, OpKind.CONV: _conv, OpKind.NORM: _norm, OpKind.ACT: _act,
    OpKind.IDENTITY: _identity, OpKind.POOL: _pool, OpKind.REDUCE: _reduce, OpKind.RESHAPE: _reshape,
    OpKind.PERMUTE: _permute, OpKind.SPLIT: _split, OpKind.GETITEM: _getitem, OpKind.SOFTMAX: _softmax,
    OpKind.GROUPED_MM: _grouped_mm, OpKind.POSITIONS: _positions,
}


# --- ops that combine values ---------------------------------------------------------------------
def _add(walk: "Walk", node, op: CanonicalOp, ins):
    a, b = (node.args + (None, None))[:2]
    fa, fb = walk.flow(a), walk.flow(b)
    if fa is not None and fb is not None:
        if fa.same_layout(fb) and shape_of(a) == shape_of(b) == shape_of(node) and len(ins) == 2:
            walk.merge(fa, fb, node)
            return fa.with_(allows_mixing=fa.allows_mixing and fb.allows_mixing,
                            translations=fa.translations and fb.translations)
        for flow in (fa, fb):
            walk.break_(flow, f"{op.detail} adds channels that do not line up")
        return None
    carried = fa or fb
    other = b if fa is not None else a
    if isinstance(other, (int, float)) and other == 0 and len(ins) == 1:
        return carried
    what = f"residual connection with {other.name}" if isinstance(other, fx.Node) else f"constant {other}"
    for _, flow in ins:
        walk.break_(flow, f"{op.detail} adds a value that does not scale with the channels ({what})")
    return None


def _mul(walk: "Walk", node, op: CanonicalOp, ins):
    if len(ins) == 2 and op.variant is Arith.MUL and not node.kwargs:
        product = _bilinear(walk, node, ins)
        if product is not None:
            return product
    if len(ins) != 1 or node.kwargs.get("rounding_mode") is not None:
        for _, flow in ins:
            walk.break_(flow, f"channels meet another carried value in {op.detail} ({node.name})")
        return None
    arg, flow = ins[0]
    if op.variant is Arith.NEG:
        return flow.with_(translations=False)
    if op.variant is Arith.DIV and node.args[0] is not arg:
        walk.break_(flow, f"channels divide another value in {op.detail} ({node.name})")
        return None
    other = node.args[1] if node.args[0] is arg else node.args[0]
    if other is arg:  # x * x: degree doubles; x / x: invariant ratio we do not model
        if op.variant is Arith.DIV:
            walk.break_(flow, f"{op.detail} divides the channels by themselves ({node.name})")
            return None
        return flow.with_(degree=2 * flow.degree, allows_mixing=False, translations=False)
    if is_number(other):
        return flow.with_(translations=False)
    if op.variant is Arith.MUL and not _in_place(node) and flow.route is None and flow.experts == 1:
        # (routed expert rows: one γ is shared by every expert's channel, no per-channel consumer)
        out = shape_of(node)
        gain = _channel_gain(walk, other, out)
        if (gain is not None and gain[3] == 0.0 and out is not None and shape_of(arg) == out
                and gain[2] == flow.axis and flow.ndim == len(out)):
            # LayerScale after a producer: γ_j is channel j's consumer (P's row j × λ, γ_j × 1/λ; R1
            # with a diagonal consumer). The channels end here; γ opens its own space (_open_scale).
            walk.add_sink(node, dataclasses.replace(op, weight=gain[0], bias=None), flow, gain[0], gain[1],
                          allows_mixing=False)
            return None
    return _scaled(walk, node, op, arg, flow, other)


def _scaled(walk: "Walk", node, op: CanonicalOp, arg: fx.Node, flow: Flow, other):
    """``x ⊙ t`` with t a tensor the symmetry leaves alone (a gate, S1): channels carry on, gated;
    mixing survives only if t is constant along the channel axis."""
    out, other_shape = shape_of(node), shape_of(other)
    if out is None or other_shape is None or out[len(out) - flow.ndim + flow.axis] != shape_of(arg)[flow.axis]:
        walk.break_(flow, f"{op.detail} ({node.name}) broadcasts the channel axis")
        return None
    axis = len(out) - flow.ndim + flow.axis
    k = axis - (len(out) - len(other_shape))
    flat_on_axis = k < 0 or other_shape[k] == 1
    return flow.with_(axis=axis, ndim=len(out), allows_mixing=flow.allows_mixing and flat_on_axis,
                      translations=False, gated=True)


def _bilinear(walk: "Walk", node, ins) -> Optional[Flow]:
    """a ⊙ b with a, b carrying different spaces on the same positions (ReGLU, bilinear GLU, S2):
    each space's symmetry scales the product by its own λ (the other factor is left alone), so the
    product carries both spaces. Spaces multiplied together must stay separate couplings (checked
    in ``Walk.result``): scaling both at once would scale the product by λ²."""
    (a, fa), (b, fb) = ins
    if not (fa.axis == fb.axis and fa.ndim == fb.ndim and fa.degree == fb.degree
            and shape_of(a) == shape_of(b) == shape_of(node)):
        return None
    if fa.space_ids & fb.space_ids or (fa.route, fa.experts) != (fb.route, fb.experts):
        return None
    walk.products.extend((x, y) for x in fa.space_ids for y in fb.space_ids)
    return fa.with_(pieces=fa.pieces + fb.pieces, allows_mixing=False, translations=False, gated=True)


def _cat(walk: "Walk", node, op: CanonicalOp, ins):
    tensors = list(node.args[0])
    out = shape_of(node)
    dim = op.axis % len(out)
    flows = [walk.flow(t) for t in tensors]
    carried = [f for f in flows if f is not None]
    if any(f.axis != carried[0].axis or f.ndim != len(out) for f in carried):
        for f in carried:
            walk.break_(f, f"{op.detail} joins values carrying channels on different axes")
        return None
    mixing, translations = all(f.allows_mixing for f in carried), all(f.translations for f in carried)
    if dim != carried[0].axis:
        if all(f is not None and f.same_layout(carried[0]) for f in flows):
            for f in carried[1:]:
                walk.merge(carried[0], f, node)
            return carried[0].with_(allows_mixing=mixing, translations=translations)
        for f in carried:
            walk.break_(f, f"{op.detail} joins the channels with values that do not scale along axis {dim}")
        return None
    if len({f.degree for f in carried}) > 1:
        for f in carried:
            walk.break_(f, f"{op.detail} joins channels of different homogeneity degrees")
        return None
    pieces, offset = [], 0
    for t, f in zip(tensors, flows):
        if f is not None:
            pieces.extend((sid, Piece(p.start, p.stop, p.offset + offset, p.inner)) for sid, p in f.pieces)
        offset += shape_of(t)[dim]
    return carried[0].with_(pieces=tuple(pieces), allows_mixing=mixing, translations=translations)


def _output(walk: "Walk", node, op: CanonicalOp, ins):
    out = node.args[0]
    if isinstance(out, (tuple, list)) and len(out) == 1:  # torch.export graphs return a 1-tuple
        out = out[0]
    single = len(ins) == 1 and out is ins[0][0]
    for arg, flow in ins:
        if flow.axis == flow.ndim - 1 and len(flow.pieces) == 1 and flow.pieces[0][1] == Piece(0, shape_of(arg)[flow.axis]):
            walk.spaces[flow.pieces[0][0]].terminals.append(Terminal(node.name, "output", flow.translations, single))
        else:
            walk.break_(flow, f"channels reach the model output ({arg.name})")
    return None


JOIN: dict[OpKind, Callable] = {OpKind.ADD: _add, OpKind.MUL: _mul, OpKind.CAT: _cat, OpKind.OUTPUT: _output}


# --- producers -----------------------------------------------------------------------------------
def _open_linear(walk: "Walk", node, op: CanonicalOp, shape) -> None:
    if op.weight is not None and len(shape) >= 1:
        walk.open_space(node, op, shape, len(shape) - 1, op.w_out_axis, "linear", allows_mixing=True)


def _open_conv(walk: "Walk", node, op: CanonicalOp, shape) -> None:
    if op.weight is not None:
        walk.open_space(node, op, shape, len(shape) - op.dims[0] - 1, 0, "conv", allows_mixing=op.groups == 1)


def _open_mha(walk: "Walk", node, op: CanonicalOp, shape) -> None:
    """nn.MultiheadAttention returns (output, weights): out_proj's rows make the output's channels."""
    metas = node.meta.get("tensor_meta")
    out = tuple(metas[0].shape) if isinstance(metas, tuple) and metas[0] is not None else None
    if out is None:
        return
    proj = dataclasses.replace(op, weight=f"{op.module}.out_proj.weight",
                               bias=f"{op.module}.out_proj.bias" if op.bias else None)
    walk.open_space(node, proj, out, len(out) - 1, 0, "linear", allows_mixing=True)
    walk.flows[node] = (walk.flows[node],) + (None,) * (len(metas) - 1)


def _open_norm(walk: "Walk", node, op: CanonicalOp, shape) -> None:
    """A norm's affine weight (and bias) make per-channel producers (THEORY N3); multi-dim affines
    are element-wise over several axes: no channel space."""
    if op.weight is None or (op.norm.channel_axis_last and op.axis != 1):
        return
    axis = len(shape) - 1 if op.norm.channel_axis_last else 1
    walk.open_space(node, op, shape, axis, 0, "norm", allows_mixing=False)


def _gain(walk: "Walk", node) -> Optional[tuple[str, float]]:
    """``(p, c)`` when ``node`` computes ``p + c`` from parameter ``p`` through dtype casts and
    additions of numbers (Gemma's RMSNorm gain ``1 + w``; plain ``γ`` gives ``c = 0``)."""
    c = 0.0
    while isinstance(node, fx.Node):
        if node.op == "get_attr":
            return (str(node.target), c) if str(node.target) in walk.params else None
        if len(node.users) != 1:  # `g = 1 + w` read twice shares w between two uses: a tied parameter
            return None
        op = get_op(node)
        if op.kind is OpKind.IDENTITY and op.allows_mixing and node.args and isinstance(node.args[0], fx.Node):
            node = node.args[0]
        elif op.kind is OpKind.RESHAPE and node.args and isinstance(node.args[0], fx.Node) and _unit_axes_only(
                shape_of(node.args[0]), shape_of(node)):
            node = node.args[0]  # γ.reshape(1, -1, 1, 1): the same entries, placed on another axis
        elif op.kind is OpKind.ADD and op.variant in (Arith.ADD, Arith.SUB) and len(node.args) == 2 \
                and not node.kwargs:
            a, b = node.args
            if _literal(b) and isinstance(a, fx.Node):
                c, node = c + (b if op.variant is Arith.ADD else -b), a
            elif _literal(a) and isinstance(b, fx.Node) and op.variant is Arith.ADD:
                c, node = c + a, b
            else:
                return None
        else:
            return None
    return None


def _in_place(node: fx.Node) -> bool:
    """``h *= g``, ``h.mul_(g)``, ``out=``: the result aliases its input, which other readers see changed
    too, so the value cannot be treated as a new one (a gain there is not a consumer or a producer)."""
    t = node.target
    if node.kwargs.get("out") is not None or t in (operator.imul, operator.iadd, operator.isub, operator.itruediv):
        return True
    if node.op == "call_method":
        return str(t).endswith("_")
    schema = getattr(t, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


def _unit_axes_only(before, after) -> bool:
    """A reshape that only adds or drops axes of size 1 (the entries keep their order and count)."""
    return before is not None and after is not None and [d for d in before if d != 1] == [d for d in after if d != 1]


def _channel_gain(walk: "Walk", gain: Any, out_shape) -> Optional[tuple[str, int, int, float]]:
    """``(param, its channel axis, the output axis it scales, c)`` when ``gain`` is a parameter
    (``γ`` or ``γ + c``, through casts and unit-axis reshapes) with exactly one axis longer than 1
    that multiplies one axis of ``out_shape`` entry by entry; else None."""
    found = _gain(walk, gain)
    param = walk.params.get(found[0]) if found else None
    g_shape = shape_of(gain) if isinstance(gain, fx.Node) else None
    if param is None or g_shape is None or out_shape is None or len(g_shape) > len(out_shape):
        return None
    long_p = [i for i, d in enumerate(param.shape) if d > 1]
    long_g = [i for i, d in enumerate(g_shape) if d > 1]
    if len(long_p) != 1 or len(long_g) != 1:
        return None
    out_axis = len(out_shape) - len(g_shape) + long_g[0]
    if out_shape[out_axis] != param.shape[long_p[0]]:
        return None
    return found[0], long_p[0], out_axis, found[1]


def _literal(x) -> bool:
    """A Python number written in the graph (not a node carrying one: its value is not known here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _open_scale(walk: "Walk", node, op: CanonicalOp, shape) -> None:
    """``y = v ⊙ γ`` with γ a parameter with one axis longer than 1 that scales one axis of y entry by
    entry (or ``γ + c``, Gemma's ``1 + w``; ``γ`` of shape (C, 1, 1) or reshaped to (1, C, 1, 1) on
    NCHW maps) and v carrying no channels, or channels that ended at γ (a hand-written RMSNorm's
    affine, LayerScale): γ_j scales channel j, a diagonal producer like a norm's affine (THEORY N3)."""
    if op.variant is not Arith.MUL or len(node.args) != 2 or _in_place(node):
        return
    for gamma, value in (node.args, node.args[::-1]):
        found = _channel_gain(walk, gamma, shape)
        if found is not None and isinstance(value, fx.Node) and shape_of(value) == shape and shape[found[2]] > 1:
            param, p_axis, out_axis, constant = found
            scale = dataclasses.replace(op, weight=param, bias=None)
            walk.open_space(node, scale, shape, out_axis, p_axis, "norm", allows_mixing=False, constant=constant)
            return


def _open_grouped_mm(walk: "Walk", node, op: CanonicalOp, shape) -> None:
    """The rows of a grouped matmul's output, expert e's rows made by W[e]: channel (e, n) is the
    stacked parameter's slice of expert e along the axis that lands on the operand's N axis."""
    found = _grouped_operands(walk, node)
    if found is None or len(shape) != 2:
        return
    param, order, offs = found
    experts = walk.params[param].shape[0]
    if order[0] != 0:
        return
    stacked = dataclasses.replace(op, weight=param, bias=None)
    walk.open_space(node, stacked, shape, 1, order.index(2), "linear", allows_mixing=False, experts=experts,
                    route=offs.name)


OPEN: dict[OpKind, Callable[..., Any]] = {
    OpKind.LINEAR: _open_linear, OpKind.CONV: _open_conv, OpKind.MHA: _open_mha, OpKind.NORM: _open_norm,
    OpKind.MUL: _open_scale, OpKind.GROUPED_MM: _open_grouped_mm,
}
