"""Capture front ends: turn an ``nn.Module`` into a shape-annotated ``torch.fx.GraphModule``.

The front end used is recorded on the result, together with the submodules that had to be kept
opaque. Front ends:

* ``"fx"``: ``torch.fx`` symbolic tracing with torch.nn modules as leaves. When a submodule's
  forward cannot be traced (data-dependent control flow, unsupported Python), that submodule is
  kept as an opaque leaf and tracing is retried; no law crosses an opaque module.
* ``"export"``: ``torch.export.export(strict=False)``, unlifted (parameters as ``get_attr``; aten
  ops, which normalise maps to their torch equivalents).
* ``"auto"``: whole-model fx, then export, then fx with untraceable submodules kept opaque. An fx
  graph that calls ``torch.fx.wrap``-ped functions fxlaws has no rule for is exported instead
  (:func:`wrapped_calls`), keeping the fx graph if export fails.

Capture never mutates the user's model: shape propagation runs in eval mode under ``no_grad`` and
every module's train/eval flag (and every buffer) is restored afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from .errors import ExampleInputsError, UntraceableModelError
from .meta import SIZE_KEY
from .registry import decomposition, is_registered_leaf
from .shape_rules import output_like

__all__ = ["Capture", "capture", "normalise_inputs", "run_graph", "training_call", "unwrap", "wrapped_calls", "SIZE_KEY",
           "one_thread", "propagate_shapes"]

log = logging.getLogger(__name__)

_MAX_OPAQUE_RETRIES = 64
_MAX_STAND_IN_NUMEL = 1 << 24  # activations a data-dependent op may read on CPU for a meta model
_EXPORT_FIRST = (nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder, nn.TransformerEncoderLayer,
                 nn.TransformerDecoderLayer)


@dataclass
class Capture:
    """A traced model.

    Attributes:
        graph_module: the GraphModule; it shares parameter tensors with the user's model (no copy).
            Every tensor-valued node carries ``meta["tensor_meta"]`` (shape, dtype).
        frontend: the front end that produced the graph: "fx" (torch.fx symbolic tracing, maybe with
            opaque submodules) or "export" (torch.export).
        opaque: qualified paths of submodules kept as opaque leaves, with the reason.
        aliases: canonical parameter name -> every qualified name of the same tensor (tied weights).
        trainable: canonical names of parameters with ``requires_grad`` (the coordinates θ).
        inputs: the example call's value for every placeholder (passes that re-run the graph).
    """

    graph_module: fx.GraphModule
    frontend: str
    opaque: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    trainable: frozenset[str] = frozenset()
    inputs: list = field(default_factory=list, repr=False)  # placeholder values of the example call
    notes: list[str] = field(default_factory=list)  # what capture decided on the user's behalf


def normalise_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """Return ``(args, kwargs)`` from a tensor, a tuple/list of args, a dict of kwargs, or ``(args, kwargs)``."""
    if example_inputs is None:
        raise ExampleInputsError(
            "example_inputs is required: pass the inputs of one forward call, e.g. "
            "fxlaws.annotate(model, (torch.randn(2, 3, 32, 32),)) or model.example_inputs() for "
            "fxlaws.models."
        )
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if (
        isinstance(example_inputs, tuple)
        and len(example_inputs) == 2
        and isinstance(example_inputs[0], (tuple, list))
        and isinstance(example_inputs[1], Mapping)
    ):
        return tuple(example_inputs[0]), dict(example_inputs[1])
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise ExampleInputsError(
        f"example_inputs of type {type(example_inputs).__name__} not understood: pass a tensor, a "
        "tuple of positional inputs, a dict of keyword inputs, or (args, kwargs)."
    )


@contextlib.contextmanager
def _custom_autograd_functions(on_call):
    """Route every ``torch.autograd.Function.apply`` through ``on_call(cls, original_apply, args,
    kwargs)`` for the duration of a trace.

    Both front ends trace a custom Function's *forward* and drop its ``backward``; a backward that
    is not the derivative of the forward (straight-through estimators) then gets laws of the
    forward, which gradient flow does not conserve. ``on_call`` keeps the call opaque instead.
    """
    original = torch.autograd.Function.__dict__["apply"]

    def apply(cls, *args, **kwargs):
        return on_call(cls, original.__get__(None, cls), args, kwargs)

    torch.autograd.Function.apply = classmethod(apply)
    try:
        yield
    finally:
        torch.autograd.Function.apply = original


def _opaque_function(cls: type) -> Any:
    """A plain function calling ``cls.apply``: the graph's target for an opaque custom Function."""

    def fn(*args, **kwargs):
        return cls.apply(*args, **kwargs)

    fn.__name__, fn.__qualname__, fn.__module__ = f"{cls.__name__}_apply", f"{cls.__qualname__}.apply", cls.__module__
    fn.__fxlaws_function__ = cls  # what fxlaws.registry registrations are looked up by
    return fn


class _LeafTracer(fx.Tracer):
    """fx tracer whose leaves are torch.nn modules, user-named leaves, and opaque fallbacks.

    Records the innermost module being traced when tracing fails, so capture can retry with that
    module kept opaque.
    """

    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves
        self.failed_path: str | None = None
        self._stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or is_registered_leaf(m) or super().is_leaf_module(m, qualname)

    def create_proxy(self, kind, target, args, kwargs, *rest, **kw):
        reference = decomposition(target) if kind == "call_function" else None
        if reference is not None:  # a registered custom op: trace what it computes instead
            return reference(*args, **kwargs)
        return super().create_proxy(kind, target, args, kwargs, *rest, **kw)

    def trace(self, root, concrete_args=None):
        from torch.utils import _pytree as pytree

        def on_call(cls, apply, args, kwargs):  # a custom autograd.Function on Proxies: one opaque node
            if any(isinstance(a, fx.Proxy) for a in pytree.tree_leaves((args, kwargs))):
                reference = decomposition(cls)  # registered: its forward is traced as this reference
                if reference is not None:
                    return reference(*args, **kwargs)
                return self.create_proxy("call_function", _opaque_function(cls), args, kwargs)
            return apply(*args, **kwargs)

        with _custom_autograd_functions(on_call):
            return super().trace(root, concrete_args)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        self._stack.append(path)
        reference = decomposition(type(m))
        if reference is not None and path not in self.leaves:  # registered: trace what it computes
            forward = functools.partial(reference, m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_path is None:
                self.failed_path = path
            raise
        finally:
            self._stack.pop()


def _trace_fx(model: nn.Module, leaf_modules: Sequence[str], concrete: dict,
              retries: int = _MAX_OPAQUE_RETRIES) -> tuple[fx.GraphModule, dict]:
    leaves = set(leaf_modules)
    opaque: dict[str, str] = {path: "kept opaque by leaf_modules" for path in leaf_modules}
    for _ in range(max(1, retries)):
        tracer = _LeafTracer(leaves)
        try:
            graph = tracer.trace(model, concrete_args=concrete or None)
        except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
            path = tracer.failed_path
            if not path or path in leaves or retries <= 1:
                raise UntraceableModelError(
                    f"torch.fx cannot trace {type(model).__name__}.forward: {type(exc).__name__}: "
                    f"{exc}. Typical cause: Python control flow on tensor values. Fix: move that "
                    "code into a submodule (it is then kept opaque), or pass "
                    "leaf_modules=['path.to.module']."
                ) from exc
            opaque[path] = f"untraceable forward ({type(exc).__name__}: {_first_line(exc)[:120]})"
            log.info("fx: keeping %s opaque: %s", path, opaque[path])
            leaves.add(path)
            continue
        name = type(model).__name__
        return fx.GraphModule(tracer.root, graph, name), opaque
    raise UntraceableModelError(
        f"torch.fx gave up on {type(model).__name__} after {_MAX_OPAQUE_RETRIES} opaque retries."
    )


class _ShapeInterpreter(fx.Interpreter):
    """Runs the graph once and stores ``tensor_meta`` on every node (tuple outputs too).

    The records are torch.fx's own (``_extract_tensor_metadata``: the ``TensorMetadata`` that
    ``torch.fx.passes.shape_prop.ShapeProp`` stores for a tensor). This is not a ``ShapeProp``
    subclass because ``ShapeProp.run_node`` (torch 2.13) differs in ways fxlaws must not take on:

    * it catches every exception, prints its traceback to stderr and raises a ``RuntimeError``
      instead: the stand-in retry below (data-dependent ops on the meta device) and the
      ``ExampleInputsError`` would each come with a traceback dump;
    * it records metadata for any output holding a tensor (``map_aggregate``): a list output (e.g.
      ``aten.split`` in torch.export graphs) gets a list, which the passes' rule for split cannot
      read (tried: Linear → split → two Linears under ``frontend="export"`` lost its rescale law,
      8 laws → 0), and mixed outputs such as ``MultiheadAttention(need_weights=False)``'s
      ``(out, None)`` get records fxlaws deliberately leaves unset;
    * it stores ``meta["type"]`` on every node, and its ``__init__`` picks up an ambient
      ``FakeTensorMode`` (``detect_fake_mode``) and copies the module to fake tensors.

    Undoing all of these in a subclass would take more code than this class, tied to ShapeProp's
    internals.
    """

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("call_module", "call_function", "call_method"):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            fast = output_like(self.module, n, args, kwargs, self.submodules)  # the commonest layers, no meta kernels
            if fast is not None:
                return self._record(n, fast)
        try:
            result = super().run_node(n)
        except Exception as exc:
            result = self._on_stand_ins(n)
            if result is not None:
                return self._record(n, result)
            where = n.meta.get("nn_module_stack")
            path = next(reversed(where.values()))[0] if where else (n.target if n.op == "call_module" else "")
            raise ExampleInputsError(
                f"example_inputs do not run through the model: node {n.name!r} ({n.op} {n.target}"
                f"{', in module ' + repr(path) if path else ''}) raised {type(exc).__name__}: {exc}. "
                "Pass the inputs of one real forward call (shapes and dtypes as in training)."
            ) from exc
        return self._record(n, result)

    @staticmethod
    def _record(n: fx.Node, result: Any) -> Any:
        """A tensor: its ``TensorMetadata``; a non-empty tuple or list of tensors: a tuple of theirs;
        numbers and sizes: the value itself (``meta[SIZE_KEY]``); anything else: no record."""
        if isinstance(result, torch.Tensor):
            n.meta["tensor_meta"] = _metadata(result)
        elif isinstance(result, (tuple, list)) and result and all(isinstance(r, torch.Tensor) for r in result):
            n.meta["tensor_meta"] = tuple(_metadata(r) for r in result)
        elif isinstance(result, (int, float, bool)) or (
                isinstance(result, (tuple, list)) and all(isinstance(r, int) for r in result)):
            n.meta[SIZE_KEY] = result  # sizes read by later ops (x.shape[0] in fx graphs)
        return result

    def _on_stand_ins(self, n: fx.Node) -> Any:
        """A data-dependent function or method (``torch.where(mask)``, ``nonzero``: output shape set by
        values) on meta tensors, run on CPU zeros of the same shapes, its outputs moved back to meta.
        The shapes are those of one possible input (e.g. every token routed to the first expert);
        laws depend on parameter shapes, not on how many rows reach a layer. None if not applicable."""
        from torch.utils import _pytree as pytree

        if n.op not in ("call_function", "call_method"):
            return None
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        metas = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_meta]
        if not metas or sum(t.numel() for t in metas) > _MAX_STAND_IN_NUMEL:
            return None
        real = pytree.tree_map_only(torch.Tensor, lambda t: torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t,
                                    (args, kwargs))
        try:
            out = getattr(self, n.op)(n.target, *real)
        except Exception:
            return None
        return pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), out)


def _metadata(t: torch.Tensor):
    """Shape, dtype, strides of ``t``; not its memory format (no pass reads it, and working it out
    runs Python contiguity checks per node: a third of shape propagation on a CNN)."""
    return _extract_tensor_metadata(t, include_contiguity=False)


def _placeholder_values(model: nn.Module, gm: fx.GraphModule, args: tuple, kwargs: dict) -> list:
    """Values for the graph's placeholders, in order (keywords and forward defaults filled in)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    flat = list(args)
    for n in placeholders[len(args):]:
        if n.target in kwargs:
            flat.append(kwargs[n.target])
        elif n.args:  # the forward's default value
            flat.append(n.args[0])
        else:
            break
    if len(flat) != len(placeholders):
        names = [n.target for n in placeholders]
        raise ExampleInputsError(
            f"{type(model).__name__}.forward takes inputs {names}; example_inputs gave "
            f"{len(args)} positional and keywords {sorted(kwargs)}."
        )
    return flat


@contextlib.contextmanager
def preserved(model: nn.Module, buffers: bool = True):
    """Restore every module's train/eval flag and (``buffers``) every buffer's value on exit."""
    modes = {m: m.training for m in model.modules()}
    saved = {name: b.detach().clone() for name, b in model.named_buffers() if b.device.type != "meta"} if buffers else {}
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
        with torch.no_grad():
            for name, b in model.named_buffers() if saved else ():
                if name in saved and not torch.equal(b, saved[name]):
                    b.copy_(saved[name])


@contextlib.contextmanager
def one_thread():
    """Run on one intra-op thread (small index-tensor bookkeeping and tiny linear algebra): threads
    cannot speed it up, and where the cores are busy every parallel op waits for a scheduler slice
    (LLaMA-7B on meta, two busy cores: ~25 s instead of ~3 s). The caller's thread count is restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def run_graph(model: nn.Module, interpreter: fx.Interpreter, inputs: Sequence, *, meta: bool = False) -> Any:
    """Run ``interpreter`` once in eval mode under ``no_grad``; restore every module's mode and buffer.

    ``meta``: the graph's parameters, buffers and the inputs are swapped for meta tensors of the same
    shapes and dtypes for the run (nothing is computed: the cost does not grow with FLOPs, dtype or
    the machine's load); the model itself is not touched.
    """
    # on meta, parameters and buffers are swapped for stand-ins: no real buffer can change
    with preserved(model, buffers=not meta), torch.no_grad():
        model.eval()
        if not meta:
            return interpreter.run(*inputs)
        from torch.nn.utils.stateless import _reparametrize_module
        from torch.utils import _pytree as pytree

        gm = interpreter.module
        state = {n: t.to("meta") for n, t in (*gm.named_parameters(remove_duplicate=False),
                                              *gm.named_buffers(remove_duplicate=False)) if not t.is_meta}
        on_meta = pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), list(inputs))
        with _reparametrize_module(gm, state, strict=False):
            return interpreter.run(*on_meta)


def propagate_shapes(model: nn.Module, gm: fx.GraphModule, inputs: Sequence) -> None:
    """Record ``tensor_meta`` on every node of ``gm``: on meta tensors (no real forward), or, where an op
    has no meta kernel or reads values the meta device does not have, by one real run."""
    try:
        run_graph(model, _ShapeInterpreter(gm), inputs, meta=True)
        return
    except Exception as exc:  # noqa: BLE001 - any failure on meta: the real run decides (and explains)
        log.debug("shape propagation on meta tensors failed (%s); running the graph once", exc)
    run_graph(model, _ShapeInterpreter(gm), inputs)


class _TensorOutputs(nn.Module):
    """The user's model with only the tensors of its output, flattened (what torch.export exports).

    A model's output may hold objects export cannot return — a Hugging Face ``DynamicCache`` in a
    ``ModelOutput`` (inference state, not a training target) — so every output leaf that is not a
    tensor is dropped. The wrapper shares the model's own parameter, buffer and submodule dicts, so
    every qualified name (and ``nn_module_stack`` path) is the model's own; the model is called
    through ``__call__``, so its forward hooks run as in training.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self._parameters, self._buffers, self._modules = model._parameters, model._buffers, model._modules
        self.training = model.training
        object.__setattr__(self, "_model", model)  # not a submodule: names stay unprefixed

    def forward(self, *args, **kwargs):
        from torch.utils import _pytree as pytree

        return tuple(t for t in pytree.tree_leaves(self._model(*args, **kwargs)) if isinstance(t, torch.Tensor))


class _ToDebug(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("[%s] %s", record.name, record.getMessage())


@contextlib.contextmanager
def front_end_noise_to_debug():
    """torch.export, dynamo and the symbolic-shape machinery log graphs and warnings while they try
    (and often fail) to capture a model; fxlaws' own error says what matters. For the duration, the
    records of every ``torch.*`` logger, the Python warnings raised and what is printed to stderr
    (torch.export prints the partial graph of a failed export) go to fxlaws' logger at debug level
    (``logging.getLogger("fxlaws").setLevel(logging.DEBUG)`` shows them)."""
    import io
    import warnings

    forward = _ToDebug()
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n == "torch" or n.startswith("torch.")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    printed, caught = io.StringIO(), []
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(printed):
            warnings.simplefilter("always")
            for lg in loggers:
                lg.handlers, lg.propagate = [forward], False
            yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        for w in caught:
            log.debug("warning during capture: %s: %s", w.category.__name__, w.message)
        if printed.getvalue().strip():
            log.debug("printed during capture:\n%s", printed.getvalue())


def _trace_export(model: nn.Module, args: tuple, kwargs: dict, train: bool = True) -> tuple[fx.GraphModule, list]:
    """``torch.export.export(strict=False)`` → the unlifted GraphModule (parameters as get_attr,
    aten ops) and the flat placeholder values. The model is exported in the mode analysed
    (``train``: export specialises on ``self.training``, and an eval-mode export drops dropout, which
    training applies); modes and buffers are restored afterwards."""
    from torch.utils import _pytree as pytree

    def on_call(cls, apply, args, kwargs):  # export would inline its forward and drop its backward
        reference = decomposition(cls)
        if reference is not None:  # registered: export traces what it computes
            return reference(*args, **kwargs)
        if not cls.__module__.startswith("torch."):
            raise UntraceableModelError(f"custom torch.autograd.Function {cls.__qualname__} (kept opaque by fx)")
        return apply(*args, **kwargs)

    with preserved(model), _custom_autograd_functions(on_call), front_end_noise_to_debug():
        model.train(train)
        program = torch.export.export(_TensorOutputs(model), args, kwargs, strict=False)
    gm = program.module()
    flat = pytree.tree_leaves((args, kwargs))
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(flat) != len(placeholders):
        raise ExampleInputsError(f"torch.export graph takes {len(placeholders)} inputs, example_inputs have {len(flat)}")
    return gm, flat


def unwrap(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module inside ``torch.compile`` / ``DataParallel`` / ``DistributedDataParallel`` wrappers
    (their parameter names carry an ``_orig_mod.`` / ``module.`` prefix the laws should not), and
    the wrappers' class names, outermost first."""
    wrappers = []
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch._dynamo OptimizedModule
        if inner is None and isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model, wrappers
        wrappers.append(type(model).__name__)
        model = inner


def _hooked_modules(model: nn.Module) -> list[str]:
    """Paths of modules with forward (pre-)hooks ("" is the root; "*" stands for global hooks)."""
    from torch.nn.modules import module as torch_module

    paths = [name for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        paths.append("*")
    return paths


def _every_reason(model: nn.Module, failures: list[str]) -> str:
    """The final capture error: each front end's own reason, then what to do."""
    lines = "\n".join(f"  - {f}" for f in failures)
    return (f"no front end could capture {type(model).__name__}:\n{lines}\n"
            "Fix: make the model exportable (the torch.export line names what it refused: e.g. a "
            "data-dependent branch, an output object it cannot return), or move the code fx cannot trace "
            "into a submodule, which is then kept opaque (torch.fx needs the top-level forward itself to be "
            "traceable), or teach fxlaws an op with fxlaws.registry.")


def training_call(model: nn.Module, kwargs: dict) -> list[str]:
    """Make a call of ``model`` a training call, in place: a forward with a ``use_cache`` switch
    (Hugging Face models: key/value caches for generation, on by default) runs with
    ``use_cache=False`` unless the caller set it. A cache is inference state no training loss reads;
    capturing it would route keys and values through cache updates (and make them outputs).
    Capture and every check that runs the model (soundness, flow, completeness) apply the same rule,
    so they analyse the same call. Returns the note to show."""
    try:
        takes_cache = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return []
    if not takes_cache or "use_cache" in kwargs:
        return []
    kwargs["use_cache"] = False
    return ["Annotated with use_cache=False: key/value caches are inference state that no training loss reads "
            "(pass use_cache=True in the example inputs to analyse the call with caches)."]


def wrapped_calls(gm: fx.GraphModule) -> list[str]:
    """Names of the Python functions an fx graph calls as single nodes with no rule of their own.

    torch.fx records a call instead of tracing into a function only when a library hands it to
    ``torch.fx.wrap`` (torchvision's ``shifted_window_attention``, written with shape-dependent
    control flow): fxlaws cannot see inside, so no law crosses it. torch.export traces through them.
    """
    from .rules import rule_for

    names = []
    for n in gm.graph.nodes:
        target = n.target
        if (n.op == "call_function" and inspect.isfunction(target) and not hasattr(target, "__fxlaws_function__")
                and (getattr(target, "__module__", None) or "torch").partition(".")[0] != "torch"
                and rule_for(n)[0] is None):
            names.append(f"{target.__module__}.{target.__qualname__}")
    return sorted(set(names))


def _first_line(exc: BaseException) -> str:
    """An exception's first message line (its type name when the message is empty)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _meta_inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    to_meta = lambda v: v.to("meta") if isinstance(v, torch.Tensor) else v  # noqa: E731
    return tuple(to_meta(a) for a in args), {k: to_meta(v) for k, v in kwargs.items()}


def capture(
    model: nn.Module,
    example_inputs: Any,
    *,
    frontend: str = "auto",
    leaf_modules: Sequence[str] = (),
    train: bool = True,
) -> Capture:
    """Trace ``model`` and propagate shapes of ``example_inputs`` through it.

    Args:
        model: the user's module; not mutated (modes and buffers restored).
        example_inputs: a tensor, a tuple of args, a dict of kwargs, or ``(args, kwargs)``.
        frontend: "fx", "export", or "auto" (default), which tries whole-model fx, then
            torch.export, then fx with untraceable submodules kept opaque (models with torch.nn
            Transformer modules or forward hooks skip whole-model fx; with ``leaf_modules``, "auto"
            is fx with those submodules kept opaque).
        leaf_modules: qualified paths of submodules to keep opaque.
        train: the mode analysed; torch.export traces the model in it.

    Returns:
        A :class:`Capture`.

    Raises:
        ExampleInputsError: inputs missing or not accepted by the model.
        UntraceableModelError: the root forward cannot be traced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxlaws expects an nn.Module, got {type(model).__name__}.")
    if frontend not in ("auto", "fx", "export"):
        raise ValueError(f"frontend={frontend!r} is not available; use 'auto', 'fx' or 'export'.")
    args, kwargs = normalise_inputs(example_inputs)
    notes = training_call(model, kwargs)
    hooked = _hooked_modules(model)
    if any(p.device.type == "meta" for p in model.parameters()):
        args, kwargs = _meta_inputs(args, kwargs)
    elif any(isinstance(t, torch.Tensor) and t.is_meta for t in (*args, *kwargs.values())) and any(
            True for _ in model.parameters()):
        raise ExampleInputsError(
            f"example_inputs are on the meta device but {type(model).__name__}'s parameters are not: pass "
            "real tensors of the same shapes, or build the model on the meta device too "
            "(with torch.device('meta'): model = ...)."
        )
    gm, opaque, used, inputs = None, {}, "fx", None
    failures: list[str] = []  # each front end's own reason, for the final error
    if frontend == "auto" and not leaf_modules:
        # Layered: whole-model fx → torch.export (aten graph) → fx with untraceable submodules opaque.
        # torch.nn's Transformer modules are fx leaves fxlaws cannot see into: export them first.
        try:
            if any(isinstance(m, _EXPORT_FIRST) for m in model.modules()):
                raise UntraceableModelError("contains torch.nn Transformer modules (fx leaves)")
            if hooked:  # torch.export runs Module.__call__, hooks included; fx calls forward only
                raise UntraceableModelError(f"forward hooks on {hooked[:3]} (fx does not trace hooks)")
            gm, opaque = _trace_fx(model, (), {}, retries=1)
            hidden = wrapped_calls(gm)
            if hidden:  # functions fx only records a call of: export sees inside them
                try:
                    gm, inputs = _trace_export(model, args, kwargs, train)
                    used = "export"
                    notes.append(f"Captured with torch.export: torch.fx records {', '.join(hidden)} as single calls "
                                 "(torch.fx.wrap-ped functions, opaque to it); torch.export traces through them.")
                except Exception as export_error:  # noqa: BLE001 - keep the fx graph, with those calls opaque
                    log.info("fx graph calls %s opaquely; torch.export failed too (%s): keeping the fx graph",
                             hidden, _first_line(export_error)[:120])
        except UntraceableModelError as fx_error:
            try:
                gm, inputs = _trace_export(model, args, kwargs, train)
                used = "export"
            except Exception as export_error:  # export raises many kinds; fall back and say why
                failures += [f"torch.fx (whole model): {_first_line(fx_error)[:300]}",
                             f"torch.export: {type(export_error).__name__}: {_first_line(export_error)[:300]}"]
                log.info("fx failed (%s); torch.export failed (%s); keeping submodules opaque",
                         _first_line(fx_error)[:120], _first_line(export_error)[:120])
    elif frontend == "export":
        try:
            gm, inputs = _trace_export(model, args, kwargs, train)
        except Exception as exc:
            raise UntraceableModelError(
                f"torch.export cannot export {type(model).__name__}: {type(exc).__name__}: "
                f"{_first_line(exc)[:300]}. Try frontend='fx' (untraceable submodules are kept opaque)."
            ) from exc
        used = "export"
    if gm is None:
        if "" in hooked or "*" in hooked:
            raise UntraceableModelError(
                f"{type(model).__name__} has {'global' if '*' in hooked else 'root-module'} forward hooks, which "
                "torch.fx does not trace (laws could be false) and torch.export could not export it. Remove "
                "the hooks while annotating (the laws stay valid if the hooks only log), or make the model exportable.")
        try:
            gm, opaque = _trace_fx(model, list(leaf_modules) + [p for p in hooked if p not in leaf_modules], {})
        except UntraceableModelError as last:
            if not failures:
                raise
            raise UntraceableModelError(_every_reason(model, failures + [
                f"torch.fx with untraceable submodules kept opaque: {_first_line(last)}"])) from last
        for path in hooked:  # a hook may change what the module computes: nothing crosses it
            opaque[path] = "forward hook (fx does not trace hooks; torch.export failed)"
    if inputs is None:
        inputs = _placeholder_values(model, gm, args, kwargs)
    propagate_shapes(model, gm, inputs)

    aliases: dict[str, list[str]] = {}
    canonical: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        key = canonical.setdefault(id(p), name)
        aliases.setdefault(key, []).append(name)
    # complex parameters are not coordinates: their symmetries (e.g. U(1) phases, M Mᴴ laws) are not
    # the real ones fxlaws derives, so they are held fixed like frozen ones (no law touches them)
    trainable = frozenset(n for n, p in model.named_parameters() if p.requires_grad and not p.is_complex())
    return Capture(
        graph_module=gm,
        frontend=used,
        opaque=opaque,
        aliases={k: tuple(v) for k, v in aliases.items()},
        trainable=trainable,
        inputs=inputs,
        notes=notes,
    )
