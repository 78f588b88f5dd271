"""``Report``: a static report of an ``Annotation`` in text, Markdown, JSON and HTML."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ._data import build_data
from ._math import mathml_of

__all__ = ["Report"]

log = logging.getLogger("fxlaws.report")


class Report:
    """Static report of the conservation laws fxlaws found on a model.

    Every format shows the same document (:attr:`data`, schema ``fxlaws.report/1``, documented in
    ``fxlaws.report.schema``): the law families in forward order with their THEORY rows, the
    counts per kind, coverage, front end, opaque modules, notes, and why a module has no law.

    Args:
        annotation: the result of :func:`fxlaws.annotate`.
        title: heading of the text, Markdown and HTML reports (default: the model's class name);
            not part of the JSON document.
        history: optional ``inst.history`` of an instrumented run, or {step: {family: law value}}; the
            HTML report then plots their drift.

    Example:
        >>> import fxlaws
        >>> from fxlaws.models import resnet18
        >>> model = resnet18()
        >>> report = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy").report()
        >>> print(report)                      # fixed-width table + summary + why-no-law
        >>> report.to_html("report.html")      # one offline file
    """

    def __init__(self, annotation, *, title: Optional[str] = None,
                 history: Optional[Mapping[Any, Mapping[str, Any]]] = None):
        t = time.perf_counter()
        self.annotation = annotation
        self.title = title or annotation.model_name
        self.history = history
        self.data: dict[str, Any] = build_data(annotation)
        log.debug("report data of %s built in %.3f s", self.title, time.perf_counter() - t)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        d = self.data
        return (f"Report({self.title}: {d['num_families']} law families, {d['num_laws']} scalar laws, "
                f"coverage {d['coverage']:.1%})")

    def to_text(self, clip: bool = True) -> str:
        """Fixed-width table in forward order (module/subset, block kind, law, #laws, exact/approx,
        assumptions, docs/THEORY.md row), then the summary, the why-no-law list and the parameters no
        law reads. ``clip``: long subsets, laws and assumptions are shortened to fit a terminal
        (``False``: written in full, e.g. into a file)."""
        from ._text import render_text

        return render_text(self.data, self.title, clip=clip)

    def to_markdown(self) -> str:
        """The same report as GitHub-flavoured Markdown (formulas in full)."""
        from ._text import render_markdown

        return render_markdown(self.data, self.title)

    def to_json(self) -> str:
        """The report document as JSON (schema ``fxlaws.report/1``).

        Keys sorted, 2-space indent, UTF-8 text, trailing newline: the same model gives
        byte-identical JSON in every run and process.
        """
        return json.dumps(self.data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def to_html(self, path: Union[str, Path, None] = None, *,
                history: Optional[Mapping[Any, Mapping[str, Any]]] = None) -> str:
        """One self-contained offline HTML page: summary numbers, counts per kind, a picture of the
        model with its parameter subsets coloured, every law as MathML, why-no-law, and drift plots
        when a history is given.

        Args:
            path: also write the page there (UTF-8).
            history: as in the constructor; overrides the report's own ``history``.

        Returns:
            The HTML text.
        """
        from ._html import render_html

        t = time.perf_counter()
        text = render_html(self.data, title=self.title, history=history if history is not None else self.history,
                           mathml=_mathml_by_name(self.annotation))
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        log.debug("HTML report of %s rendered in %.3f s", self.title, time.perf_counter() - t)
        return text

    def _repr_html_(self) -> str:
        from ._html import render_html

        return render_html(self.data, title=self.title, history=self.history,
                           mathml=_mathml_by_name(self.annotation), full_page=False)


def _mathml_by_name(annotation):
    families = {fam.name: fam for fam in annotation.laws}

    def mathml(entry: dict) -> str:
        fam = families[entry["name"]]
        return mathml_of(fam.expr, fam.symbols)

    return mathml
