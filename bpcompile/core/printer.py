"""SymPy expression -> NumPy source text.

Like SymPy's own printers this is mostly a table.  Only validated names
(SymPy symbols made from checked identifiers) and numeric literals can come
out of it, so nothing of a spec's raw text reaches generated code.
"""

import sympy as sp
from sympy.printing.str import StrPrinter

from .primitives import BY_HEAD

# SymPy function -> NumPy code template over the printed arguments: the
# records' `numpy` forms (primitives.py), not a table of its own.
NUMPY_FUNCTIONS = {head: record.numpy for head, record in BY_HEAD.items()}


def _is_delimited(template):
    """True for a template that is one call, `np.f(...)`, or parenthesized as a whole."""
    if not template.startswith(("np.", "(")) or not template.endswith(")"):
        return False
    depth = 0
    for i, ch in enumerate(template):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch == ")":
            return i == len(template) - 1
    return False


# Templates that are not a single call need parentheses in products and powers.
_NEEDS_PARENS = {head for head, template in NUMPY_FUNCTIONS.items() if not _is_delimited(template)}


class NumpyPrinter(StrPrinter):
    """Prints SymPy expressions as Python/NumPy expressions."""

    def _print_Function(self, expr):
        template = NUMPY_FUNCTIONS.get(type(expr))
        if template is None:
            raise ValueError(f"no NumPy form for {type(expr).__name__}")
        # Arguments appear only as call arguments in the templates: no parentheses needed.
        text = template.format(*(self._print(a) for a in expr.args))
        return f"({text})" if type(expr) in _NEEDS_PARENS else text

    _print_Abs = _print_Function
    _print_Max = _print_Function
    _print_Min = _print_Function
    _print_sign = _print_Function
    _print_exp = _print_Function
    _print_ExpBase = _print_Function

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == sp.Rational(1, 2):
            return f"np.sqrt({self._print(base)})"
        if exponent == -sp.Rational(1, 2):
            return f"1/np.sqrt({self._print(base)})"
        return super()._print_Pow(expr, rational)

    def _print_Piecewise(self, expr):
        # Only indicator functions are produced by the rule table: (1, cond), (0, True).
        (one, cond), (zero, _) = expr.args
        if one != 1 or zero != 0 or len(expr.args) != 2:
            raise ValueError("only indicator Piecewise expressions can be printed")
        return f"({self._print(cond)})"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Exp1(self, expr):
        return "np.e"

    def _print_Pi(self, expr):
        return "np.pi"

    def _print_Infinity(self, expr):
        return "np.inf"

    def _print_NegativeInfinity(self, expr):
        return "-np.inf"


_PRINTER = NumpyPrinter({"order": "none"})


def to_numpy(expr):
    """The NumPy source text of a SymPy expression."""
    return _PRINTER.doprint(expr)
