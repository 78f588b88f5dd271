"""``fxlaws.instrument``: the forward pass also records the conserved quantities."""

from __future__ import annotations

import atexit
import weakref
from typing import Any, Callable, Iterable, Optional

import torch.fx as fx
from torch import nn

from fxlaws.laws.cpu_kernel import check_kernel
from fxlaws.metrics import LawMetrics, law_metrics_for
from fxlaws.passes.instrument import METRICS, InstrumentPass, InstrumentState

from .annotation import Annotation
from .capture import unwrap
from .errors import require_values
from .sinks import STEP, History, JSONLSink, TensorBoardSink, WandbSink

__all__ = ["instrument", "Instrumented", "HookInstrumented", "JSONLSink", "TensorBoardSink", "WandbSink", "History"]


#: recorders not closed yet: their last records are flushed at interpreter exit (weak: a recorder the
#: user dropped is not kept alive)
_OPEN: "weakref.WeakSet[_Recorder]" = weakref.WeakSet()
_AT_EXIT: list = []


def _register_exit_flush() -> None:
    """Registered when the first recorder is made, after its sinks (``wandb.init`` registers its own
    exit handler then): handlers run last-registered-first, so the laws' last records reach a sink
    before the sink's library shuts it."""
    if not _AT_EXIT:
        _AT_EXIT.append(atexit.register(_close_open_recorders))


def _close_open_recorders() -> None:
    for recorder in list(_OPEN):
        try:
            recorder.close()
        except Exception:  # noqa: BLE001 -- at exit: a failing sink must not hide the others
            pass


class _Recorder:
    """What graph and hook mode share: sinks, the flush rule, history and resume state, all read
    from ``self.law_metrics``."""

    def _init_recording(self, sinks: Iterable[Callable], flush_every: int) -> None:
        self.sinks = list(sinks)
        self.flush_every = flush_every
        self.history = History()
        self._flushed_at = 0
        self._closed = False
        self.law_metrics.on_record = self._after_record
        _OPEN.add(self)
        _register_exit_flush()

    def _check_model(self) -> None:
        """Raise if what is recorded no longer belongs to the user's model (nothing to check here)."""

    def _after_record(self, m: LawMetrics) -> None:
        # called by LawMetrics.record, eagerly even inside a compiled forward (see fxlaws::record)
        if self.sinks and not self._closed and m.step == m.calls and m.calls - self._flushed_at >= self.flush_every:
            self.flush()

    def metrics(self) -> dict[str, float]:
        """The latest summary scalars (see :meth:`LawMetrics.metrics`; one host sync)."""
        return self.law_metrics.metrics()

    def law_values(self) -> dict[str, dict]:
        """Per family: latest ``value``, ``drift`` and ``rel_drift`` tensors, on the device."""
        return self.law_metrics.law_values()

    def state(self) -> dict:
        """Save this with the model and optimizer state to resume the drift series later."""
        return self.law_metrics.state()

    def load_state(self, state) -> None:
        """Resume: drifts are measured from the saved reference values, counters continue."""
        self.law_metrics.load_state(state)
        self._flushed_at = self.law_metrics.calls

    def flush(self) -> dict[str, float]:
        """Read the latest values (one host sync), hand them to every sink, keep them in history."""
        self._check_model()
        values = self.metrics()
        values[STEP] = int(values[STEP])
        self._flushed_at = self.law_metrics.calls
        self.history.append(values)
        for sink in self.sinks:
            sink(values)
        return values

    def flush_pending(self) -> Optional[dict[str, float]]:
        """Flush the latest record if it has not been flushed yet (what ``close`` and ``remove`` do)."""
        if self.law_metrics.step > self._flushed_at:  # recorded since the last flush
            return self.flush()
        return None

    def close(self) -> None:
        """Flush the latest record and close the sinks that can be closed. Also run at interpreter
        exit for recorders still open; calling it twice is harmless."""
        if self._closed:
            return
        self.flush_pending()
        self._closed = True
        for sink in self.sinks:
            if callable(getattr(sink, "close", None)):
                sink.close()


class Instrumented(nn.Module, _Recorder):
    """Runs the instrumented forward; ``forward`` returns exactly what the model returns.

    Models captured by torch.fx are rewritten (``module`` is the GraphModule, calling its
    ``fxlaws_metrics`` submodule before the output; ``fxlaws_metrics_1``, ... if the model already
    has an attribute of that name). Models captured by torch.export are not: an
    aten graph is specialised to the train/eval mode it was exported in, so ``module`` is the
    user's model itself and the metrics run right after it, reading the same parameters.

    Attributes:
        module: the module run by ``forward`` (shares the user's parameters; its ``state_dict()``
            keys are the model's).
        law_metrics: the :class:`LawMetrics` module.
    """

    def __init__(self, module: nn.Module, sinks: Iterable[Callable], flush_every: int, model: nn.Module,
                 after: Optional[LawMetrics] = None, metrics_name: str = METRICS):
        """``metrics_name``: the metric submodule's name in ``module`` (the one the instrument pass
        chose) or, with ``after``, on this wrapper."""
        super().__init__()
        self.module = module
        self._metrics_name = metrics_name
        if after is not None:
            setattr(self, metrics_name, after)
        self._model = weakref.ref(model)
        self._init_recording(sinks, flush_every)
        # DistributedDataParallel would broadcast these buffers from rank 0 before every forward;
        # every rank computes the same values from its (identical) parameters, so skip them.
        prefix = metrics_name if after is not None else f"module.{metrics_name}"
        self._ddp_params_and_buffers_to_ignore = [f"{prefix}.{n}" for n, _ in self.law_metrics.named_buffers()]
        # Checkpoints hold the model's own keys (no "module." in between), also when this wrapper sits
        # inside another module (a LightningModule, DDP): hooks run at every level of a save or load.
        self.register_state_dict_post_hook(_model_keys)
        self.register_load_state_dict_pre_hook(_wrapper_keys)

    @property
    def law_metrics(self) -> LawMetrics:
        name = self._metrics_name
        return self._modules[name] if name in self._modules else getattr(self.module, name)

    def forward(self, *args, **kwargs):
        out = self.module(*args, **kwargs)
        if self._metrics_name in self._modules:  # not rewritten: record right after the model's own forward
            metrics = self._modules[self._metrics_name]
            metrics(*[self.module.get_parameter(n) for n in metrics.names])
        return out

    def _check_model(self) -> None:
        """The user's model must still hold the parameters this graph trains and reads."""
        model = self._model()
        if model is None:
            return
        mine, theirs = dict(self.module.named_parameters()), dict(model.named_parameters())
        stale = [n for n in self.law_metrics.names if n in mine and theirs.get(n) is not mine[n]]
        if stale:
            from .errors import StaleAnnotationError

            raise StaleAnnotationError(
                f"{type(model).__name__}.{stale[0]} was replaced after fxlaws.instrument (the instrumented forward "
                "still runs the old parameter); re-run fxlaws.annotate and fxlaws.instrument on the changed model")

    def remove(self) -> nn.Module:
        """The original graph (no metric nodes, no metric submodule), sharing the same parameters
        (the model itself when it was not rewritten). Flushes the latest record and closes the sinks."""
        self.close()
        gm, name = self.module, self._metrics_name
        if not isinstance(gm, fx.GraphModule) or not hasattr(gm, name):
            return gm
        graph = fx.Graph()
        graph.output(graph.graph_copy(gm.graph, {}))
        clean = fx.GraphModule(gm, graph, gm.__class__.__name__.replace("Instrumented", ""))
        for node in reversed(list(clean.graph.nodes)):
            if (node.op == "call_module" and node.target == name) or (
                    node.op == "get_attr" and not node.users):
                clean.graph.erase_node(node)
        if hasattr(clean, name):
            delattr(clean, name)
        clean.graph.lint()
        clean.recompile()
        return clean


def _model_keys(module, state_dict, prefix, local_metadata) -> None:
    """Saving: ``<prefix>module.x`` → ``<prefix>x`` (the wrapper adds no level to the model's keys)."""
    inner = f"{prefix}module."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _wrapper_keys(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                  error_msgs) -> None:
    """Loading: a model's key ``<prefix>x`` → ``<prefix>module.x`` (what the wrapper holds)."""
    inner = f"{prefix}module."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


def _torch_optimizer(optimizer):
    """The ``torch.optim.Optimizer`` inside a trainer's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``): the step hook must sit on the optimizer that really steps."""
    import torch

    for _ in range(4):  # (AcceleratedOptimizer subclasses Optimizer without being one that steps)
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
    return optimizer


class HookInstrumented(_Recorder):
    """Hook mode: the same metrics, recorded after every ``every``-th optimizer step (for models
    whose graph cannot be rewritten, e.g. opaque front ends). The model itself is not wrapped."""

    def __init__(self, model: nn.Module, ann: Annotation, optimizer, every: int, sinks, flush_every: int,
                 kernel: str = "eager"):
        self.law_metrics = law_metrics_for(ann, model, every, kernel)
        params = dict(model.named_parameters())
        self._tensors = [params[n] for n in self.law_metrics.names]
        self._init_recording(sinks, flush_every)
        self._handle = _torch_optimizer(optimizer).register_step_post_hook(self._after_step)

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.law_metrics.record(self._tensors)

    def remove(self) -> None:
        """Stop recording; flushes the latest record and closes the sinks."""
        self._handle.remove()
        self.close()


def instrument(model: nn.Module, ann: Optional[Annotation] = None, *, example_inputs: Any = None, every: int = 1,
               sinks: Iterable[Callable] = (), flush_every: int = 100, mode: str = "graph",
               optimizer=None, kernel: str = "eager"):
    """Return a module whose forward also records every law family's value (graph mode).

    Args:
        model: the user's model (not modified; the result shares its parameters).
        ann: its Annotation (``fxlaws.annotate(model, example_inputs)`` when omitted).
        every: record every ``every``-th training-mode forward with grad enabled.
        sinks: callables receiving a metrics dict at each flush (e.g. :class:`JSONLSink`).
        flush_every: hand the metrics to the sinks at the first record at least this many forwards
            (hook mode: steps) after the last flush; values stay on the device in between.

        mode: "graph" (rewrite the forward) or "hook" (record after each optimizer step; needs
            ``optimizer``).
        kernel: "eager" (torch ops; any device) or "cpp": CPU parameters' row and column sums of
            squares from one read each, by a C++ kernel compiled on first use (~20 s, then cached;
            needs a C++ compiler and ninja). On ResNet-18 (CPU) the metrics cost 1.2x a
            ``foreach_norm`` instead of 2.0x; see README "Instrumented training".

    Returns:
        An :class:`Instrumented` module (graph mode) or a :class:`HookInstrumented` recorder; both
        have ``.metrics()``, ``.flush()``, ``.history``, ``.remove()``.
    """
    if mode not in ("graph", "hook"):
        raise ValueError(f"mode={mode!r}: use 'graph' or 'hook'")
    check_kernel(kernel)  # before annotate: a typo fails fast
    if mode == "hook" and optimizer is None:
        raise ValueError("mode='hook' records after optimizer steps: pass optimizer=...")
    inner, wrappers = unwrap(model)
    if wrappers and mode == "graph":
        raise TypeError(
            f"instrument the model before wrapping it in {wrappers[0]}: e.g. DDP(fxlaws.instrument(model, ann)) or "
            "torch.compile(fxlaws.instrument(model, ann)); the wrapper would keep running the uninstrumented "
            "forward (or use mode='hook', which reads the parameters after optimizer steps)")
    model = inner
    require_values(model.named_parameters(), "fxlaws.instrument")
    if ann is None:
        from .api import annotate

        ann = annotate(model, example_inputs)
    if mode == "hook":
        return HookInstrumented(model, ann, optimizer, every, sinks, flush_every, kernel)
    if ann.frontend == "fx":
        metrics = law_metrics_for(ann, model, every, kernel)
        done = InstrumentPass()(InstrumentState(ann.graph, ann.frontend, model, metrics, metrics.names)).state
        inst = Instrumented(done.result, sinks, flush_every, model, metrics_name=done.target)
    else:
        inst = Instrumented(model, sinks, flush_every, model, after=law_metrics_for(ann, model, every, kernel))
    inst.train(model.training)
    return inst
