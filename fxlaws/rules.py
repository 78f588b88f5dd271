"""The lookup tables of the op vocabulary: which torch.nn module, function, tensor method or aten
overload is which :class:`~fxlaws.vocabulary.OpKind`, and with which properties.

A *rule* is a function ``rule(ctx: OpContext) -> CanonicalOp``. The normalise pass finds a node's
rule by one table lookup (:func:`rule_for`): user registrations (:mod:`fxlaws.registry`) first, then
the built-in tables below. aten overloads (torch.export graphs) are first mapped to the torch
function with the same arguments (:data:`ATEN`). A node with no rule is OPAQUE: it stops every law.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .meta import CanonicalOp, is_number, shape_of, size_of
from .vocabulary import Arith, NormKind, OpKind

__all__ = ["OpContext", "Rule", "MODULES", "FUNCTIONS", "METHODS", "ATEN", "WRAPPED", "rule_for", "torch_equivalent",
           "activation", "identity", "opaque", "mask_fill_value"]


@dataclass
class OpContext:
    """What a rule reads about one node.

    Attributes:
        node: the fx node.
        params: the graph's parameters by qualified name.
        train: analyse training-mode behaviour (BatchNorm with batch statistics).
        path: the module the node belongs to (its ``call_module`` target or the innermost entry of
            ``nn_module_stack``), or None.
        module: the submodule of a ``call_module`` node, else None.
        target: the node's target, aten overloads mapped to their torch equivalent.
    """

    node: fx.Node
    params: dict
    train: bool
    path: Optional[str]
    module: Optional[nn.Module] = None
    target: Any = None

    @property
    def name(self) -> str:
        """The function's, method's or module class's name, as reasons print it."""
        if self.module is not None:
            return type(self.module).__name__
        t = self.target
        return t if isinstance(t, str) else getattr(t, "__name__", str(t))

    def arg(self, pos: int, name: str, default: Any = None) -> Any:
        """Argument ``name`` (positional index ``pos``) as written in the call.

        fx's ``Node.normalized_arguments`` is not used: it returns None for tensor methods, raises on
        overloaded builtins without argument types (``torch.conv2d``), and costs ~0.3 ms a node.
        """
        if len(self.node.args) > pos:
            return self.node.args[pos]
        return self.node.kwargs.get(name, default)

    def param(self, arg: Any) -> Optional[str]:
        """The qualified name of the parameter ``arg`` reads directly (a ``get_attr`` node), else None."""
        if isinstance(arg, fx.Node) and arg.op == "get_attr" and str(arg.target) in self.params:
            return str(arg.target)
        return None

    def own(self, attr: str) -> Optional[str]:
        """``"<path>.<attr>"`` when the call_module's module has a parameter ``attr``, else None."""
        return f"{self.path}.{attr}" if getattr(self.module, attr, None) is not None else None

    def op(self, kind: OpKind, detail: str, **fields) -> CanonicalOp:
        return CanonicalOp(kind, module=self.path, detail=detail, **fields)

    def where(self) -> str:
        """The op as reasons print it: ``"<name> <path>"`` for modules, ``".<name>() (<node>)"`` for
        methods, ``"<name> (<node>)"`` for functions."""
        if self.module is not None:
            return f"{self.name} {self.path}"
        if self.node.op == "call_method":
            return f".{self.name}() ({self.node.name})"
        return f"{self.name} ({self.node.name})"


Rule = Callable[[OpContext], CanonicalOp]


# --- rule builders (also used by registrations) ----------------------------------------------------
def activation(degree: Optional[float]) -> Rule:
    """An element-wise activation, positively homogeneous of ``degree`` (None: not homogeneous).

    Example: ``activation(1.0)`` for ReLU-like ops (THEORY R1), ``activation(None)`` for GELU.
    """
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(OpKind.ACT, ctx.where(), degree=degree, allows_mixing=False)
    return rule


def identity(allows_mixing: bool = True) -> Rule:
    """A value-preserving op; ``allows_mixing=False``: preserves values per channel but not channel mixing
    (dropout: random per element)."""
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(OpKind.IDENTITY, ctx.where(), allows_mixing=allows_mixing)
    return rule


def opaque(reason: str) -> Rule:
    """An op fxlaws must not look through (no law crosses it)."""
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(OpKind.OPAQUE, f"{reason} ({ctx.path or ctx.node.name})")
    return rule


def _kind(kind: OpKind, method_detail: str = "{call}", fn_detail: str = "{call}", **fields) -> Rule:
    """A rule that only names a kind; details keep the formats reasons have always printed."""
    def rule(ctx: OpContext) -> CanonicalOp:
        fmt = method_detail if ctx.node.op == "call_method" else fn_detail
        detail = fmt.format(call=ctx.where(), name=ctx.name, node=ctx.node.name)
        return ctx.op(kind, detail, **fields)
    return rule


# --- modules -------------------------------------------------------------------------------------
_CONV_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _pool_dims(name: str) -> int:
    for k in (1, 2, 3):
        if f"{k}d" in name:
            return k
    return 2


def _linear_module(ctx: OpContext) -> CanonicalOp:
    return ctx.op(OpKind.LINEAR, f"Linear {ctx.path}", weight=ctx.own("weight"), bias=ctx.own("bias"))


def _conv_module(ctx: OpContext) -> CanonicalOp:
    m = ctx.module
    if type(m) not in _CONV_DIMS:  # a subclass may change what forward computes
        return _unsupported_module(ctx)
    if m.padding_mode != "zeros":
        return ctx.op(OpKind.OPAQUE, f"{ctx.where()} with padding_mode={m.padding_mode!r}")
    return ctx.op(OpKind.CONV, ctx.where(), weight=ctx.own("weight"), bias=ctx.own("bias"), groups=m.groups,
                  dims=(_CONV_DIMS[type(m)],))


def _running_stats_norm(kind: NormKind) -> Rule:
    """BatchNorm / InstanceNorm: batch statistics in train mode (or without running stats), else a
    fixed affine map (THEORY: N1/N2 do not hold in eval mode)."""
    def rule(ctx: OpContext) -> CanonicalOp:
        m = ctx.module
        batch_stats = ctx.train or not m.track_running_stats
        detail = ctx.where()
        if kind is NormKind.BATCH and not batch_stats:
            detail += " (eval mode)"
        extra = {"dims": (_pool_dims(ctx.name),)} if kind is NormKind.INSTANCE else {}
        return ctx.op(OpKind.NORM, detail, weight=ctx.own("weight"), bias=ctx.own("bias"),
                      norm=kind if batch_stats else NormKind.AFFINE, centered=True,
                      mode_dependent=m.track_running_stats, **extra)
    return rule


def _layer_norm_module(ctx: OpContext) -> CanonicalOp:
    return ctx.op(OpKind.NORM, f"LayerNorm {ctx.path}", weight=ctx.own("weight"), bias=ctx.own("bias"),
                  norm=NormKind.LAYER, centered=True, axis=len(ctx.module.normalized_shape))


def _group_norm_module(ctx: OpContext) -> CanonicalOp:
    return ctx.op(OpKind.NORM, f"GroupNorm {ctx.path}", weight=ctx.own("weight"), bias=ctx.own("bias"),
                  norm=NormKind.GROUP, centered=True, groups=ctx.module.num_groups)


def _rms_norm_module(ctx: OpContext) -> CanonicalOp:
    return ctx.op(OpKind.NORM, f"RMSNorm {ctx.path}", weight=ctx.own("weight"), norm=NormKind.RMS, centered=False,
                  axis=len(ctx.module.normalized_shape))


def _dropout_module(ctx: OpContext) -> CanonicalOp:
    """Dropout is the identity at p = 0 or when the analysis is of eval mode; otherwise it multiplies
    by a random mask per element (keeps per-channel rescaling, breaks mixing and translations)."""
    return ctx.op(OpKind.IDENTITY, ctx.where(), allows_mixing=ctx.module.p == 0 or not ctx.train)


def _dropout_fn(ctx: OpContext) -> CanonicalOp:
    p, training = ctx.arg(1, "p", 0.5), ctx.arg(2, "training", True)
    return ctx.op(OpKind.IDENTITY, ctx.where(), allows_mixing=_inert(ctx, p, training))


def _inert(ctx: OpContext, p: Any, training: Any) -> bool:
    """A random op (dropout, stochastic depth) is the identity at p = 0, or with ``training=False``
    when eval mode is analysed. fx records ``self.training`` as it was at trace time, so a
    ``training=False`` traced from an eval-mode model says nothing about training (the default
    analysis)."""
    return (is_number(p) and p == 0) or (training is False and not ctx.train)


def _embedding_module(ctx: OpContext) -> CanonicalOp:
    m = ctx.module
    if m.max_norm is not None:  # renormalises rows of the weight in place during the forward
        return ctx.op(OpKind.OPAQUE, f"Embedding {ctx.path} with max_norm (rewrites its weight in the forward)")
    local = m.padding_idx is not None or m.scale_grad_by_freq
    return ctx.op(OpKind.EMBEDDING, f"Embedding {ctx.path}", weight=ctx.own("weight"),
                  flags=frozenset({"row-local-gradients"}) if local else frozenset())


def _embedding_fn(weight_pos: int) -> Rule:
    """F.embedding(input, weight, ...) and torch.embedding / aten.embedding(weight, input, ...).

    ``flags`` holds "row-local-gradients" when autograd's gradient of the table is not the true one
    beyond each row: the padding row gets none, ``scale_grad_by_freq`` rescales rows. Laws of one
    row stay exact; laws moving all rows together (a common shift) do not."""
    def rule(ctx: OpContext) -> CanonicalOp:
        weight = ctx.arg(weight_pos, "weight")
        wn = ctx.param(weight)
        max_norm = ctx.arg(3, "max_norm") if weight_pos == 1 else None
        if wn is None or max_norm is not None:
            return ctx.op(OpKind.OPAQUE, f"embedding of a computed table or with max_norm ({ctx.node.name})")
        if weight_pos == 1:  # F.embedding(input, weight, padding_idx=None, max_norm, norm_type, scale_grad_by_freq)
            padding, by_freq = ctx.arg(2, "padding_idx"), ctx.arg(5, "scale_grad_by_freq", False)
            local = padding is not None or by_freq
        else:  # torch.embedding / aten.embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False)
            padding, by_freq = ctx.arg(2, "padding_idx", -1), ctx.arg(3, "scale_grad_by_freq", False)
            local = padding != -1 or by_freq
        return ctx.op(OpKind.EMBEDDING, f"embedding {wn} ({ctx.node.name})", weight=wn,
                      flags=frozenset({"row-local-gradients"}) if local else frozenset())
    return rule


def _pool(averages: bool) -> Rule:
    """Max pools are positively homogeneous per channel; average pools are linear (allow mixing)."""
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(OpKind.POOL, ctx.where(), allows_mixing=averages, dims=(_pool_dims(ctx.name),))
    return rule


def _mha_module(ctx: OpContext) -> CanonicalOp:
    m, path = ctx.module, ctx.path
    if not m._qkv_same_embed_dim or m.bias_k is not None:
        return ctx.op(OpKind.OPAQUE, f"MultiheadAttention {path} with separate kdim/vdim or add_bias_kv (not supported)")
    return ctx.op(OpKind.MHA, f"MultiheadAttention {path}", weight=f"{path}.in_proj_weight",
                  bias=f"{path}.in_proj_bias" if m.in_proj_bias is not None else None, groups=m.num_heads,
                  axis=1 if m.batch_first else 0,
                  flags=frozenset({"add_zero_attn"}) if m.add_zero_attn else frozenset())


def _softmax_module(ctx: OpContext) -> CanonicalOp:
    return ctx.op(OpKind.SOFTMAX, ctx.where(), axis=ctx.module.dim)


def _unsupported_module(ctx: OpContext) -> CanonicalOp:
    return ctx.op(OpKind.OPAQUE, f"unsupported module {ctx.name} ({ctx.path})")


_NONHOMOGENEOUS_MODULES = (
    nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.CELU, nn.SELU, nn.Softplus, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.ReLU6, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
    nn.GLU, nn.Threshold, nn.Softshrink, nn.Hardshrink, nn.RReLU,
)

#: torch.nn module class -> rule; looked up along the module's MRO (subclasses share their base's rule).
MODULES: dict[type, Rule] = {
    nn.Linear: _linear_module,
    **{cls: _conv_module for cls in _CONV_DIMS},
    nn.modules.batchnorm._BatchNorm: _running_stats_norm(NormKind.BATCH),
    nn.modules.instancenorm._InstanceNorm: _running_stats_norm(NormKind.INSTANCE),
    nn.LayerNorm: _layer_norm_module,
    nn.GroupNorm: _group_norm_module,
    **({nn.RMSNorm: _rms_norm_module} if hasattr(nn, "RMSNorm") else {}),
    **{cls: activation(1.0) for cls in (nn.ReLU, nn.LeakyReLU, nn.PReLU)},
    **{cls: activation(None) for cls in _NONHOMOGENEOUS_MODULES},
    nn.Identity: identity(),
    **{cls: _dropout_module for cls in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)},
    nn.Embedding: _embedding_module,
    nn.Flatten: _kind(OpKind.RESHAPE),
    nn.Unflatten: _kind(OpKind.RESHAPE),
    **{cls: _pool(averages=False) for cls in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
                                               nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)},
    **{cls: _pool(averages=True) for cls in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                                              nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)},
    nn.MultiheadAttention: _mha_module,
    nn.Softmax: _softmax_module,
    nn.LogSoftmax: _softmax_module,
}


# --- functions -----------------------------------------------------------------------------------
def _params_or_opaque(ctx: OpContext, what: str, weight: Any, bias: Any):
    """(weight name, bias name) of a functional call whose operands are module parameters, or an
    OPAQUE op when one is computed (its symmetry would act on whatever computed it)."""
    wn, bn = ctx.param(weight), ctx.param(bias)
    if (weight is not None and wn is None) or (bias is not None and bn is None):
        return None, ctx.op(OpKind.OPAQUE, f"{what} ({ctx.node.name})")
    return (wn, bn), None


def _addmm(ctx: OpContext) -> CanonicalOp:
    """HF Conv1D: ``addmm(bias, x, weight)`` with the weight stored [in, out]."""
    bn, wn = ctx.param(ctx.node.args[0]), ctx.param(ctx.node.args[2])
    if wn is None or bn is None or ctx.node.kwargs:
        return ctx.op(OpKind.OPAQUE, f"addmm with computed operands ({ctx.node.name})")
    return ctx.op(OpKind.LINEAR, f"addmm with {wn} ({ctx.node.name})", weight=wn, bias=bn, w_out_axis=1, w_in_axis=0,
                  data_arg=1)


def _linear_fn(ctx: OpContext) -> CanonicalOp:
    w, b = ctx.arg(1, "weight"), ctx.arg(2, "bias")
    wn, bn = ctx.param(w), ctx.param(b)
    if wn is None or (b is not None and bn is None):
        return ctx.op(OpKind.OPAQUE, f"F.linear with a computed weight ({ctx.node.name})")
    return ctx.op(OpKind.LINEAR, f"F.linear {ctx.node.name}", weight=wn, bias=bn)


def _conv_fn(dims: int) -> Rule:
    def rule(ctx: OpContext) -> CanonicalOp:
        w, b = ctx.arg(1, "weight"), ctx.arg(2, "bias")
        wn, bn = ctx.param(w), ctx.param(b)
        if wn is None or (b is not None and bn is None):
            return ctx.op(OpKind.OPAQUE, f"{ctx.name} with a computed weight ({ctx.node.name})")
        return ctx.op(OpKind.CONV, f"{ctx.name} {ctx.node.name}", weight=wn, bias=bn, groups=ctx.arg(6, "groups", 1),
                      dims=(dims,))
    return rule


def _batch_norm_aten(ctx: OpContext) -> CanonicalOp:
    """aten.batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)."""
    names, bad = _params_or_opaque(ctx, "batch_norm with computed affine parameters", ctx.node.args[1], ctx.node.args[2])
    if bad is not None:
        return bad
    running = ctx.node.args[3]
    batch_stats = ctx.train or running is None
    return ctx.op(OpKind.NORM, f"batch_norm ({ctx.node.name})", weight=names[0], bias=names[1],
                  norm=NormKind.BATCH if batch_stats else NormKind.AFFINE, centered=True,
                  mode_dependent=running is not None)


def _batch_norm_fn(ctx: OpContext) -> CanonicalOp:
    """F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps): timm's
    BatchNormAct2d and other norm-act modules call it from a traced forward. Like the module, it is
    analysed in training mode (batch statistics) unless ``train=False`` and running stats are given."""
    names, bad = _params_or_opaque(ctx, "batch_norm with computed affine parameters", ctx.arg(3, "weight"),
                                   ctx.arg(4, "bias"))
    if bad is not None:
        return bad
    running = ctx.arg(1, "running_mean")
    batch_stats = ctx.train or running is None
    return ctx.op(OpKind.NORM, f"batch_norm ({ctx.node.name})", weight=names[0], bias=names[1],
                  norm=NormKind.BATCH if batch_stats else NormKind.AFFINE, centered=True,
                  mode_dependent=running is not None)


def _group_norm_fn(ctx: OpContext) -> CanonicalOp:
    names, bad = _params_or_opaque(ctx, "group_norm with computed affine parameters", ctx.arg(2, "weight"),
                                   ctx.arg(3, "bias"))
    if bad is not None:
        return bad
    groups = ctx.arg(1, "num_groups")
    if not isinstance(groups, int):
        return ctx.op(OpKind.OPAQUE, f"group_norm with unknown groups ({ctx.node.name})")
    return ctx.op(OpKind.NORM, f"group_norm ({ctx.node.name})", weight=names[0], bias=names[1], norm=NormKind.GROUP,
                  centered=True, groups=groups)


def _trailing_norm_fn(kind: NormKind) -> Rule:
    """F.layer_norm / F.rms_norm whose affine parameters are module parameters (nanoGPT's LayerNorm
    with optional bias calls ``F.layer_norm(x, w.shape, w, b, eps)``)."""
    def rule(ctx: OpContext) -> CanonicalOp:
        bias = ctx.arg(3, "bias") if kind is NormKind.LAYER else None
        names, bad = _params_or_opaque(ctx, f"{ctx.name} with computed affine parameters", ctx.arg(2, "weight"), bias)
        if bad is not None:
            return bad
        shape = ctx.arg(1, "normalized_shape")
        if isinstance(shape, fx.Node):  # e.g. self.weight.shape: its length is the weight's rank
            dims = ctx.params[names[0]].dim() if names[0] is not None else None
        else:
            dims = len(shape) if isinstance(shape, (tuple, list)) else 1 if isinstance(shape, int) else None
        if dims is None:
            return ctx.op(OpKind.OPAQUE, f"{ctx.name} with unknown normalized_shape ({ctx.node.name})")
        return ctx.op(OpKind.NORM, f"{ctx.name} ({ctx.node.name})", weight=names[0], bias=names[1], norm=kind,
                      centered=kind.centred, axis=dims)
    return rule


def _matmul(ctx: OpContext) -> CanonicalOp:
    """``x @ W`` with W a 2-D parameter is a linear layer (weight stored [in, out]); a product of
    two activations (attention scores) is MATMUL."""
    wn = ctx.param(ctx.node.args[1])
    if wn is not None and ctx.params[wn].dim() == 2:
        return ctx.op(OpKind.LINEAR, f"matmul with {wn} ({ctx.node.name})", weight=wn, w_out_axis=1, w_in_axis=0)
    return ctx.op(OpKind.MATMUL, f"matmul of activations ({ctx.node.name})")


def _sdpa(ctx: OpContext) -> CanonicalOp:
    gqa = bool(ctx.node.kwargs.get("enable_gqa", False))
    return ctx.op(OpKind.ATTENTION, f"scaled_dot_product_attention ({ctx.node.name})",
                  flags=frozenset({"enable_gqa"}) if gqa else frozenset())


def _masked_fill(ctx: OpContext) -> CanonicalOp:
    return ctx.op(OpKind.MASK, ctx.where())


def _where(ctx: OpContext) -> CanonicalOp:
    """``where(cond, x, number)`` / ``where(cond, number, x)``: a masked fill of ``x`` (data_arg 1 / 2)."""
    args = ctx.node.args
    if len(args) == 3 and not ctx.node.kwargs:
        if isinstance(args[1], fx.Node) and is_number(args[2]):
            return ctx.op(OpKind.MASK, ctx.where(), data_arg=1)
        if isinstance(args[2], fx.Node) and is_number(args[1]):
            return ctx.op(OpKind.MASK, ctx.where(), data_arg=2)
    return ctx.op(OpKind.OPAQUE, f"where of two computed values ({ctx.node.name})")


def mask_fill_value(node: fx.Node, op: CanonicalOp) -> Any:
    """The number a MASK node writes (``masked_fill(x, m, v)``, ``where(c, x, v)``, ``where(c, v, x)``)."""
    if op.data_arg == 2:
        return node.args[1]
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("value")


def _pow(ctx: OpContext) -> CanonicalOp:
    exponent = 2 if ctx.target is torch.square else ctx.node.args[1]
    method = ctx.node.op == "call_method"
    if isinstance(exponent, (int, float)) and exponent > 0:
        detail = f".pow({exponent}) ({ctx.node.name})" if method else f"pow {exponent} ({ctx.node.name})"
        return ctx.op(OpKind.ACT, detail, degree=float(exponent), allows_mixing=exponent == 1)
    if method:
        return ctx.op(OpKind.OPAQUE, f"unsupported method .pow() ({ctx.node.name})")
    return ctx.op(OpKind.ACT, f"pow ({ctx.node.name})", degree=None, allows_mixing=False)


def _arith(kind: OpKind, variant: Arith, named: bool = True) -> Rule:
    """add/sub (ADD) and mul/div/neg (MUL); ``named=False`` keeps the bare-name detail MUL nodes print."""
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(kind, ctx.where() if named else ctx.name, variant=variant)
    return rule


def _axis_op(kind: OpKind, pos: int, default: Any) -> Rule:
    """cat (dim at 1), split / chunk (dim at 2), softmax (dim at 1)."""
    def rule(ctx: OpContext) -> CanonicalOp:
        detail = f"cat ({ctx.node.name})" if kind is OpKind.CAT else ctx.where()
        return ctx.op(kind, detail, axis=ctx.arg(pos, "dim", default))
    return rule


def _reduce(ctx: OpContext) -> CanonicalOp:
    dims = ctx.arg(1, "dim")
    if dims is None:
        return ctx.op(OpKind.OPAQUE, f"full reduction {ctx.name} ({ctx.node.name})")
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return ctx.op(OpKind.REDUCE, f"{ctx.name} ({ctx.node.name})", dims=dims, keepdim=bool(ctx.arg(2, "keepdim", False)))


def _getattr(ctx: OpContext) -> CanonicalOp:
    if ctx.node.args[1] in _METADATA_ATTRS:
        return ctx.op(OpKind.SHAPE, f".{ctx.node.args[1]}")
    return ctx.op(OpKind.OPAQUE, f"attribute .{ctx.node.args[1]} ({ctx.node.name})")


def _call(kind: OpKind, axis_at: Optional[int] = None) -> Rule:
    """A kind that reads at most ``dim`` (at position ``axis_at``, default 0)."""
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(kind, ctx.where(), axis=ctx.arg(axis_at, "dim", 0) if axis_at is not None else None)
    return rule


def _positions_of(ctx: OpContext, dims: Any, what: str, **fields) -> CanonicalOp:
    """A POSITIONS op over ``dims`` (ints, or sizes capture recorded); OPAQUE when one is unknown."""
    shape = shape_of(ctx.node.args[0])
    dims = [size_of(d) for d in dims]
    if shape is None or None in dims:
        return ctx.op(OpKind.OPAQUE, f"{what} along axes fxlaws cannot read ({ctx.node.name})")
    return ctx.op(OpKind.POSITIONS, f"{what} ({ctx.node.name})", dims=tuple(sorted({d % len(shape) for d in dims})),
                  **fields)


def _roll(ctx: OpContext) -> CanonicalOp:
    """roll(x, shifts, dims): positions move cyclically along ``dims``; no dims rolls the flattened
    tensor (every axis)."""
    dims = ctx.arg(2, "dims")
    if dims is None or dims == [] or dims == ():  # values move across rows: no axis keeps its constants
        shape = shape_of(ctx.node.args[0])
        return _positions_of(ctx, range(len(shape)) if shape is not None else [None], "roll of the flattened tensor",
                             flags=frozenset({"flattened"}))
    return _positions_of(ctx, dims if isinstance(dims, (list, tuple)) else [dims], "roll")


def _flip(ctx: OpContext) -> CanonicalOp:
    """flip(x, dims) (also ``x.flip(0, 1)``): positions reversed along ``dims``."""
    dims = ctx.node.args[1:] if ctx.node.op == "call_method" and len(ctx.node.args) > 2 else ctx.arg(1, "dims", ())
    return _positions_of(ctx, dims if isinstance(dims, (list, tuple)) else [dims], "flip")


def _pad(constant_nd: bool) -> Rule:
    """F.pad / aten.pad(x, pad, mode, value) and aten.constant_pad_nd(x, pad, value): ``pad`` holds
    (before, after) per axis from the last one back. A zero fill is homogeneous and linear (rescaling
    and mixing laws cross it, translations along the padded axes do not: "zero-fill"); reflect /
    replicate / circular copy values; a non-zero fill value is affine (OPAQUE); negative pads crop."""
    def rule(ctx: OpContext) -> CanonicalOp:
        pad = ctx.arg(1, "pad")
        mode = "constant" if constant_nd else ctx.arg(2, "mode", "constant")
        value = ctx.arg(2 if constant_nd else 3, "value")
        amounts = [size_of(p) for p in pad] if isinstance(pad, (list, tuple)) else [None]
        if None in amounts or not isinstance(mode, str):
            return ctx.op(OpKind.OPAQUE, f"pad by amounts fxlaws cannot read ({ctx.node.name})")
        if mode == "constant" and value not in (None, 0, 0.0):
            return ctx.op(OpKind.OPAQUE, f"pad with value {value} (affine, not homogeneous) ({ctx.node.name})")
        dims = [-1 - i // 2 for i, p in enumerate(amounts) if p != 0]
        fills = mode == "constant" and any(p > 0 for p in amounts)
        return _positions_of(ctx, dims, f"pad ({mode})", flags=frozenset({"zero-fill"}) if fills else frozenset())
    return rule


def _stochastic_depth(ctx: OpContext) -> CanonicalOp:
    """torchvision's ``stochastic_depth(x, p, mode, training)`` (a ``torch.fx.wrap``-ped function):
    the identity at p = 0, or with ``training=False`` when eval mode is analysed (:func:`_inert`); else
    each sample (or the batch) is multiplied by a random 0 or 1/(1-p), which keeps per-channel
    rescaling but not translations (as dropout)."""
    return ctx.op(OpKind.IDENTITY, ctx.where(), allows_mixing=_inert(ctx, ctx.arg(1, "p"), ctx.arg(3, "training", True)))


def _getitem_aten(ctx: OpContext) -> CanonicalOp:  # x[:, 0], x[..., a:b], x[idx] in export graphs
    return ctx.op(OpKind.GETITEM, f"{ctx.target.__name__} ({ctx.node.name})")


def _grouped_mm(ctx: OpContext) -> CanonicalOp:
    """``grouped_mm(x, W, offs)``: rows ``offs[e-1]:offs[e]`` of x times ``W[e]`` (MoE experts, stacked
    3-D weights; transformers' grouped experts call it, or its own fallback op on CPU)."""
    return ctx.op(OpKind.GROUPED_MM, f"grouped_mm ({ctx.node.name})")


#: custom / private ops by schema name (``OpOverload.name()``): they exist only once their library loads.
_NAMED_OPS: dict[str, Rule] = {
    "aten::_grouped_mm": _grouped_mm,
    "transformers::grouped_mm_fallback": _grouped_mm,
}


_METADATA_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}
_pools_fn = {F.max_pool1d: False, F.max_pool2d: False, F.max_pool3d: False, F.adaptive_max_pool1d: False,
             F.adaptive_max_pool2d: False, F.adaptive_max_pool3d: False, F.avg_pool1d: True, F.avg_pool2d: True,
             F.avg_pool3d: True, F.adaptive_avg_pool1d: True, F.adaptive_avg_pool2d: True, F.adaptive_avg_pool3d: True}
_HOMOGENEOUS_FUNCS = (F.relu, torch.relu, F.relu_, torch.relu_, F.leaky_relu, F.leaky_relu_, F.prelu, torch.abs)
_NONHOMOGENEOUS_FUNCS = (
    F.gelu, F.silu, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh, F.elu, F.celu, F.selu, F.softplus, F.mish,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.relu6, F.logsigmoid, torch.exp, torch.log, torch.sin, torch.cos,
    torch.sqrt, torch.rsqrt, F.glu,
)

#: function (torch, torch.nn.functional, operator) -> rule.
FUNCTIONS: dict[Any, Rule] = {
    **{fn: _grouped_mm for fn in (getattr(torch, "_grouped_mm", None), getattr(F, "grouped_mm", None)) if fn},
    torch.clone: _kind(OpKind.IDENTITY),
    torch.addmm: _addmm,
    F.linear: _linear_fn,
    F.conv1d: _conv_fn(1), F.conv2d: _conv_fn(2), F.conv3d: _conv_fn(3),
    F.layer_norm: _trailing_norm_fn(NormKind.LAYER),
    F.group_norm: _group_norm_fn,
    F.batch_norm: _batch_norm_fn,
    **({F.rms_norm: _trailing_norm_fn(NormKind.RMS)} if hasattr(F, "rms_norm") else {}),
    operator.matmul: _matmul, torch.matmul: _matmul,
    **{fn: activation(1.0) for fn in _HOMOGENEOUS_FUNCS},
    **{fn: activation(None) for fn in _NONHOMOGENEOUS_FUNCS},
    operator.pow: _pow, torch.pow: _pow, torch.square: _pow,
    **{fn: _dropout_fn for fn in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d)},
    F.embedding: _embedding_fn(1), torch.embedding: _embedding_fn(0),
    **{fn: _pool(averages) for fn, averages in _pools_fn.items()},
    **{fn: _kind(OpKind.RESHAPE) for fn in (torch.flatten, torch.reshape, torch.squeeze,
                                                              torch.unsqueeze, torch.unflatten)},
    **{fn: _kind(OpKind.PERMUTE, fn_detail="{name}") for fn in (torch.permute, torch.transpose, torch.t,
                                                              torch.swapaxes, torch.movedim)},
    **{fn: _arith(OpKind.ADD, Arith.ADD) for fn in (operator.add, operator.iadd, torch.add)},
    **{fn: _arith(OpKind.ADD, Arith.SUB) for fn in (operator.sub, operator.isub, torch.sub)},
    **{fn: _arith(OpKind.MUL, Arith.MUL, named=False) for fn in (operator.mul, operator.imul, torch.mul)},
    **{fn: _arith(OpKind.MUL, Arith.DIV, named=False) for fn in (operator.truediv, operator.itruediv, torch.div)},
    **{fn: _arith(OpKind.MUL, Arith.NEG, named=False) for fn in (operator.neg, torch.neg)},
    **{fn: _axis_op(OpKind.CAT, 1, 0) for fn in (torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat))},
    **{fn: _axis_op(OpKind.SPLIT, 2, 0) for fn in (torch.split, torch.chunk)},
    operator.getitem: _kind(OpKind.GETITEM, fn_detail="getitem ({node})"),
    getattr: _getattr,
    torch.mean: _reduce, torch.sum: _reduce,
    **{fn: _axis_op(OpKind.SOFTMAX, 1, None) for fn in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax)},
    F.scaled_dot_product_attention: _sdpa,
    torch.repeat_interleave: _call(OpKind.REPEAT),
    torch.unbind: _call(OpKind.UNBIND, 1),
    torch.stack: _call(OpKind.STACK, 1),
    torch.masked_fill: _masked_fill,
    torch.where: _where,
    torch.roll: _roll, torch.flip: _flip, F.pad: _pad(False), torch.constant_pad_nd: _pad(True),
    **{fn: _kind(OpKind.SHAPE) for fn in (torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like)},
}

#: Python functions that libraries hand to ``torch.fx.wrap`` (fx records a call, not its ops), by
#: ``module.qualname``: matched without importing the library.
WRAPPED: dict[str, Rule] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": _stochastic_depth,
}

#: tensor method name -> rule.
METHODS: dict[str, Rule] = {
    **{m: activation(1.0) for m in ("relu", "relu_", "abs")},
    **{m: activation(None) for m in ("sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "sin", "cos")},
    **{m: _kind(OpKind.IDENTITY, method_detail=".{name}()") for m in (
        "contiguous", "clone", "float", "double", "half", "bfloat16", "to", "type_as", "type")},
    **{m: _kind(OpKind.RESHAPE) for m in (
        "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as")},
    **{m: _kind(OpKind.PERMUTE, method_detail="{name}") for m in (
        "permute", "transpose", "t", "swapaxes", "swapdims", "movedim", "mT")},
    **{m: _kind(OpKind.SHAPE, method_detail=".{name}()") for m in (
        "size", "dim", "numel", "ndimension", "nelement", "get_device")},
    "add": _arith(OpKind.ADD, Arith.ADD), "sub": _arith(OpKind.ADD, Arith.SUB),
    "mul": _arith(OpKind.MUL, Arith.MUL, named=False), "div": _arith(OpKind.MUL, Arith.DIV, named=False),
    "neg": _arith(OpKind.MUL, Arith.NEG, named=False),
    "split": _axis_op(OpKind.SPLIT, 2, 0), "chunk": _axis_op(OpKind.SPLIT, 2, 0),
    "mean": _reduce, "sum": _reduce,
    "softmax": _axis_op(OpKind.SOFTMAX, 1, None), "log_softmax": _axis_op(OpKind.SOFTMAX, 1, None),
    "pow": _pow,
    "matmul": _matmul,
    "expand": _call(OpKind.REPEAT), "repeat_interleave": _call(OpKind.REPEAT),
    "unbind": _call(OpKind.UNBIND, 1),
    "masked_fill": _masked_fill,
    "roll": _roll, "flip": _flip,
    **{m: _kind(OpKind.SHAPE, method_detail=".{name}()") for m in ("new_zeros", "new_ones", "new_empty", "new_full")},
}


def _aten_table() -> dict:
    """aten overloads (torch.export graphs) whose arguments match a torch function's, mapped to it."""
    pairs = [
        ("linear.default", F.linear), ("conv1d.default", F.conv1d), ("conv2d.default", F.conv2d),
        ("conv3d.default", F.conv3d), ("relu.default", torch.relu), ("relu_.default", torch.relu),
        ("leaky_relu.default", F.leaky_relu), ("gelu.default", F.gelu), ("silu.default", F.silu),
        ("sigmoid.default", torch.sigmoid), ("tanh.default", torch.tanh), ("abs.default", torch.abs),
        ("add.Tensor", torch.add), ("add_.Tensor", torch.add), ("sub.Tensor", torch.sub), ("mul.Tensor", torch.mul),
        ("div.Tensor", torch.div), ("neg.default", torch.neg), ("pow.Tensor_Scalar", torch.pow),
        ("view.default", torch.reshape), ("reshape.default", torch.reshape), ("_unsafe_view.default", torch.reshape),
        ("unsqueeze.default", torch.unsqueeze), ("squeeze.dim", torch.squeeze), ("flatten.using_ints", torch.flatten),
        ("permute.default", torch.permute), ("transpose.int", torch.transpose), ("t.default", torch.t),
        ("cat.default", torch.cat), ("split.Tensor", torch.split), ("chunk.default", torch.chunk),
        ("unbind.int", torch.unbind), ("repeat_interleave.self_int", torch.repeat_interleave),
        ("softmax.int", torch.softmax), ("_softmax.default", torch.softmax), ("log_softmax.int", torch.log_softmax),
        ("_log_softmax.default", torch.log_softmax), ("matmul.default", torch.matmul),
        ("scaled_dot_product_attention.default", F.scaled_dot_product_attention),
        ("layer_norm.default", F.layer_norm), ("group_norm.default", F.group_norm), ("dropout.default", F.dropout),
        ("rms_norm.default", getattr(F, "rms_norm", None)),
        ("max_pool2d.default", F.max_pool2d), ("avg_pool2d.default", F.avg_pool2d),
        ("adaptive_avg_pool2d.default", F.adaptive_avg_pool2d), ("mean.dim", torch.mean), ("sum.dim_IntList", torch.sum),
        ("clone.default", torch.clone), ("alias.default", torch.clone), ("_to_copy.default", torch.clone),
        ("addmm.default", torch.addmm), ("unflatten.int", torch.unflatten), ("contiguous.default", torch.clone),
        ("squeeze.default", torch.squeeze), ("to.dtype", torch.clone), ("type_as.default", torch.clone), ("to.dtype_layout", torch.clone),
        ("embedding.default", torch.embedding), ("where.ScalarOther", torch.where), ("where.ScalarSelf", torch.where),
        ("where.Scalar", torch.where),
    ]
    table = {}
    for name, fn in pairs:
        if fn is None:  # F.rms_norm is torch >= 2.4
            continue
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if op is not None:
            table[op] = fn
    return table


#: aten overload -> the torch function with the same arguments (whose FUNCTIONS rule then applies).
ATEN: dict = _aten_table()

#: aten overloads with a rule of their own (no torch-function twin with the same arguments).
_ATEN_RULES: dict = {op: rule for op, rule in (
    (getattr(torch.ops.aten.batch_norm, "default", None), _batch_norm_aten),
    (torch.ops.aten.select.int, _getitem_aten),
    (torch.ops.aten.slice.Tensor, _getitem_aten),
    (torch.ops.aten.index.Tensor, _getitem_aten),
    (getattr(torch.ops.aten.expand, "default", None), _call(OpKind.REPEAT)),
    (torch.ops.aten.roll.default, _roll), (torch.ops.aten.flip.default, _flip),
    (torch.ops.aten.pad.default, _pad(False)), (torch.ops.aten.constant_pad_nd.default, _pad(True)),
    *((getattr(torch.ops.aten, name).default, _kind(OpKind.SHAPE)) for name in (
        "new_zeros", "new_ones", "new_empty", "new_full", "zeros_like", "ones_like", "empty_like", "full_like")),
    # export's dtype/device checks: read a tensor's metadata only, return nothing
    (getattr(getattr(torch.ops.aten, "_assert_tensor_metadata", None), "default", None), _kind(OpKind.SHAPE)),
) if op is not None}


def torch_equivalent(target: Any) -> Any:
    """The torch function an aten overload stands for (or ``target`` itself)."""
    return ATEN.get(target, target)


def rule_for(node: fx.Node, module: Optional[nn.Module] = None) -> tuple[Optional[Rule], Any]:
    """The rule for a call node and the target it was found under (aten mapped to torch), by table
    lookup: user registrations first (:mod:`fxlaws.registry`), then the built-in tables.

    Returns ``(None, target)`` when no table knows the op (the node is OPAQUE).
    """
    from .registry import user_rule

    if node.op == "call_module":
        for cls in type(module).__mro__:
            rule = user_rule(cls) or MODULES.get(cls)
            if rule is not None:
                return rule, node.target
        return None, node.target
    if node.op == "call_method":
        return METHODS.get(str(node.target)), str(node.target)
    target = node.target
    own = user_rule(getattr(target, "__fxlaws_function__", target))
    if own is not None:
        return own, target
    if target in _ATEN_RULES:
        return _ATEN_RULES[target], target
    if isinstance(target, torch._ops.OpOverload) and target.name() in _NAMED_OPS:
        return _NAMED_OPS[target.name()], target
    target = torch_equivalent(target)
    rule = FUNCTIONS.get(target)
    if rule is None and callable(target):
        rule = WRAPPED.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    return rule, target
