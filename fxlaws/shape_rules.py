"""Output shapes of the commonest layers without running their meta kernels.

Shape propagation on the meta device runs every op's meta kernel; for layer/batch norms, Linear,
GELU and SDPA those are Python decompositions costing 0.5–2.5 ms a call (convolutions, pooling and
broadcasting arithmetic 0.2–0.4 ms), most of annotate's time on a ViT or ConvNeXt (ViT-B/16: 0.17 s
of shape propagation against a 0.1 s fx trace). Here the output of those ops is written down directly, **only** where every precondition the kernel would check holds
(exact module types, matching feature sizes and dtypes, every input on meta); anything else returns
None and the kernel runs, so a bad input still fails with the kernel's own error.

:func:`output_like` reads a node and its fetched arguments; it writes nothing.
"""

from __future__ import annotations

import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["output_like"]

# exact types: a subclass may override forward
_ELEMENTWISE_MODULES = {nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                        nn.Mish, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout}  # (DropoutNd check their dims)
_ELEMENTWISE_FUNCTIONS = {F.relu, F.relu6, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu,
                          F.dropout, torch.relu, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh}
_BATCH_NORMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}
_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2}
_BINARY = {operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub}
_BINARY_METHODS = {"add", "mul", "sub"}


def _conv(mod: nn.Module, x: Tensor, dims: int) -> Optional[Tensor]:
    """``floor((L + 2p − d(k − 1) − 1) / s) + 1`` per spatial dim; zero padding given as numbers only."""
    w, b = mod.weight, mod.bias
    if (mod.padding_mode != "zeros" or isinstance(mod.padding, str) or x.dim() != dims + 2 or w.dim() != dims + 2
            or x.shape[1] != w.shape[1] * mod.groups or w.shape[0] % mod.groups or not _same_dtype(x, w, b)
            or (b is not None and tuple(b.shape) != (w.shape[0],))):
        return None
    spatial = []
    for size, k, s, p, d in zip(x.shape[2:], w.shape[2:], mod.stride, mod.padding, mod.dilation):
        out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        if out < 1:
            return None  # the kernel's own error says the input is too small
        spatial.append(out)
    return _like(x, (x.shape[0], w.shape[0], *spatial))


def _binary(a: Any, b: Any) -> Optional[Tensor]:
    """Broadcast shape and promoted dtype of ``a ∘ b`` (tensors on meta, or a tensor and a number)."""
    tensors = [t for t in (a, b) if isinstance(t, Tensor)]
    if not tensors or not all(_meta(t) and t.dtype != torch.bool for t in tensors) or not all(
            isinstance(t, (Tensor, int, float)) and not isinstance(t, bool) for t in (a, b)):
        return None
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError:
        return None
    return torch.empty(shape, dtype=torch.result_type(a, b), device="meta")


def _meta(t: Any) -> bool:
    return isinstance(t, Tensor) and t.is_meta


def _like(x: Tensor, shape=None) -> Tensor:
    return torch.empty(x.shape if shape is None else shape, dtype=x.dtype, device="meta")


def _same_dtype(x: Tensor, *params: Optional[Tensor]) -> bool:
    return all(p is None or (_meta(p) and p.dtype == x.dtype) for p in params)


def _bind(names: tuple, args: tuple, kwargs: dict) -> Optional[dict]:
    """Arguments by name; None if there are more positionals than names, a keyword outside them, or
    one given twice (the kernel raises there)."""
    if len(args) > len(names) or set(kwargs) - set(names) or set(kwargs) & set(names[:len(args)]):
        return None
    return dict(zip(names, args), **kwargs)


def _linear(x: Tensor, w: Any, b: Any) -> Optional[Tensor]:
    """``x @ wᵀ + b``, sizes read from the weight itself (not from attributes that may be stale)."""
    if (_meta(w) and w.dim() == 2 and x.dim() >= 1 and x.shape[-1] == w.shape[1] and _same_dtype(x, w, b)
            and (b is None or tuple(b.shape) == (w.shape[0],))):
        return _like(x, (*x.shape[:-1], w.shape[0]))
    return None


def _module(mod: nn.Module, args: tuple, kwargs: dict) -> Optional[Tensor]:
    kind = type(mod)
    if kwargs or len(args) != 1 or not _meta(args[0]) or not args[0].is_floating_point():
        return None
    x = args[0]
    if kind in _ELEMENTWISE_MODULES:
        return _like(x)
    if kind is nn.Linear:
        return _linear(x, mod.weight, mod.bias)
    if kind is nn.LayerNorm or kind is nn.RMSNorm:
        return _layer_norm(x, mod.normalized_shape, mod.weight, getattr(mod, "bias", None))
    if kind in _BATCH_NORMS:
        # eval mode with running statistics (shape propagation runs in eval); batch statistics need
        # more than one value per channel, which the kernel checks
        if (not mod.training and mod.running_mean is not None and x.dim() in _BATCH_NORMS[kind]
                and x.shape[1] == mod.num_features and _same_dtype(x, mod.weight, mod.bias)
                and _same_dtype(x, mod.running_mean, mod.running_var)
                and (mod.weight is None or tuple(mod.weight.shape) == (x.shape[1],))):
            return _like(x)
        return None
    if kind is nn.GroupNorm:
        if (x.dim() >= 2 and x.shape[1] == mod.num_channels and x.shape[0] > 0
                and x.numel() // (x.shape[0] * mod.num_groups) > 1 and _same_dtype(x, mod.weight, mod.bias)):
            return _like(x)
        return None
    if kind in _CONVS:
        return _conv(mod, x, _CONVS[kind])
    if kind is nn.AdaptiveAvgPool2d and x.dim() == 4:
        size = tuple(mod.output_size) if isinstance(mod.output_size, (tuple, list)) else (mod.output_size,) * 2
        if len(size) == 2 and all(o is None or (isinstance(o, int) and o > 0) for o in size):
            return _like(x, (*x.shape[:2], *(x.shape[2 + i] if o is None else o for i, o in enumerate(size))))
    return None


def _layer_norm(x: Tensor, shape: Any, weight: Any, bias: Any) -> Optional[Tensor]:
    """Layer/RMS norm over the trailing ``shape`` (non-empty), affine tensors of that shape."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else ()
    if (shape and all(isinstance(d, int) for d in shape) and x.dim() >= len(shape)
            and tuple(x.shape[x.dim() - len(shape):]) == shape and _same_dtype(x, weight, bias)
            and all(t is None or tuple(t.shape) == shape for t in (weight, bias))):
        return _like(x)
    return None


def _function(fn: Any, args: tuple, kwargs: dict) -> Optional[Tensor]:
    if fn in _BINARY:
        return _binary(*args) if len(args) == 2 and not kwargs else None
    if not args or not _meta(args[0]) or not args[0].is_floating_point():
        return None
    x = args[0]
    if fn in _ELEMENTWISE_FUNCTIONS:
        if len(args) == 1 and not kwargs:
            return _like(x)
        if fn is F.gelu and len(args) == 1 and set(kwargs) == {"approximate"} and kwargs["approximate"] in ("none", "tanh"):
            return _like(x)
        if fn is F.dropout:
            bound = _bind(("input", "p", "training", "inplace"), args, kwargs)
            p = bound.get("p", 0.5) if bound else None
            if isinstance(p, (int, float)) and 0 <= p <= 1 and all(
                    isinstance(bound.get(k, False), bool) for k in ("training", "inplace")):
                return _like(x)
        return None
    if fn is F.layer_norm:
        bound = _bind(("input", "normalized_shape", "weight", "bias", "eps"), args, kwargs)
        return None if bound is None else _layer_norm(x, bound.get("normalized_shape"), bound.get("weight"),
                                                      bound.get("bias"))
    if fn is F.linear:
        bound = _bind(("input", "weight", "bias"), args, kwargs)
        return None if bound is None else _linear(x, bound.get("weight"), bound.get("bias"))
    if fn is F.scaled_dot_product_attention:
        return _sdpa(args, kwargs)
    return None


def _sdpa(args: tuple, kwargs: dict) -> Optional[Tensor]:
    """Without a mask or GQA only: ``(…, L, E) × (…, S, E) × (…, S, Ev) → (…, L, Ev)``."""
    bound = _bind(("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"), args, kwargs)
    if bound is None or bound.get("attn_mask") is not None or bound.get("enable_gqa"):
        return None
    p = bound.get("dropout_p", 0.0)
    if not (isinstance(p, (int, float)) and 0 <= p <= 1 and isinstance(bound.get("is_causal", False), bool)):
        return None
    q, k, v = bound.get("query"), bound.get("key"), bound.get("value")
    if not (_meta(q) and _meta(k) and _meta(v)) or not (q.dtype == k.dtype == v.dtype) or q.dim() < 2:
        return None
    if not (q.dim() == k.dim() == v.dim() and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
            and k.shape[-2] == v.shape[-2] and q.shape[-1] == k.shape[-1]):
        return None
    return _like(q, (*q.shape[:-1], v.shape[-1]))


def output_like(gm: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict,
                submodules: Optional[dict] = None) -> Optional[Tensor]:
    """A meta tensor with the shape and dtype ``node``'s op would return on ``args``/``kwargs``, or
    None where no rule here applies (then the op's own meta kernel must run): modules with hooks,
    any argument form the rules do not know, any error while checking. ``submodules``: ``gm``'s
    modules by qualified name, when the caller has them (an ``fx.Interpreter`` does)."""
    try:
        if node.op == "call_module":
            mod = submodules[node.target] if submodules is not None else gm.get_submodule(node.target)
            if _hooked(mod):
                return None  # a hook may change the output (capture keeps hooked modules as leaves)
            return _module(mod, args, kwargs)
        if node.op == "call_function":
            return _function(node.target, args, kwargs)
        if node.op == "call_method" and node.target in _BINARY_METHODS and len(args) == 2 and not kwargs:
            return _binary(*args) if isinstance(args[0], Tensor) else None
    except Exception:  # noqa: BLE001 - any doubt: the kernel decides (and raises its own error)
        return None
    return None


def _hooked(mod: nn.Module) -> bool:
    from torch.nn.modules import module as m

    return bool(mod._forward_hooks or mod._forward_pre_hooks or m._global_forward_hooks
                or m._global_forward_pre_hooks)
