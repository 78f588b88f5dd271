"""A ``transformers.TrainerCallback`` that records the model's conservation laws during training.

    from fxlaws.integrations.huggingface import FxlawsCallback
    trainer = Trainer(model=model, args=args, train_dataset=data)
    FxlawsCallback.attach(trainer, every=50)      # or Trainer(..., callbacks=[FxlawsCallback(every=50)])
    trainer.train()                               # conservation/... next to the loss in every logger

At train start the model is annotated on the first training batch (without ``labels``; or on
``example_inputs``), and the optimizer's step is hooked. Each time the trainer logs, the latest record
joins the logged values, so TensorBoard, W&B, CSV or any ``report_to`` integration receives
``conservation/<kind>/<family>/max_rel_drift`` and the rest. At train end ``fxlaws_report.html`` and
``.md`` (with the run's drift plot) are written into ``args.output_dir``.

Order matters: the trainer calls callbacks in the order it holds them, and the reporting
integrations come first; :meth:`FxlawsCallback.attach` puts this callback before them so they see
the laws. Passed in ``callbacks=[...]``, it can only add the laws to the logs of callbacks after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from .recorder import TrainingLaws

__all__ = ["FxlawsCallback"]


class FxlawsCallback(TrainerCallback):
    """Record conservation laws during ``Trainer.train`` (see the module docstring).

    Args:
        every: record after every ``every``-th optimizer step (a record costs one pass over the
            parameters; the host reads it only when the trainer logs).
        loss: annotate's loss assumption (``"cross_entropy"`` adds the logits' T1 laws).
        example_inputs: inputs to annotate on (default: the first training batch without ``labels``).
        report: write the report files at train end.

    Attributes:
        laws: the :class:`~fxlaws.integrations.recorder.TrainingLaws` (annotation, recorder, report paths).
    """

    def __init__(self, every: int = 50, loss: Optional[str] = None, example_inputs: Any = None, report: bool = True):
        self.laws = TrainingLaws(every, loss, report)
        self.example_inputs = example_inputs

    @classmethod
    def attach(cls, trainer, **kwargs) -> "FxlawsCallback":
        """Add a new callback to ``trainer`` ahead of its reporting integrations; returns it."""
        callback = cls(**kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        inputs = self.example_inputs
        if inputs is None:
            if train_dataloader is None:
                raise ValueError("FxlawsCallback needs example inputs: the trainer has no train dataloader; "
                                 "pass FxlawsCallback(example_inputs=...)")
            batch = next(iter(train_dataloader))
            inputs = {k: v for k, v in dict(batch).items() if k != "labels"}
        self.laws.start(model, inputs, optimizer)

    def on_log(self, args, state, control, logs=None, **kwargs):
        record = self.laws.pending()
        if record is not None and logs is not None:
            logs.update(record)

    def on_train_end(self, args, state, control, **kwargs):
        self.laws.finish(Path(args.output_dir) if args.output_dir else None)
