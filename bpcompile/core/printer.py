"""SymPy expression -> NumPy source text.

Like SymPy's own printers this is mostly a table.  Only validated names
(SymPy symbols made from checked identifiers) and numeric literals can come
out of it, so nothing of a spec's raw text reaches generated code.
"""

import ast

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .primitives import BY_HEAD, PRIMITIVES

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

    def _print_through_table(self, expr):
        return self._print_Function(expr)     # the subclass's table, for a subclass

    _print_Abs = _print_through_table
    _print_Max = _print_through_table
    _print_Min = _print_through_table
    _print_sign = _print_through_table
    _print_exp = _print_through_table
    _print_ExpBase = _print_through_table

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == sp.Rational(1, 2):
            return f"{self.constants}.sqrt({self._print(base)})"
        if exponent == -sp.Rational(1, 2):
            return f"1/{self.constants}.sqrt({self._print(base)})"
        return super()._print_Pow(expr, rational)

    def _print_Piecewise(self, expr):
        # Only indicator functions are produced by the rule table: (1, cond), (0, True).
        (one, cond), (zero, _) = expr.args
        if one != 1 or zero != 0 or len(expr.args) != 2:
            raise ValueError("only indicator Piecewise expressions can be printed")
        return f"({self._print(cond)})"

    def _print_Float(self, expr):
        return repr(float(expr))

    constants = "np"        # the module e, pi, inf and sqrt are read from

    def _print_Exp1(self, expr):
        return f"{self.constants}.e"

    def _print_Pi(self, expr):
        return f"{self.constants}.pi"

    def _print_Infinity(self, expr):
        return f"{self.constants}.inf"

    def _print_NegativeInfinity(self, expr):
        return f"-{self.constants}.inf"


_PRINTER = NumpyPrinter({"order": "none"})


def to_numpy(expr):
    """The NumPy source text of a SymPy expression."""
    return _PRINTER.doprint(expr)


# --- scalar code for compiled loops (the numba target) ------------------------------

# SymPy function -> its form on one float inside a numba kernel: `math` where it has the
# function, NumPy's ufuncs on scalars elsewhere (numba compiles those, and they treat
# nan as NumPy does: np.maximum(nan, 0.0) is nan).  Each template is one call or
# parenthesized as a whole.  A function not listed keeps its NumPy form.
SCALAR_FUNCTIONS = {
    sp.exp: "math.exp({0})",
    sp.log: "math.log({0})",
    sp.sin: "math.sin({0})",
    sp.cos: "math.cos({0})",
    sp.tan: "math.tan({0})",
    sp.tanh: "math.tanh({0})",
    sp.sinh: "math.sinh({0})",
    sp.cosh: "math.cosh({0})",
    sp.atan: "math.atan({0})",
    sp.asinh: "math.asinh({0})",
    sp.asin: "math.asin({0})",
    sp.acos: "math.acos({0})",
    sp.Abs: "math.fabs({0})",          # (not abs: a program may call a variable `abs`)
    PRIMITIVES["log1p"].head: "math.log1p({0})",
    PRIMITIVES["expm1"].head: "math.expm1({0})",
    # sigmoid with one exp, which cannot overflow: e = exp(-|a|), then 1/(1 + e) for
    # a >= 0 and e/(1 + e) below (LLVM computes the repeated exp once).  NumPy's printed
    # form takes two exps; on scalars the second one cost 7% of an LSTM cell's forward.
    PRIMITIVES["sigmoid"].head:
        "((1.0 if {0} >= 0.0 else math.exp(-math.fabs({0})))/(1.0 + math.exp(-math.fabs({0}))))",
}


# The loops over points call exp, log, sin, cos and tanh of templates/numba/vector_math.py,
# which LLVM vectorizes (math's are one C call per point).
VECTOR_FUNCTIONS = {
    **SCALAR_FUNCTIONS,
    sp.exp: "_exp({0})",
    sp.log: "_log({0})",
    sp.sin: "_sin({0})",
    sp.cos: "_cos({0})",
    sp.tanh: "_tanh({0})",
    PRIMITIVES["sigmoid"].head:
        "((1.0 if {0} >= 0.0 else _exp(-math.fabs({0})))/(1.0 + _exp(-math.fabs({0}))))",
}


def _called(template):
    """The names a printing template calls that start with "_" (vector_math.py's)."""
    tree = ast.parse(template.format(*["a"] * 3))
    return frozenset(node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and isinstance(node.func, ast.Name) and node.func.id.startswith("_"))


# SymPy function -> the functions of vector_math.py its vector form calls
VECTOR_CALLS = {head: called for head, template in VECTOR_FUNCTIONS.items()
                if (called := _called(template))}


def vector_calls(exprs):
    """The functions of templates/numba/vector_math.py that `exprs`, printed with
    vector=True, call."""
    return frozenset().union(*(VECTOR_CALLS.get(type(f), frozenset())
                               for expr in exprs for f in sp.preorder_traversal(expr)))


class ScalarPrinter(NumpyPrinter):
    """Prints SymPy expressions as code on float scalars, for the loop body of a
    numba kernel: the same formulas as NumpyPrinter, with `math` functions."""

    constants = "math"
    functions = SCALAR_FUNCTIONS

    def _print_Function(self, expr):
        template = self.functions.get(type(expr))
        if template is None:
            return super()._print_Function(expr)
        return template.format(*(self._print(a) for a in expr.args))

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent.is_Integer and exponent < -1:
            # numba's power by a negative integer raises ZeroDivisionError at 0: a float
            # exponent gives NumPy's inf
            return f"{self.parenthesize(base, PRECEDENCE['Pow'])}**({float(exponent)!r})"
        return super()._print_Pow(expr, rational)


class VectorScalarPrinter(ScalarPrinter):
    """ScalarPrinter with the vectorizable exp, log, sin, cos and tanh."""

    functions = VECTOR_FUNCTIONS


_SCALAR_PRINTER = ScalarPrinter({"order": "none"})
_VECTOR_PRINTER = VectorScalarPrinter({"order": "none"})


def to_scalar(expr, vector=False):
    """The source text of a SymPy expression on float scalars, in a numba kernel;
    `vector`: with the functions of templates/numba/vector_math.py."""
    return (_VECTOR_PRINTER if vector else _SCALAR_PRINTER).doprint(expr)
