"""fxlaws.report: golden text / Markdown / JSON, the JSON schema, determinism, the CLI and the HTML
page rendered in headless Chromium.

Regenerate the golden files with ``pytest tests/test_report.py --update-golden`` and read the diff.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import sympy
import torch
from torch import nn

import fxlaws
from fxlaws.cli import main
from fxlaws.models import gelu_mlp, lenet, resnet18
from fxlaws.report import SCHEMA, Report
from fxlaws.report._figures import drift_series, stages_of
from fxlaws.report._text import percent

GOLDEN = Path(__file__).parent / "golden"
MODELS = {"lenet": lenet, "resnet18": resnet18}
SUFFIX = {"text": "txt", "md": "md", "json": "json"}


def _annotate(name: str):
    model = MODELS[name]()
    return fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy")


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    return {name: _annotate(name).report() for name in MODELS}


def _render(report: Report, fmt: str) -> str:
    return {"text": report.to_text, "md": report.to_markdown, "json": report.to_json}[fmt]()


def _check_golden(request, path: Path, text: str) -> None:
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}; run pytest {__file__} --update-golden"
    want = path.read_text(encoding="utf-8")
    if text != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(path), "now"))[:80])
        pytest.fail(f"{path.name} differs from the golden file (pytest --update-golden rewrites it):\n{diff}")


# --- golden files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(SUFFIX))
@pytest.mark.parametrize("name", list(MODELS))
def test_golden(request, reports, name, fmt):
    _check_golden(request, GOLDEN / f"{name}.{SUFFIX[fmt]}", _render(reports[name], fmt))


def test_text_layout(reports):
    text = str(reports["resnet18"])
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("module/subset"))
    for col in ("block kind", "law", "#laws", "exact", "assumptions", "row"):
        assert col in header
    table = lines[lines.index(header) + 2: lines.index("summary") - 1]
    assert len(table) == reports["resnet18"].data["num_families"]
    # fixed width: every row of the table is as wide as the rule under the header (or shorter, rstrip)
    rule = lines[lines.index(header) + 1]
    assert all(len(row) <= len(rule) for row in table)
    assert "bn1(+2)>layer1.0.conv1(+3)" in text  # long subsets abbreviated
    for label in ("coverage", "per kind", "front end", "opaque modules", "notes"):
        assert re.search(rf"^  {label}\s", text, re.M), label
    assert "why no law here" in text


def test_text_forward_order(reports):
    ann = reports["resnet18"].annotation
    rows = [f["name"] for f in reports["resnet18"].data["families"]]
    assert rows == [f.name for f in ann.laws]


# --- JSON schema ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_json_schema(reports, name):
    doc = json.loads(reports[name].to_json())
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "fxlaws.report/1"
    ann = reports[name].annotation
    assert doc["num_laws"] == ann.num_laws == sum(doc["counts"].values()) == sum(f["count"] for f in doc["families"])
    assert doc["counts"] == dict(sorted(ann.counts().items()))
    p = doc["parameters"]
    assert p["covered"] <= p["trainable"] <= p["total"]
    assert p["trainable"] == sum(m["trainable"] for m in doc["modules"])
    assert p["covered"] == sum(m["covered"] for m in doc["modules"])
    assert doc["coverage"] == pytest.approx(p["covered"] / p["trainable"], abs=1e-6)
    for fam, entry in zip(ann.laws, doc["families"]):
        assert entry["name"] == fam.name and entry["count"] == fam.count and entry["shape"] == list(fam.shape)
        assert {s["param"] for s in entry["slices"]} <= set(entry["params"])
        assert sympy.sympify(entry["expr"]["srepr"]) == fam.expr  # srepr round-trips
        assert r"\mathrm{" in entry["expr"]["latex"]


def test_json_schema_rejects_broken_documents(reports):
    doc = json.loads(reports["lenet"].to_json())
    for mutate in (lambda d: d.pop("families"), lambda d: d.update(schema="fxlaws.report/2"),
                   lambda d: d["families"][0].update(count=-1), lambda d: d.update(coverage="100%")):
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_json_is_plain_sorted_utf8(reports):
    text = reports["resnet18"].to_json()
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert "‖" in text  # formulas are kept readable, not \u-escaped


# --- determinism ---------------------------------------------------------------------------------------

_SUBPROCESS = """
import sys, fxlaws
from fxlaws.models import resnet18
model = resnet18()
sys.stdout.write(fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy").report().to_json())
"""


def test_json_deterministic_across_runs_and_processes():
    first = _annotate("resnet18").report().to_json()
    torch.manual_seed(123)  # other weights: the report depends on shapes only
    assert _annotate("resnet18").report().to_json() == first
    procs = [subprocess.Popen([sys.executable, "-c", _SUBPROCESS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONHASHSEED": seed}) for seed in ("1", "2")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
        assert out.decode("utf-8") == first


# --- other reports --------------------------------------------------------------------------------------

def test_report_api():
    model = lenet()
    ann = fxlaws.annotate(model, model.example_inputs())
    report = ann.report(title="my lenet")
    assert isinstance(report, fxlaws.Report)
    assert str(report).startswith("fxlaws report: my lenet")
    assert "my lenet" not in report.to_json()  # the title is display only
    assert repr(report).startswith("Report(my lenet: 4 law families")
    fragment = report._repr_html_()
    assert fragment.startswith('<div class="fxl">') and "<!DOCTYPE" not in fragment
    assert f'id="num-laws">{ann.num_laws:,}<' in fragment


def test_report_of_model_without_laws():
    model = gelu_mlp()
    report = fxlaws.annotate(model, model.example_inputs()).report()
    text = str(report)
    assert "(no law families)" in text
    for module, why in report.annotation.no_law.items():
        assert f"  {module}" in text and why in text
        assert why in report.to_markdown()
    html = report.to_html()
    assert "not positively homogeneous" in html
    jsonschema.validate(json.loads(report.to_json()), SCHEMA)


def test_report_without_parameters():
    report = fxlaws.annotate(nn.Sequential(nn.ReLU()), torch.randn(2, 3)).report()
    doc = json.loads(report.to_json())
    jsonschema.validate(doc, SCHEMA)
    assert doc["parameters"] == {"total": 0, "trainable": 0, "covered": 0} and doc["families"] == []
    assert "<svg" not in report.to_html()
    assert "every module with trainable parameters carries at least one law" in str(report)


def test_report_lists_opaque_modules():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2))
    ann = fxlaws.annotate(model, torch.randn(3, 4), leaf_modules=["2"])
    report = ann.report()
    doc = json.loads(report.to_json())
    assert [e["module"] for e in doc["opaque"]] == ["2"]
    assert re.search(r"^  opaque modules\s+2 \(", str(report), re.M)
    assert any(e["module"] == "2.0" for e in doc["no_law"])
    assert "<code>2</code>" in report.to_html()


def test_stages_collapse_repeated_blocks():
    r18 = [m["path"] for m in _annotate("resnet18").report().data["modules"]]
    assert stages_of(r18).order == ("conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                                    "layer3.1", "layer4.0", "layer4.1", "fc")
    model = fxlaws.models.resnet50()
    r50 = [m["path"] for m in fxlaws.annotate(model, model.example_inputs()).report().data["modules"]]
    assert stages_of(r50).order == ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")
    flat = stages_of([str(i) for i in range(40)], max_stages=8)
    assert len(flat.order) <= 8 and flat.of("0") == "0…4"


def test_drift_series():
    history = {0: {"a": 1.0, "b": torch.tensor([3.0, 4.0])}, 10: {"a": 1.5, "b": torch.tensor([3.0, 4.0])},
               20: {"a": 0.5, "b": torch.tensor([0.0, 4.0])}}
    series = drift_series(history, group_of=lambda m: "g")
    assert series["a"] == ([0.0, 10.0, 20.0], [0.0, 0.5, 0.5], 1)
    assert series["b"][1] == pytest.approx([0.0, 0.0, 0.6])
    many = {s: {f"rescale:{i}": 1.0 + s * i for i in range(12)} for s in (0, 1)}
    grouped = drift_series(many, group_of=lambda m: m.split(":")[0])
    assert list(grouped) == ["rescale"] and grouped["rescale"][2] == 12
    assert grouped["rescale"][1] == [0.0, 11.0]


def test_html_is_self_contained_and_has_drift(tmp_path):
    ann = _annotate("lenet")
    history = {step: {fam.name: fam.evaluate(dict(lenet().named_parameters())).detach() for fam in ann.laws}
               for step in (0, 1)}
    html = ann.report(history=history).to_html(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == html
    assert 'id="drift"' in html and html.count("<svg") == 2
    assert html.count("<math") == len(ann.laws)
    assert not re.search(r"<(script|link|img|iframe)\b", html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|@import|url\((?!#)""", html)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls  # XML namespaces only


def test_report_plots_an_instrumented_runs_recorded_drift():
    """``ann.report(history=inst.history)`` (or its ``by_step()``): the recorded max relative drift is
    what the report shows, not a drift of the drift statistics; the non-finite count is not a law."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = fxlaws.models.get_model("gpt-tiny")
    inputs = model.example_inputs()
    ann = fxlaws.annotate(model, inputs, loss="cross_entropy")
    inst = fxlaws.instrument(model, ann, flush_every=1, sinks=[lambda metrics: None])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(4):
        opt.zero_grad()
        logits = inst(*inputs)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), inputs[0].reshape(-1)).backward()
        opt.step()
    recorded = {k.split("/")[2]: v for k, v in inst.history[-1].items() if k.endswith("/max_rel_drift")}
    for history in (inst.history, inst.history.by_step()):
        series = drift_series(history, group_of=lambda m: m.split(":")[0], max_lines=10 ** 6)
        assert set(series) == set(recorded)  # no step, no non-finite count, no mean/rms summaries
        for name, (steps, drifts, _) in series.items():
            assert drifts[-1] == pytest.approx(recorded[name]) and steps[-1] == 4
    html = ann.report(history=inst.history).to_html()
    assert "nonfinite" not in html and 'id="drift"' in html


# --- CLI ----------------------------------------------------------------------------------------------------

def test_cli_report_json_matches_golden(tmp_path, capsys):
    out = tmp_path / "lenet.json"
    assert main(["report", "lenet", "--loss", "cross_entropy", "--format", "json", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (GOLDEN / "lenet.json").read_text(encoding="utf-8")
    err = capsys.readouterr().err
    assert "annotating lenet" in err and "wrote" in err  # progress on stderr


def test_cli_report_text_to_stdout(capsys):
    assert main(["report", "lenet", "--loss", "cross_entropy"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("fxlaws report: lenet (LeNet)") and "why no law here" in out
    assert "fxlaws report" not in err


@pytest.mark.parametrize("suffix, start", [(".md", "# fxlaws report"), (".html", "<!DOCTYPE html>"),
                                           (".json", "{"), (".txt", "fxlaws report")])
def test_cli_report_format_from_suffix(tmp_path, suffix, start):
    out = tmp_path / f"r{suffix}"
    assert main(["report", "mlp", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith(start)


def test_cli_report_input_shape(capsys):
    assert main(["report", "mlp", "--input-shape", "5,784", "--format", "md"]) == 0
    assert "| scalar laws |" in capsys.readouterr().out


def test_cli_unknown_model(capsys):
    assert main(["report", "resnet-18"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet-18'" in err and "resnet18" in err and "lenet" in err


def test_cli_factory_raises(tmp_path, capsys):
    src = tmp_path / "bad_factory.py"
    src.write_text("def make():\n    return _build(7)\n\n\ndef _build(width):\n    raise ValueError(f'bad width {width}')\n")
    assert main(["report", f"{src}:make"]) == 2
    err = capsys.readouterr().err
    assert "ValueError: bad width 7" in err
    assert "in make: return _build(7)" in err and "in _build: raise ValueError" in err


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["report", "lenet", "-o", str(tmp_path / "missing" / "r.txt")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["report", f"{tmp_path / 'nope.py'}:make"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["report", "lenet", "--format", "pdf"])
    assert exc.value.code == 2


def test_cli_demo_writes_report_html(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "module/subset" in out and "wrote" in out and "report.html" in out
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# --- HTML in a real browser ---------------------------------------------------------------------------------

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def _run_chromium(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


def test_html_renders_in_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs it: apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); this test always runs in CI")
    ann = _annotate("resnet18")
    report = ann.report()
    page = tmp_path / "report.html"
    report.to_html(page)
    url = page.resolve().as_uri()

    dom = _run_chromium(exe, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    data = report.data
    for key, value in (("num-laws", f"{data['num_laws']:,}"), ("num-families", f"{data['num_families']:,}"),
                       ("coverage", percent(data["parameters"]["covered"] / data["parameters"]["trainable"])),
                       ("trainable", f"{data['parameters']['trainable']:,}")):
        assert f'id="{key}">{value}</div>' in dom.stdout, key
    assert dom.stdout.count("<math") == len(ann.laws) and "<svg" in dom.stdout

    png = tmp_path / "shot.png"
    shot = _run_chromium(exe, tmp_path, f"--screenshot={png}", "--window-size=1280,2000", url)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    assert pixels.shape[:2] == (2000, 1280)
    colours = {tuple(p) for p in (pixels[::4, ::4, :3] * 255).astype("uint8").reshape(-1, 3).tolist()}
    assert len(colours) > 50, f"screenshot looks blank ({len(colours)} colours)"
    assert (pixels[:, :, :3] < 0.9).any(axis=2).mean() > 0.02  # some ink on the page


@pytest.mark.parametrize("name", sorted(fxlaws.models.MODELS))
def test_every_builtin_models_html_renders_in_chromium(name, tmp_path):
    """Every built-in model's HTML report builds (the attention models raised KeyError ('stage', ...):
    their attention blocks own no parameter themselves) and renders in headless Chromium with its
    numbers, one MathML formula per family and the model picture."""
    model = fxlaws.models.get_model(name)
    ann = fxlaws.annotate(model, model.example_inputs())
    report = ann.report()
    page = tmp_path / "report.html"
    html = report.to_html(page)
    assert html.count("<math") == len(ann.laws) and html.count("<svg") == 1
    # plain-text formulas carry no LaTeX braces; a law per channel is no "sum from g to g"
    assert not any("Σ_{" in f.formula for f in ann.laws), [f.formula for f in ann.laws if "Σ_{" in f.formula]
    for fam in report.data["families"]:
        latex = fam["expr"]["latex"]
        assert not re.search(r"\\sum_\{j = g\}\^\{g\}", latex), latex
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs it: apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); this test always runs in CI")
    dom = _run_chromium(exe, tmp_path, "--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'id="num-laws">{report.data["num_laws"]:,}</div>' in dom.stdout
    assert dom.stdout.count("<math") == len(ann.laws) and "<svg" in dom.stdout


def test_cli_verify_checks_the_blocks_where_laws_live(tmp_path, capsys):
    """Completeness on the sub-graphs holding each law family (conv → ReLU → conv; conv → ReLU →
    flatten → Linear), not layer by layer (where every layer alone has 0 laws)."""
    src = tmp_path / "small_cnn.py"
    src.write_text("import torch\nfrom torch import nn\n\n\ndef make():\n    torch.manual_seed(0)\n"
                   "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),\n"
                   "                         nn.Linear(16, 3))\n")
    assert main(["verify", f"{src}:make", "--input-shape", "2,3,6,6", "--max-params", "270"]) == 0
    out, err = capsys.readouterr()
    blocks = [line for line in out.splitlines() if line.startswith("completeness law block")]
    assert len(blocks) == 2 and all(": complete:" in line for line in blocks), out
    assert "laws expected 4, attached 4" in blocks[0] and "laws expected 4, attached 4" in blocks[1]
    assert "alone" not in out and "'missing k' = k laws exist" in out
    # not a terminal: one plain progress line per check, no bar
    assert "completeness 1/2: law block" in err and "completeness 2/2: law block" in err and "\r" not in err


def test_cli_token_inputs(tmp_path, capsys):
    """``--input-shape`` made floats only: a token model failed with a dtype error. Integer inputs
    come from ``--input-dtype long --vocab N``, and the float attempt says to use them."""
    src = tmp_path / "tok.py"
    src.write_text("import torch\nfrom torch import nn\n\n\ndef make():\n"
                   "    return nn.Sequential(nn.Embedding(11, 4), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))\n")
    assert main(["report", f"{src}:make", "--input-shape", "2,5"]) == 2
    err = capsys.readouterr().err
    assert "--input-dtype long --vocab N" in err
    assert main(["report", f"{src}:make", "--input-shape", "2,5", "--input-dtype", "long", "--vocab", "11",
                 "--format", "md"]) == 0
    assert "| scalar laws |" in capsys.readouterr().out
    assert main(["report", "lenet", "-o", str(tmp_path / "r.xyz")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err


def test_report_written_to_a_file_keeps_whole_formulas(tmp_path):
    long = max((f for f in _annotate("resnet18").laws), key=lambda f: len(f.formula))
    assert len(long.formula) > 60
    assert main(["report", "resnet18", "--loss", "cross_entropy", "-o", str(tmp_path / "r.txt")]) == 0
    assert long.formula in (tmp_path / "r.txt").read_text(encoding="utf-8")
    assert long.formula not in _annotate("resnet18").report().to_text()  # the terminal version is clipped


def test_every_parameter_without_a_law_is_named_in_every_format():
    """LeNet under any loss: fc3.bias (10 entries) is in no law. Coverage must not round to 100%, and
    the text, Markdown, JSON and HTML reports name the parameter with its module's reason."""
    model = lenet()
    report = fxlaws.annotate(model, model.example_inputs()).report()
    data = report.data
    assert [e["param"] for e in data["uncovered"]] == ["fc3.bias"]
    assert data["uncovered"][0]["unread"] == 10 and "cross-entropy" in data["uncovered"][0]["reason"]
    text, md, html = report.to_text(), report.to_markdown(), report.to_html()
    assert "fc3.bias" in text.split("parameters no law reads")[1] and "100.0%" not in text and "99.98%" in text
    assert "`fc3.bias` (all)" in md
    assert 'id="uncovered-params"' in html and "fc3.bias" in html.split('id="uncovered-params"')[1]
    assert json.loads(report.to_json())["uncovered"] == data["uncovered"]
    jsonschema.validate(json.loads(report.to_json()), SCHEMA)
