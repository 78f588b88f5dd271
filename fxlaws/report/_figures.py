"""Pictures for the HTML report, drawn with matplotlib and returned as inline SVG.

* :func:`model_graph_svg`: a networkx graph of the model's stages (modules grouped by path prefix,
  forward order, coloured by coverage) and of its law families (aggregated per stage, THEORY row
  and kind, coloured by kind), with an edge from each family group to every stage it reads.
* :func:`drift_svg`: relative drift ``‖h(t) − h(t₀)‖ / ‖h(t₀)‖`` of logged law values.

Only ``matplotlib.figure.Figure`` is used (no pyplot state, no GUI backend); the SVG is made
reproducible (fixed hash salt, no date) and self-contained (glyphs as paths, no fonts).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import networkx as nx
import numpy as np

__all__ = ["KIND_COLOURS", "Stages", "stages_of", "model_graph_svg", "drift_series", "drift_svg"]

KIND_COLOURS = {
    "rescale": "#1f77b4",
    "gl": "#9467bd",
    "scale": "#ff7f0e",
    "translation": "#2ca02c",
    "attention-qk": "#d62728",
    "attention-vo": "#8c564b",
}
OTHER_COLOUR = "#7f7f7f"


def kind_colour(kind: str) -> str:
    """Colour of a law kind (shared by the picture and the HTML badges)."""
    return KIND_COLOURS.get(kind, OTHER_COLOUR)


@dataclass(frozen=True)
class Stages:
    """Modules grouped into at most a handful of stages, in forward order.

    Attributes:
        order: stage labels in forward order.
        depth: number of leading path components a stage keeps.
        label: prefix -> stage label (differs from the prefix only when consecutive prefixes
            were bucketed together).
    """

    order: tuple[str, ...]
    depth: int
    label: Mapping[str, str]

    def of(self, path: str) -> str:
        """Stage of a module path. A module that owns no parameter itself (an attention block whose
        projections hold them) may be shorter than the stages' depth: it joins the stage of its
        first descendant that has one."""
        key = _prefix(path, self.depth)
        if key in self.label:
            return self.label[key]
        return next((v for k, v in self.label.items() if k.startswith(key + ".")), key)


def stages_of(paths: list[str], max_stages: int = 16) -> Stages:
    """Group module paths (forward order) by the deepest path prefix giving ≤ ``max_stages`` groups.

    ResNet-18 keeps its blocks (``layer1.0`` …, 11 stages); ResNet-50's 16 bottlenecks collapse to
    its stages (``layer1`` … ``layer4``). If even the first path component gives too many
    groups, consecutive groups are bucketed (``0…3``).

    Args:
        paths: module paths in forward order.
        max_stages: most stages to draw.

    Returns:
        A :class:`Stages`.
    """
    deepest = max((p.count(".") + 1 for p in paths if p), default=1)
    depth = 1
    for d in range(1, deepest + 1):
        if len(dict.fromkeys(_prefix(p, d) for p in paths)) > max_stages:
            break
        depth = d
    keys = list(dict.fromkeys(_prefix(p, depth) for p in paths))
    label = {k: k for k in keys}
    if len(keys) > max_stages:
        size = math.ceil(len(keys) / max_stages)
        for i in range(0, len(keys), size):
            chunk = keys[i:i + size]
            for k in chunk:
                label[k] = chunk[0] if len(chunk) == 1 else f"{chunk[0]}…{chunk[-1]}"
    return Stages(tuple(dict.fromkeys(label[k] for k in keys)), depth, label)


def _prefix(path: str, depth: int) -> str:
    return ".".join(path.split(".")[:depth]) if path else "(root)"


def model_graph_svg(data: dict[str, Any], stages: Stages) -> str:
    """Inline SVG: stages of the model and the law families on them.

    Args:
        data: a report document (``_data.build_data``).
        stages: how modules are grouped (:func:`stages_of`).

    Returns:
        An ``<svg>`` element, or ``""`` when the model has no trainable parameters.
    """
    if not stages.order:
        return ""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    g = nx.DiGraph()
    trainable: dict[str, int] = dict.fromkeys(stages.order, 0)
    covered: dict[str, int] = dict.fromkeys(stages.order, 0)
    for mod in data["modules"]:
        s = stages.of(mod["path"])
        trainable[s] = trainable.get(s, 0) + mod["trainable"]
        covered[s] = covered.get(s, 0) + mod["covered"]
    order = list(dict.fromkeys(list(stages.order) + list(trainable)))
    for s in order:
        g.add_node(("stage", s))
    g.add_edges_from((("stage", a), ("stage", b)) for a, b in zip(order, order[1:]))

    groups: dict[tuple, dict[str, Any]] = {}
    for fam in data["families"]:
        touched = [t for t in dict.fromkeys(stages.of(m) for m in fam["modules"]) if t in trainable] or [order[0]]
        key = (touched[0], fam["theory"], fam["kind"], fam["exact"])
        grp = groups.setdefault(key, {"families": 0, "laws": 0, "touched": {}})
        grp["families"] += 1
        grp["laws"] += fam["count"]
        grp["touched"].update(dict.fromkeys(touched))
    rows: dict[str, int] = {}
    pos: dict[Any, tuple[float, float]] = {("stage", s): (1.2 * i, 0.0) for i, s in enumerate(order)}
    for key, grp in groups.items():
        home = key[0]
        node = ("family",) + key
        g.add_node(node)
        k = rows.get(home, 0)
        rows[home] = k + 1
        pos[node] = (pos[("stage", home)][0], -1.3 - 0.9 * k)
        for s in grp["touched"]:
            g.add_edge(node, ("stage", s))

    depth = max(rows.values(), default=0)
    fig = Figure(figsize=(max(6.0, 1.1 * len(order) + 0.8), 2.0 + 0.85 * depth))
    ax = fig.add_axes((0, 0.1, 1, 0.9))
    ax.set_axis_off()
    chain = [e for e in g.edges if e[0][0] == "stage"]
    links = [e for e in g.edges if e[0][0] == "family"]
    nx.draw_networkx_edges(g, pos, edgelist=chain, ax=ax, arrows=True, arrowstyle="-|>", arrowsize=9,
                           edge_color="#555555", width=1.0, node_size=1800, node_shape="s")
    for e in links:
        coll = nx.draw_networkx_edges(g, pos, edgelist=[e], ax=ax, arrows=False, width=1.1, alpha=0.55,
                                      edge_color=kind_colour(e[0][3]), style="solid" if e[0][4] else "dashed")
        coll.set_zorder(0)
    for s in order:
        share = covered.get(s, 0) / trainable[s] if trainable.get(s) else 0.0
        face = _green(share) if share > 0 else "#eeeeee"
        text = f"{s}\n{_si(trainable.get(s, 0))} params\n{share:.0%} in laws"
        _box(g, pos, ("stage", s), text, ax, face=face, edge="#c0392b" if share == 0 else "#333333")
    for key, grp in groups.items():
        home, theory, kind, exact = key
        many = f" ×{grp['families']}" if grp["families"] > 1 else ""
        text = f"{theory} {kind}{many}\n{grp['laws']:,} laws" + ("" if exact else "\n(approx.)")
        _box(g, pos, ("family",) + key, text, ax, face=kind_colour(kind), edge="#222222",
             alpha=1.0 if exact else 0.55, color="white" if exact else "#111111", dashed=not exact)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    kinds = list(dict.fromkeys(k[2] for k in groups))
    handles = [Patch(facecolor=kind_colour(k), label=k) for k in kinds]
    handles += [Patch(facecolor="white", edgecolor="#222222", linestyle="--", label="approximate (eps-broken)"),
                Patch(facecolor=_green(1.0), edgecolor="#333333", label="stage: share of parameters in laws"),
                Patch(facecolor="#eeeeee", edgecolor="#c0392b", label="stage without laws")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    return _svg(fig, "fxlaws-model")


def _box(g, pos, node, text, ax, *, face, edge, alpha=1.0, color="#111111", dashed=False) -> None:
    labels = nx.draw_networkx_labels(
        g, pos, labels={node: text}, ax=ax, font_size=8, font_color=color,
        bbox={"boxstyle": "round,pad=0.35", "facecolor": face, "edgecolor": edge, "alpha": alpha,
              "linestyle": "--" if dashed else "-"},
    )
    for t in labels.values():
        t.set_zorder(3)


def _green(share: float) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["Greens"](0.15 + 0.45 * max(0.0, min(1.0, share)))


def _si(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def drift_series(history: Mapping[Any, Mapping[str, Any]], group_of: Callable[[str], str],
                 max_lines: int = 8) -> dict[str, tuple[list[float], list[float], int]]:
    """Relative drift of logged metrics, one series per metric (or per group when there are many).

    Args:
        history: step -> {metric name: value (number, array or tensor)}: law values (their drift
            is computed here), or ``fxlaws.instrument``'s records (``inst.history`` or its
            ``by_step()``), whose ``conservation/<kind>/<family>/max_rel_drift`` are drifts
            already and are plotted as they are; the step, non-finite count and mean/rms summaries
            are not laws and are left out.
        group_of: metric name -> group (used when there are more than ``max_lines`` metrics;
            a group's series is the largest drift of its metrics at each step).
        max_lines: most series to draw one line per metric.

    Returns:
        series name -> (steps, drifts, number of metrics), drift ``‖v(t) − v(t₀)‖ / ‖v(t₀)‖`` with
        ``t₀`` the first step a metric was logged (absolute drift when ``‖v(t₀)‖ = 0``).
    """
    history = _by_step(history)
    steps = sorted(history)
    metrics = list(dict.fromkeys(m for s in steps for m in history[s] if m not in _NOT_LAWS))
    per_metric: dict[str, dict[float, float]] = {}
    for m in metrics:
        if m.endswith(_DRIFT):  # fxlaws.instrument already measured it: max relative drift of the family
            per_metric[m[len("conservation/"):-len(_DRIFT)].split("/", 1)[-1]] = {
                float(s): float(history[s][m]) for s in steps if m in history[s]}
            continue
        first = None
        for s in steps:
            if m not in history[s]:
                continue
            v = _array(history[s][m])
            first = v if first is None else first
            scale = float(np.linalg.norm(first))
            drift = float(np.linalg.norm(v - first)) if v.shape == first.shape else float("nan")
            per_metric.setdefault(m, {})[float(s)] = drift / scale if scale > 0 else drift
    if len(metrics) <= max_lines:
        return {m: (list(d), list(d.values()), 1) for m, d in per_metric.items()}
    out: dict[str, dict[float, float]] = {}
    counts: dict[str, int] = {}
    for m, d in per_metric.items():
        grp = group_of(m)
        counts[grp] = counts.get(grp, 0) + 1
        acc = out.setdefault(grp, {})
        for s, v in d.items():
            acc[s] = max(acc.get(s, 0.0), v)
    return {g: (sorted(d), [d[s] for s in sorted(d)], counts[g]) for g, d in out.items()}


_DRIFT = "/max_rel_drift"


class _NotLaws:
    """Metric names of an instrument history that are not law values: the step, the non-finite
    count, and the mean / rms drift summaries (the max is plotted)."""

    def __contains__(self, name: str) -> bool:
        return name.startswith("conservation/") and not name.endswith(_DRIFT)


_NOT_LAWS = _NotLaws()


def _by_step(history) -> Mapping[Any, Mapping[str, Any]]:
    """``{step: {metric: value}}`` from that mapping itself or from ``fxlaws.instrument``'s
    ``History`` (a list of flushed metric rows, each with its ``conservation/step``)."""
    if isinstance(history, Mapping):
        return history
    return {row["conservation/step"]: row for row in history}


def _array(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=float)


def drift_svg(series: dict[str, tuple[list[float], list[float], int]]) -> str:
    """Inline SVG line plot (log scale) of :func:`drift_series`; ``""`` when there is nothing to draw."""
    if not series:
        return ""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.6))
    ax = fig.add_subplot()
    floor = 1e-18
    for name, (steps, drifts, n) in series.items():
        label = name if n == 1 else f"{name} (max of {n})"
        ax.plot(steps, [max(d, floor) for d in drifts], marker="o", markersize=2.5, linewidth=1.2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("‖h(t) − h(t₀)‖ / ‖h(t₀)‖")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _svg(fig, "fxlaws-drift")


def _svg(fig, salt: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF creator block: not needed inline
    return text[text.index("<svg"):]
