"""Law values of FSDP2-sharded parameters: shard-local partial sums, one all-reduce.

``fully_shard`` keeps each parameter as a DTensor sharded along dim 0 (``Shard(0)`` on a 1-D
mesh) outside its module's forward. Per-position squared sums of such a tensor are additive over
shards: rows (axis 0) are owned by one rank each, every other axis is a partial sum on each rank.
So each rank reduces its local shard, writes rows at their global offset into zeros and partial
sums as they are, and one ``all_reduce(SUM)`` of all of them together gives every rank the full
vectors. Matrix-valued reads (Gram laws, linear sums) need whole rows and columns: those
parameters are all-gathered (``full_tensor``), which costs a parameter-sized copy.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["is_sharded", "sharded_position_sq", "gathered"]


@functools.lru_cache(maxsize=None)  # called per parameter on every recorded forward
def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


def is_sharded(t: Tensor) -> bool:
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def gathered(t: Tensor) -> Tensor:
    """A plain tensor with every element (all-gather for a DTensor)."""
    return t.full_tensor() if is_sharded(t) else t


def sharded_position_sq(params: Mapping[str, Tensor], needs: Mapping[str, set[int]],
                        local_sq: Callable[[Tensor, set[int]], dict[int, Tensor]]) -> dict[str, dict[int, Tensor]]:
    """``{name: {axis: Σ_{other dims} p²}}`` for the DTensor parameters in ``needs`` (full length on
    every rank), from ``local_sq`` of each local shard and a single all-reduce.

    Raises:
        NotImplementedError: a placement other than ``Shard(0)`` on a 1-D mesh (FSDP2's own).
    """
    import torch.distributed as dist
    from torch.distributed.tensor import Shard

    names = [n for n in needs if is_sharded(params[n])]
    if not names:
        return {}
    parts, layout = [], []
    mesh = params[names[0]].device_mesh
    for name in names:
        p = params[name]
        if p.device_mesh != mesh:
            raise NotImplementedError(f"{name} is sharded on another device mesh than {names[0]}")
        if p.device_mesh.ndim != 1 or tuple(p.placements) != (Shard(0),):
            raise NotImplementedError(
                f"{name}: placements {p.placements} on a {p.device_mesh.ndim}-D mesh; fxlaws reads FSDP2 "
                "parameters sharded along dim 0 on one mesh dimension (fully_shard's default)")
        local = p.to_local()
        rows, world = p.shape[0], p.device_mesh.size()
        chunk = -(-rows // world)  # torch.chunk semantics, as Shard(0) splits
        offset = min(p.device_mesh.get_local_rank() * chunk, rows)
        for axis, v in local_sq(local, needs[name]).items():
            if axis == 0:  # this rank's rows, at their global positions
                full = v.new_zeros(rows)
                full[offset:offset + v.shape[0]] = v
                v = full
            parts.append(v)
            layout.append((name, axis, v.shape[0]))
    flat = torch.cat(parts)
    dist.all_reduce(flat, group=mesh.get_group())
    out: dict[str, dict[int, Tensor]] = {}
    for (name, axis, _), v in zip(layout, flat.split([n for _, _, n in layout])):
        out.setdefault(name, {})[axis] = v
    return out
