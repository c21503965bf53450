"""The table of elementwise primitives: one record per operation.

Each record says, in one place, everything the compiler knows about the
operation:

* `build`: how to make it as a SymPy object (used by the parser and by the
  code printer), and `head`, the SymPy class at the top of what `build`
  makes, which is how a SymPy expression is turned back into graph nodes;
* `partials`: its partial derivative with respect to each argument, written
  in terms of the arguments and of `out`, the stored forward value (so `exp`
  differentiates to `out`, `tanh` to `1 - out**2`, `sigmoid` to
  `out*(1 - out)`).  A record without `partials` gets them from `sympy.diff`;
* `numpy`: the printed NumPy form, a template over the printed arguments
  (`"np.arcsin({0})"`).  A template that is not a single call is put in
  parentheses where it is used; arguments appear only as call arguments;
* `ufunc`: the same value as one NumPy ufunc call, for the printers that
  write into preallocated buffers: the ufunc's name and a function from the
  SymPy arguments to the ufunc's arguments (relu is `np.maximum(a, 0.0)`;
  sigmoid is `np.divide` of two subexpressions that are emitted in turn).

Adding an elementwise function that SymPy can differentiate therefore takes
one record (see `arcsin`).  The scheduler multiplies a partial by the
incoming adjoint; it knows no specific operation.  Arithmetic (`add`, `mul`,
`pow`, ...) is built from SymPy's operators, which the printers know
structurally, so those records have no head or forms.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p


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


class matvec(sp.Function):
    """W @ v in a cell equation: a matrix times each example's vector (a tensor
    operation; the recurrent front end lowers it)."""

    nargs = 2


def matmul(W, v):
    """How the parser builds `W @ v` in cell equations."""
    return matvec(W, v, evaluate=False)


class vector_sum(sp.Function):
    """sum(v) in a program: the sum of all elements of v, a scalar (a tensor operation:
    the program front end lowers it to a `sum` node, tensor_ops.py)."""

    nargs = 1

    def _sympystr(self, printer):
        return f"sum({printer._print(self.args[0])})"


class dot(sp.Function):
    """a @ b in a program: the dot product over the last axis, where that equals NumPy's
    matmul (a tensor operation: lowered to a `dot` node, tensor_ops.py)."""

    nargs = 2

    def _sympystr(self, printer):
        # parenthesized, so that the printed text parses back to the same expression
        a, b = (printer._print(arg) for arg in self.args)
        return f"({a} @ {b})"


def vector_dot(a, b):
    """How the parser builds `a @ b` in programs."""
    return dot(a, b, evaluate=False)


# Program functions that are not elementwise: name -> (arity, SymPy builder)
VECTOR_FUNCTIONS = {"sum": (1, lambda v: vector_sum(v, evaluate=False))}


class select(sp.Function):
    """a where m is nonzero, else b: how a masked (padding) step keeps its state."""

    nargs = 3

    def _eval_rewrite_as_exp(self, m, a, b, **kwargs):
        return m * a + (1 - m) * b


# --- the table -----------------------------------------------------------------

def _unevaluated(cls):
    return lambda *args: cls(*args, evaluate=False)


def _same(*args):
    return args


@dataclass(frozen=True)
class Primitive:
    """One elementwise operation: how to build, differentiate and print it."""

    name: str
    arity: int
    build: Callable                      # SymPy args -> SymPy expression
    partials: Optional[Callable] = None  # (out, *args) -> one partial per argument
    callable_as: Optional[str] = None    # function name in specs, if any
    domain: tuple = (-2.0, 2.0)          # where tests draw random points
    head: Optional[type] = None          # SymPy class of build's result, if a function
    numpy: Optional[str] = None          # NumPy template over the printed arguments
    ufunc: Optional[tuple] = None        # (ufunc name, SymPy args -> ufunc arguments)
    exact: Optional[Callable] = None     # SymPy args -> the printed form as an expression of
                                         # functions with ufunc forms, where `ufunc` is faster
                                         # but less accurate (for code that must match `numpy`)

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


def _function(name, head, partials=None, domain=(-2.0, 2.0), numpy=None, ufunc=None,
              callable_as=True, arity=1, exact=None):
    """The record of a function `name(args)` with SymPy class `head`.

    By default it prints as `np.<name>(...)` and is the ufunc of that name;
    `ufunc=False` says it has no ufunc form."""
    if numpy is None:
        numpy = f"np.{name}(" + ", ".join(f"{{{i}}}" for i in range(arity)) + ")"
    if ufunc is None:
        ufunc = f"np.{name}"
    if ufunc is False:
        ufunc = None
    elif isinstance(ufunc, str):
        ufunc = (ufunc, _same)
    return Primitive(name, arity, _unevaluated(head), partials,
                     name if callable_as is True else callable_as, domain, head, numpy, ufunc, exact)


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


def _sigmoid_by_tanh(a):
    """sigmoid(a) = 0.5 + 0.5*tanh(a/2), the in-place form: four ufunc calls that never
    overflow (the printed form exp(min(a, 0))/(1 + exp(-|a|)), accurate to a few ulps in
    both tails, takes seven, which the one-example step feels).  Its error is below one
    ulp of 0.5 (5.6e-17 in float64): only values under about 1e-16 lose relative digits."""
    half = sp.Float(0.5)
    return half, sp.Mul(half, sp.tanh(sp.Mul(half, a, evaluate=False), evaluate=False),
                        evaluate=False)


def _sigmoid_stable(a):
    """The printed form exp(min(a, 0))/(1 + exp(-|a|)) as a SymPy expression: seven
    ufunc calls, accurate to a few ulps relative even where sigmoid(a) is tiny."""
    return sp.exp(sp.Min(a, 0)) / (1 + sp.exp(-sp.Abs(a)))


_ZERO = sp.Float(0)

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
    Primitive("sqrt", 1, lambda a: sp.Pow(a, sp.Rational(1, 2), evaluate=False),
              lambda out, a: (1 / (2 * out),), "sqrt", (0.2, 3.0)),
    # functions: name, SymPy head, partials in terms of `out`, domain, NumPy and ufunc forms
    _function("exp", sp.exp, lambda out, a: (out,)),
    _function("log", sp.log, lambda out, a: (1 / a,), (0.2, 3.0)),
    _function("sin", sp.sin, lambda out, a: (sp.cos(a),)),
    _function("cos", sp.cos, lambda out, a: (-sp.sin(a),)),
    _function("tan", sp.tan, lambda out, a: (1 + out ** 2,), (-1.2, 1.2)),
    _function("tanh", sp.tanh, lambda out, a: (1 - out ** 2,)),
    _function("sigmoid", sigmoid, lambda out, a: (out * (1 - out),),
              numpy="np.exp(np.minimum({0}, 0))/(1 + np.exp(-np.abs({0})))",
              ufunc=("np.add", _sigmoid_by_tanh), exact=_sigmoid_stable),
    _function("softplus", softplus, lambda out, a: (sigmoid(a),),
              numpy="np.logaddexp(0, {0})", ufunc=("np.logaddexp", lambda a: (a, _ZERO))),
    _function("relu", relu, lambda out, a: (step(out),),
              numpy="np.maximum({0}, 0)", ufunc=("np.maximum", lambda a: (a, _ZERO))),
    _function("abs", sp.Abs, lambda out, a: (sp.sign(a),)),
    _function("max", sp.Max, _max_partials, arity=2, numpy="np.maximum({0}, {1})",
              ufunc="np.maximum"),
    _function("min", sp.Min, _min_partials, arity=2, numpy="np.minimum({0}, {1})",
              ufunc="np.minimum"),
    # masking: m is 0 or 1, so d/da = m and d/db = 1 - m; np.where has no `out`
    _function("select", select, lambda out, m, a, b: (0, m, 1 - m), arity=3, callable_as=None,
              numpy="np.where({0}, {1}, {2})", ufunc=False),
    # derivatives taken by SymPy: one record each
    _function("sinh", sp.sinh),
    _function("cosh", sp.cosh),
    _function("arctan", sp.atan),
    _function("arcsinh", sp.asinh),
    _function("arcsin", sp.asin, domain=(-0.9, 0.9)),
    _function("arccos", sp.acos, domain=(-0.9, 0.9)),
    _function("log1p", log1p, domain=(-0.8, 3.0)),
    _function("expm1", expm1),
]}

# Functions that appear only inside partials (never as graph nodes): printed
# and emitted as ufuncs from the same kind of record.  Their partials are 0
# almost everywhere; the scheduler never asks for them.
IN_PARTIALS = {p.name: p for p in [
    _function("sign", sp.sign, lambda out, a: (0,), callable_as=None),
    _function("step", step, lambda out, a: (0,), callable_as=None,
              numpy="({0} > 0)", ufunc=("np.greater", lambda a: (a, _ZERO))),
]}

# Function names a spec may call, and how many arguments each takes.
CALLABLE = {p.callable_as: p for p in PRIMITIVES.values() if p.callable_as}

# SymPy head -> primitive name, for turning SymPy expressions into graph nodes.
SYMPY_HEADS = {p.head: p.name for p in PRIMITIVES.values() if p.head is not None}

# SymPy head -> record, for the printers (graph primitives and partial-only functions).
BY_HEAD = {p.head: p for p in [*PRIMITIVES.values(), *IN_PARTIALS.values()] if p.head is not None}
