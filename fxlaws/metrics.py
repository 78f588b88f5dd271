"""Runtime code of graph-mode and hook-mode instrumentation: what runs every training step.

:class:`LawMetrics` is the ``nn.Module`` an instrumented forward calls (graph mode: the submodule
the instrument pass inserts before the output; torch.export graphs and hook mode: called right
after the model's forward or the optimizer step).

Reads: the parameters the law families read (handed in as tensors, in ``LawMetrics.names`` order),
every ``every``-th training-mode forward with grad enabled, detached and under ``no_grad``.
Writes: only its own non-persistent buffers on the parameters' device: ``values`` (the latest law
values, flat), ``reference`` (h₀, the values at instrument time) and ``scratch`` (the squared
sums' work space), plus the Python counters ``calls`` / ``step``. Nothing reaches the host until
``metrics()`` / ``flush()``; under torch.compile a record is one opaque custom op
(``fxlaws::record``) so the counters never enter dynamo's guards.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Mapping

import torch
from torch import Tensor, nn

from fxlaws.laws.cpu_kernel import check_kernel, square_sums_module
from fxlaws.laws.family import evaluate_all, square_needs

__all__ = ["LawMetrics", "law_metrics_for"]

SCRATCH = 1 << 22  # elements of the squares' scratch buffer (larger tensors are squared in row blocks)


def _promoted(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


_KEYS = itertools.count()
_LIVE: "weakref.WeakValueDictionary[int, LawMetrics]" = weakref.WeakValueDictionary()


@torch.library.custom_op("fxlaws::record", mutates_args=("values",))
def _record_op(key: int, values: Tensor, tensors: list[Tensor]) -> None:
    """What a compiled instrumented forward calls: ``LawMetrics.record`` of the instance ``key``."""
    _LIVE[key].record(tensors)


@_record_op.register_fake
def _(key: int, values: Tensor, tensors: list[Tensor]) -> None:
    return None


class LawMetrics(nn.Module):
    """Holds the law families, the latest values (flat buffer) and the reference values h₀.

    ``kernel``: how squared sums are reduced — "eager" (torch ops) or "cpp" (the fused CPU kernel of
    :mod:`fxlaws.laws.cpu_kernel`, built here on first use; raises KernelBuildError if it cannot be).
    """

    def __init__(self, families, names: list[str], params: dict[str, Tensor], every: int = 1, kernel: str = "eager"):
        super().__init__()
        check_kernel(kernel)
        if kernel == "cpp":
            square_sums_module()  # build (or load) now: a toolchain problem surfaces at instrument time
        self.families, self.names, self.every, self.kernel = list(families), list(names), int(every), kernel
        # float64 models keep float64 values (drifts of 1e-10 are invisible in float32); others float32
        self.value_dtype = torch.float64 if any(params[n].dtype == torch.float64 for n in self.names) else torch.float32
        self.calls = 0
        self.step = 0
        self.on_record = None
        self._register()
        self.needs = square_needs(self.families)  # once: record() runs on every recorded forward
        scratch = max((params[n] for n in self.needs), key=Tensor.numel, default=torch.zeros(0))
        self.register_buffer("scratch", torch.empty(min(scratch.numel(), SCRATCH), dtype=_promoted(scratch.dtype),
                                                    device=scratch.device), persistent=False)
        ref = self._evaluate(params)
        self.sizes = [int(v.numel()) for v in ref]
        self.register_buffer("values", torch.cat(ref) if ref else torch.zeros(0),
                             persistent=False)
        self.register_buffer("reference", self.values.clone(), persistent=False)

    def _register(self) -> None:
        self._key = next(_KEYS)
        _LIVE[self._key] = self

    def __setstate__(self, state) -> None:  # copies (deepcopy, pickle) get their own key
        super().__setstate__(state)
        self._register()

    def _evaluate(self, params: dict[str, Tensor]) -> list[Tensor]:
        """Every family's value, flat, in ``value_dtype``, without autograd (and without autocast:
        ``evaluate_all`` turns it off)."""
        with torch.no_grad():
            return [v.to(self.value_dtype).reshape(-1)
                    for v in evaluate_all(self.families, params, self.scratch, self.needs, self.kernel)]

    def forward(self, *tensors: Tensor) -> None:
        if not (self.training and torch.is_grad_enabled()):
            return None
        if torch.compiler.is_compiling():
            # One opaque op in the compiled graph: the Python counters below stay out of dynamo's
            # guards (an int attribute changing every step would recompile every step).
            torch.ops.fxlaws.record(self._key, self.values, [t.detach() for t in tensors])
        else:
            self.record(tensors)
        return None

    def record(self, tensors) -> None:
        """Count one event (a forward, or an optimizer step in hook mode); every ``every``-th, store
        the current values in the on-device buffer (no host synchronisation), then call
        ``on_record(self)`` if set (the wrapper's flush-to-sinks check)."""
        self.calls += 1
        if (self.calls - 1) % self.every == 0:
            if self.families:
                values = self._evaluate(dict(zip(self.names, tensors)))
                with torch.no_grad():
                    if values[0].device == self.values.device:
                        torch.cat(values, out=self.values)
                    else:  # the model was moved after instrument() (hook mode, or model.to(...))
                        self.values.copy_(torch.cat(values))
            self.step = self.calls
        if self.on_record is not None:
            self.on_record(self)

    def metrics(self) -> dict[str, float]:
        """``conservation/<kind>/<family>/{max,mean,rms}_rel_drift`` (matrix laws: also ``fro_drift``),
        ``conservation/step`` and ``conservation/nonfinite`` (how many law values are NaN/Inf: a
        diverged run is flagged, its drifts are NaN). One host sync: call sparingly."""
        with torch.no_grad():  # summaries on the device, then one small transfer
            v = self.values
            drift, rel = _drift(v, self.reference)
            rows = [torch.stack([x.max(), x.mean(), x.pow(2).mean().sqrt(), d.norm()]) if x.numel() else v.new_zeros(4)
                    for x, d in zip(rel.split(self.sizes), drift.split(self.sizes))]
            flat = torch.cat(rows + [(~v.isfinite()).sum().to(v.dtype).reshape(1)]).cpu().tolist()
        out: dict[str, float] = {"conservation/step": float(self.step), "conservation/nonfinite": flat[-1]}
        for i, fam in enumerate(self.families):
            key = f"conservation/{fam.kind}/{fam.name}"
            out[f"{key}/max_rel_drift"], out[f"{key}/mean_rel_drift"], out[f"{key}/rms_rel_drift"] = flat[4 * i:4 * i + 3]
            if len(fam.shape) >= 2:
                out[f"{key}/fro_drift"] = flat[4 * i + 3]
        return out

    def law_values(self) -> dict[str, dict[str, Tensor]]:
        """Per family: ``value`` (latest recorded, the family's shape), ``drift`` (value − h₀) and
        ``rel_drift`` (``|drift| / |h₀|``), on the device (no sync)."""
        out = {}
        for fam, v, r in zip(self.families, self.values.split(self.sizes), self.reference.split(self.sizes)):
            v = v.view(fam.shape)
            drift, rel = _drift(v, r.view(fam.shape))
            out[fam.name] = {"value": v, "drift": drift, "rel_drift": rel}
        return out

    def state(self) -> dict:
        """What a resumed run needs to continue the drift series: h₀ and the counters."""
        return {"families": [f.name for f in self.families], "reference": self.reference.detach().cpu().clone(),
                "calls": self.calls, "step": self.step}

    def load_state(self, state: Mapping) -> None:
        """Continue from :meth:`state` of an earlier run of the same annotation (same family names)."""
        if list(state["families"]) != [f.name for f in self.families]:
            from fxlaws.errors import StaleAnnotationError

            raise StaleAnnotationError("the saved law state was recorded for other law families; annotate the "
                                       "same model the state was saved from")
        self.reference.copy_(state["reference"])
        self.calls, self.step = int(state["calls"]), int(state["step"])


def _drift(values: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """``h − h₀`` and the relative drift ``|h − h₀| / |h₀|`` (THEORY §3; |h₀| floored at 1e-12)."""
    drift = values - reference
    return drift, drift.abs() / reference.abs().clamp_min(1e-12)


def law_metrics_for(ann, model: nn.Module, every: int = 1, kernel: str = "eager") -> LawMetrics:
    """A :class:`LawMetrics` for ``ann``'s families reading ``model``'s parameters; h₀ = their values now.

    Raises:
        StaleAnnotationError: a parameter the laws read is missing from ``model`` or reshaped.
    """
    if every < 1:
        raise ValueError("every must be >= 1")
    with torch.no_grad():
        ann.evaluate(model)  # StaleAnnotationError if a parameter the laws read is gone or reshaped
    names = sorted({p for fam in ann.laws for p in fam.params})
    return LawMetrics(ann.laws, names, dict(model.named_parameters()), every, kernel)
