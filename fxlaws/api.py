"""The public entry point: ``annotate``."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Optional, Sequence

from torch import nn

from fxlaws.passes import ANNOTATE, AnnotateState, run_passes

from .annotation import Annotation
from .capture import capture, one_thread, unwrap
from .errors import UnsupportedOpError
from .inputs import describe_inputs
from .meta import get_op
from .vocabulary import OpKind

__all__ = ["annotate"]

log = logging.getLogger("fxlaws")

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)


def annotate(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    loss: Optional[str] = None,
    train: bool = True,
    frontend: str = "auto",
    leaf_modules: Sequence[str] = (),
    strict: bool = False,
) -> Annotation:
    """Find the conservation laws of gradient-flow training of ``model``.

    Args:
        model: any ``nn.Module``; it is not mutated (train/eval flags, buffers and grad mode are
            restored). Only parameters with ``requires_grad`` are coordinates.
        example_inputs: inputs of one forward call: a tensor, a tuple, a dict of keyword inputs, or
            ``(args, kwargs)``. Reference models provide ``model.example_inputs()``. A model built on
            the meta device (``with torch.device("meta"): model = ...``) is annotated without
            parameter memory: give real CPU inputs (replaced by meta tensors of the same shapes and
            dtypes) or meta inputs; values are only needed by ``evaluate``/verification
            (:class:`MetaDeviceError` says how to materialise).
        loss: None/"any" (laws for every loss), or "cross_entropy" (adds THEORY T1 on the logits).
        train: analyse training-mode behaviour (BatchNorm uses batch statistics, THEORY N1/N2).
        frontend: capture front end: "auto" (whole-model torch.fx, then torch.export, then torch.fx
            with untraceable submodules kept opaque), "fx" or "export".
        leaf_modules: module paths to keep opaque (no law crosses them).
        strict: raise :class:`UnsupportedOpError` when the graph holds an op fxlaws does not know
            (instead of stopping the laws that reach it and saying why in ``no_law``). Teach fxlaws
            such ops with :mod:`fxlaws.registry`.

    Returns:
        An :class:`Annotation`.

    Raises:
        ExampleInputsError, UntraceableModelError: with the module/node and how to fix.
        UnsupportedOpError: ``strict=True`` and an op is unknown.

    Example:
        >>> from fxlaws.models import resnet18
        >>> model = resnet18()
        >>> ann = annotate(model, model.example_inputs())
        >>> ann.counts()["rescale"]
        1920
    """
    model, wrappers = unwrap(model)
    if example_inputs is None and hasattr(model, "example_inputs"):
        example_inputs = model.example_inputs()
    # One intra-op thread: annotate computes nothing large (shapes propagate on meta tensors, the
    # passes read index tensors and tiny matrices); extra threads only wait for busy cores.
    with one_thread():
        cap = capture(model, example_inputs, frontend=frontend, leaf_modules=leaf_modules, train=train)
        state = run_passes(ANNOTATE, AnnotateState(model, cap, train=train, loss=loss))
    gm, families, reasons = cap.graph_module, state.laws.families, state.laws.reasons
    canonical = state.laws.facts.canonical
    if strict:
        _raise_unsupported(gm)

    ann = Annotation(
        model_name=type(model).__name__,
        laws=families,
        subsets=state.partition.graph,
        graph=gm,
        frontend=cap.frontend,
        opaque=cap.opaque,
        no_law=_no_law(model, gm, families, reasons, cap, canonical),
        loss=loss or "any",
        train=train,
        param_shapes={n: tuple(p.shape) for n, p in model.named_parameters() if n in cap.trainable},
        notes=cap.notes + _notes(model, families, loss, train, wrappers),
        inputs=describe_inputs(example_inputs),
        reasons={m: "; ".join(r[:3]) for m, r in reasons.items()},
    )
    _log_unsupported(gm)
    return ann


def _notes(model, families, loss, train: bool, wrappers) -> list[str]:
    """Assumptions made on the user's behalf, and facts the laws depend on (shown in reports)."""
    notes = []
    if loss == "cross_entropy" and not any(f.theory == "T1" for f in families):
        notes.append("loss='cross_entropy' but no T1 law: T1 needs forward to return one logits tensor made by a "
                     "Linear layer through translation-preserving ops (for a dict, tuple or dataclass output, "
                     "annotate a wrapper that returns the logits).")
    grad_hooks = [n or type(model).__name__ for n, m in model.named_modules() if m._backward_hooks or m._backward_pre_hooks]
    grad_hooks += [n for n, p in model.named_parameters() if getattr(p, "_backward_hooks", None)]
    if grad_hooks:
        notes.append(f"Gradient hooks on {', '.join(grad_hooks[:3])}{' …' if len(grad_hooks) > 3 else ''}: the laws hold "
                     "for training on ∇L; a hook that changes gradients (clipping, scaling) changes the dynamics.")
    if wrappers:
        notes.append(f"Annotated the module inside {' > '.join(wrappers)}; law parameter names are relative to it "
                     "(evaluate, soundness and instrument accept the wrapper or the module).")
    if train and any(isinstance(m, _BATCH_NORMS) and not m.training for m in model.modules()):
        notes.append("BatchNorm modules are in eval mode; laws are for training mode (batch statistics). "
                     "Pass train=False for laws of eval-mode (fixed affine) BatchNorm.")
    return notes


def _no_law(model, gm, families, reasons, cap, canonical) -> dict[str, str]:
    read = {p for fam in families for p in fam.params}
    op_reason: dict[str, str] = {}
    used = set()
    for node in gm.graph.nodes:
        op = get_op(node)
        if node.op == "call_module":
            used.add(str(node.target))
        if op.kind is OpKind.OPAQUE and op.module:
            op_reason.setdefault(op.module, op.detail)
    out: dict[str, str] = {}
    for path, module in model.named_modules():
        own = [canonical.get(f"{path}.{n}" if path else n, f"{path}.{n}" if path else n)
               for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own or any(p in read for p in own):
            continue
        if any(p.is_complex() for p in module.parameters(recurse=False)):
            out[path] = "complex parameters: fxlaws derives laws for real parameters only"
            continue
        inside = next((o for o in cap.opaque if path == o or path.startswith(o + ".")), None)
        if inside is not None:
            out[path] = f"inside opaque module {inside}: {cap.opaque[inside]}" if inside != path else (
                f"opaque: {cap.opaque[path]}")
        elif path in reasons:
            out[path] = "; ".join(reasons[path][:3])
        elif path in op_reason:
            out[path] = f"{op_reason[path]}: no law crosses an unsupported op"
        elif path not in used and not any(n.op == "get_attr" and str(n.target).startswith(path) for n in gm.graph.nodes):
            out[path] = "not used by forward on the example inputs"
        else:
            out[path] = "no channel symmetry reaches its parameters"
    return out


def _unsupported(gm) -> Counter:
    """Which ops the OPAQUE nodes are (module class, function or method name), counted."""
    def label(node) -> str:
        if node.op == "call_module":
            return f"module {type(gm.get_submodule(str(node.target))).__name__}"
        if node.op == "call_method":
            return f"method .{node.target}()"
        return f"function {getattr(node.target, '__name__', node.target)}"
    return Counter(label(n) for n in gm.graph.nodes if get_op(n).kind is OpKind.OPAQUE)


def _log_unsupported(gm) -> None:
    for what, k in _unsupported(gm).items():
        log.info("unsupported op %s (x%d): no law crosses it", what, k)


def _raise_unsupported(gm) -> None:
    unsupported = _unsupported(gm)
    if unsupported:
        listed = ", ".join(f"{what} (x{k})" for what, k in unsupported.most_common(5))
        raise UnsupportedOpError(
            f"strict=True and the graph holds ops fxlaws does not know: {listed}. Declare what they compute with "
            "fxlaws.registry.register_module / register_function (e.g. rms_norm(), activation(1.0), or "
            "decompose=reference), keep them opaque with strict=False (no law crosses them), or pass "
            "leaf_modules=[...] for modules you want opaque on purpose.")
