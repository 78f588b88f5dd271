"""Teach fxlaws a module or function it does not know.

Two ways, both checked by ``fxlaws.soundness`` like every built-in rule (a wrong registration gives
laws that are not conserved, and soundness reports them):

* **declare what it is**, with a rule of the op vocabulary: ``register_module(FusedRMSNorm,
  rms_norm(weight="weight"))``, ``register_function(MyReLUFunction, activation(1.0))``, or a rule of
  one's own (a function ``rule(ctx: OpContext) -> CanonicalOp``, see :mod:`fxlaws.rules`);
* **say what it computes**, with a reference written in torch ops that fxlaws traces in its place:
  ``register_function(SwiGLUFunction, decompose=lambda gate, up: F.silu(gate) * up)``; for a module,
  ``decompose(module, *args, **kwargs)``.

Targets: an ``nn.Module`` subclass (subclasses share the registration), a custom
``torch.autograd.Function`` subclass, a ``torch.library`` custom op (``torch.ops.ns.op`` or one of
its overloads), or any function that appears as one node in the graph. Registrations are global
for the process; :func:`unregister` removes one.

Front ends: fx honours every registration (registered modules become leaves, decompositions are
traced in their place). torch.export traces through modules, so a module registration applies only
to the fx front ends; a decomposition of an autograd.Function or a custom op applies to both.

Example (README "Teach fxlaws your own ops" has the full story, with soundness):
    >>> import torch.nn.functional as F
    >>> from fxlaws.registry import register_function, unregister
    >>> class SwiGLU(torch.autograd.Function):  # a fused kernel with a hand-written backward
    ...     ...
    >>> register_function(SwiGLU, decompose=lambda gate, up: F.silu(gate) * up)
    >>> unregister(SwiGLU)
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from torch import nn

from .meta import CanonicalOp
from .rules import OpContext, Rule, activation, identity, opaque
from .vocabulary import NormKind, OpKind

__all__ = ["register_module", "register_function", "unregister", "activation", "identity", "opaque", "linear",
           "rms_norm", "layer_norm", "user_rule", "decomposition", "is_registered_leaf"]

_RULES: dict[Any, Rule] = {}
_DECOMPOSITIONS: dict[Any, Callable] = {}


def _key(target: Any) -> Any:
    """Custom ops register under their packet (``torch.ops.ns.op``): every overload shares it."""
    return getattr(target, "overloadpacket", target)


def _check(target: Any, rule: Optional[Rule], decompose: Optional[Callable]) -> None:
    if (rule is None) == (decompose is None):
        raise ValueError(f"register {getattr(target, '__name__', target)!r} with exactly one of a rule "
                         "(what it is, e.g. fxlaws.registry.activation(1.0)) or decompose= (what it computes)")
    if rule is not None and not callable(rule):
        raise TypeError(f"rule must be a function OpContext -> CanonicalOp (e.g. fxlaws.registry.rms_norm()), "
                        f"got {type(rule).__name__}")


def register_module(cls: type, rule: Optional[Rule] = None, *, decompose: Optional[Callable] = None) -> None:
    """Declare what a module class computes.

    Args:
        cls: an ``nn.Module`` subclass; its instances (and its subclasses') get the registration.
        rule: what it is (:func:`rms_norm`, :func:`layer_norm`, :func:`linear`, :func:`activation`,
            :func:`identity`, :func:`opaque`, or a rule of one's own). The module becomes a leaf of
            the fx trace, described by the rule.
        decompose: ``decompose(module, *args, **kwargs)`` in torch ops, traced in place of its forward.

    Raises:
        TypeError: ``cls`` is not an ``nn.Module`` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_module takes an nn.Module subclass, got {cls!r}; use register_function for "
                        "functions, autograd.Function subclasses and custom ops")
    _check(cls, rule, decompose)
    (_RULES if rule is not None else _DECOMPOSITIONS)[cls] = rule if rule is not None else decompose


def register_function(fn: Any, rule: Optional[Rule] = None, *, decompose: Optional[Callable] = None) -> None:
    """Declare what a function, custom ``autograd.Function`` or ``torch.library`` op computes.

    Args:
        fn: the callable as it appears in the model (the Function class itself, ``torch.ops.ns.op``).
        rule: what it is (e.g. :func:`activation`); see :func:`register_module`.
        decompose: a reference in torch ops with the same signature, traced in its place. For an
            ``autograd.Function`` this also states that its backward is the derivative of its forward.
    """
    if isinstance(fn, type) and issubclass(fn, nn.Module):
        raise TypeError(f"{fn.__name__} is a module class: use register_module")
    _check(fn, rule, decompose)
    (_RULES if rule is not None else _DECOMPOSITIONS)[_key(fn)] = rule if rule is not None else decompose


def unregister(target: Any) -> None:
    """Remove a registration (no error if there is none)."""
    _RULES.pop(_key(target), None)
    _DECOMPOSITIONS.pop(_key(target), None)


def user_rule(target: Any) -> Optional[Rule]:
    """The registered rule for a module class or call target, if any."""
    if not _RULES:
        return None
    try:
        return _RULES.get(_key(target))
    except TypeError:  # unhashable target
        return None


def decomposition(target: Any) -> Optional[Callable]:
    """The registered reference implementation of a module class or call target, if any."""
    if not _DECOMPOSITIONS:
        return None
    try:
        key = _key(target)
        if isinstance(target, type) and issubclass(target, nn.Module):
            return next((_DECOMPOSITIONS[c] for c in target.__mro__ if c in _DECOMPOSITIONS), None)
        return _DECOMPOSITIONS.get(key)
    except TypeError:
        return None


def is_registered_leaf(module: nn.Module) -> bool:
    """The module's class (or a base) has a registered rule: the fx tracer keeps it as one node."""
    return bool(_RULES) and any(c in _RULES for c in type(module).__mro__)


# --- declarations for module classes -------------------------------------------------------------------
def linear(weight: str = "weight", bias: Optional[str] = "bias") -> Rule:
    """A module computing ``x @ W.T + b`` on the last axis, ``W`` = attribute ``weight`` ([out, in])."""
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(OpKind.LINEAR, f"{ctx.name} {ctx.path} (registered linear)", weight=ctx.own(weight),
                      bias=ctx.own(bias) if bias else None)
    return rule


def _trailing_norm(kind: NormKind, weight: Optional[str], bias: Optional[str], dims: int) -> Rule:
    def rule(ctx: OpContext) -> CanonicalOp:
        return ctx.op(OpKind.NORM, f"{ctx.name} {ctx.path} (registered {kind}-norm)",
                      weight=ctx.own(weight) if weight else None, bias=ctx.own(bias) if bias else None, norm=kind,
                      centered=kind.centred, axis=dims)
    return rule


def rms_norm(weight: Optional[str] = "weight", dims: int = 1) -> Rule:
    """A module computing ``x / rms(x) * w`` over the last ``dims`` axes (w: attribute ``weight``)."""
    return _trailing_norm(NormKind.RMS, weight, None, dims)


def layer_norm(weight: Optional[str] = "weight", bias: Optional[str] = "bias", dims: int = 1) -> Rule:
    """A module computing ``(x - mean) / std * w + b`` over the last ``dims`` axes."""
    return _trailing_norm(NormKind.LAYER, weight, bias, dims)
