"""Law families and their parts (slots, sympy templates), and the builder the passes make them with."""

from .builder import LawBuilder, ParamFacts
from .family import LawFamily
from .slots import Piece, Slot

__all__ = ["LawFamily", "LawBuilder", "ParamFacts", "Piece", "Slot"]
