"""Mark-laws pass: write the names of the law families that read a node's parameters into
``node.meta["fxlaws"].laws`` (the last pass of ``annotate``; reports and instrument read it)."""

from __future__ import annotations

import dataclasses

from fxlaws.errors import PassOrderError
from fxlaws.meta import META_KEY

from .base import FxlawsPass, PassResult
from .pipeline import AnnotateState

__all__ = ["MarkLawsPass"]


class MarkLawsPass(FxlawsPass[AnnotateState]):
    """Reads ``state.laws.families``; writes ``NodeMeta.laws`` on every node reading their parameters."""

    def requires(self, state: AnnotateState) -> None:
        if state.laws is None:
            raise PassOrderError("MarkLawsPass reads state.laws: run AttachLawsPass (and AttentionPass) first")

    def call(self, state: AnnotateState) -> PassResult[AnnotateState]:
        by_param: dict[str, list[str]] = {}
        for fam in state.laws.families:
            for p in fam.params:
                by_param.setdefault(p, []).append(fam.name)
        canonical = state.laws.facts.canonical
        modified = False
        for node in state.graph_module.graph.nodes:
            meta = node.meta.get(META_KEY)
            names = [n for p in (meta.op.weight, meta.op.bias) if p is not None
                     for n in by_param.get(canonical.get(p, p), ())] if meta is not None else []
            if names:
                node.meta[META_KEY] = dataclasses.replace(meta, laws=tuple(dict.fromkeys(names)))
                modified = True
        return PassResult(state, modified)
