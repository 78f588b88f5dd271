"""Everything a report shows, gathered once from an ``Annotation`` into one JSON-able dict.

The dict *is* the JSON document (schema ``fxlaws.report/1``, see ``fxlaws/report/schema.py``);
the text, Markdown and HTML renderers read only this dict, so every format shows the same numbers.
Ordering is fixed: families and modules in forward order (the order of the traced graph), lists
that have no semantic order sorted, so the same model always gives the same document.
"""

from __future__ import annotations

from typing import Any

from ._math import latex_of

__all__ = ["SCHEMA_ID", "build_data", "module_of"]

SCHEMA_ID = "fxlaws.report/1"

# Short names for the block column ("conv→bn"); anything else prints as its lower-cased class name.
_SHORT = {
    "Linear": "linear", "Bilinear": "bilinear", "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv",
    "BatchNorm1d": "bn", "BatchNorm2d": "bn", "BatchNorm3d": "bn", "SyncBatchNorm": "bn",
    "LayerNorm": "ln", "GroupNorm": "gn", "RMSNorm": "rms", "InstanceNorm1d": "in",
    "InstanceNorm2d": "in", "InstanceNorm3d": "in", "Embedding": "emb", "MultiheadAttention": "mha",
}


def module_of(param: str) -> str:
    """Path of the module owning ``param`` (``"layer1.0.conv1.weight"`` → ``"layer1.0.conv1"``)."""
    return param.rsplit(".", 1)[0] if "." in param else ""


def build_data(ann) -> dict[str, Any]:
    """Gather the report document of an annotation.

    Args:
        ann: an :class:`~fxlaws.Annotation`.

    Returns:
        A dict following schema ``fxlaws.report/1`` (only str / int / float / bool / list / dict).

    Example:
        >>> import fxlaws
        >>> from fxlaws.models import lenet
        >>> model = lenet()
        >>> data = build_data(fxlaws.annotate(model, model.example_inputs()))
        >>> data["schema"], data["num_families"]
        ('fxlaws.report/1', 4)
    """
    types = {path: type(m).__name__ for path, m in ann.graph.named_modules()}
    covered = _covered_numel(ann)
    trainable = sum(_numel(s) for s in ann.param_shapes.values())
    frozen = sum(p.numel() for p in ann.graph.parameters() if not p.requires_grad)
    families = [_family(fam, types) for fam in ann.laws]
    return {
        "schema": SCHEMA_ID,
        "model": ann.model_name,
        "frontend": ann.frontend,
        "loss": ann.loss,
        "train": bool(ann.train),
        "parameters": {
            "total": trainable + frozen,
            "trainable": trainable,
            "covered": sum(covered.values()),
        },
        "coverage": round(float(ann.coverage), 6),
        "num_laws": int(ann.num_laws),
        "num_families": len(ann.laws),
        "counts": {k: int(v) for k, v in sorted(ann.counts().items())},
        "families": families,
        "modules": _modules(ann, types, covered),
        "no_law": [{"module": m, "reason": r} for m, r in ann.no_law.items()],
        "uncovered": _uncovered(ann, covered),
        "opaque": [{"module": m, "reason": r} for m, r in sorted(ann.opaque.items())],
        "notes": list(ann.notes),
    }


def _family(fam, types: dict[str, str]) -> dict[str, Any]:
    subset = fam.name.split(":", 1)[1] if fam.name.startswith(fam.kind + ":") else fam.name
    return {
        "name": fam.name,
        "subset": subset,
        "kind": fam.kind,
        "block": _block(subset, fam.modules, types),
        "theory": fam.theory,
        "count": int(fam.count),
        "shape": [int(s) for s in fam.shape],
        "exact": bool(fam.exact),
        "assumptions": sorted(fam.assumptions),
        "formula": fam.formula,
        "params": list(fam.params),
        "modules": list(fam.modules),
        "slices": [
            {
                "param": slot.param,
                "axis": int(slot.axis),
                "channels": int(slot.channels),
                "pieces": [{"start": p.start, "stop": p.stop, "offset": p.offset, "inner": p.inner}
                           for p in slot.pieces],
                "groups": int(slot.groups),
                **({"constant": float(slot.constant)} if slot.constant else {}),
            }
            for slot in fam.slots
        ],
        "symbols": dict(sorted(fam.symbols.items())),
        "expr": {"srepr": _srepr(fam.expr), "latex": latex_of(fam.expr, fam.symbols)},
    }


def _uncovered(ann, covered: dict[str, int]) -> list[dict[str, Any]]:
    """Trainable parameters with entries no law reads, in forward order, with their module's reason
    when it has one (a module can carry laws on some parameters and none on others: ``fc.bias``)."""
    out = []
    for name, shape in ann.param_shapes.items():
        unread = _numel(shape) - covered.get(name, 0)
        if unread:
            module = name.rpartition(".")[0]
            reason = ann.no_law.get(module) or ann.reasons.get(module) or \
                "no law found on it (the laws of its module read other parameters)"
            out.append({"param": name, "unread": int(unread), "numel": int(_numel(shape)), "reason": reason})
    return out


def _srepr(expr) -> str:
    import sympy

    return sympy.srepr(expr)


def _block(subset: str, modules, types: dict[str, str]) -> str:
    """``"conv→bn"``: module types of producers → consumers (from ``"prod+prod>cons+cons"``)."""
    def short(path: str) -> str:
        name = types.get(path)
        return _SHORT.get(name, name.lower()) if name else "?"

    def side(paths) -> str:
        return "+".join(dict.fromkeys(short(p) for p in paths))

    if ">" in subset:
        return "→".join(side(part.split("+")) for part in subset.split(">", 1))
    return side(modules)


def _covered_numel(ann) -> dict[str, int]:
    """Trainable scalars read by ≥ 1 law, per parameter (exact integer arithmetic).

    A slot reads whole hyper-slices along its axis, so the unread part of a parameter is the
    product over its axes of the unread positions (the same rule as ``Annotation.coverage``).
    """
    axes = ann.covered_positions()
    out: dict[str, int] = {}
    for name, shape in ann.param_shapes.items():
        unread = _numel(shape)
        for axis, pos in axes.get(name, {}).items():
            unread = unread * (shape[axis] - len(pos)) // shape[axis]
        out[name] = _numel(shape) - unread
    return out


def _modules(ann, types: dict[str, str], covered: dict[str, int]) -> list[dict[str, Any]]:
    """Modules owning trainable parameters, in forward order, with their share of the laws."""
    owned: dict[str, list[str]] = {}
    for name in ann.param_shapes:
        owned.setdefault(module_of(name), []).append(name)
    under: dict[str, list[str]] = {}  # module path -> owners at or below it (linear in depth, 10k layers)
    for owner in owned:
        parts = owner.split(".") if owner else []
        for i in range(1, len(parts) + 1):
            under.setdefault(".".join(parts[:i]), []).append(owner)
    order: dict[str, None] = {}
    for node in ann.graph.graph.nodes:
        if node.op == "call_module":
            path = str(node.target)
        elif node.op == "get_attr":
            path = module_of(str(node.target))
        else:
            continue
        for owner in under.get(path, []) if path else [o for o in owned if o == ""]:
            order.setdefault(owner)
    order.update((o, None) for o in owned if o not in order)  # not reached by forward on the example inputs
    fams: dict[str, list[str]] = {}
    for fam in ann.laws:
        for param in fam.params:
            names = fams.setdefault(module_of(param), [])
            if fam.name not in names:
                names.append(fam.name)
    return [
        {
            "path": path,
            "type": types.get(path, ""),
            "trainable": sum(_numel(ann.param_shapes[p]) for p in owned[path]),
            "covered": sum(covered[p] for p in owned[path]),
            "families": fams.get(path, []),
        }
        for path in order
    ]


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
