"""Instrumented training where people train, each with a real tiny run of the framework on CPU:
the Hugging Face Trainer callback (logs reach the trainer's TensorBoard integration), the Lightning
callback (logs reach its CSV logger) and the W&B sink (offline mode)."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

import fxlaws
from fxlaws.models import relu_mlp


def _event_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in logdir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_huggingface_trainer_callback_logs_through_the_trainers_loggers(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    pytest.importorskip("tensorboard")
    from fxlaws.integrations.huggingface import FxlawsCallback

    monkeypatch.setenv("WANDB_DISABLED", "true")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=0,
                                  eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 16, (8, 8))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=2, logging_steps=2,
        report_to=["tensorboard"], use_cpu=True, save_strategy="no",
        disable_tqdm=True, optim="sgd", learning_rate=1e-3)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    callback = FxlawsCallback.attach(trainer, every=1)
    trainer.train()

    laws = callback.laws
    assert laws.annotation is not None and laws.annotation.laws
    steps = [r["conservation/step"] for r in laws.recorder.history]
    assert steps == [2, 4, 6]  # one record per trainer log (logging_steps=2), the last at the end
    # the trainer's TensorBoard integration writes what the trainer logs, under "train/"
    scalars = {t.removeprefix("train/"): v for t, v in _event_scalars(tmp_path).items()}
    drift_tags = [t for t in scalars if t.startswith("conservation/") and t.endswith("/max_rel_drift")]
    assert len(drift_tags) == len(laws.annotation.laws), sorted(scalars)[:10]
    for record in laws.recorder.history:
        for tag in drift_tags:
            logged = dict(scalars[tag])
            assert math.isclose(logged[record["conservation/step"]], record[tag], rel_tol=1e-6, abs_tol=1e-12)
    assert all((tmp_path / "out" / name).exists() for name in ("fxlaws_report.html", "fxlaws_report.md"))
    assert 'id="drift"' in (tmp_path / "out" / "fxlaws_report.html").read_text(encoding="utf-8")



# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates (not fxlaws' code)
@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
def test_lightning_callback_logs_through_the_trainers_loggers(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    from fxlaws.integrations.lightning import FxlawsLightningCallback

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
            self.example_input_array = torch.randn(2, 3)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(24, 3), torch.randint(0, 4, (24,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    callback = FxlawsLightningCallback(every=2, loss="cross_entropy")
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=CSVLogger(str(tmp_path)), callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1)
    trainer.fit(Lit(), loader)

    ann = callback.laws.annotation
    assert {f.theory for f in ann.laws} == {"R1", "T1"}
    with open(trainer.logger.log_dir + "/metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    history = callback.laws.recorder.history
    assert [r["conservation/step"] for r in history] == [1, 3, 5]  # every=2: after optimizer steps 1, 3, 5
    key = f"conservation/rescale/{ann.laws[0].name}/max_rel_drift"
    logged = {int(r["step"]): float(r[key]) for r in rows if r.get(key)}
    assert logged == pytest.approx({r["conservation/step"]: r[key] for r in history}, rel=1e-6, abs=1e-12)
    assert (tmp_path / "lightning_logs").exists() and callback.laws.report_paths
    assert all(p.exists() for p in callback.laws.report_paths)


def test_wandb_sink_in_offline_mode(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from fxlaws.sinks import WandbSink

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    model = relu_mlp(sizes=(3, 8, 4))
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    ann = fxlaws.annotate(model, x, loss="cross_entropy")
    sink = WandbSink(project="fxlaws-test", mode="offline")
    inst = fxlaws.instrument(model, ann, sinks=[sink], flush_every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(inst(x), y).backward()
        opt.step()
    run = sink.run
    key = next(k for k in inst.history[-1] if k.endswith("/max_rel_drift"))
    assert run.summary[key] == pytest.approx(inst.history[-1][key]) and run.summary["conservation/step"] == 4
    inst.close()  # the sink started the run: close finishes it
    assert wandb.run is None
    assert list(tmp_path.rglob("*.wandb"))  # the offline run file, for `wandb sync`
