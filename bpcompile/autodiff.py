"""The scheduler: forward statements in topological order, adjoint statements
in reverse topological order (the lecture's backward pass, "Version B").

It knows no specific operation: for each node it asks the primitive table for
the partial derivatives, multiplies them by the node's adjoint, and adds the
products into the operands' adjoints (the first contribution assigns, later
ones add, out of place so that no adjoint aliases another).  Only adjoints on
a path from a `wrt` input to the output are emitted, and only forward values
that the adjoint formulas read are cached.  Partials that equal a forward
value (cos(t) when the forward pass computed cos(t)) read the stored value.
"""

from dataclasses import dataclass, field

import sympy as sp

from .naming import Namer
from .parser import symbol
from .primitives import PRIMITIVES
from .printer import to_numpy


@dataclass
class Statement:
    target: str
    code: str
    comment: str = ""


@dataclass
class Schedule:
    forward: list = field(default_factory=list)    # Statements, topological order
    backward: list = field(default_factory=list)   # Statements, reverse topological order
    cache: list = field(default_factory=list)      # forward names backward reads
    grads: list = field(default_factory=list)      # (input, adjoint name), in WRT order
    output: str = ""
    seed: str = ""


def _operand_expr(operand):
    if isinstance(operand, str):
        return symbol(operand)
    return sp.Integer(operand) if isinstance(operand, int) else sp.Float(operand)


def forward_expr(node):
    """The node's operation as an unevaluated SymPy expression of its operands."""
    return PRIMITIVES[node.op].build(*map(_operand_expr, node.operands))


def schedule(graph):
    """The forward and backward statements of `graph`."""
    result = Schedule(output=graph.output)
    needed = graph.ancestors(graph.output)
    computed = [n for n in graph if n.op != "input" and n.name in needed]
    stored = {}                                   # evaluated forward expression -> its name
    for node in computed:
        expr = forward_expr(node)
        result.forward.append(Statement(node.name, to_numpy(expr)))
        if node.op != "identity":
            stored.setdefault(expr.doit(), symbol(node.name))

    active = needed & graph.descendants(graph.wrt)
    namer = Namer(graph.nodes)
    adjoint = {}                                  # node name -> adjoint variable name
    out = graph.output
    result.seed = adjoint[out] = namer.adjoint(out, out)
    forward_text = {s.target: s.code for s in result.forward}
    reads = set()
    for node in reversed(computed):
        if node.name not in active:
            continue
        g = symbol(adjoint[node.name])
        out_sym = symbol(node.name)
        args = [_operand_expr(o) for o in node.operands]
        partials = PRIMITIVES[node.op].local_partials(out_sym, args)
        # Sum the partials of an operand that appears more than once (x*x).
        per_operand = {}
        for operand, partial in zip(node.operands, partials):
            if isinstance(operand, str) and operand in active:
                per_operand[operand] = per_operand.get(operand, 0) + partial
        for operand, partial in per_operand.items():
            term = g * sp.sympify(partial).xreplace(stored)
            reads.update(s.name for s in term.free_symbols)
            contribution = to_numpy(term)
            step = (f"d{out}/d{operand} += d{out}/d{node.name} * d{node.name}/d{operand}"
                    f"   ({node.name} = {forward_text[node.name]})")
            if operand in adjoint:
                name = adjoint[operand]
                result.backward.append(Statement(name, f"{name} + {_parenthesize(contribution)}", step))
            else:
                name = adjoint[operand] = namer.adjoint(out, operand)
                result.backward.append(Statement(name, contribution, step))

    result.grads = [(name, adjoint[name]) for name in graph.wrt]
    result.cache = [n.name for n in graph if n.name in reads and n.name in needed]
    return result


def _parenthesize(code):
    return f"({code})" if any(ch in code for ch in "+-") else code
