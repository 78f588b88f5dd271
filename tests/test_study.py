"""The seed experiment, small: plain-SGD law error grows ∝ τ² (THEORY §3)."""

from fxlaws.cli import main
from fxlaws.study import sgd_persistence


def test_gpt_law_error_scales_with_tau_squared():
    res = sgd_persistence("gpt-tiny", lrs=(1e-3, 4e-3), seeds=2, steps=5, other_optimizers=False)
    assert 1.7 < res.slope < 2.3, res.slope  # the derivation: per step τ² h(g), summed over steps


def test_cli_study_writes_a_figure(tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["study", "sgd", "--models", "gpt-tiny", "--seeds", "1", "--steps", "3", "-o", str(out)]) == 0
    assert out.exists() and out.stat().st_size > 10_000
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| gpt-tiny |")]
    assert len(table) == 1 and len(table[0].split("|")) == 1 + 1 + 5 + 1 + 2 + 1  # τ columns, slope, 2 optimizers
