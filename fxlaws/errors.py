"""Exceptions raised by fxlaws. Every message says where (module path / node), what, and how to fix."""

from __future__ import annotations

__all__ = [
    "FxlawsError",
    "UntraceableModelError",
    "ExampleInputsError",
    "UnsupportedOpError",
    "StaleAnnotationError",
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
