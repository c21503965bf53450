"""The safe parser: expression and program text -> SymPy, never evaluated.

Text is parsed by Python's `ast` module and the tree is checked against a
whitelist (numbers, names, + - * / **, unary minus, parentheses, calls of
functions from the primitive table; in programs also `sum(v)` and `a @ b`)
before SymPy objects are built from it without evaluation.  Constant subexpressions are folded here, with guards so
that `9**9**9**9` and `pow(10, 10**10)` are errors rather than hangs: a power
is computed only once its size is known to be within MAX_CONSTANT.
"""

import ast
import io
import keyword
import math
import re
import tokenize
from dataclasses import dataclass, field

import sympy as sp

from ..errors import SpecError
from ..limits import MAX_CONSTANT, MAX_DEPTH, MAX_NODES, MAX_TEXT
from .primitives import CALLABLE, VECTOR_FUNCTIONS, vector_dot

IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

# Names that programs read as constants unless the user lists them as inputs.
NAMED_CONSTANTS = {"e": math.e, "pi": math.pi}

_BINARY = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}


@dataclass
class Assignment:
    """`target = expr` on line `line` (1-based, within the program text)."""

    target: str
    expr: sp.Expr
    line: int
    col: int
    names: list = field(default_factory=list)   # names read, in order of first use
    name_cols: dict = field(default_factory=dict)


def check_identifier(name, what="name"):
    """Raise SpecError unless `name` is an identifier (whether the generated module
    can use it as written is the symbol table's concern: naming.py)."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise SpecError(f"{what} {name!r} is not an identifier (letters, digits, _; starting with a letter)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise SpecError(f"{what} {name!r} is a Python keyword")
    return name


def symbol(name):
    return sp.Symbol(name, real=True)


def parse_expression(text, matmul=None, constants=None, vectors=False):
    """One expression -> (SymPy expression, names in order of first use, name -> col).

    `matmul(W, v)` builds `W @ v` (a cell's product); without it `@` is an error.
    `constants` maps names to the numbers they stand for (NAMED_CONSTANTS); they are
    not inputs.  `vectors=True` (programs) accepts the two operations that are not
    elementwise: `sum(v)`, the sum of all elements, and `a @ b`, the dot product over
    the last axis; `sum` is then a function name, never a variable.
    """
    tree = _parse(text, "eval")
    builder = _Builder(matmul, constants, vectors)
    return builder.build(tree.body), builder.names, builder.name_cols


def parse_program(text, matmul=None, constants=None, vectors=False):
    """Program text (one `name = expression` per line) -> list of Assignment.
    `matmul`, `constants` and `vectors` as for parse_expression."""
    constants = constants or {}
    tree = _parse(text, "exec")
    assignments, lines_seen = [], set()
    for stmt in tree.body:
        where = dict(line=stmt.lineno, col=stmt.col_offset + 1)
        if stmt.lineno in lines_seen:
            raise SpecError("one assignment per line", **where)
        lines_seen.add(stmt.lineno)
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            raise SpecError("expected an assignment `name = expression`", **where)
        target = stmt.targets[0]
        if not isinstance(target, ast.Name):
            raise SpecError("the left side of an assignment must be a name", **where)
        try:
            check_identifier(target.id, "variable")
        except SpecError as err:
            raise err.located(line=stmt.lineno, col=stmt.col_offset + 1) from None
        if target.id in constants:
            raise SpecError(f"{target.id!r} is the constant {constants[target.id]!r}; choose "
                            "another name for this variable", **where)
        if vectors and target.id in VECTOR_FUNCTIONS:
            raise SpecError(_function_name_message(target.id), **where)
        builder = _Builder(matmul, constants, vectors)
        expr = builder.build(stmt.value)
        assignments.append(Assignment(target.id, expr, stmt.lineno, stmt.col_offset + 1,
                                      builder.names, builder.name_cols))
    return assignments


def _parse(text, mode):
    if not isinstance(text, str):
        raise SpecError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise SpecError(f"text too long ({len(text)} characters; at most {MAX_TEXT})")
    if not text.isascii():
        col = next(i for i, ch in enumerate(text) if not ch.isascii())
        line = text.count("\n", 0, col) + 1
        raise SpecError("only ASCII characters are allowed in expressions",
                        line=line, col=col - text.rfind("\n", 0, col))
    # an expression may start with blanks and empty lines, which `eval` mode refuses:
    # parse it without them and put every position back where it is in `text`
    source = text.strip() if mode == "eval" else text
    shift = _leading_shift(text) if mode == "eval" else (0, 0)
    if mode == "eval" and not source:
        raise SpecError("empty expression")
    try:
        tree = ast.parse(source, mode=mode)
    except SyntaxError as err:
        message = err.msg or "invalid syntax"
        if "nested" in message:
            message = f"expression nested too deeply ({message})"
        line, col, at_end = _syntax_error_position(err, source)
        if at_end:
            message += ": the text ends too early"
        line, col = _shifted(line, col, shift)
        raise SpecError(f"syntax error: {message}", line=line, col=col) from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError("expression too large or nested too deeply to compile") from None
    _check_depth(tree)
    if shift != (0, 0):
        _shift_positions(tree, shift)
    return tree


def _leading_shift(text):
    """(lines, columns) that stripping `text` removes before its first character."""
    removed = text[:len(text) - len(text.lstrip())]
    return removed.count("\n"), len(removed) - (removed.rfind("\n") + 1)


def _shifted(line, col, shift):
    lines, cols = shift
    return line + lines, col + cols if line == 1 else col


def _shift_positions(tree, shift):
    for node in ast.walk(tree):
        if hasattr(node, "lineno"):
            node.lineno, node.col_offset = _shifted(node.lineno, node.col_offset, shift)


def _syntax_error_position(err, source):
    """(line, col, at_end) of a SyntaxError: Python's own position, or, where it gives
    none (offset 0, as for `x**2 +` in eval mode), just past the last token."""
    line, col = err.lineno or 1, err.offset or 0
    if col >= 1 and line <= source.count("\n") + 1:
        return line, col, False
    return (*_end_of_tokens(source), True)


def _end_of_tokens(source):
    """(line, col) just past the last token of `source`, from Python's tokenizer."""
    end = (1, 0)
    skipped = (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.INDENT,
               tokenize.DEDENT, tokenize.ENDMARKER)
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type not in skipped:
                end = token.end
    except (tokenize.TokenError, SyntaxError):      # an unclosed bracket: keep what was read
        pass
    return end[0], end[1] + 1


def _check_depth(tree):
    """Reject deeply nested or very large expressions before anything recurses over them."""
    stack = [(tree, 0, (1, 1))]
    count = 0
    while stack:
        node, depth, where = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise SpecError(f"expression or program too large (more than {MAX_NODES} operations "
                            "and operands)",
                            line=where[0], col=where[1])
        if hasattr(node, "lineno"):       # operator nodes have no position: keep the parent's
            where = (node.lineno, node.col_offset + 1)
        if depth > MAX_DEPTH + 2:
            raise SpecError(f"expression nested too deeply (more than {MAX_DEPTH} levels); "
                            "split it into several assignments", line=where[0], col=where[1])
        stack.extend((child, depth + 1, where) for child in ast.iter_child_nodes(node))


class _Builder:
    """Walks one checked expression tree and builds the SymPy expression."""

    def __init__(self, matmul=None, constants=None, vectors=False):
        self.names = []
        self.name_cols = {}
        self.matmul = matmul
        self.constants = constants or {}
        self.vectors = vectors

    def build(self, node):
        value = self._visit(node)
        return sp.Integer(value) if isinstance(value, int) else (
            sp.Float(value) if isinstance(value, float) else value)

    def _error(self, node, message):
        return SpecError(message, line=getattr(node, "lineno", 1), col=getattr(node, "col_offset", 0) + 1)

    def _visit(self, node):
        """Python int/float for constants (folded), SymPy objects otherwise."""
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._error(node, f"unsupported literal {value!r}: only numbers are allowed")
            return _checked_constant(value, node, self)
        if isinstance(node, ast.Name):
            try:
                check_identifier(node.id)
            except SpecError as err:
                raise self._error(node, err.message) from None
            if node.id in self.constants:
                return self.constants[node.id]
            if self.vectors and node.id in VECTOR_FUNCTIONS:
                raise self._error(node, _function_name_message(node.id))
            if node.id not in self.name_cols:
                self.names.append(node.id)
                self.name_cols[node.id] = (node.lineno, node.col_offset + 1)
            return symbol(node.id)
        if isinstance(node, ast.UnaryOp):
            operand = self._visit(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(node.op, ast.USub):
                if _is_number(operand):
                    return -operand
                return sp.Mul(-1, operand, evaluate=False)
            raise self._error(node, f"unsupported operator {type(node.op).__name__}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult) and self.matmul:
            if not isinstance(node.left, ast.Name):
                raise self._error(node, "the left side of @ must be a parameter name")
            left, right = self._visit(node.left), self._visit(node.right)
            if _is_number(right):
                raise self._error(node, "the right side of @ must be a vector, not a number")
            return self.matmul(left, right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult) and self.vectors:
            return self._dot(node)
        if isinstance(node, ast.BinOp):
            op = _BINARY.get(type(node.op))
            if op is None:
                raise self._error(node, f"unsupported operator {_op_text(node.op)}: "
                                  "use + - * / ** and function calls")
            left, right = self._visit(node.left), self._visit(node.right)
            if _is_number(left) and _is_number(right):
                return _fold(op, left, right, node, self)
            return _combine(op, _sym(left), _sym(right))
        if isinstance(node, ast.Call):
            return self._call(node)
        raise self._error(node, f"unsupported syntax: {type(node).__name__}")

    def _dot(self, node):
        """`a @ b`: the dot product over the last axis (two numbers: their product)."""
        left, right = self._visit(node.left), self._visit(node.right)
        if _is_number(left) and _is_number(right):
            return _fold("mul", left, right, node, self)
        return vector_dot(_sym(left), _sym(right))

    def _vector_call(self, node, name, args):
        """sum(v); the sum of a number is that number."""
        arity, build = VECTOR_FUNCTIONS[name]
        if len(args) != arity:
            raise self._error(node, f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, "
                              f"got {len(args)}")
        if all(_is_number(a) for a in args):
            return args[0]
        return build(*(_sym(a) for a in args))

    def _call(self, node):
        if not isinstance(node.func, ast.Name):
            raise self._error(node, "only calls of known functions by name are allowed")
        name = node.func.id
        if node.keywords:
            raise self._error(node, f"{name}() takes no keyword arguments")
        args = [self._visit(a) for a in node.args]
        if self.vectors and name in VECTOR_FUNCTIONS:
            return self._vector_call(node, name, args)
        if name == "log" and len(args) == 2:
            # log(x, base) = log(x) / log(base)
            value, base = args
            if _is_number(value) and _is_number(base):
                return _fold("div", _fold_call("log", [value], node, self),
                             _fold_call("log", [base], node, self), node, self)
            return _combine("div", CALLABLE["log"].build(_sym(value)),
                            _sym(_fold_call("log", [base], node, self) if _is_number(base)
                                 else CALLABLE["log"].build(_sym(base))))
        prim = CALLABLE.get(name)
        if prim is None:
            extra = sorted(VECTOR_FUNCTIONS) if self.vectors else []
            known = ", ".join(sorted(CALLABLE) + extra + ["log(x, base)"])
            raise self._error(node, f"unknown function {name!r}; known functions: {known}")
        if len(args) != prim.arity:
            raise self._error(node, f"{name}() takes {prim.arity} argument"
                              f"{'s' if prim.arity > 1 else ''}, got {len(args)}")
        if all(_is_number(a) for a in args):
            if name == "pow":
                return _fold("pow", args[0], args[1], node, self)
            return _fold_call(name, args, node, self)
        return prim.build(*(_sym(a) for a in args))


def _function_name_message(name):
    return (f"{name!r} is a function ({name}(v): the sum of all elements of v); choose another "
            "name for this variable")


def _is_number(value):
    return isinstance(value, (int, float))


def _sym(value):
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    if isinstance(value, int):
        return sp.Integer(value)
    if isinstance(value, float):
        return sp.Float(value)
    return value


def _combine(op, a, b):
    from .primitives import PRIMITIVES
    return PRIMITIVES[op].build(a, b)


def _op_text(op):
    return {ast.FloorDiv: "'//'", ast.Mod: "'%'", ast.MatMult: "'@'", ast.BitAnd: "'&'",
            ast.BitOr: "'|'", ast.BitXor: "'^'", ast.LShift: "'<<'", ast.RShift: "'>>'"}.get(
                type(op), type(op).__name__)


def _checked_constant(value, node, builder):
    if isinstance(value, int) and value.bit_length() > 64:
        if abs(value) > MAX_CONSTANT:
            raise builder._error(node, f"numeric constant too large (the limit is {MAX_CONSTANT:g})")
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value) or abs(value) > MAX_CONSTANT:
        raise builder._error(node, f"numeric constant too large (the limit is {MAX_CONSTANT:g})")
    return value


def _fold(op, a, b, node, builder):
    """Fold `a op b` for numbers, refusing results that blow up."""
    try:
        if op == "add":
            result = a + b
        elif op == "sub":
            result = a - b
        elif op == "mul":
            result = a * b
        elif op == "div":
            result = a / b
            if isinstance(a, int) and isinstance(b, int) and result == int(result) and a % b == 0:
                result = a // b
        else:
            result = _power(a, b, node, builder)
    except ZeroDivisionError:
        raise builder._error(node, "division by zero in a constant expression") from None
    except OverflowError:
        raise builder._error(node, f"constant expression too large (the limit is "
                             f"{MAX_CONSTANT:g})") from None
    return _checked_constant(result, node, builder)


def _power(a, b, node, builder):
    """a**b, computed only when log10|a**b| is known to be at most log10(MAX_CONSTANT):
    an exact integer when both are integers and b >= 0, else a float (which may
    underflow to 0.0, as 2.0**-2000 does)."""
    if a == 0 and b < 0:
        raise ZeroDivisionError
    text = f"({a!r})**{b!r}" if a < 0 else f"{a!r}**{b!r}"
    if a < 0 and not float(b).is_integer():
        raise builder._error(node, f"constant {text} is not a real number")
    if a != 0 and b * math.log10(abs(a)) > math.log10(MAX_CONSTANT):
        raise builder._error(node, f"constant {text} is too large to compute (the limit "
                             f"is {MAX_CONSTANT:g})")
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        return a ** b
    return float(a) ** float(b)


# Functions whose SymPy class has no numeric evaluation: their value in float64.
_FLOAT_VALUES = {
    "relu": lambda a: max(a, 0.0),
    "softplus": lambda a: max(a, 0.0) + math.log1p(math.exp(-abs(a))),
    "sigmoid": lambda a: (1.0 / (1.0 + math.exp(-a)) if a >= 0
                          else math.exp(a) / (1.0 + math.exp(a))),
}


def _fold_call(name, args, node, builder):
    """Fold a function of constants through SymPy's arbitrary-precision evaluation
    (or in float64, for functions SymPy cannot evaluate)."""
    prim = CALLABLE["log" if name == "log" else name]
    try:
        value = prim.build(*(_sym(a) for a in args)).doit().evalf(20)
        if not isinstance(value, sp.Number) and name in _FLOAT_VALUES:
            return _checked_constant(_FLOAT_VALUES[name](*(float(a) for a in args)), node, builder)
        if not value.is_real:
            raise ValueError
        result = float(value)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError):
        raise builder._error(node, f"{name}() of these constants is not a finite real number") from None
    return _checked_constant(result, node, builder)
