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

from dataclasses import replace

import sympy as sp

from .inplace import ufunc_call
from ..core.primitives import PRIMITIVES
from ..core.printer import to_numpy

# Ops whose results (their first target) never share memory with their operands.
FRESH_TENSOR_OPS = {"linear", "linear_nobias", "linear_seq", "linear_seq_nobias", "maxpool2d"}
# Ops that read an operand without keeping a view or an alias of it.
SAFE_READERS = FRESH_TENSOR_OPS | {"softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mse",
                                   "sum_squares", "softmax_cross_entropy_seq"}


def later_reads(statements, kept=()):
    """later[k]: the names read after statement k (by a later statement, or kept)."""
    later, seen = [], set(kept)
    for s in reversed(statements):
        later.append(frozenset(seen))
        seen |= s.reads
    return later[::-1]


def plan(statements, graph, adjoints, kept, consume=None, fresh=(), shapes=None):
    """The statements with each one's memory decided: an elementwise statement
    writes into a dead temporary it reads (`out=`), an op with an `overwrite`
    form overwrites its dead operand 0, and where `consume` is given (the code
    of a flag), an adjoint may overwrite its node's aux values once nothing
    later reads them.  `adjoints` maps node names to adjoint variables; `kept`
    names what is read after the statements (the cache, gradients, output, a
    loop's saved values); `fresh` names arrays made before the statements that
    nothing else reads (a time step's own pre-activations); `shapes` gives the
    values' shapes where the graph's nodes have none.

    The policies of the three contexts: the batch code plans forward and
    backward together (here); a step of a loop over time plans its forward
    statements with the step's pre-activations as `fresh` and its saved values
    `kept` (here), and writes stacked adjoints into their columns
    (`write_into`); the one-example step gives every value its own buffer
    (rowstep.py)."""
    node_of = {v: k for k, v in adjoints.items()}
    shape = dict(shapes) if shapes is not None else \
        {n.name: tuple(n.shape) for n in graph if n.shape is not None}
    shape.update({v: shape[k] for k, v in adjoints.items() if k in shape})
    owned, pinned = set(fresh), set()
    for s in statements:
        op = _op(s)
        if s.alias:                                     # both names share memory
            pinned |= {s.alias, *s.targets}
        elif op not in SAFE_READERS and not _elementwise(op):
            pinned |= s.reads
        if not s.alias and (len(s.targets) == 1 and _elementwise(op) or op in FRESH_TENSOR_OPS):
            owned.add(s.targets[0])
    inputs = {n.name for n in graph if n.op == "input"} - set(fresh)
    after = later_reads(statements)
    result = []
    for s, later in zip(statements, after):
        dead = {n for n in s.reads if n in owned and n not in pinned and n not in kept
                and n not in later and n not in s.targets and n not in inputs}
        result.append(_decide(s, dead, later, shape, node_of, consume))
    return result


def write_into(statements, destinations):
    """(statements, names written): where one elementwise statement alone computes
    a name of `destinations` ({name: buffer code}), it writes its value straight
    into that buffer (the columns of a stacked adjoint), so no copy follows."""
    assigned = {}
    for s in statements:
        for t in s.targets:
            assigned[t] = assigned.get(t, 0) + 1
    result, written = [], set()
    for s in statements:
        dest = destinations.get(s.targets[0]) if len(s.targets) == 1 else None
        code = None
        if dest and assigned[s.targets[0]] == 1 and s.term is not None and _elementwise(_op(s)):
            code = with_out(s.term, dest)
        if code:
            written.add(s.targets[0])
            result.append(replace(s, code=code, buffer=dest))
        else:
            result.append(s)
    return result, written


def _decide(s, dead, later, shape, node_of, consume):
    if s.overwrite:
        first = s.node.operands[0]
        return replace(s, code=s.overwrite, lines=(), buffer=first) if first in dead else s
    if s.consume and consume is not None:
        aux = set(s.node.attrs.get("aux", {}).values())
        return replace(s, code=s.consume[0].format(consume=consume)) if not aux & later else s
    if not _elementwise(_op(s)) or s.accumulate or len(s.targets) != 1 or s.term is None:
        return s
    target = s.targets[0]
    target_shape = shape.get(node_of.get(target, target))
    if target_shape == ():           # a number: no buffer to write into
        return s
    # an elementwise operation's computed operands have its shape (parameters, which
    # broadcast, are inputs and never lend memory); where shapes are known they must agree
    donors = sorted(n for n in dead if shape.get(n) == target_shape)
    if not donors:
        return s
    code = with_out(s.term, donors[0])
    if not code:
        return s
    comment = s.comment or f"reuses {donors[0]}'s memory"
    return replace(s, code=code, lines=(), comment=comment, buffer=donors[0])


def _op(s):
    return s.node.op if s.node is not None else None


def _elementwise(op):
    return op in PRIMITIVES and op not in ("identity", "select")


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
    call = ufunc_call(expr)
    if call is None:
        return None
    ufunc, args = call
    return ufunc, [p(a) for a in args]


def between_calls(statements, returned):
    """sgd_step's statements with each workspace form taken (a result written into a
    buffer that the module keeps between calls, `_workspace`).  Sound because
    sgd_step returns only `returned`, a number made by a reduction, and lets every
    other value go when it returns: no array of one call is alive at the next.
    A statement that already writes into another buffer keeps its form."""
    return [replace(s, code=s.workspace, lines=(), comment=s.comment or
                    "into a buffer kept between calls: nothing reads it after sgd_step")
            if s.workspace and s.buffer is None and returned not in s.targets else s
            for s in statements]


def released(forward, backward, graph, kept):
    """The forward values that nothing after the forward pass reads (not the backward
    statements, nor `kept`: gradients, the output, what the updates read), in order:
    a step that runs both passes in one function can let them go before the backward
    pass allocates, so that its arrays reuse their memory instead of faulting in new
    pages (LeNet-5's sgd_step at batch 64: 7.2 -> 5.9 ms, measured).  Inputs and
    numbers are left alone."""
    read_later = set(kept).union(*(s.reads for s in backward))
    inputs = {n.name for n in graph if n.op == "input"}
    names = []
    for s in forward:
        for t in s.targets:
            node = graph.nodes.get(t)
            if (t not in read_later and t not in inputs and t not in names
                    and node is not None and node.shape):
                names.append(t)
    return names
