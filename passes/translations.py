"""Translation pass: N1 laws of every parameter whose translations reach centred normalisations only,
through residual streams (THEORY N1), and T2 laws of those reaching a softmax along its axis only.

A LayerNorm over the last axis removes any translation constant along that axis, and a translation
survives an add with *any* other value (unlike a rescaling). So a residual stream that is read only
by LayerNorms (GPT-2, BERT, ViT, CLIP, Whisper) lets every producer writing into it shift its output
along the feature axis: each output projection's bias and weight columns, each embedding row, each
added position table and class token. This pass finds those producers by one backward sweep:

* ``absorbed[v]``: the axes of value ``v`` along which *any* perturbation constant along the axis
  leaves the loss unchanged to first order (so ``⟨∇L, δ⟩ = 0`` for the parameter directions below).
  A value absorbs axis ``a`` when every use of it does: a centred norm over exactly that (last) axis,
  a softmax along ``a`` (T5's relative position bias added to the scores);
  an add/sub, a value-preserving op, a reshape, permute, expand, slice, a concatenation along another
  axis or a product with a number, whose output absorbs the axis ``a`` lands on. Anything else
  (activations, matmuls, softmax, dropout with p > 0, the model output) absorbs nothing.
* Producers whose output absorbs its channel axis get the laws of their translation directions:
  Linear (and nn.MultiheadAttention's out_proj, applied last) — bias sum and weight column sums (``δW = 1 cᵀ`` shifts the output by ``⟨c, x⟩·1``); conv
  with ``groups == 1`` likewise per input channel and tap (bias only for grouped convs); a norm's
  shift β; an embedding — one sum per row (the same shift of every row, one sum per feature, when the
  absorbed axis is not the features); a parameter read directly (an added position table, a
  class token) — one sum per entry of the other axes. A bias whose output absorbs an axis it is
  broadcast along (not its channel axis) is conserved entry by entry (MLP-Mixer's token-mixing bias).

Parameters that already carry a translation family (the partition's N1/T1/T2) or are tied are skipped.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.fx as fx

from fxlaws.errors import PassOrderError
from fxlaws.laws.builder import LawBuilder
from fxlaws.laws.slots import Slot
from fxlaws.meta import get_op, is_number
from fxlaws.rules import mask_fill_value
from fxlaws.vocabulary import Arith, NormKind, OpKind

from .base import FxlawsPass, PassResult
from .pipeline import AnnotateState
from .spaces import map_reshape, permuted_axes, shape_of
from .transfer import _index_of

__all__ = ["TranslationPass", "absorbed_axes"]

_NONE: frozenset = frozenset()
_SUFFIX = {"N1": "stream", "T2": "softmax"}


class TranslationPass(FxlawsPass[AnnotateState]):
    """Reads the normalised graph and ``state.laws``; adds N1 families (``kind="translation"``) and
    writes ``state.absorbed``."""

    def requires(self, state: AnnotateState) -> None:
        if state.laws is None:
            raise PassOrderError("TranslationPass adds to state.laws: run AttachLawsPass first")

    def call(self, state: AnnotateState) -> PassResult[AnnotateState]:
        laws = state.laws
        absorbed, rows = _sweep(state.graph_module.graph)
        state.absorbed = absorbed
        covered = {p for fam in laws.families if fam.kind == "translation" for p in fam.params}
        before = len(laws.families)
        for node, axes in absorbed.items():
            if axes:
                for slot, channels, group in _sources(node, axes, laws):
                    if laws.canonical(slot).param in covered:
                        continue
                    covered.add(laws.canonical(slot).param)
                    laws.sums(laws.canonical(slot), channels, group, theory=rows[node], label=f"{slot.param}>{_SUFFIX[rows[node]]}",
                              assumptions={"any-loss"}, modules=[get_op(node).module or node.name])
        return PassResult(state, len(laws.families) > before)


def absorbed_axes(graph: fx.Graph) -> dict[fx.Node, frozenset]:
    """For each tensor value, the axes along which every use absorbs translations (one backward sweep)."""
    return _sweep(graph)[0]


def _sweep(graph: fx.Graph) -> tuple[dict[fx.Node, frozenset], dict[fx.Node, str]]:
    """(absorbed axes per value, the THEORY row of what absorbs them: N1 a norm, T2 a softmax)."""
    absorbed: dict[fx.Node, frozenset] = {}
    row: dict[fx.Node, str] = {}
    for node in reversed(graph.nodes):
        shape = shape_of(node)
        users = [u for u in node.users if get_op(u).kind.reads_values]
        if shape is None or not users:
            continue
        axes: Optional[frozenset] = None
        for user in users:
            got = _absorbs(user, node, shape, absorbed, row)
            axes = got if axes is None else axes & got
            if not axes:
                break
        absorbed[node] = axes or _NONE
        if axes:
            first = get_op(users[0])
            row[node] = {OpKind.NORM: "N1", OpKind.SOFTMAX: "T2", OpKind.ATTENTION: "T2"}.get(first.kind) or row.get(
                users[0], "N1")
    return absorbed, row


def _absorbs(user: fx.Node, v: fx.Node, shape, absorbed, row) -> frozenset:
    """The axes of ``v`` along which ``user`` absorbs translations of ``v``."""
    op = get_op(user)
    kind, out_shape = op.kind, shape_of(user)
    if kind is OpKind.NORM:
        last = op.norm is NormKind.LAYER and op.axis == 1 and user.args[0] is v and v not in user.args[1:]
        return frozenset({len(shape) - 1}) if last else _NONE
    if kind is OpKind.SOFTMAX:  # softmax(x + c) = softmax(x) for c constant along its dim
        alone = user.args[0] is v and v not in user.args[1:] and op.axis is not None
        return frozenset({op.axis % len(shape)}) if alone else _NONE
    if kind is OpKind.ATTENTION:  # an additive float mask (a position bias) shifts the scores along the keys
        mask = user.args[3] if len(user.args) > 3 else user.kwargs.get("attn_mask")
        alone = mask is v and v not in user.args[:3] and user.meta.get("tensor_meta") is not None
        return frozenset({len(shape) - 1}) if alone and not _is_bool(v) else _NONE
    out = absorbed.get(user, _NONE)
    if not out or out_shape is None:
        return _NONE
    if kind is OpKind.MASK:  # entries filled with -inf (or the dtype's lowest) drop out of the softmax
        fill = mask_fill_value(user, op)
        keeps = user.args[op.data_arg] is v and is_number(fill) and fill <= -1e30 and row.get(user) == "T2"
        return _right_aligned(shape, out_shape, out) if keeps else _NONE
    if kind is OpKind.ADD or kind is OpKind.REPEAT or (kind is OpKind.IDENTITY and op.allows_mixing):
        return _right_aligned(shape, out_shape, out)
    if kind is OpKind.MUL:
        if op.variant is Arith.NEG or (_other(user, v) is not None and is_number(_other(user, v))
                                       and (op.variant is Arith.MUL or user.args[0] is v)):
            return _right_aligned(shape, out_shape, out)
        return _NONE
    if kind is OpKind.RESHAPE:  # a constant along axis a is constant along every output axis a splits into
        return frozenset(a for a in range(len(shape)) if _covering(shape, out_shape, a) & out)
    if kind is OpKind.PERMUTE:
        axes = permuted_axes(user, len(shape))
        return frozenset(a for a in range(len(shape)) if axes is not None and axes[a] in out)
    if kind is OpKind.GETITEM and user.args[0] is v:
        return _indexed(user, shape, out)
    if kind is OpKind.POSITIONS and user.args[0] is v:  # moved positions keep constants; zero fills do not
        if "flattened" in op.flags:
            return _NONE
        return out - frozenset(op.dims) if "zero-fill" in op.flags else out
    if kind is OpKind.CAT and len(out_shape) == len(shape):
        dim = op.axis % len(out_shape)
        return frozenset(a for a in out if a != dim)
    return _NONE


def _is_bool(node: fx.Node) -> bool:
    tm = node.meta.get("tensor_meta")
    return getattr(tm, "dtype", None) is torch.bool


def _is_integer_index(node: fx.Node) -> bool:
    """An index tensor of positions (int64 / int32), not a mask (bool, or uint8 as masks once were)."""
    return getattr(node.meta.get("tensor_meta"), "dtype", None) in (torch.int64, torch.int32)


def _mha_output(node: fx.Node) -> Optional[str]:
    """The module path when ``node`` is ``out`` of an ``nn.MultiheadAttention`` call (``mha(...)[0]``)."""
    src = node.args[0] if node.args else None
    if len(node.args) == 2 and node.args[1] == 0 and isinstance(src, fx.Node) and get_op(src).kind is OpKind.MHA:
        return get_op(src).module
    return None


def _right_aligned(shape, out_shape, out: frozenset) -> frozenset:
    """Broadcasting: axis a of the input is axis a + (out ndim − in ndim) of the output; a translation
    constant along a stays constant along it however the other axes broadcast."""
    shift = len(out_shape) - len(shape)
    return frozenset(a for a in range(len(shape)) if a + shift in out) if shift >= 0 else _NONE


def _other(user: fx.Node, v: fx.Node):
    args = list(user.args[:2])
    if len(args) != 2 or args.count(v) != 1:
        return None
    return args[1] if args[0] is v else args[0]


def _covering(shape, out_shape, a: int) -> frozenset:
    """The output axes of a reshape that together hold exactly input axis ``a`` (one axis, or the axes
    it is split into); empty when ``a`` is merged with another axis."""
    lo = math.prod(shape[a + 1:])
    hi = lo * shape[a]
    axes, stride = [], 1
    for b in range(len(out_shape) - 1, -1, -1):
        if stride >= lo and stride * out_shape[b] <= hi:
            axes.append(b)
        stride *= out_shape[b]
    exact = axes and math.prod(out_shape[b] for b in axes) == shape[a] and math.prod(out_shape[max(axes) + 1:]) == lo
    return frozenset(axes) if exact else _NONE


def _indexed(user: fx.Node, shape, out: frozenset) -> frozenset:
    """Slices (any range and step) keep a translation constant along the sliced axis; an int drops the
    axis; one tensor index gathers along its axis (a constant along it is constant along every axis
    the index tensor puts in its place: a relative-position table read by an index map)."""
    mapping: dict[int, tuple] = {}
    in_axis = out_axis = 0
    items = _index_of(user, len(shape))
    if sum(isinstance(i, fx.Node) for i in items) > 1:
        return _NONE
    for item in items:
        if item is None:  # a new axis
            out_axis += 1
            continue
        if isinstance(item, slice) and not any(isinstance(x, fx.Node) for x in (item.start, item.stop, item.step)):
            mapping[in_axis] = (out_axis,)
            out_axis += 1
        elif isinstance(item, int):
            mapping[in_axis] = ()
        elif isinstance(item, fx.Node) and _is_integer_index(item):
            k = len(shape_of(item))
            mapping[in_axis] = tuple(range(out_axis, out_axis + k))
            out_axis += k
        else:
            return _NONE
        in_axis += 1
    for a in range(in_axis, len(shape)):
        mapping[a] = (out_axis + a - in_axis,)
    return frozenset(a for a, o in mapping.items() if any(b in out for b in o))


def _sources(node: fx.Node, axes: frozenset, laws: LawBuilder):
    """(slot, channels, group) of the translation directions of ``node``'s parameters, when its output
    absorbs translations: sums of ``slot`` over groups of ``group`` channels."""
    op, shape, shapes = get_op(node), shape_of(node), laws.facts.shapes
    channel_axis = {OpKind.LINEAR: len(shape) - 1, OpKind.CONV: len(shape) - (op.dims or (0,))[0] - 1,
                    OpKind.NORM: len(shape) - 1 if op.norm and op.norm.channel_axis_last else 1}.get(op.kind)
    if channel_axis is not None and channel_axis not in axes:
        # the output absorbs another axis, along which the bias is broadcast: each entry on its own
        # (MLP-Mixer's token-mixing bias, transposed back into a stream normalised over channels)
        if op.bias in shapes and len(shapes[op.bias]) == 1:
            yield Slot.full(op.bias, 0, shape[channel_axis]), shape[channel_axis], 1
    elif op.kind is OpKind.LINEAR and op.weight in shapes:
        yield Slot.full(op.weight, op.w_out_axis, shape[-1]), shape[-1], shape[-1]
        if op.bias is not None:
            yield Slot.full(op.bias, 0, shape[-1]), shape[-1], shape[-1]
    elif op.kind is OpKind.CONV and op.weight in shapes:
        n = shape[channel_axis]
        if op.groups == 1:  # grouped: a weight translation shifts each group's outputs differently
            yield Slot.full(op.weight, 0, n), n, n
        if op.bias is not None:
            yield Slot.full(op.bias, 0, n), n, n
    elif op.kind is OpKind.NORM and op.bias in shapes and len(shapes[op.bias]) == 1:
        yield Slot.full(op.bias, 0, shape[channel_axis]), shape[channel_axis], shape[channel_axis]
    elif op.kind is OpKind.EMBEDDING and op.weight in shapes:
        if len(shape) - 1 in axes:  # one shift per row, along the features
            yield Slot.full(op.weight, 1, shape[-1]), shape[-1], shape[-1]
        elif "row-local-gradients" not in op.flags:  # along another axis: the same shift of every row
            rows = shapes[op.weight][0]
            yield Slot.full(op.weight, 0, rows), rows, rows
    elif op.kind is OpKind.GETITEM and _mha_output(node) is not None and len(shape) - 1 in axes:
        # nn.MultiheadAttention's output: its out_proj is a Linear applied last (THEORY N1 as for a Linear)
        path, d = _mha_output(node), shape[-1]
        for name in (f"{path}.out_proj.weight", f"{path}.out_proj.bias"):
            if name in shapes:
                yield Slot.full(name, 0, d), d, d
    elif op.kind is OpKind.PARAM and str(node.target) in shapes:
        axis = max(axes)  # one axis: translations along two axes share their constant direction
        yield Slot.full(str(node.target), axis, shape[axis]), shape[axis], shape[axis]
