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


# --- the teleportation study (issue: use the symmetries; docs/THEORY.md §2b) ---------------------------

def test_teleport_study_runs_are_paired_and_keep_the_function():
    """Same seed, same initialisation and batches in every condition: the loss before the first step is
    the same whether the model was rebalanced or not (the group moves leave the function alone), every
    teleport raised the squared gradient norm and left the batch loss unchanged to float64 round-off."""
    from fxlaws.study import teleport_study

    study = teleport_study(("mlp",), seeds=2, steps=6, every=3, eval_every=3, teleport_steps=3, teleport_lrs=(0.05,))
    conditions = {r.condition for r in study.runs}
    assert conditions == {"plain", "rebalanced", "teleport lr=0.05", "reset"}
    assert {r.optimizer for r in study.runs if r.condition == "reset"} == {"adam"}
    for seed in (0, 1):
        first = {r.condition: r.train_loss[0] for r in study.runs if r.seed == seed and r.optimizer == "sgd"}
        assert max(abs(v - first["plain"]) / first["plain"] for v in first.values()) < 1e-12, first
    plain = {r.seed: r.train_loss for r in study.select("mlp", "sgd", "plain")}
    assert plain[0] != plain[1]  # the seeds differ: a paired design, not copies
    for run in study.runs:
        assert run.steps == [0, 3, 6] and len(run.train_loss) == 3
        if run.condition.startswith("teleport"):
            assert len(run.teleport_gain) == 2  # steps 0 and 3
            assert all(g >= 1.0 for g in run.teleport_gain) and max(run.teleport_loss_change) < 1e-12
        if run.condition == "rebalanced":
            assert run.balance_after < 1e-10  # every reachable law balanced (the MLP's units all are)


def test_cli_study_teleport_writes_figure_table_and_runs(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    fig, runs = tmp_path / "teleport.png", tmp_path / "runs.json"
    argv = ["study", "teleport", "--tasks", "gpt", "--optimizers", "adam", "--seeds", "1", "--steps", "4",
            "--every", "2", "--teleport-steps", "2", "--teleport-lr", "0.02", "--corpus", str(corpus),
            "-o", str(fig), "--json", str(runs)]
    assert main(argv) == 0
    assert fig.exists() and fig.stat().st_size > 10_000
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| gpt | adam |")]
    assert [r.split("|")[3].strip() for r in rows] == ["plain", "rebalanced", "teleport lr=0.02", "reset"]
    import json

    data = json.loads(runs.read_text())
    assert len(data["runs"]) == 4 and all(len(r["train_loss"]) == 2 for r in data["runs"])  # steps 0 and 4


def test_cli_study_teleport_without_its_corpus_says_what_to_do(tmp_path, capsys):
    # the gpt task comes second: its corpus is checked before the mlp task trains
    assert main(["study", "teleport", "--tasks", "mlp", "gpt", "--corpus", str(tmp_path / "missing.txt"),
                 "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "missing.txt" in err and "--corpus" in err and "mlp" not in err
    assert main(["study", "teleport", "--tasks", "mlp", "--every", "0", "-o", str(tmp_path / "x.png")]) == 2
    assert "positive" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
