"""The pieces of a model whose completeness can be checked: the sub-graphs where its laws live.

A law family spans several modules (a conv → ReLU → pool → conv pair, a norm and its consumers, a
head's projections): checking completeness module by module never sees it. :func:`law_blocks` cuts
the captured graph instead: for each family, the nodes from the first one reading its parameters
to the last, with every value flowing in from outside as an input (recorded on the example inputs)
and every value used outside as an output. Families whose node ranges overlap share one block while
it stays within ``max_params`` trainable parameters. The block is then an ordinary module: its
``D − dim Lie`` is the number of laws of that piece of the model on its own inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..annotation import Annotation
from ..capture import normalise_inputs, preserved

__all__ = ["LawBlock", "law_blocks"]


@dataclass
class LawBlock:
    """One sub-graph: ``module`` run on ``inputs`` computes what the model computes there."""

    families: list[str]
    module: fx.GraphModule
    inputs: tuple
    params: int

    @property
    def label(self) -> str:
        names = self.families[:2]
        return ", ".join(names) + (f" (+{len(self.families) - 2} more)" if len(self.families) > 2 else "")


def _param_nodes(graph: fx.Graph, params: set[str]) -> list[int]:
    order = {n: i for i, n in enumerate(graph.nodes)}
    hits = []
    for node in graph.nodes:
        if node.op == "get_attr" and str(node.target) in params:
            hits.extend(order[u] for u in node.users)
        elif node.op == "call_module":
            if any(f"{node.target}.{n}" in params for n, _ in _owned(node)):
                hits.append(order[node])
    return hits


def _owned(node: fx.Node):
    gm = node.graph.owning_module
    return gm.get_submodule(str(node.target)).named_parameters()


def _size(gm: fx.GraphModule, nodes: list[fx.Node]) -> int:
    """Trainable parameters the nodes read (module calls, and parameter reads wherever they sit)."""
    seen, total = set(), 0

    def add(p) -> None:
        nonlocal total
        if p is not None and p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()

    for node in nodes:
        for arg in [node, *node.all_input_nodes]:
            if arg.op == "get_attr" and _is_param(gm, str(arg.target)):
                add(gm.get_parameter(str(arg.target)))
        if node.op == "call_module":
            for p in gm.get_submodule(str(node.target)).parameters():
                add(p)
    return total


def _is_param(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_parameter(name)
        return True
    except AttributeError:
        return False


def _cut(gm: fx.GraphModule, nodes: list[fx.Node]) -> tuple[fx.GraphModule, list[fx.Node]]:
    """A GraphModule computing ``nodes`` (graph order); returns it and the outside nodes it reads."""
    inside = set(nodes)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    boundary: list[fx.Node] = []
    for node in nodes:
        for arg in node.all_input_nodes:
            if arg not in inside and arg not in env and arg.op != "get_attr":
                env[arg] = graph.placeholder(f"in_{arg.name}")
                boundary.append(arg)
            elif arg.op == "get_attr" and arg not in env:
                env[arg] = graph.get_attr(str(arg.target))
        if node.op == "get_attr" and node in env:
            continue
        env[node] = graph.node_copy(node, lambda a: env[a])
    used_outside = [n for n in nodes if any(u not in inside for u in n.users) and n.op != "get_attr"]
    outputs = used_outside or [nodes[-1]]
    graph.output(tuple(env[n] for n in outputs) if len(outputs) > 1 else env[outputs[0]])
    return fx.GraphModule(gm, graph, "LawBlock"), boundary


def _values(gm: fx.GraphModule, model: nn.Module, example_inputs: Any, wanted: set[fx.Node]) -> dict[fx.Node, Any]:
    """The values of ``wanted`` nodes on the example inputs (one real forward of the captured graph)."""
    args, kwargs = normalise_inputs(example_inputs)
    from torch.utils import _pytree as pytree

    flat = pytree.tree_leaves((args, kwargs))
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    seen: dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in wanted:
                seen[n] = out.detach().clone() if isinstance(out, torch.Tensor) else out
            return out

    call = flat if len(flat) == len(placeholders) else list(args) + list(kwargs.values())
    with preserved(model), torch.no_grad():
        Recorder(gm).run(*call)
    return seen


def law_blocks(model: nn.Module, ann: Annotation, example_inputs: Any, max_params: int = 2000,
               ) -> tuple[list[LawBlock], list[tuple[str, int]]]:
    """Sub-graphs of ``ann.graph`` holding each law family's modules and what lies between them.

    Returns:
        (blocks of at most ``max_params`` trainable parameters, in graph order; the families left
        out with their block's size).
    """
    gm = ann.graph
    nodes = list(gm.graph.nodes)
    ranges = []
    for fam in ann.laws:
        hits = _param_nodes(gm.graph, set(fam.params))
        if hits:
            ranges.append([min(hits), max(hits), [fam.name]])
    ranges.sort()
    merged: list[list] = []
    for lo, hi, names in ranges:
        if merged and lo <= merged[-1][1]:
            cand = [merged[-1][0], max(hi, merged[-1][1]), merged[-1][2] + names]
            if _size(gm, _span(nodes, cand[0], cand[1])) <= max_params:
                merged[-1] = cand
                continue
        merged.append([lo, hi, names])
    blocks, too_big = [], []
    cuts = []
    for lo, hi, names in merged:
        span = _span(nodes, lo, hi)
        size = _size(gm, span)
        if size > max_params or size == 0:
            too_big.extend((n, size) for n in names)
            continue
        cuts.append((names, *_cut(gm, span), size))
    values = _values(gm, model, example_inputs, {b for _, _, boundary, _ in cuts for b in boundary})
    for names, sub, boundary, size in cuts:
        if all(isinstance(values.get(b), torch.Tensor) for b in boundary):
            blocks.append(LawBlock(names, sub, tuple(values[b] for b in boundary), size))
        else:
            too_big.extend((n, size) for n in names)
    return blocks, too_big


def _span(nodes: list[fx.Node], lo: int, hi: int) -> list[fx.Node]:
    """Nodes lo..hi that compute something (placeholders and the output stay outside)."""
    return [n for n in nodes[lo:hi + 1] if n.op not in ("placeholder", "output")]
