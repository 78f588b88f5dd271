"""torch.fx graph passes of fxlaws: normalise → partition → attach laws → attention → translations → shared
shifts → mark laws
(the annotate pipeline, :data:`ANNOTATE`), and instrument (a rewrite the user asks for).

Every pass follows one protocol (:class:`~fxlaws.passes.base.FxlawsPass`: ``requires`` → ``call``
→ ``ensures``, returning a :class:`~fxlaws.passes.base.PassResult`); the annotate passes hand on
one typed state (:class:`~fxlaws.passes.pipeline.AnnotateState`). See passes/README.md.
"""

from .attach import AttachLawsPass
from .attention import AttentionPass
from .base import FxlawsPass, PassResult
from .marks import MarkLawsPass
from .normalise import NormalisePass
from .partition import Partition, PartitionPass
from .pipeline import AnnotateState, run_passes
from .shifts import SharedShiftPass
from .translations import TranslationPass

#: the passes of ``fxlaws.annotate``, in order
ANNOTATE = (NormalisePass(), PartitionPass(), AttachLawsPass(), AttentionPass(), TranslationPass(), SharedShiftPass(),
            MarkLawsPass())

__all__ = ["ANNOTATE", "AnnotateState", "FxlawsPass", "PassResult", "run_passes", "NormalisePass", "PartitionPass",
           "Partition", "AttachLawsPass", "AttentionPass", "TranslationPass", "SharedShiftPass", "MarkLawsPass"]
