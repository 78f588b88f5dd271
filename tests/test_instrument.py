"""Graph instrumentation: the forward also records law values; outputs, checkpoints untouched."""

import json

import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.instrument import JSONLSink, instrument
from fxlaws.models import get_model, relu_mlp, resnet18


def _mlp():
    torch.manual_seed(0)
    model = relu_mlp(sizes=(3, 8, 4))
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    return model, x, y, fxlaws.annotate(model, x, loss="cross_entropy")


def test_outputs_grads_and_checkpoints_are_unchanged():
    model, x, y, ann = _mlp()
    inst = instrument(model, ann)
    assert torch.equal(inst(x), model(x))
    assert list(inst.module.state_dict()) == list(model.state_dict())  # metric buffers are not persistent
    g_plain = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    g_inst = torch.autograd.grad(F.cross_entropy(inst(x), y), list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(g_plain, g_inst))
    inst.module.load_state_dict(model.state_dict())
    model.load_state_dict(inst.module.state_dict())
    assert not inst.law_metrics.values.requires_grad


def test_records_only_training_forwards_with_grad_every_n():
    model, x, y, ann = _mlp()
    inst = instrument(model, ann, every=3)
    m = inst.law_metrics
    inst.eval()
    inst(x)
    with torch.no_grad():
        inst.train()
        inst(x)
    assert m.calls == 0
    inst.train()
    for _ in range(4):
        inst(x)
    assert (m.calls, m.step) == (4, 4)  # recorded on calls 1 and 4
    expected = torch.cat([v.reshape(-1).float() for v in ann.evaluate(model).values()])
    torch.testing.assert_close(m.values, expected.detach())


def test_sgd_run_reports_drift_and_flushes_to_jsonl(tmp_path):
    model, x, y, ann = _mlp()
    path = tmp_path / "laws.jsonl"
    inst = instrument(model, ann, sinks=[JSONLSink(path)], flush_every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(6):
        opt.zero_grad()
        F.cross_entropy(inst(x), y).backward()
        opt.step()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3 and lines[-1]["conservation/step"] == 6.0
    rescale = [k for k in lines[-1] if k.startswith("conservation/rescale/") and k.endswith("max_rel_drift")]
    assert rescale and all(lines[-1][k] < 1e-2 for k in rescale)  # plain SGD: second order in lr
    # the translation laws (T1) are exactly conserved by SGD: round-off only
    trans = [k for k in lines[-1] if k.startswith("conservation/translation/") and k.endswith("max_rel_drift")]
    assert trans and all(lines[-1][k] < 1e-4 for k in trans)
    assert inst.history == lines


def test_remove_gives_back_the_original_graph():
    model = resnet18()
    x = model.example_inputs()[0]
    inst = instrument(model, fxlaws.annotate(model, x))
    clean = inst.remove()
    assert not hasattr(clean, "fxlaws_metrics")
    assert all(n.target != "fxlaws_metrics" for n in clean.graph.nodes)
    model.eval()
    clean.eval()
    inst.eval()
    with torch.no_grad():
        assert torch.equal(clean(x), model(x)) and torch.equal(inst(x), model(x))


def test_hook_mode_matches_graph_mode():
    model, x, y, ann = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    hook = instrument(model, ann, mode="hook", optimizer=opt)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert hook.law_metrics.step == 3
    expected = torch.cat([v.reshape(-1).float() for v in ann.evaluate(model).values()])
    torch.testing.assert_close(hook.law_metrics.values, expected.detach())  # values after the last step
    hook.remove()
    opt.step()
    assert hook.law_metrics.calls == 3


def test_compile_fullgraph_records_without_recompiling():
    import torch._dynamo as dynamo

    model, x, y, ann = _mlp()
    eager_model, _, _, _ = _mlp()
    inst, eager = instrument(model, ann, every=2), instrument(eager_model, ann, every=2)
    compiled = torch.compile(inst, fullgraph=True, backend="eager")
    dynamo.reset()
    dynamo.utils.counters.clear()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, eager_model)]
    for _ in range(5):
        for fwd, opt in zip((compiled, eager), opts):
            opt.zero_grad()
            F.cross_entropy(fwd(x), y).backward()
            opt.step()
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 1  # no recompilation as counters move
    m, e = inst.law_metrics, eager.law_metrics
    assert (m.calls, m.step) == (e.calls, e.step) == (5, 5)
    torch.testing.assert_close(m.values, e.values)
    with torch.no_grad():  # no_grad forwards skip the record, compiled too
        compiled(x)
    assert m.calls == 5
    compiled(x)
    assert (m.calls, m.step) == (6, 5)  # every=2: call 6 is skipped
    compiled(x)  # call 7 records the parameters as they are after the 5th step
    assert (m.calls, m.step) == (7, 7)
    expected = torch.cat([v.reshape(-1).float() for v in ann.evaluate(model).values()])
    torch.testing.assert_close(m.values, expected.detach())


def test_an_annotation_instruments_another_instance_of_the_same_model():
    model, x, y, ann = _mlp()
    torch.manual_seed(1)
    other = relu_mlp(sizes=(3, 8, 4))
    inst = instrument(other, ann)  # the rewritten graph must read `other`'s modules, not `model`'s
    assert torch.equal(inst(x), other(x)) and not torch.equal(other(x), model(x))
    expected = torch.cat([v.reshape(-1).float() for v in ann.evaluate(other).values()])
    torch.testing.assert_close(inst.law_metrics.values, expected.detach())


def test_models_captured_by_export_are_instrumented_without_a_mode_specialised_graph():
    from fxlaws.models import MODELS

    torch.manual_seed(0)
    model = MODELS["encoder-tiny"]()  # nn.TransformerEncoder: captured by torch.export
    x = model.example_inputs()
    ann = fxlaws.annotate(model, x)
    assert ann.frontend == "export"
    inst = instrument(model, ann)
    assert list(inst.module.state_dict()) == list(model.state_dict())
    for train in (True, False):  # an exported aten graph would run its export-time mode in both
        model.train(train)
        inst.train(train)
        with torch.no_grad():
            assert torch.equal(inst(*x), model(*x))
    model.train()
    inst.train()
    inst(*x)
    expected = torch.cat([v.reshape(-1).float() for v in ann.evaluate(model).values()])
    torch.testing.assert_close(inst.law_metrics.values, expected.detach())
    assert inst.law_metrics.step == 1 and inst.remove() is model


def test_hook_mode_flushes_to_its_sinks():
    model, x, y, ann = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    seen = []
    hook = instrument(model, ann, mode="hook", optimizer=opt, sinks=[seen.append], flush_every=2)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert [m["conservation/step"] for m in seen] == [2.0, 4.0] and hook.history == seen


def test_law_values_keep_the_parameters_precision_under_autocast():
    """A training forward under torch.autocast must not compute the laws in bf16: the Gram laws'
    matmuls (A1/A2, per attention head) were 4.6% off on gpt-tiny, all of it read as drift."""
    torch.manual_seed(0)
    model = get_model("gpt-tiny")
    inputs = model.example_inputs()
    ann = fxlaws.annotate(model, inputs)
    assert {"attention-qk", "attention-vo"} <= {f.kind for f in ann.laws}
    expected = torch.cat([v.detach().reshape(-1) for v in ann.evaluate(model).values()])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inst = instrument(model, ann)  # h₀ taken inside an autocast region too
        inst(*inputs)
    torch.testing.assert_close(inst.law_metrics.values, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(inst.law_metrics.reference, expected, rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # ann.evaluate and single families too
        whole = torch.cat([v.detach().reshape(-1) for v in ann.evaluate(model).values()])
        params = dict(model.named_parameters())
        single = torch.cat([fam.evaluate(params).detach().reshape(-1) for fam in ann.laws])
    torch.testing.assert_close(whole, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(single, expected, rtol=1e-6, atol=1e-6)
    assert torch.is_autocast_enabled("cpu") is False  # the disabled region did not leak


def test_state_dict_keys_are_the_models(tmp_path):
    """A checkpoint of the instrumented module loads into the plain model and back (issue: keys came
    back prefixed ``module.``)."""
    model, x, y, ann = _mlp()
    inst = instrument(model, ann)
    assert list(inst.state_dict()) == list(model.state_dict())
    torch.save(inst.state_dict(), tmp_path / "ckpt.pt")
    fresh = relu_mlp(sizes=(3, 8, 4))
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt"))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    inst.load_state_dict(fresh.state_dict())
    try:
        inst.load_state_dict({"nope": torch.zeros(1)})
        raise AssertionError("an unrelated state dict loaded")
    except RuntimeError as err:
        assert "Missing key" in str(err)


def test_last_records_are_flushed_on_close_and_remove(tmp_path):
    """flush_every=2 and 5 steps: step 5 reaches history and sinks on close() / remove(), steps are ints."""
    for finish in ("close", "remove"):
        model, x, y, ann = _mlp()
        path = tmp_path / f"{finish}.jsonl"
        inst = instrument(model, ann, sinks=[JSONLSink(path)], flush_every=2)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(inst(x), y).backward()
            opt.step()
        assert [r["conservation/step"] for r in inst.history] == [2, 4]
        getattr(inst, finish)()
        steps = [r["conservation/step"] for r in inst.history]
        assert steps == [2, 4, 5] and all(type(s) is int for s in steps)
        assert [json.loads(line)["conservation/step"] for line in path.read_text().splitlines()] == [2, 4, 5]
        inst.close()  # twice: nothing more
        assert len(inst.history) == 3


def test_open_recorders_flush_at_interpreter_exit(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "exit.jsonl"
    script = f"""
import torch, torch.nn.functional as F, fxlaws
from fxlaws.instrument import JSONLSink
from fxlaws.models import relu_mlp
model = relu_mlp(sizes=(3, 8, 4)); x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
inst = fxlaws.instrument(model, fxlaws.annotate(model, x), sinks=[JSONLSink({str(path)!r})], flush_every=10)
for _ in range(3):
    F.cross_entropy(inst(x), y).backward()
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert [json.loads(line)["conservation/step"] for line in path.read_text().splitlines()] == [3]


def test_soundness_needs_no_inputs_the_annotation_kept_them():
    """``fxlaws.soundness(model, ann)`` on a user model (no example_inputs()): the Annotation keeps
    the inputs' shapes and dtypes (and token ids' range), not their values."""
    model = torch.nn.Sequential(torch.nn.Embedding(11, 4), torch.nn.Linear(4, 6), torch.nn.ReLU(),
                                torch.nn.Linear(6, 3)).double()
    ids = torch.randint(0, 11, (2, 5))
    ann = fxlaws.annotate(model, ids)
    again, kwargs = ann.example_inputs()
    assert kwargs == {} and again[0].shape == ids.shape and again[0].dtype == ids.dtype
    assert int(again[0].max()) == int(ids.max())
    result = fxlaws.soundness(model, ann)
    assert result.ok and result.rows


def test_checkpoints_of_a_module_holding_the_instrumented_model():
    """State-dict hooks (not an override): a parent module holding ``inst`` saves the model's keys
    under its own prefix and loads them back (a LightningModule or DDP around it)."""
    model, x, y, ann = _mlp()
    inst = instrument(model, ann)
    parent = torch.nn.Module()
    parent.net = inst
    keys = list(parent.state_dict())
    assert keys == [f"net.{k}" for k in model.state_dict()]
    fresh = relu_mlp(sizes=(3, 8, 4))
    holder = torch.nn.Module()
    holder.net = instrument(fresh, fxlaws.annotate(fresh, x))
    holder.load_state_dict(parent.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
