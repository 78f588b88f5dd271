"""``Annotation``: the result of ``fxlaws.annotate`` — laws, subsets, coverage and the reasons
for missing laws."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import networkx as nx
import torch.fx as fx
from torch import Tensor, nn

from .capture import unwrap
from .errors import StaleAnnotationError, require_values
from .laws.family import LawFamily, evaluate_all

__all__ = ["Annotation"]


@dataclass(eq=False)
class Annotation:
    """Every conservation law fxlaws found on a model.

    Attributes:
        model_name: class name of the annotated model.
        laws: the law families, in forward order.
        subsets: networkx coupling graph: ``("space", i)`` hidden channel spaces and
            ``("slot", param, axis)`` parameter slots; edges "source" / "sink" / "merge".
        graph: the traced GraphModule; ``node.meta["fxlaws"]`` holds each node's canonical op and the
            names of the laws reading its parameters.
        frontend: capture front end that produced ``graph``: "fx" (torch.fx symbolic tracing) or
            "export" (torch.export); see :func:`fxlaws.capture.capture`.
        opaque: submodules kept opaque by capture, with the reason.
        no_law: module path -> why none of its trainable parameters carries a law.
        loss: the loss assumption ("any" or "cross_entropy").
        train: laws are for training-mode behaviour (BatchNorm with batch statistics).
        param_shapes: trainable parameter name -> shape (what ``evaluate`` checks against).
        notes: assumptions made on the user's behalf (e.g. BatchNorm analysed in train mode).
        reasons: module path -> why some law was refused there (also for modules carrying other
            laws: the report's list of parameters no law reads quotes it).
        inputs: shapes and dtypes of the example inputs (:class:`~fxlaws.inputs.InputSpec`; no
            float values kept): :meth:`example_inputs` rebuilds inputs of that form.
    """

    model_name: str
    laws: list[LawFamily]
    subsets: nx.Graph
    graph: fx.GraphModule
    frontend: str
    opaque: dict[str, str]
    no_law: dict[str, str]
    loss: str
    train: bool
    param_shapes: dict[str, tuple[int, ...]]
    notes: list[str] = field(default_factory=list)
    inputs: Any = field(default=None, repr=False)
    reasons: dict[str, str] = field(default_factory=dict, repr=False)

    # --- numbers -----------------------------------------------------------------------------
    @property
    def coverage(self) -> float:
        """Share of trainable scalar parameters read by at least one law."""
        total = sum(_numel(s) for s in self.param_shapes.values())
        if total == 0:
            return 0.0
        # Per parameter the union over axes is 1 - Π_axis (1 - covered share of that axis).
        read = 0.0
        for name, axes in self.covered_positions().items():
            shape = self.param_shapes.get(name)
            if shape is None:
                continue
            missing = 1.0
            for axis, pos in axes.items():
                missing *= 1.0 - len(pos) / shape[axis]
            read += _numel(shape) * (1.0 - missing)
        return read / total

    def covered_positions(self) -> dict[str, dict[int, set[int]]]:
        """Parameter -> axis -> the positions along it whose whole hyper-slices some law reads
        (a slot reads positions along one axis, everything along the others)."""
        covered: dict[str, dict[int, set[int]]] = {}
        for fam in self.laws:
            for slot in fam.slots:
                if slot.param in self.param_shapes:
                    axis, pos = slot.covered(self.param_shapes[slot.param])
                    covered.setdefault(slot.param, {}).setdefault(axis, set()).update(pos)
        return covered

    def example_inputs(self) -> tuple[tuple, dict]:
        """``(args, kwargs)`` shaped like the inputs annotate was given (zeros for floats, the same
        range for integers, masks as given), for ``fxlaws.soundness`` / ``completeness`` / ``instrument``.

        Raises:
            ExampleInputsError: the Annotation was built without inputs (made by hand).
        """
        if self.inputs is None:
            from .errors import ExampleInputsError

            raise ExampleInputsError("this Annotation does not know its example inputs: pass example_inputs=...")
        return self.inputs.make()

    def counts(self) -> dict[str, int]:
        """Independent scalar laws per kind (exact and approximate separately)."""
        out: dict[str, int] = {}
        for fam in self.laws:
            key = fam.kind if fam.exact else f"{fam.kind} (approx.)"
            out[key] = out.get(key, 0) + fam.count
        return out

    @property
    def num_laws(self) -> int:
        return sum(f.count for f in self.laws)

    def __getitem__(self, name: str) -> LawFamily:
        for fam in self.laws:
            if fam.name == name:
                return fam
        raise KeyError(f"no law family named {name!r}; names: {[f.name for f in self.laws][:8]}...")

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Current value of every law family.

        Args:
            model: the annotated model (or one with the same parameter names and shapes), or a
                mapping name -> tensor. Only parameters are read; differentiable.

        Returns:
            family name -> tensor of the family's shape.

        Raises:
            StaleAnnotationError: a parameter the laws read is missing or changed shape.
            MetaDeviceError: a parameter the laws read is on the meta device (no values).
        """
        params = dict(unwrap(model)[0].named_parameters()) if isinstance(model, nn.Module) else dict(model)
        require_values(((n, params[n]) for fam in self.laws for n in fam.params if n in params), "Annotation.evaluate")
        for fam in self.laws:
            for name in fam.params:
                if name not in params:
                    raise StaleAnnotationError(
                        f"{name} (read by {fam.name!r}) is not a parameter of the given model; "
                        "re-run fxlaws.annotate on it."
                    )
                if tuple(params[name].shape) != self.param_shapes.get(name, tuple(params[name].shape)):
                    raise StaleAnnotationError(
                        f"{name} has shape {tuple(params[name].shape)} but was annotated with shape "
                        f"{self.param_shapes[name]}; re-run fxlaws.annotate on the changed model."
                    )
        return dict(zip((fam.name for fam in self.laws), evaluate_all(self.laws, params)))

    # --- display -------------------------------------------------------------------------------
    def report(self, *, title: str | None = None, history: Mapping | None = None) -> "Report":  # noqa: F821
        """A static report of these laws: ``str(report)``, ``.to_markdown()``, ``.to_json()``,
        ``.to_html(path)``.

        Args:
            title: heading of the text, Markdown and HTML reports (default: the model's class name).
            history: an instrumented run's ``inst.history`` (its relative drifts are plotted as
                recorded), or ``{step: {family name: law value}}`` (drift computed from the first step).

        Returns:
            A :class:`fxlaws.Report`.
        """
        from .report import Report

        return Report(self, title=title, history=history)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        from .report._text import percent

        return (f"Annotation({self.model_name}: {len(self.laws)} law families, {self.num_laws} scalar laws, "
                f"coverage {percent(self.coverage)})")

    def table(self) -> str:
        """The text report (``str(ann.report())``): one row per law family in forward order, the
        summary with the notes, why no law, and every parameter no law reads."""
        return self.report().to_text()


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
