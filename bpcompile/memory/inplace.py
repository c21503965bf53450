"""SymPy expression -> NumPy ufunc calls that write into preallocated buffers.

`printer.to_numpy` prints `a*(1 - a)` as one expression, and NumPy allocates a
fresh array for every operator in it.  For small vectors (one example at a
time) those allocations and the per-operator overhead dominate, so the
per-example SGD step computes each value with ufuncs and their `out`
argument instead: `np.subtract(1.0, a, buf); np.multiply(buf, a, buf)`.

`ufunc_statements(expr, out, scratch, constant)` returns the statements, or
None when the expression uses something without a ufunc form here (the
caller then prints the plain expression).  Every symbol in `expr` names an
array of the buffer's shape or a Python number; `out` must not be one of them
(the target is written before the operands are all read).  Temporaries come
from `scratch`, a callable that hands out buffer names of the same shape;
`constant(value)` names a number (the caller may hoist it into a 0-d array,
which a ufunc converts faster than a Python float).
"""

import sympy as sp

from ..core.primitives import BY_HEAD

# SymPy function -> (ufunc, SymPy args -> the ufunc's arguments): the records'
# `ufunc` forms (primitives.py), not a table of its own.
UFUNCS = {head: record.ufunc for head, record in BY_HEAD.items() if record.ufunc is not None}

# Relations of an indicator Piecewise -> ufunc of two arguments.
RELATIONS = {
    sp.StrictGreaterThan: "np.greater", sp.GreaterThan: "np.greater_equal",
    sp.StrictLessThan: "np.less", sp.LessThan: "np.less_equal",
}

KEYWORD_OUT = ("np.maximum", "np.minimum")


class Unsupported(Exception):
    pass


def ufunc_call(expr):
    """(ufunc, argument expressions) of a power or function at the top of expr, or None.

    The one table of single-ufunc forms that both in-place printers (this
    module's and planner.py's) read; sums and products are theirs.  A record's
    ufunc arguments may be compound (sigmoid divides two subexpressions)."""
    kind, args = type(expr), expr.args
    if expr.is_Pow:
        base, exponent = args
        if exponent == 2:
            return "np.square", [base]
        if exponent == -1:
            return "np.divide", [sp.Integer(1), base]
        if exponent == sp.Rational(1, 2):
            return "np.sqrt", [base]
        return "np.power", [base, exponent]
    if kind in UFUNCS and len(args) == BY_HEAD[kind].arity:
        ufunc, arguments = UFUNCS[kind]
        return ufunc, list(arguments(*args))
    if kind in RELATIONS:
        return RELATIONS[kind], list(args)
    if isinstance(expr, sp.Piecewise) and len(args) == 2:
        # The rule table makes only indicators: Piecewise((1, a > b), (0, True)).
        (one, cond), (zero, _) = args
        if one == 1 and zero == 0 and type(cond) in RELATIONS:
            return RELATIONS[type(cond)], list(cond.args)
    return None


def ufunc_statements(expr, out, scratch, constant=repr, name=lambda ufunc: ufunc, exact=False):
    """Statements that leave the value of `expr` in the buffer `out`, or None.
    `name(ufunc)` is how the code calls a NumPy function ("np.add" by default; the
    one-example step binds them to local names).  `exact`: a function whose ufunc
    form is less accurate than its printed form (sigmoid) is computed as printed."""
    lines = []
    try:
        _Emitter(lines, scratch, constant, out, name, exact).into(expr, out)
    except Unsupported:
        return None
    return lines


def _is_leaf(expr):
    return isinstance(expr, sp.Symbol) or expr.is_Number or expr in (sp.pi, sp.E)


class _Emitter:
    def __init__(self, lines, scratch, constant, out, name, exact=False):
        self.lines = lines
        self.exact = exact
        self.name = name
        self.scratch = scratch
        self.constant = constant
        self.taken = {out}         # buffers this expression writes: never handed out twice

    def leaf(self, expr):
        """The source text of a symbol or number, or None for a compound expression."""
        if isinstance(expr, sp.Symbol):
            return expr.name
        if expr.is_Number or expr in (sp.pi, sp.E):
            return self.constant(float(expr))
        return None

    def emit(self, ufunc, *args):
        """One call `ufunc(args..., out)`; the last argument is the output buffer."""
        *inputs, out = args
        # positional `out` is deprecated for maximum and minimum
        out = f"out={out}" if ufunc in KEYWORD_OUT else out
        self.lines.append(f"{self.name(ufunc)}({', '.join([*inputs, out])})")

    def operand(self, expr, avoid):
        """A leaf's text, or a scratch buffer holding the value of a compound expression."""
        text = self.leaf(expr)
        if text is None:
            for _ in range(len(self.taken) + 1):
                text = self.scratch(avoid)
                if text not in self.taken:
                    break
            else:   # the caller's scratch keeps handing out buffers already in use
                raise Unsupported(f"no free scratch buffer besides {sorted(self.taken)}")
            self.taken.add(text)
            self.into(expr, text)
        return text

    def into(self, expr, out):
        text = self.leaf(expr)
        if text is not None:
            self.emit("np.copyto", out, text)
        elif expr.is_Add:
            self.combine(expr.args, out, "np.add", "np.subtract", negated)
        elif expr.is_Mul:
            self.combine(expr.args, out, "np.multiply", "np.divide", _inverted)
        elif self.exact and getattr(BY_HEAD.get(type(expr)), "exact", None) is not None:
            self.into(BY_HEAD[type(expr)].exact(*expr.args), out)
        else:
            call = ufunc_call(expr)
            if call is None:
                raise Unsupported(type(expr).__name__)
            ufunc, args = call
            if len(args) == 1:
                self.unary(ufunc, args[0], out)
            else:
                self.binary(ufunc, *args, out)

    def unary(self, ufunc, arg, out):
        source = self.leaf(arg)
        if source is None:
            self.into(arg, out)
            source = out
        self.emit(ufunc, source, out)

    def binary(self, ufunc, a, b, out):
        left = self.leaf(a)
        right = self.leaf(b)
        if left is None:
            self.into(a, out)
            left = out
            if right is None:
                right = self.operand(b, out)
        elif right is None:
            self.into(b, out)
            right = out
        self.emit(ufunc, left, right, out)

    def combine(self, args, out, op, inverse_op, split):
        """A sum or product: compound terms first (into `out`, then scratch), leaves after.

        `split(term)` gives (True, base) for a term that enters inverted
        (-b in a sum, 1/b in a product), else (False, term)."""
        terms = [split(a) for a in args]
        # Numbers first, so that 1 - a is np.subtract(1.0, a) and 2*a is np.multiply(2.0, a).
        terms.sort(key=lambda t: (not _is_leaf(t[1]), not t[1].is_Number))
        compound = [t for t in terms if not _is_leaf(t[1])]
        leaves = [t for t in terms if _is_leaf(t[1])]
        if compound:
            inverted, first = compound[0]
            self.into(first, out)
            rest = compound[1:] + leaves
            if inverted:
                plain = next((t for t in leaves if not t[0]), None)
                if plain is not None:       # 1 - a**2: np.subtract(1.0, out, out)
                    self.emit(inverse_op, self.leaf(plain[1]), out, out)
                    rest.remove(plain)
                else:
                    unit = "np.negative" if op == "np.add" else "np.reciprocal"
                    self.emit(unit, out, out)
        else:
            (inv_a, a), (inv_b, b) = leaves[0], leaves[1]
            if inv_a and not inv_b:
                (inv_a, a), (inv_b, b) = (inv_b, b), (inv_a, a)
            if inv_a:         # -a - b or 1/(a*b): the first term enters inverted too
                unit = "np.negative" if op == "np.add" else "np.reciprocal"
                self.emit(unit, self.leaf(a), out)
                self.emit(inverse_op, out, self.leaf(b), out)
            else:
                self.emit(inverse_op if inv_b else op, self.leaf(a), self.leaf(b), out)
            rest = leaves[2:]
        for inverted, term in rest:
            if op == "np.multiply" and term == -1 and not inverted:
                self.emit("np.negative", out, out)
                continue
            source = self.operand(term, out)
            self.emit(inverse_op if inverted else op, out, source, out)


def negated(term):
    """(True, b) for a term -b of a sum, else (False, term)."""
    if term.is_Mul and term.args and term.args[0] == -1:
        rest = term.args[1:]
        return True, rest[0] if len(rest) == 1 else sp.Mul(*rest, evaluate=False)
    if term.is_Number and term < 0:
        return True, -term
    return False, term


def _inverted(term):
    """(True, b) for a factor 1/b of a product, else (False, term)."""
    if term.is_Pow and term.args[1] == -1:
        return True, term.args[0]
    return False, term
