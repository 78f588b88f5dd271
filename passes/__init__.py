"""torch.fx graph passes of fxlaws: normalise → partition → attach laws → attention (→ instrument)."""

from .attach import AttachLawsPass, ParamFacts
from .normalise import NormalisePass
from .partition import Partition, PartitionPass

__all__ = ["NormalisePass", "PartitionPass", "Partition", "AttachLawsPass", "ParamFacts"]
