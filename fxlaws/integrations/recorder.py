"""What the training callbacks share: annotate at train start, record in hook mode, hand records out,
write the report at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from torch import nn

from ..api import annotate
from ..instrument import HookInstrumented, instrument

__all__ = ["TrainingLaws"]

log = logging.getLogger(__name__)


class TrainingLaws:
    """The laws of one training run.

    Args:
        every: record after every ``every``-th optimizer step.
        loss: the loss assumption of :func:`fxlaws.annotate` (``None``/"any" or "cross_entropy").
        report: write ``fxlaws_report.html`` and ``fxlaws_report.md`` into the run's directory at
            the end (the drift plot of the run included).

    Attributes:
        annotation: the :class:`~fxlaws.Annotation` made at train start (None before).
        recorder: the hook-mode recorder (its ``history`` holds every record handed out).
        report_paths: the files written at the end.
    """

    def __init__(self, every: int = 50, loss: Optional[str] = None, report: bool = True):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.loss, self.write_report = every, loss, report
        self.annotation = None
        self.recorder: Optional[HookInstrumented] = None
        self.report_paths: list[Path] = []

    def start(self, model: nn.Module, example_inputs: Any, optimizer) -> None:
        """Annotate ``model`` on ``example_inputs`` and hook ``optimizer``'s step."""
        self.annotation = annotate(model, example_inputs, loss=self.loss)
        self.recorder = instrument(model, self.annotation, mode="hook", optimizer=optimizer, every=self.every,
                                   flush_every=1)
        log.info("fxlaws: %d scalar laws in %d families, recorded every %d optimizer steps",
                 self.annotation.num_laws, len(self.annotation.laws), self.every)

    def pending(self) -> Optional[dict[str, float]]:
        """The latest record if it was not handed out yet (one host sync), else None."""
        return self.recorder.flush_pending() if self.recorder is not None else None

    def finish(self, directory: Optional[Path]) -> None:
        """Stop recording; write the report (with the run's drift) into ``directory``."""
        if self.recorder is None:
            return
        self.recorder.remove()
        if self.write_report and directory is not None and self.annotation.laws:
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            report = self.annotation.report(history=self.recorder.history)
            html, md = directory / "fxlaws_report.html", directory / "fxlaws_report.md"
            report.to_html(html)
            md.write_text(report.to_markdown(), encoding="utf-8")
            self.report_paths = [html, md]
