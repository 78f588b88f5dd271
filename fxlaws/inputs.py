"""What an :class:`~fxlaws.annotation.Annotation` keeps of the example inputs it was built from:
enough to call the model again (``fxlaws.soundness(model, ann)``) without holding the user's data.

Floating tensors keep their shape and dtype; integer tensors also their largest value (token ids
must stay below the vocabulary size); boolean tensors (masks) are kept as given, since a random mask
can hide every position. Anything that is not a tensor is kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .capture import normalise_inputs

__all__ = ["TensorSpec", "InputSpec", "describe_inputs"]


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor, without its values (except for masks)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    high: Optional[int] = None  # integer tensors: their largest value
    values: Optional[Tensor] = None  # boolean tensors: kept as given

    @classmethod
    def of(cls, x: Tensor) -> "TensorSpec":
        x = x.detach()
        if x.dtype == torch.bool:
            return cls(tuple(x.shape), x.dtype, values=x.cpu().clone())
        if not x.is_floating_point() and not x.is_complex() and x.numel() and x.device.type != "meta":
            return cls(tuple(x.shape), x.dtype, high=int(x.max()))
        return cls(tuple(x.shape), x.dtype)

    def make(self) -> Tensor:
        """A CPU tensor of this shape and dtype: zeros, except one entry at ``high`` (so that code
        reading ``x.max()`` sees the same range) or the kept mask."""
        if self.values is not None:
            return self.values.clone()
        out = torch.zeros(self.shape, dtype=self.dtype)
        if self.high is not None and out.numel():
            out.view(-1)[-1] = self.high
        return out


@dataclass(frozen=True)
class InputSpec:
    """The positional and keyword inputs of one forward call, tensors described by :class:`TensorSpec`."""

    args: tuple
    kwargs: dict

    def make(self) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of fresh tensors (see :meth:`TensorSpec.make`)."""
        build = lambda v: v.make() if isinstance(v, TensorSpec) else v  # noqa: E731
        is_spec = lambda v: isinstance(v, TensorSpec)  # noqa: E731
        return (pytree.tree_map(build, self.args, is_leaf=is_spec),
                pytree.tree_map(build, self.kwargs, is_leaf=is_spec))


def describe_inputs(example_inputs: Any) -> InputSpec:
    """The :class:`InputSpec` of what ``fxlaws.annotate`` was given."""
    args, kwargs = normalise_inputs(example_inputs)
    spec = lambda v: TensorSpec.of(v) if isinstance(v, Tensor) else v  # noqa: E731
    return InputSpec(pytree.tree_map(spec, args), pytree.tree_map(spec, kwargs))
