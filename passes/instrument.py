"""Instrument pass: rewrite a copy of the annotated graph so the forward also records law values.

Reads an :class:`~fxlaws.annotation.Annotation`; writes a new GraphModule (sharing the user's
submodules and parameters) with one extra submodule, ``fxlaws_metrics``, called just before the
output on ``get_attr`` nodes of the parameters the laws read. Outputs and ``state_dict()`` keys are
unchanged (the metric buffers are non-persistent). The metric module evaluates every family
(vectorised, detached, under ``no_grad``) into a preallocated buffer on the parameters' device,
every ``every``-th forward in training mode with grad enabled; values reach Python only in
``metrics()`` / ``flush()``.
"""

from __future__ import annotations

import json
import torch
import torch.fx as fx
from torch import Tensor, nn

__all__ = ["LawMetrics", "InstrumentPass", "JSONLSink"]

METRICS = "fxlaws_metrics"


class LawMetrics(nn.Module):
    """Holds the law families, the latest values (flat buffer) and the reference values h₀."""

    def __init__(self, families, names: list[str], params: dict[str, Tensor], every: int = 1):
        super().__init__()
        self.families, self.names, self.every = list(families), list(names), int(every)
        self.calls = 0
        self.step = 0
        with torch.no_grad():
            ref = self._evaluate(params)
        self.sizes = [int(v.numel()) for v in ref]
        self.register_buffer("values", torch.cat([v.reshape(-1) for v in ref]) if ref else torch.zeros(0),
                             persistent=False)
        self.register_buffer("reference", self.values.clone(), persistent=False)

    def _evaluate(self, params: dict[str, Tensor]) -> list[Tensor]:
        return [fam.evaluate(params).detach().float() for fam in self.families]

    def forward(self, *tensors: Tensor) -> None:
        if not (self.training and torch.is_grad_enabled()):
            return None
        self.record(tensors)
        return None

    def record(self, tensors) -> None:
        """Count one event (a forward, or an optimizer step in hook mode); every ``every``-th, store
        the current values in the on-device buffer (no host synchronisation)."""
        self.calls += 1
        if (self.calls - 1) % self.every:
            return
        with torch.no_grad():
            params = {n: t.detach() for n, t in zip(self.names, tensors)}
            flat = torch.cat([v.reshape(-1) for v in self._evaluate(params)]) if self.families else self.values
            self.values.copy_(flat)
        self.step = self.calls

    def metrics(self) -> dict[str, float]:
        """``conservation/<kind>/<family>/{max,mean,rms}_rel_drift`` (host sync: call sparingly)."""
        out: dict[str, float] = {"conservation/step": float(self.step)}
        values = self.values.detach().cpu().split(self.sizes)
        refs = self.reference.detach().cpu().split(self.sizes)
        for fam, v, r in zip(self.families, values, refs):
            rel = (v - r).abs() / r.abs().clamp_min(1e-12)
            key = f"conservation/{fam.kind}/{fam.name}"
            out[f"{key}/max_rel_drift"] = float(rel.max()) if rel.numel() else 0.0
            out[f"{key}/mean_rel_drift"] = float(rel.mean()) if rel.numel() else 0.0
            out[f"{key}/rms_rel_drift"] = float(rel.pow(2).mean().sqrt()) if rel.numel() else 0.0
            if len(fam.shape) >= 2:
                out[f"{key}/fro_drift"] = float((v - r).norm())
        return out


class JSONLSink:
    """Appends one JSON object per flush to ``path`` (flushed to disk each time)."""

    def __init__(self, path):
        self.path = path

    def __call__(self, metrics: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics, sort_keys=True) + "\n")


class InstrumentPass:
    """``InstrumentPass(ann, every)(model) -> GraphModule`` with an ``fxlaws_metrics`` submodule."""

    def __init__(self, ann, every: int = 1):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.ann, self.every = ann, every

    def __call__(self, model: nn.Module) -> fx.GraphModule:
        graph = fx.Graph()
        graph.output(graph.graph_copy(self.ann.graph.graph, {}))  # graph_copy leaves the output out
        gm = fx.GraphModule(self.ann.graph, graph, type(model).__name__ + "Instrumented")
        params = dict(model.named_parameters())
        names = sorted({p for fam in self.ann.laws for p in fam.params})
        missing = [n for n in names if n not in params]
        if missing:
            from fxlaws.errors import StaleAnnotationError

            raise StaleAnnotationError(f"parameters {missing[:3]} are not in the model; re-run fxlaws.annotate")
        gm.add_submodule(METRICS, LawMetrics(self.ann.laws, names, params, self.every))
        output = next(n for n in gm.graph.nodes if n.op == "output")
        with gm.graph.inserting_before(output):
            reads = [gm.graph.get_attr(n) for n in names]
            gm.graph.call_module(METRICS, tuple(reads))
        gm.graph.lint()
        gm.recompile()
        return gm
