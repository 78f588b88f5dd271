"""``Annotation``: the result of ``fxlaws.annotate`` — laws, subsets, coverage and the reasons
for missing laws."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

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

    # --- numbers -----------------------------------------------------------------------------
    @property
    def coverage(self) -> float:
        """Share of trainable scalar parameters read by at least one law."""
        total = sum(_numel(s) for s in self.param_shapes.values())
        if total == 0:
            return 0.0
        # A slot reads whole hyper-slices: positions along one axis, everything along the others.
        # Per parameter the union over axes is 1 - Π_axis (1 - covered share of that axis).
        covered: dict[str, dict[int, set[int]]] = {}
        for fam in self.laws:
            for slot in fam.slots:
                covered.setdefault(slot.param, {}).setdefault(slot.axis, set()).update(slot.positions())
        read = 0.0
        for name, axes in covered.items():
            shape = self.param_shapes.get(name)
            if shape is None:
                continue
            missing = 1.0
            for axis, pos in axes.items():
                missing *= 1.0 - len(pos) / shape[axis]
            read += _numel(shape) * (1.0 - missing)
        return read / total

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
            history: step -> {metric: value} of logged law values; the HTML report plots their drift.

        Returns:
            A :class:`fxlaws.Report`.
        """
        from .report import Report

        return Report(self, title=title, history=history)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"Annotation({self.model_name}: {len(self.laws)} law families, {self.num_laws} scalar laws, "
                f"coverage {self.coverage:.1%})")

    def table(self, width: int = 110) -> str:
        """Fixed-width table of the law families in forward order, then a summary."""
        rows = [("family", "row", "kind", "#laws", "exact", "law")]
        for fam in self.laws:
            law = fam.formula if len(fam.formula) <= 60 else fam.formula[:57] + "..."
            rows.append((fam.name[:44], fam.theory, fam.kind, str(fam.count), "yes" if fam.exact else "approx", law))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        lines.insert(1, "-" * min(width, max(len(line) for line in lines)))
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts().items()))
        lines.append("")
        lines.append(f"{self.model_name}: {self.num_laws} independent scalar laws in {len(self.laws)} families "
                     f"({counts or 'none'}); coverage {self.coverage:.1%} of trainable parameters; "
                     f"front end {self.frontend}; loss {self.loss}; {'train' if self.train else 'eval'}-mode norms")
        if self.no_law:
            lines.append(f"no law on {len(self.no_law)} module(s):")
            for mod, why in list(self.no_law.items())[:12]:
                lines.append(f"  {mod}: {why}")
            if len(self.no_law) > 12:
                lines.append(f"  ... and {len(self.no_law) - 12} more (see Annotation.no_law)")
        return "\n".join(lines)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
