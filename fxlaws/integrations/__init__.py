"""Instrumented training where people train: callbacks for the Hugging Face ``Trainer``
(:mod:`fxlaws.integrations.huggingface`) and Lightning (:mod:`fxlaws.integrations.lightning`).

Both annotate the model when training starts, record every law family after every ``every``-th
optimizer step (hook mode of :func:`fxlaws.instrument`: the model itself is not wrapped), hand the
values to the trainer's own loggers (TensorBoard, W&B, CSV, whatever the run reports to) and write
the laws' report, with the drift plot of the run, when training ends. The shared part is
:class:`fxlaws.integrations.recorder.TrainingLaws`.
"""

from .recorder import TrainingLaws

__all__ = ["TrainingLaws"]
