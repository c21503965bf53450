"""The table of elementwise primitives: one entry per operation.

Each entry says, in one place, how to build the operation as a SymPy object
(used by the parser and by the code printer) and its partial derivative with
respect to each argument, written in terms of the arguments and of `out`, the
stored forward value (so `exp` differentiates to `out`, `tanh` to
`1 - out**2`, `sigmoid` to `out*(1 - out)`).  An entry without `partials`
gets them from `sympy.diff`; adding a function that SymPy can differentiate
therefore takes one line.  The scheduler multiplies a partial by the incoming
adjoint; it knows no specific operation.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import sympy as sp


# --- functions SymPy lacks, with their derivatives ---------------------------

class sigmoid(sp.Function):
    """The logistic function 1 / (1 + exp(-x))."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))


class softplus(sp.Function):
    """log(1 + exp(x)), computed stably as logaddexp(0, x)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))


class relu(sp.Function):
    """max(x, 0); its derivative at 0 is taken as 0 (a subgradient)."""

    def fdiff(self, argindex=1):
        return step(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.Max(x, 0)


class step(sp.Function):
    """1 where x > 0, else 0: the derivative of relu and of max."""

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.Piecewise((1, x > 0), (0, True))


class select(sp.Function):
    """a where m is nonzero, else b: how a masked (padding) step keeps its state."""

    nargs = 3

    def _eval_rewrite_as_exp(self, m, a, b, **kwargs):
        return m * a + (1 - m) * b


# --- the table -----------------------------------------------------------------

def _unevaluated(cls):
    return lambda *args: cls(*args, evaluate=False)


@dataclass(frozen=True)
class Primitive:
    """One elementwise operation: how to build it, and its partials."""

    name: str
    arity: int
    build: Callable                      # SymPy args -> SymPy expression
    partials: Optional[Callable] = None  # (out, *args) -> one partial per argument
    callable_as: Optional[str] = None    # function name in specs, if any
    domain: tuple = (-2.0, 2.0)          # where tests draw random points

    def local_partials(self, out, args):
        """d out / d args[i] for every i, as SymPy expressions."""
        if self.partials is not None:
            return tuple(self.partials(out, *args))
        probe = sp.symbols(f"_a0:{self.arity}", real=True)
        value = self.build(*probe).doit()
        result = []
        for i in range(self.arity):
            d = sp.diff(value, probe[i]).subs(value, out)
            result.append(d.subs(dict(zip(probe, args))))
        return tuple(result)


def _binary(cls, invert=False, negate=False):
    if invert:
        return lambda a, b: sp.Mul(a, sp.Pow(b, -1, evaluate=False), evaluate=False)
    if negate:
        return lambda a, b: sp.Add(a, -b if b.is_Number else sp.Mul(-1, b, evaluate=False),
                                   evaluate=False)
    return lambda a, b: cls(a, b, evaluate=False)


def _max_partials(out, a, b):
    # The lecture's subgradient: d max(a,b)/da = 1 if a > b else 0.
    return (sp.Piecewise((1, a > b), (0, True)), sp.Piecewise((1, a <= b), (0, True)))


def _min_partials(out, a, b):
    return (sp.Piecewise((1, a < b), (0, True)), sp.Piecewise((1, a >= b), (0, True)))


PRIMITIVES = {p.name: p for p in [
    # structural arithmetic (written with operators, not called by name)
    Primitive("identity", 1, lambda a: a, lambda out, a: (1,)),
    Primitive("add", 2, _binary(sp.Add), lambda out, a, b: (1, 1)),
    Primitive("sub", 2, _binary(None, negate=True), lambda out, a, b: (1, -1)),
    Primitive("mul", 2, _binary(sp.Mul), lambda out, a, b: (b, a)),
    Primitive("div", 2, _binary(None, invert=True), lambda out, a, b: (1 / b, -out / b),
              domain=(0.5, 2.0)),
    Primitive("neg", 1, lambda a: sp.Mul(-1, a, evaluate=False), lambda out, a: (-1,)),
    Primitive("pow", 2, _binary(sp.Pow), lambda out, a, b: (b * a ** (b - 1), out * sp.log(a)),
              callable_as="pow", domain=(0.5, 2.0)),
    # functions
    Primitive("exp", 1, _unevaluated(sp.exp), lambda out, a: (out,), "exp"),
    Primitive("log", 1, _unevaluated(sp.log), lambda out, a: (1 / a,), "log", (0.2, 3.0)),
    Primitive("sqrt", 1, lambda a: sp.Pow(a, sp.Rational(1, 2), evaluate=False),
              lambda out, a: (1 / (2 * out),), "sqrt", (0.2, 3.0)),
    Primitive("sin", 1, _unevaluated(sp.sin), lambda out, a: (sp.cos(a),), "sin"),
    Primitive("cos", 1, _unevaluated(sp.cos), lambda out, a: (-sp.sin(a),), "cos"),
    Primitive("tan", 1, _unevaluated(sp.tan), lambda out, a: (1 + out ** 2,), "tan", (-1.2, 1.2)),
    Primitive("tanh", 1, _unevaluated(sp.tanh), lambda out, a: (1 - out ** 2,), "tanh"),
    Primitive("sigmoid", 1, _unevaluated(sigmoid), lambda out, a: (out * (1 - out),), "sigmoid"),
    Primitive("softplus", 1, _unevaluated(softplus), lambda out, a: (sigmoid(a),), "softplus"),
    Primitive("relu", 1, _unevaluated(relu), lambda out, a: (step(out),), "relu"),
    Primitive("abs", 1, _unevaluated(sp.Abs), lambda out, a: (sp.sign(a),), "abs"),
    Primitive("max", 2, _unevaluated(sp.Max), _max_partials, "max"),
    Primitive("min", 2, _unevaluated(sp.Min), _min_partials, "min"),
    # masking: m is 0 or 1, so d/da = m and d/db = 1 - m
    Primitive("select", 3, _unevaluated(select), lambda out, m, a, b: (0, m, 1 - m)),
    # derivatives taken by SymPy: one line each
    Primitive("sinh", 1, _unevaluated(sp.sinh), callable_as="sinh"),
    Primitive("cosh", 1, _unevaluated(sp.cosh), callable_as="cosh"),
    Primitive("arctan", 1, _unevaluated(sp.atan), callable_as="arctan"),
    Primitive("arcsinh", 1, _unevaluated(sp.asinh), callable_as="arcsinh"),
]}

# Function names a spec may call, and how many arguments each takes.
CALLABLE = {p.callable_as: p for p in PRIMITIVES.values() if p.callable_as}

# SymPy head -> primitive name, for turning SymPy expressions into graph nodes.
SYMPY_HEADS = {
    sp.exp: "exp", sp.log: "log", sp.sin: "sin", sp.cos: "cos", sp.tan: "tan",
    sp.tanh: "tanh", sigmoid: "sigmoid", softplus: "softplus", relu: "relu",
    sp.Abs: "abs", sp.Max: "max", sp.Min: "min", sp.sinh: "sinh", sp.cosh: "cosh",
    sp.atan: "arctan", sp.asinh: "arcsinh", select: "select",
}
