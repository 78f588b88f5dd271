"""HTML renderer: one self-contained, offline page (inline CSS, inline SVG, MathML; nothing fetched)."""

from __future__ import annotations

from html import escape
from typing import Any, Callable, Mapping, Optional

from ._figures import drift_series, drift_svg, kind_colour, model_graph_svg, stages_of
from ._text import percent, unread

__all__ = ["render_html"]

_CSS = """
.fxl{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1b1f23;
 max-width:1180px;margin:0 auto;padding:16px 24px;line-height:1.4}
.fxl h1{font-size:1.6em;margin:0 0 2px}.fxl h2{font-size:1.2em;margin:26px 0 8px;border-bottom:1px solid #ddd}
.fxl .sub{color:#57606a;margin:0 0 12px}
.fxl .cards{display:flex;flex-wrap:wrap;gap:10px}
.fxl .card{border:1px solid #d0d7de;border-radius:8px;padding:8px 12px;flex:1 1 0;min-width:120px;background:#f6f8fa}
.fxl .num{font-size:1.5em;font-weight:600}.fxl .lbl{color:#57606a;font-size:.85em}
.fxl table{border-collapse:collapse;font-size:.9em;width:100%}
.fxl table.laws{table-layout:fixed}
.fxl th,.fxl td{border-bottom:1px solid #eaeef2;padding:4px 8px;text-align:left;vertical-align:top}
.fxl th{background:#f6f8fa}.fxl td.r{text-align:right}
.fxl .bar{height:10px;border-radius:3px;display:inline-block;vertical-align:middle}
.fxl .badge{display:inline-block;padding:0 6px;border-radius:10px;color:#fff;font-size:.8em}
.fxl .approx{opacity:.6;border:1px dashed #333;color:#111}
.fxl code{font-size:.88em;background:#f6f8fa;padding:0 3px;border-radius:3px;word-break:break-all}
.fxl .math{overflow-x:auto;padding:2px 0 6px 18px;font-size:1.15em}
.fxl .text{color:#57606a;font-size:.85em}
.fxl figure{margin:0;overflow-x:auto}.fxl figure svg{max-width:100%;height:auto}
.fxl details>summary{cursor:pointer;font-weight:600;margin:8px 0 4px}
.fxl ul.why li{margin:2px 0}
"""


def render_html(data: dict[str, Any], *, title: Optional[str] = None,
                history: Optional[Mapping[Any, Mapping[str, Any]]] = None, mathml: Callable[[dict], str],
                full_page: bool = True) -> str:
    """Render a report document as HTML.

    Args:
        data: a report document (``_data.build_data``).
        title: heading (default: the model's class name).
        history: ``inst.history`` or {step: {family: law value}} (see ``drift_series``); adds a drift section when given.
        mathml: family dict -> MathML markup of its law.
        full_page: a complete ``<!DOCTYPE html>`` page, or only the ``<div>`` (notebooks).

    Returns:
        The HTML text.
    """
    title = title or data["model"]
    stages = stages_of([m["path"] for m in data["modules"]])
    parts = [
        f'<div class="fxl"><style>{_CSS}</style>',
        f"<header><h1>fxlaws report: {escape(title)}</h1>",
        f'<p class="sub">{escape(data["model"])} · front end {escape(data["frontend"])} · '
        f'loss {escape(data["loss"])} · {"train" if data["train"] else "eval"}-mode norms · '
        f'schema {escape(data["schema"])}</p></header>',
        _summary(data),
        _kinds(data),
        _picture(data, stages),
        _laws(data, stages, mathml),
        _no_law(data),
        _context(data),
    ]
    if history:
        parts.append(_drift(data, history))
    parts.append("</div>")
    body = "\n".join(p for p in parts if p)
    if not full_page:
        return body
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>fxlaws report: {escape(title)}</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _card(key: str, value: str, label: str) -> str:
    return (f'<div class="card"><div class="num" id="{key}">{escape(value)}</div>'
            f'<div class="lbl">{escape(label)}</div></div>')


def _summary(data: dict[str, Any]) -> str:
    p = data["parameters"]
    cards = [
        _card("num-laws", f"{data['num_laws']:,}", "independent scalar laws"),
        _card("num-families", f"{data['num_families']:,}", "law families"),
        _card("coverage", percent(p["covered"] / p["trainable"] if p["trainable"] else 0.0),
              "of trainable parameters in a law"),
        _card("trainable", f"{p['trainable']:,}", "trainable parameters"),
        _card("covered", f"{p['covered']:,}", "read by at least one law"),
        _card("no-law", f"{len(data['no_law']):,}", "modules without a law"),
        _card("uncovered", f"{len(data['uncovered']):,}", "parameter tensors with entries no law reads"),
    ]
    return f'<section id="summary"><div class="cards">{"".join(cards)}</div></section>'


def _kinds(data: dict[str, Any]) -> str:
    if not data["counts"]:
        return '<section id="kinds"><h2>Laws per kind</h2><p>No laws.</p></section>'
    top = max(data["counts"].values()) or 1
    rows = []
    for key, n in data["counts"].items():
        kind = key.split(" ")[0]
        approx = "approx" in key
        width = max(2, round(260 * n / top))
        style = f"background:{kind_colour(kind)};width:{width}px" + (";opacity:.55" if approx else "")
        rows.append(f'<tr><td>{escape(key)}</td><td class="r">{n:,}</td>'
                    f'<td><span class="bar" style="{style}"></span></td></tr>')
    return ('<section id="kinds"><h2>Laws per kind</h2><table><tr><th>kind</th><th>scalar laws</th>'
            f'<th></th></tr>{"".join(rows)}</table></section>')


def _picture(data: dict[str, Any], stages) -> str:
    svg = model_graph_svg(data, stages)
    if not svg:
        return ""
    depth = "each block" if stages.depth > 1 else "each top-level module"
    return ('<section id="picture"><h2>Where the laws live</h2>'
            f'<p class="text">Top row: the model in forward order, one box per stage ({depth}), '
            "shaded by the share of its trainable parameters that a law reads. Below each stage: its law "
            "families by docs/THEORY.md row and kind (×n families), linked to every stage they read.</p>"
            f"<figure>{svg}</figure></section>")


def _badge(text: str, colour: str, approx: bool = False) -> str:
    if approx:
        return f'<span class="badge approx" style="background:{colour}">{escape(text)}</span>'
    return f'<span class="badge" style="background:{colour}">{escape(text)}</span>'


_COLS = ('<colgroup><col style="width:34%"><col style="width:15%"><col style="width:6%">'
         '<col style="width:8%"><col style="width:15%"><col style="width:22%"></colgroup>')


def _laws(data: dict[str, Any], stages, mathml: Callable[[dict], str]) -> str:
    if not data["families"]:
        return '<section id="laws"><h2>Laws</h2><p>No law families.</p></section>'
    by_stage: dict[str, list[dict]] = {}
    for fam in data["families"]:
        home = stages.of(fam["modules"][0]) if fam["modules"] else "(root)"
        by_stage.setdefault(home, []).append(fam)
    out = ['<section id="laws"><h2>Laws (forward order)</h2>']
    for stage, fams in by_stage.items():
        laws = sum(f["count"] for f in fams)
        out.append(f"<details open><summary>{escape(stage)}: {len(fams)} "
                   f"famil{'y' if len(fams) == 1 else 'ies'}, {laws:,} scalar laws</summary><table class=\"laws\">"
                   f"{_COLS}<tr><th>module/subset</th><th>kind</th><th>row</th><th>#laws</th><th>exact</th>"
                   "<th>assumptions</th></tr>")
        for fam in fams:
            exact = "exact" if fam["exact"] else "approx (eps-broken)"
            out.append(
                f'<tr><td><code>{escape(fam["subset"])}</code></td>'
                f'<td>{_badge(fam["kind"], kind_colour(fam["kind"]), not fam["exact"])} {escape(fam["block"])}</td>'
                f'<td>{escape(fam["theory"])}</td><td class="r">{fam["count"]:,}</td><td>{exact}</td>'
                f'<td>{escape(", ".join(fam["assumptions"]))}</td></tr>'
                f'<tr><td colspan="6"><div class="math"><math displaystyle="true">{mathml(fam)}</math></div>'
                f'<div class="text">{escape(fam["formula"])}</div></td></tr>')
        out.append("</table></details>")
    out.append("</section>")
    return "\n".join(out)


def _no_law(data: dict[str, Any]) -> str:
    if not data["no_law"]:
        body = "<p>Every module with trainable parameters carries at least one law.</p>"
    else:
        items = "".join(f"<li><code>{escape(e['module'] or '(root)')}</code>: {escape(e['reason'])}</li>"
                        for e in data["no_law"])
        body = f'<ul class="why">{items}</ul>'
    if data["uncovered"]:
        items = "".join(f"<li><code>{escape(e['param'])}</code> ({unread(e)} entries): {escape(e['reason'])}</li>"
                        for e in data["uncovered"])
        body += f'<h3>Parameters no law reads</h3><ul class="why" id="uncovered-params">{items}</ul>'
    else:
        body += "<p>Every trainable parameter is read by a law.</p>"
    return f'<section id="no-law"><h2>Why no law here</h2>{body}</section>'


def _context(data: dict[str, Any]) -> str:
    opaque = "".join(f"<li><code>{escape(e['module'])}</code>: {escape(e['reason'])}</li>" for e in data["opaque"])
    notes = "".join(f"<li>{escape(n)}</li>" for n in data["notes"])
    return ('<section id="context"><h2>Opaque modules and notes</h2>'
            f'<p>Opaque modules (no law crosses them): {"" if opaque else "none."}</p>'
            f'{f"<ul>{opaque}</ul>" if opaque else ""}'
            f'<p>Notes: {"" if notes else "none."}</p>{f"<ul>{notes}</ul>" if notes else ""}</section>')


def _drift(data: dict[str, Any], history: Mapping[Any, Mapping[str, Any]]) -> str:
    kinds = {f["name"]: f["kind"] if f["exact"] else f"{f['kind']} (approx.)" for f in data["families"]}

    def group_of(metric: str) -> str:
        return kinds.get(metric, metric.split(":", 1)[0])

    series = drift_series(history, group_of)
    if not series:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td class=\"r\">{n}</td>"
        f"<td class=\"r\">{drifts[-1]:.2e}</td><td class=\"r\">{max(drifts):.2e}</td></tr>"
        for name, (steps, drifts, n) in series.items())
    return ('<section id="drift"><h2>Drift during training</h2>'
            f'<p class="text">{len(history)} logged steps. Exact laws of gradient flow drift only through '
            "the finite step size, noise and weight decay; approximate ones also through eps.</p>"
            f"<figure>{drift_svg(series)}</figure><table><tr><th>series</th><th>metrics</th>"
            f"<th>final drift</th><th>max drift</th></tr>{rows}</table></section>")
