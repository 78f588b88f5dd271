"""Law templates as math: LaTeX (for JSON) and presentation MathML (for HTML).

Parameter symbols of a template are valid identifiers (``layer1_0_conv1_weight``); here they print
as the parameter's own name (``layer1.0.conv1.weight``), verbatim: sympy would otherwise read the
underscores as subscripts.
"""

from __future__ import annotations

from typing import Mapping

import sympy
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.precedence import precedence_traditional

__all__ = ["latex_of", "mathml_of"]


def latex_of(expr: sympy.Basic, symbols: Mapping[str, str]) -> str:
    """LaTeX of a law template with parameter names as upright text.

    Args:
        expr: the family's sympy template.
        symbols: sympy symbol name -> parameter name (``LawFamily.symbols``).

    Returns:
        A LaTeX string, e.g. ``\\mathrm{fc1.bias}_{j}^{2} + \\sum_{...} ...``.
    """
    names = {s: r"\mathrm{" + symbols[s.name].replace("_", r"\_") + "}"
             for s in expr.atoms(sympy.Symbol) if s.name in symbols}
    return sympy.latex(expr, symbol_names=names)


def mathml_of(expr: sympy.Basic, symbols: Mapping[str, str]) -> str:
    """Presentation MathML (the inner ``<mrow>``) of a law template.

    Multi-index sums print one ``∑`` per index (sympy's own presentation printer shows only the
    first limit of ``Sum(f, (i, ...), (k, ...))``).

    Args:
        expr: the family's sympy template.
        symbols: sympy symbol name -> parameter name.

    Returns:
        MathML markup to place inside ``<math>``.
    """
    return _Printer(symbols).doprint(expr)


class _Printer(MathMLPresentationPrinter):
    """Presentation MathML printer that prints parameter symbols verbatim."""

    def __init__(self, symbols: Mapping[str, str]):
        super().__init__()
        self._names = dict(symbols)

    def _print_Symbol(self, sym, style="plain"):
        if sym.name in self._names:
            mi = self.dom.createElement("mi")
            mi.setAttribute("mathvariant", "normal")
            mi.appendChild(self.dom.createTextNode(self._names[sym.name]))
            return mi
        return super()._print_Symbol(sym, style=style)

    def _print_Sum(self, e):
        mrow = self.dom.createElement("mrow")
        for var, low, high in reversed(e.limits):  # the first limit is the innermost sum
            under = self.dom.createElement("mrow")
            equal = self.dom.createElement("mo")
            equal.appendChild(self.dom.createTextNode("="))
            for child in (self._print(var), equal, self._print(low)):
                under.appendChild(child)
            sigma = self.dom.createElement("mo")
            sigma.appendChild(self.dom.createTextNode("\u2211"))
            box = self.dom.createElement("munderover")
            for child in (sigma, under, self._print(high)):
                box.appendChild(child)
            mrow.appendChild(box)
        mrow.appendChild(self.parenthesize(e.function, precedence_traditional(e)))
        return mrow
