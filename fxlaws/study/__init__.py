"""Experiments on real training runs: :func:`sgd_persistence` (laws drift ∝ τ² under plain SGD) and
:func:`teleport_study` (does rebalancing or teleportation along the symmetry orbits help training?)."""

from .sgd import StudyResult, plot, sgd_persistence
from .teleport import TeleportStudy, plot_teleport, table, teleport_study

__all__ = ["StudyResult", "plot", "sgd_persistence", "TeleportStudy", "plot_teleport", "table", "teleport_study"]
