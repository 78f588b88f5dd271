"""fxlaws: the conservation laws of a PyTorch model's gradient-flow training.

    >>> import fxlaws
    >>> from fxlaws.models import resnet18
    >>> model = resnet18()
    >>> ann = fxlaws.annotate(model, model.example_inputs())
"""

from .annotation import Annotation
from .api import annotate
from .errors import (
    ExampleInputsError,
    FxlawsError,
    KernelBuildError,
    MetaDeviceError,
    StaleAnnotationError,
    UnsupportedOpError,
    UntraceableModelError,
)
from .instrument import instrument
from .laws.family import LawFamily
from .rebalance import rebalance
from .report import Report
from .teleport import teleport
from .verify.soundness import soundness

__all__ = [
    "annotate",
    "instrument",
    "rebalance",
    "teleport",
    "soundness",
    "Annotation",
    "LawFamily",
    "Report",
    "FxlawsError",
    "ExampleInputsError",
    "UntraceableModelError",
    "UnsupportedOpError",
    "StaleAnnotationError",
    "MetaDeviceError",
    "KernelBuildError",
]

__version__ = "0.1.0"
