"""The one ``node.meta["fxlaws"]`` record every pass reads and writes.

Passes never put loose dicts into ``node.meta``: normalise writes a :class:`NodeMeta` holding the
node's :class:`CanonicalOp`; attach replaces it (``dataclasses.replace``) to add the law families
that read the node's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

META_KEY = "fxlaws"

# Canonical op kinds (normalise writes exactly one per node).
INPUT = "input"          # placeholder
PARAM = "param"          # get_attr (a parameter or buffer read as a value)
LINEAR = "linear"        # y = x W^T + b along the last axis (nn.Linear, F.linear, x @ W)
CONV = "conv"            # nn.ConvNd / F.convNd, channel axis 1
NORM = "norm"            # batch / layer / group / instance / rms normalisation
ACT = "act"              # element-wise activation; ``degree`` is its positive homogeneity (or None)
IDENTITY = "identity"    # value-preserving: Identity, contiguous, clone, dtype casts; Dropout (diag only)
POOL = "pool"            # spatial pooling on axis >= 2 (max or avg)
REDUCE = "reduce"        # mean / sum over given dims
RESHAPE = "reshape"      # view / reshape / flatten / unflatten / squeeze / unsqueeze
PERMUTE = "permute"      # permute / transpose / t / movedim
ADD = "add"              # add / sub (and their in-place operator forms)
MUL = "mul"              # mul / div / neg
CAT = "cat"              # torch.cat along ``axis``
SPLIT = "split"          # split / chunk along ``axis`` (tuple output)
GETITEM = "getitem"      # indexing a tuple or a tensor
SOFTMAX = "softmax"      # softmax / log_softmax along ``axis``
MHA = "mha"              # nn.MultiheadAttention (packed in_proj, same embed dim): ``groups`` = heads
SHAPE = "shape"          # size / dim / shape / dtype: reads no values
OUTPUT = "output"
OPAQUE = "opaque"        # anything else: stops every law


@dataclass(frozen=True)
class CanonicalOp:
    """What a graph node does, in the small vocabulary the partition pass reasons about.

    Attributes:
        kind: one of the kind constants above.
        module: qualified path of the module the node belongs to (``layer1.0.conv1``), or None.
        weight, bias: qualified parameter names read by linear / conv / norm nodes.
        w_out_axis, w_in_axis: which weight axis indexes output / input channels (linear: 0 / 1;
            ``x @ W``: 1 / 0).
        degree: positive-homogeneity degree of an activation (``act(λx) = λ^k act(x)`` for λ > 0);
            None if it has none.
        gl: True when the op commutes with any invertible mixing of the channel axis (linear and
            identical on every channel); False for element-wise nonlinear or random ops.
        axis: cat / split / softmax dim (may be negative), or the number of trailing dims a
            LayerNorm / RMSNorm normalises.
        groups: conv groups, or GroupNorm's number of groups.
        norm: normalisation kind: "batch", "layer", "group", "instance", "rms".
        centered: the norm subtracts a mean (N1 applies); False for RMSNorm.
        mode_dependent: the norm keeps running statistics (batch statistics only in train mode).
        dims: reduce dims; keepdim flag in ``keepdim``.
        detail: a short human description, used in "why no law" reasons.
    """

    kind: str
    module: Optional[str] = None
    weight: Optional[str] = None
    bias: Optional[str] = None
    w_out_axis: int = 0
    w_in_axis: int = 1
    degree: Optional[float] = None
    gl: bool = True
    axis: Optional[int] = None
    groups: int = 1
    norm: Optional[str] = None
    centered: bool = False
    dims: Optional[tuple] = None
    keepdim: bool = False
    mode_dependent: bool = False  # a norm whose statistics differ between train and eval mode
    flags: frozenset = frozenset()  # op-specific facts, e.g. {"add_zero_attn"} for MultiheadAttention
    detail: str = ""


@dataclass(frozen=True)
class NodeMeta:
    """The record stored under ``node.meta["fxlaws"]``.

    Attributes:
        op: the canonical op (written by the normalise pass).
        laws: names of the law families that read parameters of this node (written by attach).
    """

    op: CanonicalOp
    laws: tuple[str, ...] = field(default=())


def get_op(node) -> CanonicalOp:
    """Return the canonical op normalise stored on ``node`` (OPAQUE if the pass has not run)."""
    meta = node.meta.get(META_KEY)
    return meta.op if meta is not None else CanonicalOp(OPAQUE, detail=str(node.target))


def is_number(arg) -> bool:
    """A Python number, or a graph value that is one (size arithmetic such as ``C ** 0.5``: a node
    whose value is not a tensor, so shape propagation recorded no ``tensor_meta`` for it)."""
    if isinstance(arg, bool):
        return False
    if isinstance(arg, (int, float)):
        return True
    return getattr(arg, "op", None) in ("call_function", "call_method") and "tensor_meta" not in arg.meta
