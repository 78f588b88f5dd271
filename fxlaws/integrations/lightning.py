"""A Lightning ``Callback`` that records the model's conservation laws during ``Trainer.fit``.

    from fxlaws.integrations.lightning import FxlawsLightningCallback
    trainer = L.Trainer(callbacks=[FxlawsLightningCallback(every=50)], logger=...)
    trainer.fit(module, data)          # conservation/... in every logger of the run

At train start the LightningModule is annotated on its ``example_input_array`` (Lightning's own
attribute; or ``example_inputs=``) and the first optimizer's step is hooked. After every training
batch whose step was recorded, the record goes to every logger of the run (TensorBoard, CSV,
W&B ...) at the trainer's global step. At train end ``fxlaws_report.html`` and ``.md`` (with the run's drift
plot) are written into the trainer's log directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl

from .recorder import TrainingLaws

__all__ = ["FxlawsLightningCallback"]


class FxlawsLightningCallback(pl.Callback):
    """Record conservation laws during ``Trainer.fit`` (see the module docstring).

    Args:
        every: record after every ``every``-th optimizer step.
        loss: annotate's loss assumption (``"cross_entropy"`` adds the logits' T1 laws).
        example_inputs: inputs of the module's forward (default: ``module.example_input_array``).
        report: write the report files at train end.

    Attributes:
        laws: the :class:`~fxlaws.integrations.recorder.TrainingLaws` (annotation, recorder, report paths).
    """

    def __init__(self, every: int = 50, loss: Optional[str] = None, example_inputs: Any = None, report: bool = True):
        self.laws = TrainingLaws(every, loss, report)
        self.example_inputs = example_inputs

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        inputs = self.example_inputs if self.example_inputs is not None else pl_module.example_input_array
        if inputs is None:
            raise ValueError(f"FxlawsLightningCallback needs the inputs of {type(pl_module).__name__}.forward: set "
                             "module.example_input_array (Lightning's attribute) or pass example_inputs=...")
        if not trainer.optimizers:
            raise ValueError("FxlawsLightningCallback records after optimizer steps: the trainer has no optimizer")
        self.laws.start(pl_module, inputs, trainer.optimizers[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # straight to every logger at the trainer's step (``module.log_dict`` from this hook would
        # keep the value in Lightning's result collection and log it again at the next step)
        record = self.laws.pending()
        if record is not None:
            for logger in trainer.loggers:
                logger.log_metrics({k: float(v) for k, v in record.items()}, step=trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.laws.finish(Path(trainer.log_dir or trainer.default_root_dir))
