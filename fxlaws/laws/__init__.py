"""Law families and their parts (slots, sympy templates)."""

from .family import LawFamily
from .slots import Piece, Slot

__all__ = ["LawFamily", "Piece", "Slot"]
