"""Dead temporaries lend their memory: batch statements with one allocation fewer.

Every NumPy expression allocates its result.  When an elementwise statement
reads a temporary that nothing reads afterwards, the statement's outermost
operation can write into that temporary instead, the way one writes
`np.maximum(h, 0, out=h)` or `dh *= h > 0` by hand:

    relu1 = np.maximum(linear1, 0, out=linear1)
    dJ_dlinear1 = np.multiply(dJ_drelu1, (relu1 > 0), out=dJ_drelu1)

This is safe because NumPy evaluates all of a ufunc's arguments before it
writes `out`, and an elementwise ufunc may write over its own input.  A
temporary qualifies only if this code made it as a fresh array (an elementwise
value or a linear layer's product), nothing made a view or an alias of it, it
has the statement's shape, and no later statement, cached value or gradient
reads it.
"""

import re
from dataclasses import replace

import sympy as sp

from .inplace import ufunc_call
from .primitives import PRIMITIVES, sigmoid
from .printer import to_numpy

# Ops whose results never share memory with their operands.
FRESH_TENSOR_OPS = {"linear", "linear_nobias"}
# Ops that read an operand without keeping a view or an alias of it.
SAFE_READERS = FRESH_TENSOR_OPS | {"softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mse",
                                   "sum_squares"}


def rewrite(forward, backward, graph, adjoints, kept):
    """(forward, backward) Statement lists where dead temporaries are reused.

    `adjoints` maps node names to their adjoint variables; `kept` names values
    read after the statements (the cache, the gradients, the output)."""
    node_of = {v: k for k, v in adjoints.items()}
    shape = {n.name: tuple(n.shape) for n in graph}
    shape.update({v: shape[k] for k, v in adjoints.items() if k in shape})
    statements = list(forward) + list(backward)
    names = set(shape)
    reads = [_reads(s, names) for s in statements]
    owned, pinned = set(), set()
    for s, read in zip(statements, reads):
        op = _op(s)
        if s.code.strip() in names:                     # an alias: both names share memory
            pinned |= {s.code.strip(), s.target}
        elif op not in SAFE_READERS and not _elementwise(op):
            pinned |= read
        if "," not in s.target and (_elementwise(op) or op in FRESH_TENSOR_OPS) \
                and s.code.strip() not in names:
            owned.add(s.target)
    later_reads = [set()]                               # later_reads[j]: read by statements after the j-th last
    for read in reversed(reads[1:]):
        later_reads.append(later_reads[-1] | read)
    later_reads.reverse()
    result = []
    for k, s in enumerate(statements):
        later = later_reads[k]
        target_shape = shape.get(s.target if k < len(forward) else node_of.get(s.target))
        donors = [n for n in sorted(reads[k]) if n in owned and n not in pinned and n not in kept
                  and n not in later and n != s.target and shape.get(n) == target_shape]
        code = None
        if donors and target_shape and _elementwise(_op(s)) and not s.accumulate:
            expr = s.term if s.term is not None else _forward_expr(s)
            code = with_out(expr, donors[0]) if expr is not None else None
        result.append(replace(s, code=code, lines=()) if code else s)
    return result[:len(forward)], result[len(forward):]


def _op(s):
    return s.node.op if s.node is not None else None


def _elementwise(op):
    return op in PRIMITIVES and op not in ("identity", "select")


def _reads(s, names):
    return {w for w in re.findall(r"\b\w+\b", s.code) if w in names and w != s.target}


def _forward_expr(s):
    from .autodiff import forward_expr
    return forward_expr(s.node)


def with_out(expr, out):
    """`np.ufunc(args..., out=out)` computing expr, its outermost op writing into `out`."""
    call = _outermost(expr)
    if call is None:
        return None
    ufunc, args = call
    return f"{ufunc}({', '.join(args)}, out={out})"


def _outermost(expr):
    """(ufunc, printed arguments) of expr's outermost operation, or None."""
    p = to_numpy
    if expr.is_Add or expr.is_Mul:
        first, rest = expr.args[0], expr.func(*expr.args[1:], evaluate=False)
        if len(expr.args) > 2:
            return ("np.add" if expr.is_Add else "np.multiply"), [p(first), p(rest)]
        a, b = expr.args
        if expr.is_Add:
            if b.is_Mul and b.args[0] == -1:
                return "np.subtract", [p(a), p(sp.Mul(*b.args[1:], evaluate=False))]
            return "np.add", [p(a), p(b)]
        if b.is_Pow and b.args[1] == -1:
            return "np.divide", [p(a), p(b.args[0])]
        return "np.multiply", [p(a), p(b)]
    if type(expr) is sigmoid:      # 1/(1 + exp(-a)), as printed elsewhere
        return "np.divide", ["1.0", f"1 + np.exp(-{_atom(expr.args[0])})"]
    call = ufunc_call(expr)
    if call is None:
        return None
    ufunc, args = call
    return ufunc, [p(a) for a in args]


def _atom(expr):
    text = to_numpy(expr)
    return text if expr.is_Atom else f"({text})"
