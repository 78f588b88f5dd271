"""Exceptions raised by fxlaws. Every message says where (module path / node), what, and how to fix."""

from __future__ import annotations

from typing import Iterable

__all__ = [
    "FxlawsError",
    "UntraceableModelError",
    "ExampleInputsError",
    "UnsupportedOpError",
    "StaleAnnotationError",
    "MetaDeviceError",
    "KernelBuildError",
    "PassOrderError",
]


class FxlawsError(Exception):
    """Base class of every error fxlaws raises on purpose."""


class UntraceableModelError(FxlawsError):
    """No capture front end could turn the model into a graph."""


class ExampleInputsError(FxlawsError):
    """``example_inputs`` are missing or do not run through the model."""


class UnsupportedOpError(FxlawsError):
    """An op fxlaws cannot reason about was required to be understood (strict mode)."""


class StaleAnnotationError(FxlawsError):
    """An Annotation is used with a model whose parameters no longer match it."""


class MetaDeviceError(FxlawsError):
    """Values were needed from tensors on the ``meta`` device (shapes only, no storage).

    ``fxlaws.annotate`` works on meta models; evaluating laws and numeric verification do not.
    """


class KernelBuildError(FxlawsError):
    """An opt-in compiled kernel (``fxlaws.instrument(..., kernel="cpp")``) could not be built here."""


class PassOrderError(FxlawsError):
    """A pass ran before the pass whose output it reads (a bug in a pipeline, not in the user's model)."""


def require_values(named_tensors: Iterable, what: str) -> None:
    """Raise :class:`MetaDeviceError` if any ``(name, tensor)`` lives on the meta device.

    Args:
        named_tensors: e.g. ``model.named_parameters()`` or a dict's ``.items()``.
        what: the call that needs values (named in the message).
    """
    meta = [name for name, t in named_tensors if getattr(t, "is_meta", False)]
    if meta:
        more = f" (and {len(meta) - 1} more)" if len(meta) > 1 else ""
        raise MetaDeviceError(
            f"{what} needs parameter values, but {meta[0]}{more} is on the meta device (a shape without "
            "storage). Materialise the model first, e.g. model.to_empty(device='cpu') and initialise it "
            "(model.apply(init_fn) or model.load_state_dict(weights)), then call it again; "
            "fxlaws.annotate itself works on the meta model."
        )
