"""Normalise pass: give every fx node a :class:`~fxlaws.meta.CanonicalOp` in ``node.meta["fxlaws"]``.

Reads ``call_module`` targets (leaf torch.nn modules), ``call_function`` / ``call_method`` targets
and ``get_attr`` parameter names; writes ``NodeMeta(op=...)``. Which op is which kind is one table
lookup in the op vocabulary (:func:`fxlaws.rules.rule_for`: user registrations, then the built-in
tables). Unknown ops become OPAQUE with a description: they stop every law that reaches them.
"""

from __future__ import annotations

import torch.fx as fx

from fxlaws.errors import PassOrderError
from fxlaws.meta import META_KEY, CanonicalOp, NodeMeta, has_ops
from fxlaws.rules import OpContext, rule_for
from fxlaws.vocabulary import OpKind

from .base import FxlawsPass, PassResult
from .pipeline import AnnotateState

__all__ = ["NormalisePass", "canonical_op"]


def _module_path(node: fx.Node) -> str | None:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        return next(reversed(stack.values()))[0]
    return None


def canonical_op(gm: fx.GraphModule, node: fx.Node, params: dict, train: bool = True,
                 opaque: dict[str, str] | None = None) -> CanonicalOp:
    """The canonical op of one node (what :class:`NormalisePass` stores on it).

    Args:
        gm: the node's GraphModule (call_module targets are looked up in it).
        params: ``dict(gm.named_parameters(remove_duplicate=False))``.
        train: analyse training-mode behaviour (BatchNorm uses batch statistics).
        opaque: module paths capture kept opaque, with the reason.
    """
    path = _module_path(node)
    if node.op == "placeholder":
        return CanonicalOp(OpKind.INPUT, detail=f"input {node.target}")
    if node.op == "output":
        return CanonicalOp(OpKind.OUTPUT, detail="model output")
    if node.op == "get_attr":
        return CanonicalOp(OpKind.PARAM, module=path, weight=str(node.target), detail=f"attribute {node.target}")
    if node.op == "call_module" and path in (opaque or {}):
        return CanonicalOp(OpKind.OPAQUE, module=path, detail=f"opaque module {path} ({opaque[path]})")
    module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
    if node.op not in ("call_module", "call_function", "call_method"):
        return CanonicalOp(OpKind.OPAQUE, module=path, detail=f"{node.op} {node.target}")
    rule, target = rule_for(node, module)
    ctx = OpContext(node, params, train, path, module, target)
    if rule is not None:
        return rule(ctx)
    what = {"call_module": f"module {ctx.name} ({path})", "call_method": f"method .{ctx.name}() ({node.name})"}
    return CanonicalOp(OpKind.OPAQUE, module=path,
                       detail=f"unsupported {what.get(node.op, f'function {ctx.name} ({node.name})')}")


class NormalisePass(FxlawsPass[AnnotateState]):
    """Write ``NodeMeta(op=CanonicalOp)`` on every node of the captured graph.

    Reads ``state.capture`` (graph, opaque modules) and ``state.train``. With ``train=False``
    BatchNorm / tracked InstanceNorm are fixed affine maps (THEORY note on eval mode).
    """

    def requires(self, state: AnnotateState) -> None:
        nodes = [n for n in state.graph_module.graph.nodes if n.op != "output"]
        if nodes and not any("tensor_meta" in n.meta for n in nodes):
            raise PassOrderError("NormalisePass needs shape metadata (node.meta['tensor_meta']): capture the "
                                 "model with fxlaws.capture.capture, which propagates shapes")

    def call(self, state: AnnotateState) -> PassResult[AnnotateState]:
        gm = state.graph_module
        params = dict(gm.named_parameters(remove_duplicate=False))
        for node in gm.graph.nodes:
            node.meta[META_KEY] = NodeMeta(op=canonical_op(gm, node, params, state.train, state.capture.opaque))
        return PassResult(state, True)

    def ensures(self, state: AnnotateState) -> None:
        assert has_ops(state.graph_module.graph), "NormalisePass left a node without node.meta['fxlaws']"
