"""Sinks and run reliability: TensorBoard, dataframe export, JSONL after a crash, resume, NaN."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.instrument import JSONLSink, TensorBoardSink, instrument
from fxlaws.models import relu_mlp
from fxlaws.sinks import read_jsonl


def _setup(seed=0):
    torch.manual_seed(seed)
    model = relu_mlp(sizes=(3, 8, 4))
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    return model, x, y


def _train(inst, model, x, y, steps, opt=None, lr=0.05):
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(inst(x), y).backward()
        opt.step()
    return opt


def test_tensorboard_sink_writes_every_metric_at_its_step(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    model, x, y = _setup()
    sink = TensorBoardSink(tmp_path)
    inst = instrument(model, fxlaws.annotate(model, x), sinks=[sink], flush_every=2)
    _train(inst, model, x, y, 6)
    sink.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    last = inst.history[-1]
    assert set(tags) == set(last) - {"conservation/step"}
    for tag in tags:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [2, 4, 6]
        assert events[-1].value == pytest.approx(last[tag], rel=1e-6, abs=1e-30)


def test_history_exports_a_dataframe_indexed_by_step():
    pd = pytest.importorskip("pandas")
    model, x, y = _setup()
    inst = instrument(model, fxlaws.annotate(model, x), sinks=[lambda m: None], flush_every=1)
    _train(inst, model, x, y, 4)
    frame = inst.history.to_dataframe()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == [1, 2, 3, 4]
    key = next(k for k in inst.history[0] if k.endswith("max_rel_drift"))
    assert frame[key].tolist() == inst.history.series(key)
    assert sorted(inst.history.by_step()) == [1, 2, 3, 4]


def test_jsonl_lines_survive_an_interrupted_run(tmp_path):
    model, x, y = _setup()
    path = tmp_path / "laws.jsonl"
    inst = instrument(model, fxlaws.annotate(model, x), sinks=[JSONLSink(path)], flush_every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(KeyboardInterrupt):
        for step in range(10):
            opt.zero_grad()
            F.cross_entropy(inst(x), y).backward()
            opt.step()
            if step == 4:
                raise KeyboardInterrupt
    with open(path, "a", encoding="utf-8") as f:  # a process killed inside a write leaves a torn line
        f.write('{"conservation/step": 6.0, "conserv')
    rows = read_jsonl(path)
    assert [r["conservation/step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows == inst.history
    path.write_text(path.read_text() + "\n{}\n")  # a bad line in the middle is an error, named
    with pytest.raises(ValueError, match=r"laws.jsonl:6"):
        read_jsonl(path)


def test_resumed_run_continues_the_drift_series(tmp_path):
    model, x, y = _setup()
    ann = fxlaws.annotate(model, x)
    inst = instrument(model, ann, sinks=[lambda m: None], flush_every=1)
    _train(inst, model, x, y, 6)
    full = inst.history

    model, x, y = _setup()
    inst = instrument(model, ann, sinks=[lambda m: None], flush_every=1)
    opt = _train(inst, model, x, y, 3)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "laws": inst.state()}, tmp_path / "ckpt.pt")

    fresh, _, _ = _setup(seed=1)  # a new process: other initial values until the checkpoint loads
    ckpt = torch.load(tmp_path / "ckpt.pt")
    fresh.load_state_dict(ckpt["model"])
    opt = torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9)
    opt.load_state_dict(ckpt["opt"])
    resumed = instrument(fresh, ann, sinks=[lambda m: None], flush_every=1)
    resumed.load_state(ckpt["laws"])
    _train(resumed, fresh, x, y, 3, opt=opt)
    assert [r["conservation/step"] for r in resumed.history] == [4, 5, 6]
    for got, want in zip(resumed.history, full[3:]):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-9), k


def test_load_state_of_other_laws_is_refused():
    model, x, y = _setup()
    inst = instrument(model, fxlaws.annotate(model, x))
    state = inst.state()
    state["families"] = state["families"][:-1]
    with pytest.raises(fxlaws.StaleAnnotationError, match="other law families"):
        inst.load_state(state)


def test_nonfinite_parameters_are_flagged_not_fatal(tmp_path):
    model, x, y = _setup()
    path = tmp_path / "laws.jsonl"
    inst = instrument(model, fxlaws.annotate(model, x), sinks=[JSONLSink(path)], flush_every=1)
    _train(inst, model, x, y, 1)
    assert inst.history[-1]["conservation/nonfinite"] == 0
    with torch.no_grad():
        model.net[0].weight[0, 0] = float("nan")
        model.net[2].weight[1, 1] = float("inf")
    inst.train()
    inst(x)  # a diverged run keeps running; the metric says so
    last = inst.history[-1]
    assert last["conservation/nonfinite"] >= 2
    assert any(math.isnan(v) for k, v in last.items() if k.endswith("max_rel_drift"))
    line = json.loads(path.read_text().splitlines()[-1])  # strict JSON: null, not NaN
    assert line["conservation/nonfinite"] == last["conservation/nonfinite"]
    assert any(v is None for v in line.values())
