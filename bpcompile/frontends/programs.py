"""Programs (lists of assignments over SymPy expressions) -> computation graph.

Checks the program as a whole (duplicate, undefined and unused names, the
output and `wrt`), then lowers every SymPy expression into one graph node per
operation.  Identical operations on identical operands become one node, so
`x*z` written three times is computed once.  `sum(v)` and `a @ b`, the two
operations that are not elementwise, become `sum` and `dot` nodes of the tensor
table (core/tensor_ops.py).
"""

import sympy as sp

from ..errors import SpecError
from ..core.ir import Graph, Node
from ..core.naming import SymbolTable, PROGRAM_LOCALS
from ..core.parser import Assignment, check_identifier
from ..core.primitives import PRIMITIVES, SYMPY_HEADS, VECTOR_FUNCTIONS, dot, vector_sum

# SymPy head of a program's vector operation -> its tensor op (core/tensor_ops.py)
VECTOR_HEADS = {vector_sum: "sum", dot: "dot"}


def check_program(assignments, inputs=None, output=None, wrt=None):
    """Validate names; return (inputs, output, wrt) with defaults filled in.

    Errors carry positions relative to the program text (line, col).
    """
    if not assignments:
        raise SpecError("empty program: write at least one assignment `name = expression`")
    _check_names_are_free(assignments, inputs)
    assigned = {}
    free = []
    for a in assignments:
        for name in a.names:
            if name not in assigned and name not in free:
                if any(b.target == name for b in assignments):
                    line, col = a.name_cols[name]
                    raise SpecError(f"variable {name!r} is used before it is assigned", line=line, col=col)
                free.append(name)
        if a.target in assigned:
            raise SpecError(f"variable {a.target!r} is assigned twice (first on line "
                            f"{assigned[a.target].line}); every name is assigned once",
                            line=a.line, col=a.col)
        assigned[a.target] = a

    if inputs is None:
        inputs = list(free)
    else:
        inputs = list(inputs)
        seen = set()
        for name in inputs:
            _in_field(check_identifier, "inputs", name, "input")
            if name in seen:
                raise SpecError(f"input {name!r} is listed twice", field="inputs")
            seen.add(name)
            if name in assigned:
                a = assigned[name]
                raise SpecError(f"input {name!r} is assigned by the program", line=a.line, col=a.col)
        for a in assignments:
            for name in a.names:
                if name not in assigned and name not in seen:
                    line, col = a.name_cols[name]
                    raise SpecError(f"undefined name {name!r} (not an input and not assigned)",
                                    line=line, col=col)
        for name in inputs:
            if name not in free:
                raise SpecError(f"input {name!r} is not used by the program", field="inputs")

    if output is None:
        output = assignments[-1].target
    else:
        _in_field(check_identifier, "output", output, "output")
        if output not in assigned:
            raise SpecError(f"output {output!r} is not assigned by the program", field="output")

    used = {name for a in assignments for name in a.names}
    for a in assignments:
        if a.target != output and a.target not in used:
            raise SpecError(f"variable {a.target!r} is assigned but never used", line=a.line, col=a.col)
    _check_reaches_output(assignments, output)

    if not inputs:
        raise SpecError("the program is a constant (it has no inputs): there is nothing to differentiate",
                        field="inputs")
    if wrt is None:
        wrt = list(inputs)
    else:
        wrt = list(wrt)
        if not wrt:
            raise SpecError("wrt is empty: name at least one input to differentiate with respect to",
                            field="wrt")
        for name in wrt:
            _in_field(check_identifier, "wrt", name, "wrt entry")
            if name not in inputs:
                raise SpecError(f"wrt names {name!r}, which is not an input "
                                f"(inputs: {', '.join(inputs)})", field="wrt")
        if len(set(wrt)) != len(wrt):
            raise SpecError("wrt lists an input twice", field="wrt")
    return inputs, output, wrt


def program_names():
    """The symbol table of a program module: its variables are the user's names, as
    written, so a name the module needs for itself is refused rather than renamed."""
    return SymbolTable(reserved=PROGRAM_LOCALS, builtins_free=True)


def _check_names_are_free(assignments, inputs):
    names = program_names()
    for name in inputs or ():
        _in_field(check_identifier, "inputs", name, "input")
        if name in VECTOR_FUNCTIONS:
            raise SpecError(f"input {name!r} is a function ({name}(v): the sum of all elements "
                            "of v); choose another name", field="inputs")
        if names.taken(name):
            raise SpecError(f"input {name!r} is reserved for the generated code", field="inputs")
    for a in assignments:
        if names.taken(a.target):
            raise SpecError(f"{a.target!r} is reserved for the generated code; choose another name",
                            line=a.line, col=a.col)
        for name in a.names:
            if names.taken(name):
                line, col = a.name_cols[name]
                raise SpecError(f"{name!r} is reserved for the generated code; choose another name",
                                line=line, col=col)


def _in_field(check, field, *args):
    try:
        return check(*args)
    except SpecError as err:
        err.field = field
        raise


def _check_reaches_output(assignments, output):
    by_target = {a.target: a for a in assignments}
    needed, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in by_target and name not in needed:
            needed.add(name)
            stack.extend(by_target[name].names)
    for a in assignments:
        if a.target not in needed:
            raise SpecError(f"variable {a.target!r} does not contribute to the output {output!r}",
                            line=a.line, col=a.col)


def build_graph(assignments, inputs, output, wrt, name="model"):
    """Lower checked assignments into a Graph of primitive nodes."""
    graph = Graph(name)
    namer = program_names()
    for user in list(inputs) + [a.target for a in assignments]:
        namer.bind(user)
    graph.names = namer
    for name_ in inputs:
        graph.add(Node(name_, "input", user=True))
    lowering = _Lowering(graph, namer)
    for a in assignments:
        lowering.assignment(a)
    graph.output = output
    graph.wrt = list(wrt)
    return graph


def program_from_sympy(expr, target):
    """A SymPy expression as a one-line program."""
    if not isinstance(expr, sp.Expr):
        raise SpecError(f"expected a SymPy expression, got {type(expr).__name__}")
    names = sorted(s.name for s in expr.free_symbols)
    for name in names:
        check_identifier(name)
    renamed = expr.xreplace({s: sp.Symbol(s.name, real=True) for s in expr.free_symbols})
    return [Assignment(target, renamed, 1, 1, names, {n: (1, 1) for n in names})]


class _Lowering:
    """SymPy expression -> nodes, one per operation, shared when identical."""

    def __init__(self, graph, namer):
        self.graph = graph
        self.namer = namer
        self.known = {}          # (op, operands) -> node name

    def assignment(self, a):
        self.target, self.line, self.counter = a.target, a.line, 0
        try:
            op, operands = self._decompose(a.expr)
        except SpecError as err:
            raise err.located(line=a.line, col=a.col) from None
        node = self.graph.add(Node(a.target, op, operands, user=True, line=a.line))
        self.known.setdefault((op, operands), node.name)

    def _operand(self, expr):
        """A constant, or the name of the node computing `expr`."""
        if expr.is_Number or expr.is_NumberSymbol:      # 2, 0.5, and pi, E from SymPy
            return _number(expr)
        if expr.is_Symbol:
            return expr.name
        return self._node(*self._decompose(expr))

    def _node(self, op, operands):
        key = (op, operands)
        if key not in self.known:
            self.counter += 1
            name = self.namer.intermediate(self.target, self.counter)
            self.graph.add(Node(name, op, operands, line=self.line))
            self.known[key] = name
        return self.known[key]

    def _decompose(self, expr):
        """(op, operands) of the top operation of `expr`."""
        if expr.is_Number or expr.is_NumberSymbol or expr.is_Symbol:
            return "identity", (self._operand(expr),)
        if isinstance(expr, sp.Add):
            return self._sum(list(expr.args))
        if isinstance(expr, sp.Mul):
            return self._product(list(expr.args))
        if isinstance(expr, sp.Pow):
            base, exponent = expr.args
            if exponent == sp.Rational(1, 2):
                return "sqrt", (self._operand(base),)
            if exponent == -1:
                return "div", (1, self._operand(base))
            return "pow", (self._operand(base), self._operand(exponent))
        if type(expr) in VECTOR_HEADS:
            return VECTOR_HEADS[type(expr)], tuple(self._operand(arg) for arg in expr.args)
        head = SYMPY_HEADS.get(type(expr))
        if head in ("max", "min") and len(expr.args) > 2:
            # SymPy flattens max(max(a, b), c) into Max(a, b, c): binary nodes again
            first, *rest = expr.args
            return self._chain(self._operand(first), [(head, arg) for arg in rest])
        if head is not None and len(expr.args) == PRIMITIVES[head].arity:
            return head, tuple(self._operand(arg) for arg in expr.args)
        raise SpecError(f"unsupported construct {type(expr).__name__} in expression")

    def _sum(self, terms):
        positive = [t for t in terms if not _is_negated(t)]
        negative = [_negate(t) for t in terms if _is_negated(t)]
        if not positive:
            head = ("neg", (self._operand(negative[0]),))
            if len(negative) == 1:
                return head
            return self._chain(self._node(*head), [("sub", t) for t in negative[1:]])
        if len(positive) == 1 and not negative:
            return self._decompose(positive[0])
        steps = [("add", t) for t in positive[1:]] + [("sub", t) for t in negative]
        return self._chain(self._operand(positive[0]), steps)

    def _product(self, factors):
        if len(factors) == 2 and factors[0] == -1:
            return "neg", (self._operand(factors[1]),)
        sign = 1
        numerator, denominator = [], []
        for f in factors:
            if f == -1:
                sign = -sign
            elif isinstance(f, sp.Pow) and f.args[1].is_Number and f.args[1] < 0:
                base, exponent = f.args
                denominator.append(base if exponent == -1 else sp.Pow(base, -exponent, evaluate=False))
            else:
                numerator.append(f)
        if sign < 0:
            if numerator and numerator[0].is_Number:
                numerator[0] = -numerator[0]
            elif numerator and not denominator and len(numerator) == 1:
                return "neg", (self._operand(numerator[0]),)
            else:
                numerator.insert(0, sp.Integer(-1))
        if not numerator:
            numerator = [sp.Integer(1)]
        if len(numerator) == 1 and not denominator:
            return self._decompose(numerator[0])
        steps = [("mul", f) for f in numerator[1:]] + [("div", f) for f in denominator]
        return self._chain(self._operand(numerator[0]), steps)

    def _chain(self, acc, steps):
        """Apply binary steps left to right; the last one is returned, not added."""
        for op, term in steps[:-1]:
            acc = self._node(op, (acc, self._operand(term)))
        op, term = steps[-1]
        return op, (acc, self._operand(term))


def _is_negated(term):
    if term.is_Number:
        return term < 0
    return isinstance(term, sp.Mul) and term.args[0].is_Number and term.args[0] < 0


def _negate(term):
    if term.is_Number:
        return -term
    coefficient, rest = term.args[0], term.args[1:]
    if coefficient == -1:
        return rest[0] if len(rest) == 1 else sp.Mul(*rest, evaluate=False)
    return sp.Mul(-coefficient, *rest, evaluate=False)


def _number(expr):
    if expr.is_Integer:
        return int(expr)
    value = float(expr)
    return int(value) if value.is_integer() and abs(value) < 2**53 and not expr.is_Float else value
