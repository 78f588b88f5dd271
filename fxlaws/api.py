"""The public entry point: ``annotate``."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Optional, Sequence

from torch import nn

from fxlaws.passes.attach import AttachLawsPass, ParamFacts
from fxlaws.passes.attention import AttentionPass
from fxlaws.passes.normalise import NormalisePass
from fxlaws.passes.partition import PartitionPass

from . import meta as M
from .annotation import Annotation
from .capture import capture, unwrap

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
        frontend: capture front end ("auto" or "fx").
        leaf_modules: module paths to keep opaque (no law crosses them).

    Returns:
        An :class:`Annotation`.

    Raises:
        ExampleInputsError, UntraceableModelError: with the module/node and how to fix.

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
    cap = capture(model, example_inputs, frontend=frontend, leaf_modules=leaf_modules)
    gm = cap.graph_module
    NormalisePass(train=train, opaque=cap.opaque)(gm)
    partition = PartitionPass()(gm)

    canonical = {alias: name for name, aliases in cap.aliases.items() for alias in aliases}
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    facts = ParamFacts(shapes=shapes, trainable=cap.trainable, uses=_param_uses(gm, canonical),
                       canonical=canonical)
    attach = AttachLawsPass(facts, loss=loss)
    families, reasons = attach(gm, partition)
    AttentionPass(attach)(gm, model, cap.inputs)
    attach._mark_nodes(gm, partition)  # again: attention families read parameters too

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
    ann = Annotation(
        model_name=type(model).__name__,
        laws=families,
        subsets=partition.graph,
        graph=gm,
        frontend=cap.frontend,
        opaque=cap.opaque,
        no_law=_no_law(model, gm, families, reasons, cap, canonical),
        loss=loss or "any",
        train=train,
        param_shapes={n: s for n, s in shapes.items() if n in cap.trainable},
        notes=notes,
    )
    _log_unsupported(gm)
    return ann


def _param_uses(gm, canonical) -> dict[str, int]:
    uses: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            for name, _ in gm.get_submodule(node.target).named_parameters(prefix=str(node.target), remove_duplicate=False):
                uses[canonical.get(name, name)] += 1
        elif node.op == "get_attr":  # reading only its shape (w.shape) is not a use of the values
            name = str(node.target)
            value_users = [u for u in node.users if M.get_op(u).kind != M.SHAPE]
            uses[canonical.get(name, name)] += max(1, len(value_users))
    return dict(uses)


def _no_law(model, gm, families, reasons, cap, canonical) -> dict[str, str]:
    read = {p for fam in families for p in fam.params}
    op_reason: dict[str, str] = {}
    used = set()
    for node in gm.graph.nodes:
        op = M.get_op(node)
        if node.op == "call_module":
            used.add(str(node.target))
        if op.kind == M.OPAQUE and op.module:
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


def _log_unsupported(gm) -> None:
    unsupported = Counter(M.get_op(n).detail.split(" (")[0] for n in gm.graph.nodes if M.get_op(n).kind == M.OPAQUE)
    for what, k in unsupported.items():
        log.info("unsupported op %s (x%d): no law crosses it", what, k)
