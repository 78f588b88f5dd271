"""Normalise pass: give every fx node a :class:`~fxlaws.meta.CanonicalOp` in ``node.meta["fxlaws"]``.

Reads ``call_module`` targets (leaf torch.nn modules), ``call_function`` / ``call_method`` targets
and ``get_attr`` parameter names; writes ``NodeMeta(op=...)``. Unknown ops become OPAQUE with a
description: they stop every law that reaches them.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fxlaws import meta as M
from fxlaws.meta import CanonicalOp, NodeMeta

__all__ = ["NormalisePass"]

# --- activations: positive-homogeneity degree (None: not homogeneous) ---------------------------
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.PReLU)
_NONHOMOGENEOUS_MODULES = (
    nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.CELU, nn.SELU, nn.Softplus, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.ReLU6, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
    nn.GLU, nn.Threshold, nn.Softshrink, nn.Hardshrink, nn.RReLU,
)
_HOMOGENEOUS_FUNCS = {
    F.relu, torch.relu, F.relu_, torch.relu_, F.leaky_relu, F.leaky_relu_, F.prelu, torch.abs,
}
_NONHOMOGENEOUS_FUNCS = {
    F.gelu, F.silu, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh, F.elu, F.celu, F.selu,
    F.softplus, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.relu6, F.logsigmoid,
    torch.exp, torch.log, torch.sin, torch.cos, torch.sqrt, torch.rsqrt, F.glu,
}
_HOMOGENEOUS_METHODS = {"relu", "relu_", "abs"}
_NONHOMOGENEOUS_METHODS = {"sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "sin", "cos"}

_IDENTITY_METHODS = {"contiguous", "clone", "float", "double", "half", "bfloat16", "to", "type_as", "type"}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten}
_PERMUTE_METHODS = {"permute", "transpose", "t", "swapaxes", "swapdims", "movedim", "mT"}
_PERMUTE_FUNCS = {torch.permute, torch.transpose, torch.t, torch.swapaxes, torch.movedim}
_METADATA_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "get_device"}

_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div,
        operator.neg, torch.neg}

_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
              nn.AdaptiveMaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
              nn.AdaptiveAvgPool3d)
_MAX_POOL_FUNCS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d,
                   F.adaptive_max_pool2d, F.adaptive_max_pool3d}
_AVG_POOL_FUNCS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_CONV_FUNCS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_RMS_NORM = getattr(nn, "RMSNorm", None)


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
        ("max_pool2d.default", F.max_pool2d), ("avg_pool2d.default", F.avg_pool2d),
        ("adaptive_avg_pool2d.default", F.adaptive_avg_pool2d), ("mean.dim", torch.mean), ("sum.dim_IntList", torch.sum),
        ("clone.default", torch.clone), ("alias.default", torch.clone), ("_to_copy.default", torch.clone),
        ("addmm.default", torch.addmm), ("unflatten.int", torch.unflatten), ("contiguous.default", torch.clone),
        ("squeeze.default", torch.squeeze),
    ]
    table = {}
    for name, fn in pairs:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if op is not None:
            table[op] = fn
    return table


_ATEN = _aten_table()


def torch_equivalent(target: Any) -> Any:
    """The torch function an aten overload stands for (or ``target`` itself)."""
    return _ATEN.get(target, target)


def _arg(node: fx.Node, pos: int, name: str, default: Any = None) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def _module_path(node: fx.Node) -> str | None:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        return next(reversed(stack.values()))[0]
    return None


class NormalisePass:
    """Write ``NodeMeta(op=CanonicalOp)`` on every node of a GraphModule.

    Args:
        train: analyse training-mode behaviour (BatchNorm uses batch statistics). With
            ``train=False`` BatchNorm / tracked InstanceNorm are fixed affine maps (THEORY note).
        opaque: module paths kept opaque by capture, with the reason.

    Returns (``__call__``): ``(graph_module, changed)``.
    """

    def __init__(self, train: bool = True, opaque: dict[str, str] | None = None):
        self.train = train
        self.opaque = opaque or {}

    def __call__(self, gm: fx.GraphModule) -> tuple[fx.GraphModule, bool]:
        params = dict(gm.named_parameters(remove_duplicate=False))
        for node in gm.graph.nodes:
            op = self._canonical(gm, node, params)
            node.meta[M.META_KEY] = NodeMeta(op=op)
        return gm, True

    # ------------------------------------------------------------------------------------------
    def _canonical(self, gm: fx.GraphModule, node: fx.Node, params: dict) -> CanonicalOp:
        path = _module_path(node)
        if node.op == "placeholder":
            return CanonicalOp(M.INPUT, detail=f"input {node.target}")
        if node.op == "output":
            return CanonicalOp(M.OUTPUT, detail="model output")
        if node.op == "get_attr":
            return CanonicalOp(M.PARAM, module=path, weight=str(node.target), detail=f"attribute {node.target}")
        if node.op == "call_module":
            return self._module_op(gm.get_submodule(str(node.target)), str(node.target))
        if node.op == "call_function":
            return self._function_op(node, node.target, path, params)
        if node.op == "call_method":
            return self._method_op(node, str(node.target), path)
        return CanonicalOp(M.OPAQUE, module=path, detail=f"{node.op} {node.target}")

    def _module_op(self, m: nn.Module, path: str) -> CanonicalOp:
        name = type(m).__name__
        if path in self.opaque:
            return CanonicalOp(M.OPAQUE, module=path, detail=f"opaque module {path} ({self.opaque[path]})")
        w = f"{path}.weight" if getattr(m, "weight", None) is not None else None
        b = f"{path}.bias" if getattr(m, "bias", None) is not None else None
        if isinstance(m, nn.Linear):
            return CanonicalOp(M.LINEAR, module=path, weight=w, bias=b, detail=f"Linear {path}")
        if type(m) in _CONVS:
            if m.padding_mode != "zeros":
                return CanonicalOp(M.OPAQUE, module=path, detail=f"{name} {path} with padding_mode={m.padding_mode!r}")
            return CanonicalOp(M.CONV, module=path, weight=w, bias=b, groups=m.groups,
                               dims=(_CONVS[type(m)],), detail=f"{name} {path}")
        if isinstance(m, _BATCH_NORMS):
            batch_stats = self.train or not m.track_running_stats
            return CanonicalOp(M.NORM, module=path, weight=w, bias=b, norm="batch" if batch_stats else "affine",
                               centered=True, mode_dependent=m.track_running_stats, detail=f"{name} {path}" + ("" if batch_stats else " (eval mode)"))
        if isinstance(m, _INSTANCE_NORMS):
            batch_stats = self.train or not m.track_running_stats
            return CanonicalOp(M.NORM, module=path, weight=w, bias=b,
                               norm="instance" if batch_stats else "affine", centered=True,
                               mode_dependent=m.track_running_stats, dims=(_pool_dims(name),), detail=f"{name} {path}")
        if isinstance(m, nn.LayerNorm):
            return CanonicalOp(M.NORM, module=path, weight=w, bias=b, norm="layer", centered=True,
                               axis=len(m.normalized_shape), detail=f"LayerNorm {path}")
        if isinstance(m, nn.GroupNorm):
            return CanonicalOp(M.NORM, module=path, weight=w, bias=b, norm="group", centered=True,
                               groups=m.num_groups, detail=f"GroupNorm {path}")
        if _RMS_NORM is not None and isinstance(m, _RMS_NORM):
            return CanonicalOp(M.NORM, module=path, weight=w, norm="rms", centered=False,
                               axis=len(m.normalized_shape), detail=f"RMSNorm {path}")
        if isinstance(m, _HOMOGENEOUS_MODULES):
            return CanonicalOp(M.ACT, module=path, degree=1.0, gl=False, detail=f"{name} {path}")
        if isinstance(m, _NONHOMOGENEOUS_MODULES):
            return CanonicalOp(M.ACT, module=path, degree=None, gl=False, detail=f"{name} {path}")
        if isinstance(m, nn.Identity):
            return CanonicalOp(M.IDENTITY, module=path, detail=f"Identity {path}")
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
            return CanonicalOp(M.IDENTITY, module=path, gl=False, detail=f"{name} {path}")
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            return CanonicalOp(M.RESHAPE, module=path, detail=f"{name} {path}")
        if isinstance(m, _MAX_POOLS):
            return CanonicalOp(M.POOL, module=path, gl=False, dims=(_pool_dims(name),), detail=f"{name} {path}")
        if isinstance(m, _AVG_POOLS):
            return CanonicalOp(M.POOL, module=path, gl=True, dims=(_pool_dims(name),), detail=f"{name} {path}")
        if isinstance(m, nn.MultiheadAttention):
            if not m._qkv_same_embed_dim or m.bias_k is not None:
                return CanonicalOp(M.OPAQUE, module=path, detail=f"MultiheadAttention {path} with separate "
                                   "kdim/vdim or add_bias_kv (not supported)")
            return CanonicalOp(M.MHA, module=path, weight=f"{path}.in_proj_weight",
                               bias=f"{path}.in_proj_bias" if m.in_proj_bias is not None else None,
                               groups=m.num_heads, axis=1 if m.batch_first else 0,
                               flags=frozenset({"add_zero_attn"}) if m.add_zero_attn else frozenset(),
                               detail=f"MultiheadAttention {path}")
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            return CanonicalOp(M.SOFTMAX, module=path, axis=m.dim, detail=f"{name} {path}")
        return CanonicalOp(M.OPAQUE, module=path, detail=f"unsupported module {name} ({path})")

    def _function_op(self, node: fx.Node, fn: Callable, path, params: dict) -> CanonicalOp:
        if fn is getattr(torch.ops.aten.batch_norm, "default", None):
            return self._aten_batch_norm(node, path, params)
        if fn in (torch.ops.aten.select.int, torch.ops.aten.slice.Tensor):  # x[:, 0], x[..., a:b]
            return CanonicalOp(M.GETITEM, module=path, detail=f"{fn.__name__} ({node.name})")
        fn = torch_equivalent(fn)
        name = getattr(fn, "__name__", str(fn))
        if fn is torch.clone:
            return CanonicalOp(M.IDENTITY, module=path, detail=f"{name} ({node.name})")
        if fn is torch.addmm:  # HF Conv1D: addmm(bias, x, weight), weight stored [in, out]
            bn, wn = _param_name(node.args[0], params), _param_name(node.args[2], params)
            if wn is None or bn is None or node.kwargs:
                return CanonicalOp(M.OPAQUE, module=path, detail=f"addmm with computed operands ({node.name})")
            return CanonicalOp(M.LINEAR, module=path, weight=wn, bias=bn, w_out_axis=1, w_in_axis=0,
                               detail=f"addmm with {wn} ({node.name})")
        if fn in (F.linear,):
            w, b = _arg(node, 1, "weight"), _arg(node, 2, "bias")
            wn, bn = _param_name(w, params), _param_name(b, params)
            if wn is None or (b is not None and bn is None):
                return CanonicalOp(M.OPAQUE, module=path, detail=f"F.linear with a computed weight ({node.name})")
            return CanonicalOp(M.LINEAR, module=path, weight=wn, bias=bn, detail=f"F.linear {node.name}")
        if fn in _CONV_FUNCS:
            w, b = _arg(node, 1, "weight"), _arg(node, 2, "bias")
            wn, bn = _param_name(w, params), _param_name(b, params)
            if wn is None or (b is not None and bn is None):
                return CanonicalOp(M.OPAQUE, module=path, detail=f"{name} with a computed weight ({node.name})")
            groups = _arg(node, 6, "groups", 1)
            return CanonicalOp(M.CONV, module=path, weight=wn, bias=bn, groups=groups,
                               dims=(_CONV_FUNCS[fn],), detail=f"{name} {node.name}")
        if fn in (F.layer_norm, F.group_norm, getattr(F, "rms_norm", None)) and fn is not None:
            return self._functional_norm(node, fn, path, params)
        if fn in (operator.matmul, torch.matmul):
            wn = _param_name(node.args[1], params)
            if wn is not None and params[wn].dim() == 2:
                return CanonicalOp(M.LINEAR, module=path, weight=wn, w_out_axis=1, w_in_axis=0,
                                   detail=f"matmul with {wn} ({node.name})")
            return CanonicalOp(M.OPAQUE, module=path, detail=f"matmul of activations ({node.name})")
        if fn in _HOMOGENEOUS_FUNCS:
            return CanonicalOp(M.ACT, module=path, degree=1.0, gl=False, detail=f"{name} ({node.name})")
        if fn in _NONHOMOGENEOUS_FUNCS:
            return CanonicalOp(M.ACT, module=path, degree=None, gl=False, detail=f"{name} ({node.name})")
        if fn in (operator.pow, torch.pow, torch.square):
            exponent = 2 if fn is torch.square else node.args[1]
            if isinstance(exponent, (int, float)) and exponent > 0:
                return CanonicalOp(M.ACT, module=path, degree=float(exponent), gl=exponent == 1,
                                   detail=f"pow {exponent} ({node.name})")
            return CanonicalOp(M.ACT, module=path, degree=None, gl=False, detail=f"pow ({node.name})")
        if fn is F.dropout or fn in (F.dropout1d, F.dropout2d, F.dropout3d):
            return CanonicalOp(M.IDENTITY, module=path, gl=False, detail=f"{name} ({node.name})")
        if fn in _MAX_POOL_FUNCS or fn in _AVG_POOL_FUNCS:
            return CanonicalOp(M.POOL, module=path, gl=fn in _AVG_POOL_FUNCS, dims=(_pool_dims(name),),
                               detail=f"{name} ({node.name})")
        if fn in _RESHAPE_FUNCS:
            return CanonicalOp(M.RESHAPE, module=path, detail=f"{name} ({node.name})")
        if fn in _PERMUTE_FUNCS:
            return CanonicalOp(M.PERMUTE, module=path, detail=name)
        if fn in _ADD:
            return CanonicalOp(M.ADD, module=path, detail=f"{name} ({node.name})")
        if fn in _MUL:
            return CanonicalOp(M.MUL, module=path, detail=name)
        if fn in (torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat)):
            return CanonicalOp(M.CAT, module=path, axis=_arg(node, 1, "dim", 0), detail=f"cat ({node.name})")
        if fn in (torch.split, torch.chunk):
            return CanonicalOp(M.SPLIT, module=path, axis=_arg(node, 2, "dim", 0), detail=f"{name} ({node.name})")
        if fn is operator.getitem:
            return CanonicalOp(M.GETITEM, module=path, detail=f"getitem ({node.name})")
        if fn is getattr:
            if node.args[1] in _METADATA_ATTRS:
                return CanonicalOp(M.SHAPE, module=path, detail=f".{node.args[1]}")
            return CanonicalOp(M.OPAQUE, module=path, detail=f"attribute .{node.args[1]} ({node.name})")
        if fn in (torch.mean, torch.sum):
            return _reduce(node, name, path, 1)
        if fn in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
            return CanonicalOp(M.SOFTMAX, module=path, axis=_arg(node, 1, "dim"), detail=f"{name} ({node.name})")
        return CanonicalOp(M.OPAQUE, module=path, detail=f"unsupported function {name} ({node.name})")

    def _aten_batch_norm(self, node: fx.Node, path, params: dict) -> CanonicalOp:
        """aten.batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)."""
        w, b, running = node.args[1], node.args[2], node.args[3]
        wn, bn = _param_name(w, params), _param_name(b, params)
        if (w is not None and wn is None) or (b is not None and bn is None):
            return CanonicalOp(M.OPAQUE, module=path, detail=f"batch_norm with computed affine parameters ({node.name})")
        batch_stats = self.train or running is None
        return CanonicalOp(M.NORM, module=path, weight=wn, bias=bn, norm="batch" if batch_stats else "affine",
                           centered=True, mode_dependent=running is not None, detail=f"batch_norm ({node.name})")

    def _functional_norm(self, node: fx.Node, fn: Callable, path, params: dict) -> CanonicalOp:
        """F.layer_norm / F.rms_norm / F.group_norm whose affine parameters are module parameters
        (nanoGPT's LayerNorm with optional bias calls F.layer_norm(x, w.shape, w, b, eps))."""
        name = fn.__name__
        if fn is F.group_norm:
            groups, w, b = _arg(node, 1, "num_groups"), _arg(node, 2, "weight"), _arg(node, 3, "bias")
        else:
            w = _arg(node, 2, "weight")
            b = _arg(node, 3, "bias") if fn is F.layer_norm else None
        wn, bn = _param_name(w, params), _param_name(b, params)
        if (w is not None and wn is None) or (b is not None and bn is None):
            return CanonicalOp(M.OPAQUE, module=path, detail=f"{name} with computed affine parameters ({node.name})")
        if fn is F.group_norm:
            if not isinstance(groups, int):
                return CanonicalOp(M.OPAQUE, module=path, detail=f"{name} with unknown groups ({node.name})")
            return CanonicalOp(M.NORM, module=path, weight=wn, bias=bn, norm="group", centered=True, groups=groups,
                               detail=f"{name} ({node.name})")
        shape = _arg(node, 1, "normalized_shape")
        if isinstance(shape, fx.Node):  # e.g. self.weight.shape: its length is the weight's rank
            dims = params[wn].dim() if wn is not None else None
        else:
            dims = len(shape) if isinstance(shape, (tuple, list)) else 1 if isinstance(shape, int) else None
        if dims is None:
            return CanonicalOp(M.OPAQUE, module=path, detail=f"{name} with unknown normalized_shape ({node.name})")
        kind = "layer" if fn is F.layer_norm else "rms"
        return CanonicalOp(M.NORM, module=path, weight=wn, bias=bn, norm=kind, centered=kind == "layer",
                           axis=dims, detail=f"{name} ({node.name})")

    def _method_op(self, node: fx.Node, name: str, path) -> CanonicalOp:
        if name in _HOMOGENEOUS_METHODS:
            return CanonicalOp(M.ACT, module=path, degree=1.0, gl=False, detail=f".{name}() ({node.name})")
        if name in _NONHOMOGENEOUS_METHODS:
            return CanonicalOp(M.ACT, module=path, degree=None, gl=False, detail=f".{name}() ({node.name})")
        if name in _IDENTITY_METHODS:
            return CanonicalOp(M.IDENTITY, module=path, detail=f".{name}()")
        if name in _RESHAPE_METHODS:
            return CanonicalOp(M.RESHAPE, module=path, detail=f".{name}() ({node.name})")
        if name in _PERMUTE_METHODS:
            return CanonicalOp(M.PERMUTE, module=path, detail=name)
        if name in _SHAPE_METHODS:
            return CanonicalOp(M.SHAPE, module=path, detail=f".{name}()")
        if name in ("add", "sub"):
            return CanonicalOp(M.ADD, module=path, detail=f".{name}() ({node.name})")
        if name in ("mul", "div", "neg"):
            return CanonicalOp(M.MUL, module=path, detail=name)
        if name in ("split", "chunk"):
            return CanonicalOp(M.SPLIT, module=path, axis=_arg(node, 2, "dim", 0), detail=f".{name}() ({node.name})")
        if name in ("mean", "sum"):
            return _reduce(node, name, path, 1)
        if name in ("softmax", "log_softmax"):
            return CanonicalOp(M.SOFTMAX, module=path, axis=_arg(node, 1, "dim"), detail=f".{name}() ({node.name})")
        if name == "pow":
            exponent = node.args[1]
            if isinstance(exponent, (int, float)) and exponent > 0:
                return CanonicalOp(M.ACT, module=path, degree=float(exponent), gl=exponent == 1,
                                   detail=f".pow({exponent}) ({node.name})")
        return CanonicalOp(M.OPAQUE, module=path, detail=f"unsupported method .{name}() ({node.name})")


def _reduce(node: fx.Node, name: str, path, pos: int) -> CanonicalOp:
    dims = _arg(node, pos, "dim")
    if dims is None:
        return CanonicalOp(M.OPAQUE, module=path, detail=f"full reduction {name} ({node.name})")
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    keepdim = bool(_arg(node, pos + 1, "keepdim", False))
    return CanonicalOp(M.REDUCE, module=path, dims=dims, keepdim=keepdim, gl=True, detail=f"{name} ({node.name})")


def _pool_dims(name: str) -> int:
    for k in (1, 2, 3):
        if f"{k}d" in name:
            return k
    return 2


def _param_name(arg: Any, params: dict) -> str | None:
    if arg is None:
        return None
    if isinstance(arg, fx.Node) and arg.op == "get_attr" and str(arg.target) in params:
        return str(arg.target)
    return None
