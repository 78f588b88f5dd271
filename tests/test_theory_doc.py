"""The repository carries its own theory document (docs/THEORY.md): every row id the code, the
reports and the README cite is defined there, and every section the code cites exists."""

from __future__ import annotations

import re
from pathlib import Path

import fxlaws
from helpers import seq, vec

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "THEORY.md"
ROW = re.compile(r"\b([RSGNTA][1-9])\b")
# names that look like row ids and are not: the T5 model (transformers)
NOT_ROWS = {"T5"}


def _defined_rows() -> set[str]:
    """Row ids that head a row of one of the document's tables (``| R1 | ...``)."""
    return set(re.findall(r"^\| ([RSGNTA][1-9]) \|", DOC.read_text(encoding="utf-8"), flags=re.M))


def _cited(paths) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in paths:
        for row in ROW.findall(path.read_text(encoding="utf-8")):
            out.setdefault(row, str(path.relative_to(ROOT)))
    return {r: p for r, p in out.items() if r not in NOT_ROWS}


def test_every_row_id_cited_by_the_code_is_defined():
    code = [*ROOT.glob("fxlaws/**/*.py"), *ROOT.glob("passes/**/*.py"), ROOT / "README.md"]
    missing = {r: p for r, p in _cited(code).items() if r not in _defined_rows()}
    assert not missing, f"row ids cited but not defined in docs/THEORY.md: {missing}"


def test_every_section_cited_by_the_code_exists():
    headings = set(re.findall(r"^#+ (§[0-9][0-9a-z.]*)", DOC.read_text(encoding="utf-8"), flags=re.M))
    code = [*ROOT.glob("fxlaws/**/*.py"), *ROOT.glob("passes/**/*.py"), *ROOT.glob("tests/*.py"), ROOT / "README.md"]
    cited = {m for p in code for m in re.findall(r"THEORY[^\n§]{0,40}(§ ?[0-9][0-9a-z.]*[0-9a-z])", p.read_text(encoding="utf-8"))}
    missing = {c.replace(" ", "") for c in cited} - headings
    assert not missing, f"sections cited but not in docs/THEORY.md: {sorted(missing)} (have {sorted(headings)})"


def test_the_rows_families_carry_are_defined():
    """The ``theory`` field of families fxlaws builds (what reports print in their row column)."""
    from torch import nn

    model = seq(fc1=nn.Linear(3, 4), ln=nn.LayerNorm(4), act=nn.ReLU(), fc2=nn.Linear(4, 4))
    ann = fxlaws.annotate(model, vec(), loss="cross_entropy")
    rows = {f.theory for f in ann.laws}
    assert rows and rows <= _defined_rows(), rows


def test_the_readme_points_at_the_document():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/THEORY.md" in readme
    assert not re.search(r"(?<!docs/)THEORY\.md", readme)
