"""Verification of laws: independent numeric checks of what :func:`fxlaws.annotate` finds.

* :func:`soundness`: every law's gradient is orthogonal to the loss gradient at random parameters
  and inputs (THEORY §4.1); a :class:`SoundnessResult` with one :class:`SoundnessRow` per family.
* :func:`flow_check`: integrate gradient flow with RK4 in float64 and measure how far each law
  family drifts (THEORY §4.1); a :class:`FlowResult` with one :class:`FlowRow` per family.
* :func:`completeness`: ``D − dim Lie`` (the number of independent laws near θ) against the laws
  fxlaws attaches (THEORY §1, §4.2); a :class:`CompletenessResult`.
* :func:`discover`: every conservation law of degree ≤ 2, found from the gradient fields alone
  (THEORY §4.3).
* :func:`invariance`: the group behind each exact family (docs/THEORY.md §2b) leaves the model's
  outputs unchanged and moves the law as predicted; an :class:`InvarianceResult`.
* :func:`self_check`: the THEORY §2 catalogue at tiny sizes, judged by :func:`completeness`; one
  :class:`CatalogueRow` per case.

As package attributes, ``soundness``, ``completeness`` and ``discover`` are the functions (they
shadow their submodules); helpers such as ``numeric_rank`` or ``CATALOGUE`` are imported from the
submodules: ``from fxlaws.verify.completeness import numeric_rank``.
"""

# All light: torch, sympy and fxlaws' own modules are already imported by ``import fxlaws``.
from .catalogue import CatalogueRow, self_check
from .completeness import CompletenessResult, completeness
from .discover import discover
from .flow import FlowResult, FlowRow, flow_check
from .invariance import InvarianceResult, InvarianceRow, invariance
from .soundness import SoundnessResult, SoundnessRow, soundness

__all__ = [
    "invariance",
    "InvarianceResult",
    "InvarianceRow",
    "soundness",
    "SoundnessResult",
    "SoundnessRow",
    "flow_check",
    "FlowResult",
    "FlowRow",
    "completeness",
    "CompletenessResult",
    "discover",
    "self_check",
    "CatalogueRow",
]
