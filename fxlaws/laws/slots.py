"""Parameter slots: which slice of which parameter tensor carries hidden channel j.

A :class:`Slot` maps the channels ``j`` of one hidden channel space onto positions along one axis
of a parameter tensor: channel ``j`` (``start <= j < stop`` of a :class:`Piece`) owns positions
``offset + (j - start) * inner + [0, inner)``. This covers plain rows/columns (``inner=1``),
columns after ``flatten`` (``inner = H*W``), concatenations (``offset``) and splits (``start``).
All reductions are vectorised: one reduction per parameter tensor (shared by every family through
:class:`SquareSums`), then slicing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .cpu_kernel import kernel_eligible, square_sums_module
from .sharded import gathered, sharded_position_sq

__all__ = ["Piece", "Slot", "SquareSums"]


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
        groups: > 1 when axis 0 comes in ``groups`` blocks that each own their own positions along
            ``axis``: position ``c = g·width + i`` (``width`` = the parameter's ``shape[axis]``)
            means position ``i`` of block ``g``'s slice only. The input side of a grouped conv
            (``axis == 1``, blocks of output rows) and MoE experts stacked as ``(E, ...)`` (blocks
            of one expert each). The slot reads the grouped view :meth:`view`, shape
            ``(groups·width, shape[0]/groups, other axes...)``, along its axis 0.
        constant: the slot reads ``param + constant`` (Gemma's RMSNorm gain ``1 + w``: gradient
            flow moves ``w`` as it would move the gain, so the law holds for the shifted value).
    """

    param: str
    axis: int
    pieces: tuple[Piece, ...]
    channels: int
    groups: int = 1
    constant: float = 0.0

    @classmethod
    def full(cls, param: str, axis: int, channels: int, constant: float = 0.0) -> "Slot":
        return cls(param, axis, (Piece(0, channels),), channels, constant=constant)

    def positions(self) -> list[int]:
        """Axis positions read by this slot (virtual positions ``g·width + i`` when grouped)."""
        out: list[int] = []
        for p in self.pieces:
            out.extend(range(p.offset, p.offset + p.width))
        return out

    def covered(self, shape) -> tuple[int, set[int]]:
        """(axis, positions of the parameter's own ``axis`` whose hyper-slices the slot reads in full),
        for coverage. A grouped slot reads column ``i`` in full only once every block reads it."""
        if self.groups == 1:
            return self.axis, set(self.positions())
        width = shape[self.axis]
        per_col: dict[int, int] = {}
        for v in self.positions():
            per_col[v % width] = per_col.get(v % width, 0) + 1
        return self.axis, {i for i, n in per_col.items() if n == self.groups}

    def view(self, p: Tensor) -> Tensor:
        """``p`` (plus ``constant``) with the slot's positions along axis 0 (the grouped view when
        ``groups > 1``)."""
        p = p + self.constant if self.constant else p
        if self.groups == 1:
            return p.movedim(self.axis, 0)
        return p.unflatten(0, (self.groups, -1)).movedim(self.axis + 1, 1).flatten(0, 1)

    def unview(self, v: Tensor) -> Tensor:
        """The parameter tensor whose :meth:`view` is ``v`` (the inverse map)."""
        if self.groups == 1:
            p = v.movedim(0, self.axis)
        else:
            p = v.unflatten(0, (self.groups, -1)).movedim(1, self.axis + 1).flatten(0, 1)
        return p - self.constant if self.constant else p

    def _channel_index(self, size: int, device) -> Tensor:
        """For each position along the view's axis 0: the channel it belongs to, or -1 (not read)."""
        index = torch.full((size,), -1, dtype=torch.long, device=device)
        for piece in self.pieces:
            channels = torch.arange(piece.start, piece.stop, device=device).repeat_interleave(piece.inner)
            index[piece.offset:piece.offset + piece.width] = channels
        return index

    def scale_channels(self, p: Tensor, factors: Tensor) -> Tensor:
        """``p`` with channel j's positions multiplied by ``factors[j]`` (the rest unchanged)."""
        v = self.view(p)
        index = self._channel_index(v.shape[0], v.device)
        f = torch.where(index >= 0, factors.to(v.dtype)[index.clamp(min=0)], torch.ones((), dtype=v.dtype, device=v.device))
        return self.unview(v * f.reshape(-1, *[1] * (v.dim() - 1)))

    def shift_channels(self, p: Tensor, shifts: Tensor) -> Tensor:
        """``p`` with ``shifts[j]`` (shape of the other axes) added to channel j's entries."""
        v = self.view(p)
        index = self._channel_index(v.shape[0], v.device)
        add = torch.where((index >= 0).reshape(-1, *[1] * (v.dim() - 1)),
                          shifts.to(v.dtype).reshape(shifts.shape[0], *v.shape[1:])[index.clamp(min=0)],
                          torch.zeros((), dtype=v.dtype, device=v.device))
        return self.unview(v + add)

    def mix_channels(self, p: Tensor, mats: Tensor) -> Tensor:
        """``p`` with the rows of channel blocks mixed: channels ``b·d … (b+1)·d − 1`` (each with all
        its positions) replaced by ``mats[b] @`` them, ``mats`` of shape ``(blocks, d, d)``.
        Pieces must start and stop on block boundaries."""
        v = self.view(p)
        d = mats.shape[-1]
        out = v.clone()
        for piece in self.pieces:
            if piece.start % d or (piece.stop - piece.start) % d:
                raise NotImplementedError(f"slot {self.param}: a piece cuts through a block of {d} channels")
            rows = v[piece.offset:piece.offset + piece.width]
            blocks = rows.reshape((piece.stop - piece.start) // d, d, -1)  # channel-major, then inner and rest
            mixed = mats[piece.start // d:piece.stop // d].to(v.dtype) @ blocks.reshape(blocks.shape[0], d, -1)
            out[piece.offset:piece.offset + piece.width] = mixed.reshape(rows.shape)
        return self.unview(out)

    @property
    def reads_squares(self) -> bool:
        """Its per-position squares are those of the plain parameter (shared through :class:`SquareSums`)."""
        return self.groups == 1 and not self.constant

    def channel_sq(self, params: Mapping[str, Tensor]) -> Tensor:
        """``out[j] = Σ ‖param[..., pos(j), ...]‖²`` over this slot's positions of channel j (zeros if absent)."""
        if not self.reads_squares:
            per_pos = _position_sq(self.view(params[self.param]), (0,))[0]
        elif isinstance(params, SquareSums):
            per_pos = params.position_sq(self.param, self.axis)
        else:
            per_pos = _position_sq(params[self.param], (self.axis,))[self.axis]
        if self.is_identity and per_pos.shape[0] == self.channels:
            return per_pos  # the common case: channel j is position j
        out = None
        for piece in self.pieces:
            vals = per_pos.narrow(0, piece.offset, piece.width)
            if piece.inner > 1:
                vals = vals.view(piece.stop - piece.start, piece.inner).sum(1)
            if piece.start == 0 and piece.stop == self.channels and out is None:
                out = vals
                continue
            if out is None:
                out = vals.new_zeros(self.channels)
            out = out.index_add(0, _arange(piece.start, piece.stop, vals.device), vals)
        return out

    def channel_matrix(self, params: Mapping[str, Tensor]) -> Tensor:
        """Rows indexed by channel: ``M[j] = param[..., pos(j), ...]`` flattened.

        Either every piece holds all channels (``is_full``; repeated pieces sit side by side), or
        the pieces tile the channels (e.g. one piece per attention head; rows in channel order).
        """
        p = self.view(params[self.param])
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

    @functools.cached_property  # read on every recorded forward (frozen dataclass: cached in __dict__)
    def is_identity(self) -> bool:
        """One piece, channel j at position j."""
        return self.pieces == (Piece(0, self.channels),)

    @property
    def is_full(self) -> bool:
        """Every piece holds all channels in order (what a GL / Gram law needs)."""
        return all(q.start == 0 and q.stop == self.channels for q in self.pieces)

    def describe(self, index: str = "j") -> str:
        """Human text for ‖param[.., pos(j), ..]‖² (bias-like 1-D slots print as ``b[j]²``)."""
        texts = []
        for piece in self.pieces:
            sel = piece.describe(index)
            if self.groups > 1:
                where = ["block ⌊" + sel + "/w⌋"] + [":"] * (self.axis - 1) + [sel + " mod w"]
                texts.append(f"{self.param}[{', '.join(where)}] (w = its size along axis {self.axis}, "
                             f"{self.groups} blocks on axis 0)")
            elif self.axis == 0:
                texts.append(f"{self.param}[{sel}]")
            else:
                texts.append(f"{self.param}[{', '.join([':'] * self.axis + [sel])}]")
        if self.constant:
            texts = [f"({self.constant:g} + {t})" for t in texts]
        return " + ".join(texts)


@functools.lru_cache(maxsize=4096)
def _arange(start: int, stop: int, device: torch.device) -> Tensor:
    return torch.arange(start, stop, device=device)


def _position_sq(p: Tensor, axes, scratch: Tensor | None = None) -> dict[int, Tensor]:
    """``{axis: Σ_{other dims} p²}`` for each axis in ``axes``.

    Rows alone (axis 0) are one fused ``vector_norm`` over contiguous rows (nothing of ``p``'s size
    written). Otherwise ``p²`` is formed in blocks of leading rows — into ``scratch`` when given
    (no autograd; avoids allocating, and page-faulting, a tensor of ``p``'s size per call) — and
    each axis is reduced outer-dims-first, so every reduction runs over contiguous memory (summing
    a small inner dim first is ~5x slower on CPU).
    """
    axes = sorted(set(axes))
    if p.dim() <= 1:
        return {a: p.square() for a in axes}
    if axes == [0]:
        return {0: torch.linalg.vector_norm(p.reshape(p.shape[0], -1), dim=1).square()}
    rows, rest = p.shape[0], p[0].numel()
    if scratch is not None and (scratch.dtype != p.dtype or scratch.device != p.device or scratch.numel() < rest):
        scratch = None  # (a single row larger than the scratch: square the whole tensor instead)
    step = rows if scratch is None else max(1, min(rows, scratch.numel() // max(1, rest)))
    parts: dict[int, list[Tensor]] = {a: [] for a in axes}
    for lo in range(0, rows, step):
        block = p[lo:lo + step]
        if scratch is None:
            sq = block.square()
        else:
            sq = torch.mul(block, block, out=scratch[:block.numel()].view(block.shape))
        for a in axes:
            if a == 0:
                parts[0].append(sq.reshape(sq.shape[0], -1).sum(1))
                continue
            n = p.shape[a]
            v = sq.reshape(-1, n * (sq[0].numel() // max(1, sq.shape[1:a].numel() * n))).sum(0)
            parts[a].append(v.reshape(n, -1).sum(1))
    return {a: vs[0] if len(vs) == 1 else torch.cat(vs) if a == 0 else sum(vs[1:], vs[0]) for a, vs in parts.items()}


class SquareSums(Mapping):
    """Parameters plus their per-position squared sums, each parameter read once.

    Reads ``params`` (name -> tensor) and ``needs`` (name -> axes whose per-position sums of
    squares some slot reads). ``position_sq(name, axis)`` returns them; :meth:`Slot.channel_sq`
    uses it when given a ``SquareSums``, so every family evaluated on the same instance shares
    one reduction per parameter tensor (the instrument pass's one-pass-per-tensor metric cost).
    ``scratch``: a flat buffer of the parameters' dtype and device for the squares (only without
    autograd). ``kernel="cpp"``: without autograd, the CPU tensors it covers go through the fused
    kernel of :mod:`fxlaws.laws.cpu_kernel` (rows and columns from one read), in one call.
    """

    def __init__(self, params: Mapping[str, Tensor], needs: Mapping[str, set[int]], scratch: Tensor | None = None,
                 kernel: str = "eager"):
        self._params, self._full = params, {}
        # FSDP2 (DTensor) parameters: shard-local partial sums and one all-reduce (see sharded.py)
        self._sq = sharded_position_sq(params, needs, lambda local, axes: _position_sq(local, axes, scratch))
        rest = [n for n in needs if n not in self._sq]
        detached = not torch.is_grad_enabled()
        fused = [n for n in rest if kernel_eligible(params[n], needs[n])] if kernel == "cpp" and detached else []
        if fused:  # one call, one parallel region for all of them
            sums = square_sums_module().square_sums([params[n] for n in fused],
                                                   [sum(1 << a for a in needs[n]) for n in fused])
            for name, per_axis in zip(fused, sums):
                self._sq[name] = {a: per_axis[a] for a in needs[name]}
        vectors = [n for n in rest if n not in self._sq and params[n].dim() <= 1]
        if vectors and detached:  # biases, norm affines: one multi-tensor kernel
            for name, sq in zip(vectors, torch._foreach_mul([params[n] for n in vectors], [params[n] for n in vectors])):
                self._sq[name] = {a: sq for a in needs[name]}
        for name in rest:
            if name not in self._sq:
                self._sq[name] = _position_sq(params[name], needs[name], scratch)

    def position_sq(self, name: str, axis: int) -> Tensor:
        cached = self._sq.get(name, {})
        return cached[axis] if axis in cached else _position_sq(self[name], (axis,))[axis]

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._full:
            self._full[name] = gathered(self._params[name])
        return self._full[name]

    def __contains__(self, name) -> bool:  # without gathering a sharded parameter
        return name in self._params

    def __iter__(self):
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)
