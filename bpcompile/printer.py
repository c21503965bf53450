"""SymPy expression -> NumPy source text.

Like SymPy's own printers this is mostly a table.  Only validated names
(SymPy symbols made from checked identifiers) and numeric literals can come
out of it, so nothing of a spec's raw text reaches generated code.
"""

import sympy as sp
from sympy.printing.str import StrPrinter

from .primitives import relu, select, sigmoid, softplus, step

# SymPy function -> NumPy code template over the printed arguments.
NUMPY_FUNCTIONS = {
    sp.exp: "np.exp({0})",
    sp.log: "np.log({0})",
    sp.sin: "np.sin({0})",
    sp.cos: "np.cos({0})",
    sp.tan: "np.tan({0})",
    sp.tanh: "np.tanh({0})",
    sp.sinh: "np.sinh({0})",
    sp.cosh: "np.cosh({0})",
    sp.atan: "np.arctan({0})",
    sp.asinh: "np.arcsinh({0})",
    sp.Abs: "np.abs({0})",
    sp.sign: "np.sign({0})",
    sp.Max: "np.maximum({0}, {1})",
    sp.Min: "np.minimum({0}, {1})",
    sigmoid: "1/(1 + np.exp(-{0}))",
    softplus: "np.logaddexp(0, {0})",
    relu: "np.maximum({0}, 0)",
    step: "({0} > 0)",
    select: "np.where({0}, {1}, {2})",
}

# Templates that are not a single call need parentheses in products and powers.
_NEEDS_PARENS = {sigmoid}


class NumpyPrinter(StrPrinter):
    """Prints SymPy expressions as Python/NumPy expressions."""

    def _print_Function(self, expr):
        template = NUMPY_FUNCTIONS.get(type(expr))
        if template is None:
            raise ValueError(f"no NumPy form for {type(expr).__name__}")
        args = [self._print(a) for a in expr.args]
        if type(expr) in _NEEDS_PARENS:     # -{0} must negate the whole argument
            args = [f"({text})" if not a.is_Atom else text for a, text in zip(expr.args, args)]
        text = template.format(*args)
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
