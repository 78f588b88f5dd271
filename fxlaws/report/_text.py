"""Text and Markdown renderers of a report document (see ``_data.build_data``)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_text", "render_markdown", "percent", "unread"]

_COLUMNS = ("module/subset", "block kind", "law", "#laws", "exact", "assumptions", "row")
_WIDTH = {"module/subset": 36, "block kind": 22, "law": 60, "assumptions": 32}
_RIGHT = {"#laws"}


def render_text(data: dict[str, Any], title: str | None = None, clip: bool = True) -> str:
    """Fixed-width report: law table in forward order, summary, why-no-law list, parameters no law reads.

    Args:
        data: a report document.
        title: heading (default: the model's class name).
        clip: shorten long cells to terminal widths (laws to 60 characters); False writes them in full.

    Returns:
        The text, lines ending in ``\\n``.
    """
    rows = [_COLUMNS] + [_cells(f, abbreviate=clip) for f in data["families"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = [f"fxlaws report: {title or data['model']}", ""]
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if _COLUMNS[i] in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not data["families"]:
        lines.append("(no law families)")
    lines += ["", "summary"]
    lines += [f"  {key:<15} {value}" for key, value in _summary(data)]
    lines += ["", "why no law here"]
    if data["no_law"]:
        width = max(len(e["module"] or "(root)") for e in data["no_law"])
        lines += [f"  {(e['module'] or '(root)'):<{width}}  {e['reason']}" for e in data["no_law"]]
    else:
        lines.append("  every module with trainable parameters carries at least one law")
    lines += ["", "parameters no law reads"]
    if data["uncovered"]:
        width = max(len(e["param"]) for e in data["uncovered"])
        lines += [f"  {e['param']:<{width}}  {unread(e)}  {e['reason']}" for e in data["uncovered"]]
    else:
        lines.append("  none: every trainable parameter is read by a law")
    return "\n".join(lines) + "\n"


def unread(e: dict[str, Any]) -> str:
    """How much of an ``uncovered`` entry's parameter no law reads."""
    return "all" if e["unread"] == e["numel"] else f"{e['unread']:,} of {e['numel']:,}"


def percent(share: float) -> str:
    """``share`` as a percentage that reads 100% only when it is exactly 1 (99.99…% keeps digits)."""
    if share >= 1:
        return "100%"
    for digits in range(1, 7):
        text = f"{100 * share:.{digits}f}"
        if float(text) < 100:
            return text + "%"
    return "<100%"


def render_markdown(data: dict[str, Any], title: str | None = None) -> str:
    """Markdown report: summary table, law table (full formulas), counts, why-no-law list.

    Args:
        data: a report document.
        title: heading (default: the model's class name).

    Returns:
        GitHub-flavoured Markdown.
    """
    out = [f"# fxlaws report: {_md(title or data['model'])}", "", "| | |", "|---|---|"]
    out += [f"| {key} | {_md(value)} |" for key, value in _summary(data)]
    out += ["", "## Laws (forward order)", ""]
    if data["families"]:
        out.append("| " + " | ".join(_COLUMNS) + " |")
        out.append("|" + "|".join("---:" if c in _RIGHT else "---" for c in _COLUMNS) + "|")
        for fam in data["families"]:
            cells = _cells(fam, abbreviate=False)
            cells = [f"`{_md(c)}`" if col in ("module/subset", "law") else _md(c) for col, c in zip(_COLUMNS, cells)]
            out.append("| " + " | ".join(cells) + " |")
    else:
        out.append("No law families.")
    out += ["", "## Independent scalar laws per kind", ""]
    if data["counts"]:
        out += ["| kind | laws |", "|---|---:|"]
        out += [f"| {_md(k)} | {v:,} |" for k, v in data["counts"].items()]
    else:
        out.append("None.")
    out += ["", "## Why no law here", ""]
    if data["no_law"]:
        out += [f"- `{_md(e['module'] or '(root)')}`: {_md(e['reason'])}" for e in data["no_law"]]
    else:
        out.append("Every module with trainable parameters carries at least one law.")
    out += ["", "## Parameters no law reads", ""]
    if data["uncovered"]:
        out += [f"- `{_md(e['param'])}` ({unread(e)}): {_md(e['reason'])}" for e in data["uncovered"]]
    else:
        out.append("None: every trainable parameter is read by a law.")
    return "\n".join(out) + "\n"


def _cells(fam: dict[str, Any], *, abbreviate: bool) -> tuple[str, ...]:
    cells = {
        "module/subset": fam["subset"],
        "block kind": f"{fam['kind']} {fam['block']}",
        "law": fam["formula"],
        "#laws": f"{fam['count']:,}",
        "exact": "exact" if fam["exact"] else "approx",
        "assumptions": ", ".join(fam["assumptions"]),
        "row": fam["theory"],
    }
    if abbreviate:
        cells["module/subset"] = _short_subset(cells["module/subset"], _WIDTH["module/subset"])
        cells = {k: _clip(v, _WIDTH[k]) if k in _WIDTH else v for k, v in cells.items()}
    return tuple(cells[c] for c in _COLUMNS)


def _summary(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the text and Markdown summaries."""
    p = data["parameters"]
    counts = " · ".join(f"{k} {v:,}" for k, v in data["counts"].items()) or "none"
    opaque = "; ".join(f"{e['module']} ({e['reason']})" for e in data["opaque"]) or "none"
    return [
        ("scalar laws", f"{data['num_laws']:,} in {data['num_families']:,} families"),
        ("coverage", f"{percent(p['covered'] / p['trainable'] if p['trainable'] else 0.0)} of {p['trainable']:,} "
                     f"trainable parameters ({p['covered']:,} read by a law; {len(data['uncovered'])} parameter "
                     f"tensors with entries no law reads; {p['total']:,} parameters in all)"),
        ("per kind", counts),
        ("front end", data["frontend"]),
        ("loss", data["loss"]),
        ("norms", "train mode (batch statistics)" if data["train"] else "eval mode (fixed affine)"),
        ("opaque modules", opaque),
        ("notes", " ".join(data["notes"]) or "none"),
    ]


def _short_subset(subset: str, width: int) -> str:
    """``"a+b+c>d+e"`` → ``"a(+2)>d(+1)"`` when the full text is wider than ``width``."""
    if len(subset) <= width or ">" not in subset:
        return subset
    sides = [side.split("+") for side in subset.split(">", 1)]
    return ">".join(s[0] + (f"(+{len(s) - 1})" if len(s) > 1 else "") for s in sides)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
