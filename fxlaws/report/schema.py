"""The JSON report schema ``fxlaws.report/1``, as a JSON Schema (draft 2020-12) document.

``Report.to_json()`` writes one object::

    schema        "fxlaws.report/1" (bumped on any incompatible change)
    model         class name of the annotated model
    frontend      capture front end ("fx", ...)
    loss          "any" or "cross_entropy"
    train         laws are for training-mode behaviour (BatchNorm with batch statistics)
    parameters    {total, trainable, covered}: scalar counts; total = trainable + frozen parameters
                  of the traced graph; covered = trainable scalars read by at least one law
    coverage      covered / trainable (``Annotation.coverage``), rounded to 6 decimals
    num_laws      independent scalar laws; num_families: law families
    counts        kind -> independent scalar laws ("scale (approx.)" for eps-broken families)
    families      in forward order, each: name, subset, kind, block ("conv→bn"), theory (docs/THEORY.md
                  row), count, shape, exact, assumptions (sorted), formula (one-line text), params,
                  modules, slices [{param, axis, channels, pieces [{start, stop, offset, inner}],
                  groups, constant (only when not 0)}] (channel j of piece p sits at positions
                  offset + (j - start)·inner + [0, inner) along axis; groups > 1: axis 0 comes in
                  that many blocks, position g·width + i is position i of block g; constant: the
                  law reads param + constant, Gemma's 1 + w), symbols (sympy symbol -> parameter name), expr {srepr (sympy
                  ``srepr`` of the template: ``sympy.parse_expr``/``eval`` it back), latex}
    modules       modules owning trainable parameters, in forward order: path, type, trainable,
                  covered, families (names of the families reading them)
    no_law        [{module, reason}]: modules with trainable parameters and no law, and why
    uncovered     [{param, unread, numel, reason}]: every trainable parameter with entries no law
                  reads (also in modules that carry laws on other parameters)
    opaque        [{module, reason}]: submodules capture kept opaque (no law crosses them), sorted
    notes         assumptions made on the user's behalf

The document holds no timestamps, paths or versions besides ``schema``; keys are sorted and the
only floats are ``coverage`` and a slice's ``constant``, so the same model gives byte-identical JSON in every process.
"""

from __future__ import annotations

__all__ = ["SCHEMA"]

_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_STRS = {"type": "array", "items": _STR}


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or sorted(props),
            "additionalProperties": False}


_REASONS = {"type": "array", "items": _obj({"module": _STR, "reason": _STR})}

_PIECE = _obj({"start": _INT, "stop": _INT, "offset": _INT, "inner": _INT})

_SLICE = _obj({"param": _STR, "axis": _INT, "channels": _INT, "pieces": {"type": "array", "items": _PIECE},
               "groups": {"type": "integer", "minimum": 1}, "constant": {"type": "number"}},
              required=["axis", "channels", "groups", "param", "pieces"])

_UNCOVERED = _obj({"param": _STR, "unread": _INT, "numel": _INT, "reason": _STR})

_FAMILY = _obj({
    "name": _STR,
    "subset": _STR,
    "kind": _STR,
    "block": _STR,
    "theory": _STR,
    "count": _INT,
    "shape": {"type": "array", "items": _INT},
    "exact": {"type": "boolean"},
    "assumptions": _STRS,
    "formula": _STR,
    "params": _STRS,
    "modules": _STRS,
    "slices": {"type": "array", "items": _SLICE},
    "symbols": {"type": "object", "additionalProperties": _STR},
    "expr": _obj({"srepr": _STR, "latex": _STR}),
})

_MODULE = _obj({"path": _STR, "type": _STR, "trainable": _INT, "covered": _INT, "families": _STRS})

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "fxlaws.report/1",
    "title": "fxlaws static model analysis report",
    **_obj({
        "schema": {"const": "fxlaws.report/1"},
        "model": _STR,
        "frontend": _STR,
        "loss": {"enum": ["any", "cross_entropy"]},
        "train": {"type": "boolean"},
        "parameters": _obj({"total": _INT, "trainable": _INT, "covered": _INT}),
        "coverage": {"type": "number", "minimum": 0, "maximum": 1},
        "num_laws": _INT,
        "num_families": _INT,
        "counts": {"type": "object", "additionalProperties": _INT},
        "families": {"type": "array", "items": _FAMILY},
        "modules": {"type": "array", "items": _MODULE},
        "no_law": _REASONS,
        "uncovered": {"type": "array", "items": _UNCOVERED},
        "opaque": _REASONS,
        "notes": _STRS,
    }),
}
