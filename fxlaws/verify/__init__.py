"""Verification of laws: numeric soundness (completeness and discovery join in the verification issue)."""

from .soundness import SoundnessResult, SoundnessRow, soundness

__all__ = ["soundness", "SoundnessResult", "SoundnessRow"]
