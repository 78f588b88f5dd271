"""The state ``annotate``'s passes hand on to each other, and the pipeline that runs them.

Each field is written by exactly one pass and read by the later ones; a pass checks in
``requires`` that what it reads is there (:class:`~fxlaws.errors.PassOrderError` otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import torch.fx as fx
from torch import nn

from fxlaws.capture import Capture

if TYPE_CHECKING:
    from fxlaws.laws.builder import LawBuilder

    from .base import FxlawsPass
    from .partition import Partition

__all__ = ["AnnotateState", "run_passes"]


@dataclass
class AnnotateState:
    """What flows through the annotate pipeline.

    Attributes:
        model: the user's module (read only: parameters, modes restored by every run).
        capture: the captured graph and its facts (front end, opaque modules, aliases, trainable).
        train: analyse training-mode behaviour (THEORY N1/N2: BatchNorm with batch statistics).
        loss: None / "any", or "cross_entropy" (THEORY T1 on the logits).
        partition: channel spaces and coupling classes (written by PartitionPass).
        laws: the law families and the reasons for missing ones (written by AttachLawsPass, extended
            by AttentionPass).
        absorbed: for each value, the axes along which every use absorbs translations (written by
            TranslationPass, read by SharedShiftPass).
        history: the passes that ran, in order, and whether each changed anything.
    """

    model: nn.Module
    capture: Capture
    train: bool = True
    loss: Optional[str] = None
    partition: Optional["Partition"] = None
    laws: Optional["LawBuilder"] = None
    absorbed: Optional[dict] = None
    history: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def graph_module(self) -> fx.GraphModule:
        return self.capture.graph_module


def run_passes(passes: Sequence["FxlawsPass[AnnotateState]"], state: AnnotateState) -> AnnotateState:
    """Run ``passes`` in order on ``state``; each sees what the previous ones wrote."""
    for p in passes:
        result = p(state)
        state = result.state
        state.history.append((type(p).__name__, result.modified))
    return state
