"""Where instrumented metrics go: an in-memory history, JSON-lines files, TensorBoard.

A sink is any callable taking one metrics dict (``{"conservation/step": n, "conservation/...": x}``);
:func:`fxlaws.instrument` calls every sink at each flush. Everything here is plain Python on host
floats: sinks never see device tensors, so they never cause a device synchronisation themselves.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["History", "JSONLSink", "TensorBoardSink", "WandbSink", "read_jsonl"]

STEP = "conservation/step"


class History(list):
    """The flushed metrics dicts, oldest first (what ``Instrumented.history`` holds).

    ``to_dataframe()`` gives a pandas DataFrame indexed by step (pandas is optional);
    ``by_step()`` gives the ``{step: metrics}`` mapping :meth:`Annotation.report` plots.
    """

    def by_step(self) -> dict[int, dict[str, float]]:
        return {int(row[STEP]): {k: v for k, v in row.items() if k != STEP} for row in self}

    def series(self, key: str) -> list[float]:
        """One metric over time (NaN where a row lacks it)."""
        return [row.get(key, math.nan) for row in self]

    def to_dataframe(self):
        """A ``pandas.DataFrame``, one row per flush, indexed by ``conservation/step``."""
        try:
            import pandas as pd
        except ImportError as err:  # optional dependency
            raise ImportError("History.to_dataframe needs pandas: pip install pandas "
                              "(or use History.by_step() / History.series(key))") from err
        return pd.DataFrame(list(self)).set_index(STEP)


class JSONLSink:
    """Appends one JSON object per flush to ``path``; each line is written whole and flushed to disk
    before the call returns, so a crash or KeyboardInterrupt later leaves every earlier line intact.
    Non-finite values (a diverged run) are written as ``null`` so the file stays strict JSON.

    Args:
        path: the file (created if missing, appended to otherwise, e.g. by a resumed run).
        fsync: also ``os.fsync`` after each line (survives a machine crash, not just the process).
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False):
        self.path, self.fsync = Path(path), fsync

    def __call__(self, metrics: Mapping[str, float]) -> None:
        clean = {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in metrics.items()}
        line = json.dumps(clean, sort_keys=True, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> History:
    """The rows of a :class:`JSONLSink` file (``null`` read back as NaN). A torn last line — the
    process died inside a write — is skipped; any other bad line raises ``ValueError`` naming it."""
    rows = History()
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the write was interrupted
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
        rows.append({k: (math.nan if v is None else v) for k, v in row.items()})
    return rows


class TensorBoardSink:
    """Writes every metric as a TensorBoard scalar at its ``conservation/step``.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``, or a log directory to create one in
            (needs the optional ``tensorboard`` package).
    """

    def __init__(self, writer: Any):
        self._owned = isinstance(writer, (str, os.PathLike))
        if self._owned:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError("TensorBoardSink needs the tensorboard package: pip install tensorboard") from err
            writer = SummaryWriter(str(writer))
        self.writer = writer

    def __call__(self, metrics: Mapping[str, float]) -> None:
        step = int(metrics.get(STEP, 0))
        for key, value in metrics.items():
            if key != STEP:
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        """Close the writer if this sink made it (a writer you passed stays yours)."""
        if self._owned:
            self.writer.close()
        else:
            self.writer.flush()


class WandbSink:
    """Logs every flush to a Weights & Biases run, on its own step axis ``conservation/step`` (so the
    laws' records do not move the run's own step).

    Args:
        run: a ``wandb`` run (default: the active ``wandb.run``, else one started here with
            ``wandb.init(**init)``, which :meth:`close` then finishes). Needs the optional ``wandb``
            package; ``WANDB_MODE=offline`` works without a network.
    """

    def __init__(self, run: Any = None, **init: Any):
        try:
            import wandb
        except ImportError as err:
            raise ImportError("WandbSink needs the wandb package: pip install wandb") from err
        self._owned = run is None and wandb.run is None
        self.run = run or wandb.run or wandb.init(**init)
        self.run.define_metric(STEP)
        self.run.define_metric("conservation/*", step_metric=STEP)

    def __call__(self, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics))

    def close(self) -> None:
        """Finish the run if this sink started it."""
        if self._owned:
            self.run.finish()

