"""The data the partition pass computes: channel spaces, their uses, coupling classes, and the
flow of channels through one value. Plain dataclasses; :mod:`fxlaws.passes.partition` fills them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import networkx as nx
import torch.fx as fx

from fxlaws.laws.slots import Piece, Slot
from fxlaws.meta import CanonicalOp, shape_of

__all__ = ["Sink", "NormSink", "Terminal", "Space", "Coupling", "Partition", "Flow", "shape_of", "map_reshape", "permuted_axes"]


@dataclass
class Sink:
    """A compensating consumer: ``slot`` scales by λ^{-degree}."""

    node: str
    module: Optional[str]
    slot: Slot
    degree: float
    allows_mixing: bool  # the carried value and the consumer both admit channel mixing (G1)
    gated: bool = False  # the value was multiplied by an invariant tensor on the way (S1)


@dataclass
class NormSink:
    """A normalisation that absorbs a common scale per group of ``group`` channels (N2) and, when
    ``translations`` holds, translations constant over its averaged axes (N1)."""

    node: str
    module: Optional[str]
    op: CanonicalOp
    group: int
    translations: bool
    weight_translations: bool  # Linear weight directions are constant over the averaged axes too


@dataclass
class Terminal:
    """A use that is invariant to translations only: softmax over the channel axis, or the output."""

    node: str
    kind: str  # "softmax" | "output"
    translations: bool  # a translation of the producer reaches it unchanged
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
    allows_mixing: bool
    sinks: list[Sink] = field(default_factory=list)
    norms: list[NormSink] = field(default_factory=list)
    terminals: list[Terminal] = field(default_factory=list)
    breaks: list[str] = field(default_factory=list)
    parts: list[int] = field(default_factory=list)  # spaces its channels were split into (Walk.open_part)

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
class Flow:
    """How the channels of some spaces sit in one tensor value."""

    axis: int
    ndim: int
    pieces: tuple[tuple[int, Piece], ...]  # (space id, piece)
    degree: float = 1.0
    allows_mixing: bool = True
    translations: bool = True  # only value-preserving ops since the producer (translations survive)
    gated: bool = False  # multiplied element-wise by a value the symmetry leaves alone (GLU, S1)
    # MoE experts: the rows are grouped by the offsets node ``route`` (its name), and channel
    # ``e·n + i`` of the pieces is position i of the rows of expert e (n = the axis' size, ``experts`` = E)
    route: Optional[str] = None
    experts: int = 1

    def with_(self, **changes) -> "Flow":
        return dataclasses.replace(self, **changes)

    def same_layout(self, other: "Flow") -> bool:
        return (self.axis, self.ndim, self.degree) == (other.axis, other.ndim, other.degree) and [
            p for _, p in self.pieces] == [p for _, p in other.pieces]

    @property
    def space_ids(self) -> set[int]:
        return {sid for sid, _ in self.pieces}


def permuted_axes(node: fx.Node, ndim: int) -> Optional[list[int]]:
    """Where each input axis of a permute / transpose node lands, read by running the op on a meta
    tensor whose sizes name the axes; None when its arguments cannot be replayed."""
    import torch

    probe = torch.empty(tuple(range(2, ndim + 2)), device="meta")
    try:
        if node.op == "call_method":
            moved = getattr(probe, str(node.target))(*node.args[1:], **node.kwargs)
        else:
            moved = node.target(probe, *node.args[1:], **node.kwargs)
        sizes = list(moved.shape)
        return [sizes.index(a + 2) for a in range(ndim)]
    except Exception:
        return None


def map_reshape(in_shape, out_shape, axis) -> Optional[tuple[int, int]]:
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
