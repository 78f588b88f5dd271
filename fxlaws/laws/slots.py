"""Parameter slots: which slice of which parameter tensor carries hidden channel j.

A :class:`Slot` maps the channels ``j`` of one hidden channel space onto positions along one axis
of a parameter tensor: channel ``j`` (``start <= j < stop`` of a :class:`Piece`) owns positions
``offset + (j - start) * inner + [0, inner)``. This covers plain rows/columns (``inner=1``),
columns after ``flatten`` (``inner = H*W``), concatenations (``offset``) and splits (``start``).
All reductions are vectorised: one ``pow(2).sum`` per parameter tensor, then slicing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

__all__ = ["Piece", "Slot"]


@dataclass(frozen=True)
class Piece:
    """Channels ``[start, stop)`` of a space sit at axis positions ``offset + (j-start)*inner + [0, inner)``."""

    start: int
    stop: int
    offset: int = 0
    inner: int = 1

    @property
    def width(self) -> int:
        return (self.stop - self.start) * self.inner

    def describe(self, index: str = "j") -> str:
        pos = index if self.start == self.offset else f"{index}{self.offset - self.start:+d}"
        if self.inner == 1:
            return pos
        base = f"{index}" if self.start == 0 and self.offset == 0 else f"({pos})"
        lo = f"{base}·{self.inner}" if self.offset == 0 and self.start == 0 else f"{self.offset}+({index}-{self.start})·{self.inner}"
        return f"{lo}:{lo}+{self.inner}"


@dataclass(frozen=True)
class Slot:
    """One parameter's share of a law family.

    Attributes:
        param: canonical qualified parameter name.
        axis: the axis of the parameter indexed by the hidden channel.
        pieces: where each channel sits along ``axis``.
        channels: size of the hidden channel space (the family's length).
    """

    param: str
    axis: int
    pieces: tuple[Piece, ...]
    channels: int

    @classmethod
    def full(cls, param: str, axis: int, channels: int) -> "Slot":
        return cls(param, axis, (Piece(0, channels),), channels)

    def positions(self) -> list[int]:
        """Axis positions read by this slot (for coverage)."""
        out: list[int] = []
        for p in self.pieces:
            out.extend(range(p.offset, p.offset + p.width))
        return out

    def channel_sq(self, params: Mapping[str, Tensor]) -> Tensor:
        """``out[j] = Σ ‖param[..., pos(j), ...]‖²`` over this slot's positions of channel j (zeros if absent)."""
        p = params[self.param]
        dims = [d for d in range(p.dim()) if d != self.axis]
        per_pos = p.pow(2).sum(dims) if dims else p.pow(2)
        out = None
        for piece in self.pieces:
            vals = per_pos.narrow(0, piece.offset, piece.width).view(piece.stop - piece.start, piece.inner).sum(1)
            if piece.start == 0 and piece.stop == self.channels and out is None:
                out = vals
                continue
            if out is None:
                out = vals.new_zeros(self.channels)
            out = out.index_add(0, torch.arange(piece.start, piece.stop, device=vals.device), vals)
        return out

    def channel_matrix(self, params: Mapping[str, Tensor]) -> Tensor:
        """Rows indexed by channel: ``M[j] = param[..., pos(j), ...]`` flattened.

        Either every piece holds all channels (``is_full``; repeated pieces sit side by side), or
        the pieces tile the channels (e.g. one piece per attention head; rows in channel order).
        """
        p = params[self.param].movedim(self.axis, 0)
        pieces = sorted(self.pieces, key=lambda q: q.start)
        blocks = [p.narrow(0, q.offset, q.width).reshape(q.stop - q.start, -1) for q in pieces]
        if len(blocks) == 1:
            return blocks[0]
        if self.is_full:
            return torch.cat(blocks, dim=1)
        if [(q.start, q.stop) for q in pieces] != list(zip([0] + [q.stop for q in pieces[:-1]], [q.stop for q in pieces])) \
                or pieces[-1].stop != self.channels:
            raise ValueError(f"slot {self.param}: pieces neither repeat nor tile the channels")
        return torch.cat(blocks, dim=0)

    @property
    def is_full(self) -> bool:
        """Every piece holds all channels in order (what a GL / Gram law needs)."""
        return all(q.start == 0 and q.stop == self.channels for q in self.pieces)

    def describe(self, index: str = "j") -> str:
        """Human text for ‖param[.., pos(j), ..]‖² (bias-like 1-D slots print as ``b[j]²``)."""
        texts = []
        for piece in self.pieces:
            sel = piece.describe(index)
            if self.axis == 0:
                texts.append(f"{self.param}[{sel}]")
            else:
                texts.append(f"{self.param}[{', '.join([':'] * self.axis + [sel])}]")
        return " + ".join(texts)
