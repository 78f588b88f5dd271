"""Shared-shift pass: T3 laws of parameters summed into one value.

Token, position and segment embeddings, a class token, a patch projection's bias: transformers sum
several parameter tables into their input stream. Shifting every row of one table by a vector ``u``
and every row of another by ``−u`` leaves the sum — and so the loss — unchanged, for every ``u``:
a translation symmetry in parameter space, whose law is the difference of the two tables' row sums
(a vector over the features). Which combinations cancel is read numerically, not by pattern: each
*source* (all rows of an embedding, or each row it reads when a fixed buffer of position ids
chooses them; a bias; one row of a parameter read directly, a 1-D one being one row) contributes the
field ``indicator ⊗ u`` to the value where the sum ends; the chain ops (adds, concatenations along
other axes, reshapes, permutes, expands, identities) are replayed on those fields, and the null space
of the stacked fields gives the combinations (checked with a second ``u``).

A source belongs to a sum when its output reaches the sum's end through single-use chain ops only
(so the shift has no other route); its parameter must be used once and be trainable. When the end
value absorbs feature translations (a LayerNorm reads it), each source's own feature sum is an N1
law already, and each combination adds ``d − 1`` laws instead of ``d``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.fx as fx

from fxlaws.capture import SIZE_KEY
from fxlaws.errors import PassOrderError
from fxlaws.meta import get_op
from fxlaws.vocabulary import OpKind

from .base import FxlawsPass, PassResult
from .pipeline import AnnotateState
from .spaces import shape_of
from .translations import absorbed_axes

__all__ = ["SharedShiftPass"]

_SOURCES = frozenset({OpKind.EMBEDDING, OpKind.LINEAR, OpKind.CONV, OpKind.NORM, OpKind.PARAM})
_MAX_ROWS = 4096  # a parameter read directly with more rows than this is not a position table
_CHAIN = frozenset({OpKind.ADD, OpKind.CAT, OpKind.RESHAPE, OpKind.PERMUTE, OpKind.REPEAT, OpKind.IDENTITY})


class SharedShiftPass(FxlawsPass[AnnotateState]):
    """Reads the normalised graph, ``state.laws`` and ``state.absorbed`` (recomputed when TranslationPass did
    not run); adds T3 families (``kind="translation"``)."""

    def requires(self, state: AnnotateState) -> None:
        if state.laws is None:
            raise PassOrderError("SharedShiftPass adds to state.laws: run AttachLawsPass first")

    def call(self, state: AnnotateState) -> PassResult[AnnotateState]:
        gm, laws = state.graph_module, state.laws
        params = dict(gm.named_parameters())
        by_end: dict[fx.Node, list[tuple]] = {}
        for node in gm.graph.nodes:
            end = _end_of(node) if get_op(node).kind in _SOURCES else None
            if end is not None:
                by_end.setdefault(end, []).extend(_sources(node, params))
        absorbed = state.absorbed
        before = len(laws.families)
        for end, sources in by_end.items():
            if len({(s[0], s[1], s[2]) for s in sources}) < 2:
                continue
            ndim = len(shape_of(end))
            axis, coefs = next(((a, c) for a in dict.fromkeys((ndim - 1, 1 if ndim > 2 else ndim - 1))
                                for c in [_cancelling(gm, end, sources, a)] if c), (None, []))
            if not coefs:
                continue
            absorbed = absorbed_axes(gm.graph) if absorbed is None else absorbed
            d = shape_of(end)[axis]
            per = d - 1 if axis in absorbed.get(end, ()) else d
            modules = list(dict.fromkeys(get_op(s[3]).module or s[3].name for s in sources))
            label = "+".join(dict.fromkeys(s[0] for s in sources))
            laws.shifts([s[:3] for s in sources], coefs, per * len(coefs), label, modules)
        return PassResult(state, len(laws.families) > before)


def _sources(node: fx.Node, params: dict):
    """(param, feature axis, row or None, node, field maker[, labelled field maker]) for the shifts ``node``
    makes in its output; sources of one row each also give the field of all rows at once, row r
    labelled r + 1 (one replay for every row)."""
    op, shape = get_op(node), shape_of(node)
    if shape is None or not shape:
        return
    if op.kind is OpKind.EMBEDDING and op.weight in params and "row-local-gradients" not in op.flags:
        index = _constant_index(node)
        if index is None or index.numel() == 0:  # rows chosen by the data: every row shifts alike
            yield op.weight, 1, None, node, lambda u: u.expand(shape).clone()
            return
        # rows looked up by a fixed buffer (position ids): each row read is a source of its own, at the
        # positions it lands (CLIP's class token and position row 0 summed into one value)
        labelled = lambda u, lab: lab[index].unsqueeze(-1) * u  # noqa: E731 - row r carries label lab[r]
        for r in torch.unique(index).tolist():
            yield op.weight, 1, r, node, lambda u, r=r: (index == r).unsqueeze(-1).to(u.dtype) * u, labelled
    elif op.kind is OpKind.LINEAR and op.bias in params and params[op.bias].dim() == 1:
        yield op.bias, 0, None, node, lambda u: u.expand(shape).clone()
    elif op.kind is OpKind.CONV and op.bias in params and len(shape) > 2:
        yield op.bias, 0, None, node, lambda u: u.reshape(-1, *[1] * (len(shape) - 2)).expand(shape).clone()
    elif op.kind is OpKind.NORM and op.bias in params and params[op.bias].dim() == 1:
        if op.norm.channel_axis_last:
            yield op.bias, 0, None, node, lambda u: u.expand(shape).clone()
        elif len(shape) > 1:  # batch / group / instance norm: β along the channel axis 1
            yield op.bias, 0, None, node, lambda u: u.reshape(-1, *[1] * (len(shape) - 2)).expand(shape).clone()
    elif op.kind is OpKind.PARAM and str(node.target) in params and params[str(node.target)].requires_grad:
        rows = math.prod(shape[:-1])
        labelled_rows = lambda u, lab: (lab[:rows, None] * u).reshape(shape)  # noqa: E731
        for r in range(rows if rows <= _MAX_ROWS else 0):  # a 1-D parameter (a class token) is one row
            def field(u, r=r):
                f = torch.zeros(rows, shape[-1], dtype=u.dtype)
                f[r] = u
                return f.reshape(shape)
            yield str(node.target), len(shape) - 1, r, node, field, labelled_rows


def _constant_index(node: fx.Node) -> Optional[torch.Tensor]:
    """The indices an embedding reads when they are a buffer of the model read as it is (a ``get_attr``
    of integer values, not mutated in the graph: position ids), else None."""
    op = node.target if node.op == "call_function" else None
    index = node.args[1] if op is torch.ops.aten.embedding.default or op is torch.embedding else node.args[0]
    if not isinstance(index, fx.Node) or index.op != "get_attr" or any(u.op == "call_method" and str(u.target).endswith("_")
                                                                      or getattr(getattr(u.target, "_schema", None), "is_mutable", False)
                                                                      for u in index.users):
        return None
    try:
        value = index.graph.owning_module.get_buffer(str(index.target))
    except AttributeError:
        return None
    if value.is_meta or value.dtype not in (torch.int64, torch.int32):
        return None
    return value.detach().long()


def _end_of(node: fx.Node) -> Optional[fx.Node]:
    """Follow single value-users through chain ops; the last value reached (None: nothing summed)."""
    cur, moved = node, False
    while True:
        users = [u for u in cur.users if get_op(u).kind.reads_values]
        if len(users) != 1 or not _chain(users[0], cur):
            return cur if moved else None
        cur, moved = users[0], True


def _chain(user: fx.Node, arg: fx.Node) -> bool:
    op = get_op(user)
    if op.kind not in _CHAIN or (op.kind is OpKind.IDENTITY and not op.allows_mixing):
        return False
    if shape_of(user) is None or not shape_of(user):
        return False
    if op.kind is OpKind.CAT:
        return len(shape_of(user)) == len(shape_of(arg)) and op.axis % len(shape_of(user)) != len(shape_of(user)) - 1
    return True


def _cancelling(gm: fx.GraphModule, end: fx.Node, sources, axis: int) -> list[list[float]]:
    """Rows of coefficients whose fields cancel at ``end``: each field must be ``indicator ⊗ u`` along
    the feature ``axis`` of ``end`` (the chain moved positions, not features); the combinations are the
    left null space of the stacked indicators, checked with a second random ``u``."""
    d = shape_of(end)[axis]
    g = torch.Generator().manual_seed(0)
    stacks = []
    for _ in range(2):
        u = torch.randn(d, generator=g, dtype=torch.float64)
        indicators: list = []
        for node in dict.fromkeys(s[3] for s in sources):
            mine = [s for s in sources if s[3] is node]
            got = _indicators(gm, node, mine, u, end, axis)
            if got is None:
                return []
            indicators.extend(got)
        stacks.append(torch.stack(indicators))
    gram = stacks[0] @ stacks[0].T
    evals, evecs = torch.linalg.eigh(gram)
    null = evecs[:, evals <= 1e-9 * max(float(evals.max()), 1.0)].T
    if null.shape[0] == 0 or float((null @ stacks[1]).abs().max()) > 1e-9 * float(stacks[1].abs().max()):
        return []
    # each combination scaled so its largest coefficient is ±1 (integers where the sum is of ±1 terms)
    return [[round(c, 12) for c in (row / row.abs().max()).tolist()] for row in null]


def _indicators(gm: fx.GraphModule, node: fx.Node, mine, u: torch.Tensor, end: fx.Node, axis: int) -> Optional[list]:
    """The indicator at ``end`` of each source of ``node``. The rows of a parameter read directly are
    replayed at once, labelled 1, 2, …: where each end position holds one row's label, that is its
    indicator (one replay, not one per row); otherwise each row is replayed alone."""
    if len(mine) > 1:
        # one source per row (a parameter read directly, or the rows a fixed index reads), each row's
        # field labelled by its row number + 1 (``labelled``)
        if shape_of(node)[-1] != u.shape[0]:
            return None  # its features are not the end's
        rows = [s[2] for s in mine]
        lab = torch.arange(1, max(rows) + 2, dtype=u.dtype)
        ind, ind_sq = (_indicator(gm, node, mine[0][5](u, labels), u, end, axis) for labels in (lab, lab ** 2))
        if ind is not None and ind_sq is not None:
            # a position holding row r's field alone reads r + 1, and (r + 1)² in the squared labelling;
            # a sum or multiple of fields cannot read both (then each row is replayed alone)
            row = torch.round(ind) - 1
            known = torch.isin(row, torch.tensor([-1, *rows], dtype=row.dtype))
            if bool(known.all()) and float((ind - row - 1).abs().max()) < 1e-9 and float(
                    (ind_sq - (row + 1) ** 2).abs().max()) < 1e-9 * max(rows) ** 2 + 1e-9:
                return list((row[None, :] == torch.tensor(rows, dtype=row.dtype)[:, None]).to(ind.dtype))
    out = []
    for s in mine:
        try:
            start = s[4](u)  # the source's feature axis has the end's width, or it is not this sum's
        except RuntimeError:
            return None
        ind = _indicator(gm, node, start, u, end, axis)
        if ind is None:
            return None
        out.append(ind)
    return out


def _indicator(gm: fx.GraphModule, node: fx.Node, start: torch.Tensor, u: torch.Tensor, end: fx.Node, axis: int):
    """``ind`` with the field at ``end`` equal to ``ind ⊗ u`` along ``axis``, or None."""
    d = u.shape[0]
    value = _replay(gm, node, start, end)
    if value is None or value.dim() <= axis or value.shape[axis] != d:
        return None
    f = value.movedim(axis, -1).reshape(-1, d)
    ind = f @ u / (u @ u)
    if float((f - ind[:, None] * u).abs().max()) > 1e-9 * max(float(f.abs().max()), 1.0):
        return None
    return ind


def _replay(gm: fx.GraphModule, start: fx.Node, value: torch.Tensor, end: fx.Node) -> Optional[torch.Tensor]:
    """The field at ``end`` when ``start`` outputs ``value`` and every other tensor on the way is zero."""
    cur = start
    while cur is not end:
        (user,) = [u for u in cur.users if get_op(u).kind.reads_values]
        try:
            value = _run(gm, user, cur, value)
        except Exception:
            return None
        cur = user
    return value


def _run(gm: fx.GraphModule, node: fx.Node, arg: fx.Node, value: torch.Tensor) -> torch.Tensor:
    def sub(a):
        if a is arg:
            return value
        if isinstance(a, fx.Node):
            tm = a.meta.get("tensor_meta")
            if tm is not None and hasattr(tm, "shape"):
                return torch.zeros(tuple(tm.shape), dtype=torch.float64)
            if SIZE_KEY in a.meta:
                return a.meta[SIZE_KEY]
            raise ValueError(f"{a.name} is neither a tensor nor a size recorded at capture")
        if isinstance(a, (list, tuple)):
            return type(a)(sub(x) for x in a)
        return a

    args, kwargs = sub(node.args), {k: sub(v) for k, v in node.kwargs.items()}
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    return node.target(*args, **kwargs)
