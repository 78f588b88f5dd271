"""The op vocabulary: the kinds of op fxlaws reasons about, and their properties.

Every graph node is described by one :class:`~fxlaws.meta.CanonicalOp` whose ``kind`` is an
:class:`OpKind`. The tables that map torch.nn modules, functions, tensor methods and aten overloads
to kinds live in :mod:`fxlaws.rules`; users add their own through :mod:`fxlaws.registry`.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["OpKind", "NormKind", "Arith"]


class _StrEnum(str, Enum):
    """A str enum whose members print as their value (``f"{OpKind.ADD}" == "add"``)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class OpKind(_StrEnum):
    """What a node does, as far as parameter symmetries are concerned."""

    INPUT = "input"          # placeholder
    PARAM = "param"          # get_attr (a parameter or buffer read as a value)
    LINEAR = "linear"        # y = x W^T + b along the last axis (nn.Linear, F.linear, x @ W, addmm)
    CONV = "conv"            # nn.ConvNd / F.convNd, channel axis 1
    NORM = "norm"            # batch / layer / group / instance / rms normalisation (see NormKind)
    ACT = "act"              # element-wise activation; ``degree`` is its positive homogeneity (or None)
    IDENTITY = "identity"    # value-preserving: Identity, contiguous, clone, dtype casts; Dropout (diag only)
    POOL = "pool"            # spatial pooling on axis >= 2 (max or avg)
    REDUCE = "reduce"        # mean / sum over given dims
    RESHAPE = "reshape"      # view / reshape / flatten / unflatten / squeeze / unsqueeze
    PERMUTE = "permute"      # permute / transpose / t / movedim
    ADD = "add"              # add / sub (variant), and their in-place operator forms
    MUL = "mul"              # mul / div / neg (variant)
    CAT = "cat"              # torch.cat along ``axis``
    SPLIT = "split"          # split / chunk along ``axis`` (tuple output)
    GETITEM = "getitem"      # indexing a tuple or a tensor (also aten select / slice)
    SOFTMAX = "softmax"      # softmax / log_softmax along ``axis``
    MATMUL = "matmul"        # product of two activations (x @ y; attention scores and mixing)
    ATTENTION = "attention"  # F.scaled_dot_product_attention (enable_gqa in ``flags``)
    REPEAT = "repeat"        # expand / repeat_interleave: copies of values along an axis
    POSITIONS = "positions"  # roll / flip / pad: values moved (or padded: "zero-fill" in flags) along ``dims`` only
    UNBIND = "unbind"        # unbind along ``axis`` (tuple output)
    STACK = "stack"          # torch.stack along a new ``axis``
    MASK = "mask"            # masked_fill: entries where a mask holds replaced by a number
    EMBEDDING = "embedding"  # rows of a table ``weight`` gathered by integer indices (nn.Embedding, F.embedding)
    MHA = "mha"              # nn.MultiheadAttention (packed in_proj, same embed dim): ``groups`` = heads
    GROUPED_MM = "grouped_mm"  # MoE experts: rows of x grouped by ``offs``, group e times W[e] (W stacked 3-D)
    SHAPE = "shape"          # size / dim / shape / dtype: reads no values
    OUTPUT = "output"
    OPAQUE = "opaque"        # anything else: stops every law

    @property
    def moves_data(self) -> bool:
        """Rearranges values without computing on them (channel j keeps its value, maybe elsewhere)."""
        return self in _MOVES

    @property
    def reads_values(self) -> bool:
        """Uses the values of its inputs (SHAPE nodes read only shapes: no symmetry can reach them)."""
        return self is not OpKind.SHAPE

    @property
    def produces_channels(self) -> bool:
        """Can open a channel space from its own parameters (a producer, THEORY R1/G1/N3)."""
        return self in _PRODUCERS


_MOVES = frozenset({OpKind.IDENTITY, OpKind.RESHAPE, OpKind.PERMUTE, OpKind.CAT, OpKind.SPLIT, OpKind.GETITEM,
                    OpKind.REPEAT, OpKind.UNBIND, OpKind.STACK})
_PRODUCERS = frozenset({OpKind.LINEAR, OpKind.CONV, OpKind.NORM, OpKind.MHA})


class NormKind(_StrEnum):
    """Which statistics a normalisation uses (THEORY N1/N2)."""

    BATCH = "batch"          # over the batch and spatial axes, per channel (train mode)
    INSTANCE = "instance"    # over spatial axes, per sample and channel
    LAYER = "layer"          # over the last ``axis`` trailing dims
    GROUP = "group"          # over channel groups and spatial axes
    RMS = "rms"              # scale only, over the last ``axis`` trailing dims
    AFFINE = "affine"        # running statistics (eval mode): a fixed affine map, no invariance

    @property
    def centred(self) -> bool:
        """Subtracts a mean, so translations constant over the averaged axes vanish (N1)."""
        return self is not NormKind.RMS

    @property
    def channel_axis_last(self) -> bool:
        """Normalises trailing dims with a per-feature affine on the last axis (LayerNorm, RMSNorm)."""
        return self in (NormKind.LAYER, NormKind.RMS)


class Arith(_StrEnum):
    """Which member of the ADD / MUL kinds a node is."""

    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    NEG = "neg"
