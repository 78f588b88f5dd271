"""Does moving along the symmetry orbits help training? Loss against steps on real small tasks
(:mod:`fxlaws.study.tasks`), with SGD and Adam, under four conditions:

* ``plain``: train from the initialisation;
* ``rebalanced``: :func:`fxlaws.rebalance` once at initialisation (same function, balanced laws);
* ``teleport lr=η``: :func:`fxlaws.teleport` (objective: the squared gradient norm on the current
  minibatch; ``teleport_steps`` Adam steps of learning rate η on the group coordinates) at step 0 and
  every ``every`` steps, for each η of ``teleport_lrs`` (the ascent is unbounded on non-compact
  orbits, so η sets how far a teleport goes); Adam's state is reset after each teleport, since its
  moments belong to the old coordinates;
* ``reset`` (Adam only): the control for that reset — Adam's state reset every ``every`` steps, no
  teleport.

Runs are paired: a seed fixes the initialisation and the minibatch order, identical across the
conditions, so a condition's effect is read as the per-seed ratio of its final training loss to
``plain``'s. Nothing here promises a gain; :func:`table` prints what the runs measured.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ..api import annotate
from ..rebalance import rebalance
from ..teleport import teleport
from .tasks import Task, make_task

__all__ = ["Run", "TeleportStudy", "teleport_study", "table", "plot_teleport", "CONDITIONS"]

CONDITIONS = ("plain", "rebalanced", "teleport", "reset")  # "teleport" runs once per ascent learning rate


def _label(condition: str, teleport_lr: float) -> str:
    return f"teleport lr={teleport_lr:g}" if condition == "teleport" else condition


@dataclass
class Run:
    """One training run: the training-set loss every ``eval_every`` steps, the final test numbers and,
    for the teleport condition, each teleport's squared-gradient-norm gain and loss change."""

    task: str
    optimizer: str
    condition: str
    seed: int
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: float = float("nan")
    test_accuracy: float = float("nan")
    teleport_gain: list[float] = field(default_factory=list)  # objective after / before, per teleport
    teleport_loss_change: list[float] = field(default_factory=list)  # |Δ loss| / loss on the batch
    balance_after: float = float("nan")  # worst relative law value after rebalancing
    seconds: float = 0.0


@dataclass
class TeleportStudy:
    """Every run of the study, with the settings that produced it."""

    runs: list[Run]
    settings: dict
    descriptions: dict[str, str]

    def select(self, task: str, optimizer: str, condition: str) -> list[Run]:
        return [r for r in self.runs if (r.task, r.optimizer, r.condition) == (task, optimizer, condition)]

    def cells(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys((r.task, r.optimizer, r.condition) for r in self.runs))


def _evaluate(model: nn.Module, task: Task, split: tuple) -> tuple[float, float]:
    x, y = split
    with torch.no_grad():
        out = model(x)
        loss = float(task.loss(out, y))
        acc = float((out.argmax(-1) == y).double().mean()) if task.accuracy else float("nan")
    return loss, acc


def _train(task: Task, ann, optimizer: str, condition: str, seed: int, *, steps: int, every: int,
           eval_every: int, teleport_steps: int, teleport_lr: float) -> Run:
    run = Run(task.name, optimizer, _label(condition, teleport_lr), seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = task.model()
    model.train()
    gen = torch.Generator().manual_seed(10_000 + seed)  # the minibatch order: the same in every condition
    if condition == "rebalanced":
        run.balance_after = rebalance(model, ann).worst

    def make_optimizer():
        if optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=task.sgd_lr)
        return torch.optim.Adam(model.parameters(), lr=task.adam_lr)

    opt = make_optimizer()
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            run.steps.append(step)
            run.train_loss.append(_evaluate(model, task, task.train_set)[0])
        if step == steps:
            break
        x, y = task.batch(gen)
        if step % every == 0 and condition in ("teleport", "reset"):
            if condition == "teleport":
                res = teleport(model, ann, lambda out: task.loss(out, y), (x,), steps=teleport_steps, lr=teleport_lr)
                run.teleport_gain.append(res.objective_after / res.objective_before if res.objective_before else 1.0)
                run.teleport_loss_change.append(abs(res.loss_after - res.loss_before) / abs(res.loss_before))
            opt = make_optimizer()  # SGD has no state; Adam's moments belong to the old coordinates
        opt.zero_grad()
        task.loss(model(x), y).backward()
        opt.step()
    run.test_loss, run.test_accuracy = _evaluate(model, task, task.test_set)
    run.seconds = time.perf_counter() - start
    return run


def teleport_study(tasks=("mlp", "cnn", "gpt"), optimizers=("sgd", "adam"), *, seeds: int = 5, steps: int = 300,
                   every: int = 50, eval_every: int = 10, teleport_steps: int = 10, teleport_lrs=(0.01, 0.05),
                   dtype: torch.dtype = torch.float64, corpus=None,
                   progress: Optional[Callable[[str], None]] = None) -> TeleportStudy:
    """Train every task × optimizer × condition × seed; returns the runs.

    Args:
        tasks: names from :data:`fxlaws.study.tasks.TASKS`.
        optimizers: ``"sgd"`` (plain, no momentum) and/or ``"adam"``; the learning rates are the
            task's (:class:`~fxlaws.study.tasks.Task`).
        seeds: runs per cell (paired across conditions).
        steps: optimizer steps per run.
        every: teleport (or reset, the Adam control) at step 0 and every ``every`` steps.
        eval_every: the training-set loss is recorded every ``eval_every`` steps.
        teleport_steps: Adam steps of each teleport's ascent.
        teleport_lrs: the ascent's learning rates, one teleport condition each.
        dtype: float64 by default, so "function unchanged" holds to float64 round-off.
        corpus: the gpt task's text (default: this repository's docs/THEORY.md).
    """
    settings = dict(seeds=seeds, steps=steps, every=every, eval_every=eval_every, teleport_steps=teleport_steps,
                    teleport_lrs=list(teleport_lrs), dtype=str(dtype).replace("torch.", ""))
    if seeds < 1 or steps < 1 or every < 1 or eval_every < 1:
        raise ValueError("seeds, steps, every and eval_every must be positive")
    built = [make_task(name, dtype=dtype, corpus=corpus) for name in tasks]  # a missing corpus fails before any run
    runs, descriptions = [], {}
    for name, task in zip(tasks, built):
        descriptions[name] = task.description
        settings[f"{name}_lr"] = {"sgd": task.sgd_lr, "adam": task.adam_lr}
        torch.manual_seed(0)
        probe = task.model()
        ann = annotate(probe, (task.train_set[0][:2],), loss="cross_entropy")
        for optimizer in optimizers:
            for condition, lr in [(c, lr) for c in CONDITIONS for lr in (teleport_lrs if c == "teleport" else (0.0,))]:
                if condition == "reset" and optimizer != "adam":
                    continue
                for seed in range(seeds):
                    if progress:
                        progress(f"{name} {optimizer} {_label(condition, lr)} seed {seed + 1}/{seeds}")
                    runs.append(_train(task, ann, optimizer, condition, seed, steps=steps, every=every,
                                       eval_every=eval_every, teleport_steps=teleport_steps, teleport_lr=lr))
    return TeleportStudy(runs, settings, descriptions)


def _spread(values: list[float], fmt: str = "{:.3g}") -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(study: TeleportStudy) -> str:
    """Markdown: per cell the median (min–max over seeds) final training loss, the paired ratio to
    ``plain``, test loss and accuracy, and for teleport the squared-gradient-norm gain."""
    lines = ["| task | optimizer | condition | final train loss | ÷ plain (paired) | test loss | test accuracy "
             "| teleport: ‖∇L‖² gain | s / run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task, optimizer, condition in study.cells():
        runs = study.select(task, optimizer, condition)
        plain = {r.seed: r.train_loss[-1] for r in study.select(task, optimizer, "plain")}
        ratios = [r.train_loss[-1] / plain[r.seed] for r in runs if r.seed in plain]
        gains = [g for r in runs for g in r.teleport_gain]
        lines.append(f"| {task} | {optimizer} | {condition} | {_spread([r.train_loss[-1] for r in runs])} "
                     f"| {'–' if condition == 'plain' else _spread(ratios)} "
                     f"| {_spread([r.test_loss for r in runs])} "
                     f"| {_spread([r.test_accuracy for r in runs], '{:.3f}')} "
                     f"| {_spread(gains) if gains else '–'} | {statistics.median(r.seconds for r in runs):.1f} |")
    return "\n".join(lines)


def plot_teleport(study: TeleportStudy, path) -> None:
    """Training loss against steps: one panel per task × optimizer, median over seeds (line) and
    min–max (band) per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((t, o) for t, o, _ in study.cells()))
    cols = len(dict.fromkeys(o for _, o in panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    labels = list(dict.fromkeys(c for _, _, c in study.cells()))
    reds = iter(("tab:orange", "tab:red", "darkred", "magenta"))
    colours = {c: {"plain": "black", "rebalanced": "tab:blue", "reset": "tab:gray"}.get(c) or next(reds, "tab:pink")
               for c in labels}
    for ax, (task, optimizer) in zip(axes.flat, panels):
        for condition in labels:
            runs = study.select(task, optimizer, condition)
            if not runs:
                continue
            xs = runs[0].steps
            per_step = list(zip(*(r.train_loss for r in runs)))
            ax.plot(xs, [statistics.median(v) for v in per_step], color=colours[condition], label=condition, lw=1.4)
            ax.fill_between(xs, [min(v) for v in per_step], [max(v) for v in per_step], color=colours[condition],
                            alpha=0.15, lw=0)
        ax.set_yscale("log")
        # a diverged run would squash every other curve: the frame stops at twice the starting loss
        start = max(r.train_loss[0] for r in study.runs if (r.task, r.optimizer) == (task, optimizer))
        low = min(min(r.train_loss) for r in study.runs if (r.task, r.optimizer) == (task, optimizer))
        above = sorted({r.condition for r in study.runs if (r.task, r.optimizer) == (task, optimizer)
                        and max(r.train_loss) > 2 * start})
        ax.set_ylim(0.9 * low, 2 * start)
        ax.set_title(f"{task}, {optimizer}" + (f"\n(runs above the frame: {', '.join(above)})" if above else ""),
                     fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training-set loss")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    s = study.settings
    fig.suptitle(f"median and min–max over {s['seeds']} seeds; teleport every {s['every']} steps "
                 f"({s['teleport_steps']} ascent steps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
