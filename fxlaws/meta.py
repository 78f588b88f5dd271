"""The one ``node.meta["fxlaws"]`` record every pass reads and writes.

Passes never put loose dicts into ``node.meta``: the normalise pass writes a :class:`NodeMeta`
holding the node's :class:`CanonicalOp`; the mark-laws pass replaces it (``dataclasses.replace``)
to add the law families that read the node's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch.fx as fx

from .errors import PassOrderError
from .vocabulary import Arith, NormKind, OpKind

META_KEY = "fxlaws"
SIZE_KEY = "fxlaws_size"  #: node.meta key of the number / size a non-tensor node computed at capture


@dataclass(frozen=True)
class CanonicalOp:
    """What a graph node does, in the op vocabulary (:mod:`fxlaws.vocabulary`) the passes reason about.

    Attributes:
        kind: the :class:`~fxlaws.vocabulary.OpKind`.
        module: qualified path of the module the node belongs to (``layer1.0.conv1``), or None.
        weight, bias: qualified parameter names read by linear / conv / norm nodes.
        w_out_axis, w_in_axis: which weight axis indexes output / input channels (linear: 0 / 1;
            ``x @ W``: 1 / 0).
        degree: positive-homogeneity degree of an activation (``act(λx) = λ^k act(x)`` for λ > 0);
            None if it has none.
        allows_mixing: True when the op commutes with any invertible mixing of the channel axis (linear and
            identical on every channel); False for element-wise nonlinear or random ops.
        axis: cat / split / softmax dim (may be negative), or the number of trailing dims a
            LayerNorm / RMSNorm normalises.
        groups: conv groups, or GroupNorm's number of groups.
        norm: the :class:`~fxlaws.vocabulary.NormKind` of a NORM.
        centered: the norm subtracts a mean (N1 applies); False for RMSNorm.
        variant: which ADD / MUL op (add or sub; mul, div or neg).
        mode_dependent: the norm keeps running statistics (batch statistics only in train mode).
        dims: reduce dims; keepdim flag in ``keepdim``.
        data_arg: position of the argument that carries the data (addmm(bias, x, W): 1).
        detail: a short human description, used in "why no law" reasons.
    """

    kind: OpKind
    module: Optional[str] = None
    weight: Optional[str] = None
    bias: Optional[str] = None
    w_out_axis: int = 0
    w_in_axis: int = 1
    degree: Optional[float] = None
    allows_mixing: bool = True
    axis: Optional[int] = None
    groups: int = 1
    norm: Optional[NormKind] = None
    centered: bool = False
    dims: Optional[tuple] = None
    keepdim: bool = False
    mode_dependent: bool = False  # a norm whose statistics differ between train and eval mode
    variant: Optional[Arith] = None
    flags: frozenset = frozenset()  # op-specific facts, e.g. {"add_zero_attn"} for MultiheadAttention
    data_arg: int = 0
    detail: str = ""


@dataclass(frozen=True)
class NodeMeta:
    """The record stored under ``node.meta["fxlaws"]``.

    Attributes:
        op: the canonical op (written by the normalise pass).
        laws: names of the law families that read parameters of this node (written by MarkLawsPass).
    """

    op: CanonicalOp
    laws: tuple[str, ...] = field(default=())


def get_op(node) -> CanonicalOp:
    """Return the canonical op the normalise pass stored on ``node``.

    Raises:
        PassOrderError: the node carries no record (normalise has not run on its graph).
    """
    meta = node.meta.get(META_KEY)
    if meta is None:
        raise PassOrderError(f"node {node.name!r} ({node.op} {node.target}) has no node.meta[{META_KEY!r}]: run "
                             "NormalisePass on the graph first")
    return meta.op


def has_ops(graph) -> bool:
    """Every node of ``graph`` (an ``fx.Graph``) carries a canonical op (normalise ran on it)."""
    return all(META_KEY in n.meta for n in graph.nodes)


def is_number(arg) -> bool:
    """A Python number, or a graph value that is one (size arithmetic such as ``C ** 0.5``: a node
    whose value is not a tensor, so shape propagation recorded no ``tensor_meta`` for it)."""
    if isinstance(arg, bool):
        return False
    if isinstance(arg, (int, float)):
        return True
    return getattr(arg, "op", None) in ("call_function", "call_method") and "tensor_meta" not in arg.meta


def shape_of(node) -> Optional[tuple[int, ...]]:
    """The recorded shape of a tensor-valued node (None for non-tensors and non-nodes)."""
    tm = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


def size_of(arg) -> Optional[int]:
    """An integer argument: a Python int, or a graph value capture recorded as one (``H % ws`` on
    ``x.shape`` in an fx graph); None otherwise."""
    value = arg.meta.get(SIZE_KEY) if hasattr(arg, "meta") else arg
    return value if isinstance(value, int) and not isinstance(value, bool) else None
