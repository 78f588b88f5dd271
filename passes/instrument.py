"""Instrument pass: rewrite a copy of an fx-captured graph so the forward also records law values.

Reads an :class:`InstrumentState`: the annotation's graph (captured by torch.fx), the model it is
applied to (the graph is re-rooted on it), and a :class:`~fxlaws.metrics.LawMetrics` built by the
caller (:func:`~fxlaws.metrics.law_metrics_for`; the runtime code lives in :mod:`fxlaws.metrics`).
Writes a new GraphModule (sharing the user's submodules and parameters) with one extra submodule,
``fxlaws_metrics`` (``fxlaws_metrics_1``, ... if the model already has an attribute of that name;
the name chosen is ``InstrumentState.target``), called just before the output on ``get_attr``
nodes of the parameters the laws read. Outputs and ``state_dict()`` keys are unchanged (the metric
buffers are non-persistent). Graphs from torch.export are refused: ``fxlaws.instrument`` runs the
metrics after the model's own forward instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch.fx as fx
from torch import nn

from fxlaws.errors import PassOrderError, StaleAnnotationError

from .base import FxlawsPass, PassResult

__all__ = ["InstrumentPass", "InstrumentState", "get_new_attr_name_with_prefix", "METRICS"]

METRICS = "fxlaws_metrics"  # the metric submodule's name, unless the model already has an attribute of that name


def get_new_attr_name_with_prefix(prefix: str) -> Callable[..., str]:
    """In the style of ``torch.ao.quantization.fx.utils.get_new_attr_name_with_prefix``: a function
    of modules returning the first of ``prefix``, ``prefix_1``, ``prefix_2``, ... that none of them
    has as an attribute (the first choice is ``prefix`` itself, so an uncrowded model keeps it)."""
    prefix = prefix.replace(".", "_")

    def get_new_attr_name(*modules: nn.Module) -> str:
        def get_attr_name(i: int) -> str:
            return prefix if i == 0 else f"{prefix}_{i}"

        i = 0
        attr_name = get_attr_name(i)
        while any(hasattr(m, attr_name) for m in modules):
            i += 1
            attr_name = get_attr_name(i)
        return attr_name

    return get_new_attr_name


_new_metrics_name = get_new_attr_name_with_prefix(METRICS)


@dataclass(frozen=True)
class InstrumentState:
    """What :class:`InstrumentPass` reads and writes.

    Attributes:
        graph: the annotation's captured graph (``Annotation.graph``).
        frontend: the front end that captured it (``Annotation.frontend``); only "fx" is rewritten.
        model: the model the rewritten graph runs (its parameters are shared, never copied).
        metrics: the metric submodule to insert (a :class:`~fxlaws.metrics.LawMetrics`, built by the
            caller with :func:`~fxlaws.metrics.law_metrics_for`).
        names: the parameter names it reads, in the order its forward takes them (``metrics.names``).
        result: the rewritten GraphModule (set by the pass).
        target: the name of the metric submodule in ``result`` (set by the pass).
    """

    graph: Optional[fx.GraphModule]
    frontend: str
    model: nn.Module
    metrics: Optional[nn.Module]
    names: list[str]
    result: Optional[fx.GraphModule] = None
    target: Optional[str] = None


def _root(model: nn.Module, gm: fx.GraphModule) -> nn.Module:
    """The module the rewritten graph reads its submodules and parameters from: the user's model
    when every target resolves on it (fx front end), else the captured GraphModule (export adds
    helper submodules); parameter identity is checked by the caller either way."""
    for node in gm.graph.nodes:
        if node.op in ("get_attr", "call_module"):
            obj = model
            for part in node.target.split("."):
                if not hasattr(obj, part):
                    return gm
                obj = getattr(obj, part)
    return model


class InstrumentPass(FxlawsPass[InstrumentState]):
    """``InstrumentPass()(InstrumentState(...)).state.result``: a GraphModule calling the metric
    submodule (named ``state.target``) before the output."""

    def requires(self, state: InstrumentState) -> None:
        if state.graph is None:
            raise PassOrderError("InstrumentPass needs the annotation's captured graph (state.graph is None): run "
                                 "fxlaws.annotate on the model first and pass ann.graph")
        if not isinstance(state.graph, fx.GraphModule):
            raise TypeError(f"InstrumentPass rewrites a torch.fx GraphModule, got {type(state.graph).__name__}")
        if state.frontend != "fx":
            raise ValueError(f"InstrumentPass only rewrites graphs captured by torch.fx, this one came from "
                             f"{state.frontend!r} (an aten graph is specialised to one train/eval mode): call the "
                             "metrics after the model's own forward instead, as fxlaws.instrument does")
        if state.metrics is None:
            raise PassOrderError("InstrumentPass needs the metric submodule (state.metrics is None): build it "
                                 "with fxlaws.metrics.law_metrics_for first")
        if list(getattr(state.metrics, "names", state.names)) != list(state.names):
            raise ValueError("state.names must be the parameter names the metric submodule reads, in its order "
                             "(metrics.names)")

    def call(self, state: InstrumentState) -> PassResult[InstrumentState]:
        model = state.model
        graph = fx.Graph()
        graph.output(graph.graph_copy(state.graph.graph, {}))  # graph_copy leaves the output out
        gm = fx.GraphModule(_root(model, state.graph), graph, type(model).__name__ + "Instrumented")
        params = dict(model.named_parameters())
        foreign = [n for n, p in gm.named_parameters() if params.get(n) is not p]
        if foreign:
            raise StaleAnnotationError(
                f"the annotation's graph holds parameters {foreign[:3]} that are not this model's (it was "
                f"made on another {type(model).__name__} instance, or the parameters were re-registered); "
                "run fxlaws.annotate on this model")
        target = _new_metrics_name(model, gm)
        gm.add_submodule(target, state.metrics)
        output = next(n for n in gm.graph.nodes if n.op == "output")
        with gm.graph.inserting_before(output):
            reads = [gm.graph.get_attr(n) for n in state.names]
            gm.graph.call_module(target, tuple(reads))
        gm.recompile()
        return PassResult(replace(state, result=gm, target=target), True)

    def ensures(self, state: InstrumentState) -> None:
        if state.result is None or state.target is None:
            raise PassOrderError("InstrumentPass left no rewritten graph (state.result / state.target unset)")
        state.result.graph.lint()
