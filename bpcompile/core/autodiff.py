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

from .naming import SymbolTable
from .parser import symbol
from .primitives import PRIMITIVES
from .printer import to_numpy
from .tensor_ops import TENSOR_OPS


@dataclass(frozen=True)
class Statement:
    """One assignment of the schedule, as data: what it assigns, what it reads, the
    rule that made it, and the forms it can take.  Passes (memory planning, the
    one-example renderer, the scan) read these fields, never the code text."""

    targets: tuple              # names assigned, in order; None where a result is unused
    code: str                   # the right-hand side in its plain form
    reads: frozenset = frozenset()   # the names the plain form reads
    comment: str = ""
    node: object = None         # the graph node it belongs to
    operand: object = None      # backward: the operand whose adjoint it adds to
    term: object = None         # the SymPy expression it computes (elementwise statements)
    accumulate: bool = False    # backward: adds to an adjoint that already exists
    alias: str = None           # the right-hand side is this name itself (shared memory)
    lines: tuple = ()           # forward: the statements to print when `target = code` is not
                                # the fastest form (code stays the formula, for comments)
    overwrite: str = ""         # forward: a form that may overwrite operand 0's buffer
    workspace: str = ""         # forward: a form whose result lives in a buffer that
                                # sgd_step keeps between calls (planner.between_calls)
    split: tuple = ()           # forward: the numba target's lines, whose product
                                # numba's threads split (render.split_products)
    consume: tuple = ()         # backward: (form that may overwrite the node's aux values,
                                # with `{consume}` for the flag saying whether it may)
    buffer: str = None          # the memory planner's decision: the existing buffer the
                                # statement writes into (None: a fresh array)

    @property
    def target(self):
        """The assigned names as printed: `J, p`."""
        return ", ".join(t or "_" for t in self.targets)

    def text(self, code=None):
        return f"{self.target} = {self.code if code is None else code}"


@dataclass
class Schedule:
    forward: list = field(default_factory=list)    # Statements, topological order
    backward: list = field(default_factory=list)   # Statements, reverse topological order
    cache: list = field(default_factory=list)      # forward names backward reads
    grads: list = field(default_factory=list)      # (input, adjoint name), in WRT order
    output: str = ""
    seed: str = ""
    adjoints: dict = field(default_factory=dict)   # node name -> its adjoint variable


def _operand_expr(operand):
    if isinstance(operand, str):
        return symbol(operand)
    return sp.Integer(operand) if isinstance(operand, int) else sp.Float(operand)


def forward_expr(node):
    """The node's operation as an unevaluated SymPy expression of its operands."""
    return PRIMITIVES[node.op].build(*map(_operand_expr, node.operands))


def _names(expr):
    return frozenset(s.name for s in expr.free_symbols)


class _Elementwise:
    """Rules of the elementwise table: SymPy partials times the adjoint."""

    def __init__(self, stored):
        self.stored = stored       # evaluated forward expression -> stored symbol

    def forward(self, node):
        expr = forward_expr(node)
        value = expr.doit()
        # a partial that equals a stored value reads it; a number is not replaced by a
        # node that happens to equal it (x - x is 0, and so is the 0 of an indicator)
        if node.op != "identity" and not value.is_Number:
            self.stored.setdefault(value, symbol(node.name))
        alias = node.operands[0] if node.op == "identity" and isinstance(node.operands[0], str) else None
        return Statement((node.name,), to_numpy(expr), frozenset(node.node_operands()),
                         node=node, term=expr, alias=alias)

    def adjoints(self, node, g, active):
        """[(operand, code, names read, term, alias)] for the active operands of `node`."""
        args = [_operand_expr(o) for o in node.operands]
        partials = PRIMITIVES[node.op].local_partials(symbol(node.name), args)
        per_operand = {}
        # Sum the partials of an operand that appears more than once (x*x).
        for operand, partial in zip(node.operands, partials):
            if isinstance(operand, str) and operand in active:
                per_operand[operand] = per_operand.get(operand, 0) + partial
        result = []
        for operand, partial in per_operand.items():
            # partials come from the rule table: SymPy expressions or small integers
            partial = sp.Integer(partial) if isinstance(partial, int) else partial
            term = symbol(g) * partial.xreplace(self.stored)
            result.append((operand, to_numpy(term), _names(term), term,
                           term.name if term.is_Symbol else None))
        return result


class _Tensor:
    """Rules of the tensor table: formula templates."""

    def forward(self, node):
        op = tensor_op(node)
        aux = tuple(node.attrs.get("aux", {}).values())
        return Statement((node.name, *aux), fill(op.forward, node, None),
                         frozenset(node.node_operands()), node=node,
                         lines=tuple(fill(line, node, None) for line in op.forward_lines),
                         split=tuple(fill(line, node, None) for line in op.forward_split),
                         overwrite=fill(op.forward_reuse, node, None) if op.forward_reuse else "",
                         workspace=fill(op.forward_workspace, node, None, {"key": f'"{node.name}"'})
                         if op.forward_workspace else "")

    def adjoints(self, node, g, active):
        """[(operand, code, names read, None, alias, consuming form)] for the active operands;
        a joint rule gives one entry whose operand is a tuple (None where not wanted)."""
        op = tensor_op(node)
        if op.joint:
            return [self._joint(op, node, g, active)]
        found = {}
        for i, (operand, formula) in enumerate(zip(node.operands, op.vjps)):
            if formula is None or not isinstance(operand, str) or operand not in active:
                continue
            code = fill(formula, node, g)
            reads = frozenset(_field_name(f, node, g) for f in op.fields(formula))
            consuming = op.consuming_vjps[i] if op.consuming_vjps else None
            consume = ()
            if consuming:
                consume = (fill(consuming, node, g, {"consume": "{consume}"}),)
            if operand in found:   # the same operand twice: add the contributions
                code0, reads0, _ = found[operand]
                found[operand] = (f"{code0} + {code}", reads0 | reads, ())
            else:
                found[operand] = (code, reads, consume)
        return [(operand, code, reads, None, code if formula_is_name(code, reads) else None, consume)
                for operand, (code, reads, consume) in found.items()]

    def _joint(self, op, node, g, active):
        """One statement computes every operand's adjoint."""
        wanted = tuple(isinstance(o, str) and o in active for o in node.operands)
        flags = {f"need{i}": str(w) for i, w in enumerate(wanted)}
        code = fill(op.joint, node, g, flags)
        reads = frozenset(_field_name(f, node, g) for f in op.fields(op.joint) if not f.startswith("need"))
        return (tuple(o if w else None for o, w in zip(node.operands, wanted)), code, reads, None, None, ())


def formula_is_name(code, reads):
    """Whether a filled formula is just one of the names it reads (`{g}`)."""
    return code in reads


def tensor_op(node):
    """The node's rule: its own (a compiled recurrent layer) or the table's."""
    return node.attrs.get("rule") or TENSOR_OPS[node.op]


def is_tensor(node):
    return node.op in TENSOR_OPS or "rule" in node.attrs


def _field_name(field, node, g):
    if field.isdigit():
        return str(node.operands[int(field)])
    return {"out": node.name, "g": g}.get(field, node.attrs.get("aux", {}).get(field, field))


def fill(formula, node, g=None, extra=None):
    """A tensor op's formula with the node's operands, value, aux values and `{g}` filled in."""
    values = {"out": node.name, "g": g, **node.attrs.get("aux", {}), **node.attrs.get("fmt", {}),
              **(extra or {})}
    return formula.format(*node.operands, **values)


def targets(node):
    """The names a node's forward statement assigns, as printed: its own, then its aux values."""
    return ", ".join([node.name, *node.attrs.get("aux", {}).values()])


def schedule(graph, seeds=None, names=None):
    """The forward and backward statements of `graph`.

    `seeds` maps output names to variables holding their incoming adjoints
    (for a graph with several outputs, such as a recurrent cell's new states);
    they must have been minted from `names`.  By default the one output gets
    the adjoint `d<out>_d<out>`.  `names` is the module's SymbolTable, which
    mints the adjoints' names; without it, one is made from the graph's names.
    """
    result = Schedule(output=graph.output)
    outputs = list(seeds) if seeds else [graph.output]
    needed = set().union(*(graph.ancestors(o) for o in outputs))
    computed = [n for n in graph if n.op != "input" and n.name in needed]
    elementwise, tensor = _Elementwise({}), _Tensor()
    rules = {n.name: (tensor if is_tensor(n) else elementwise) for n in computed}
    for node in computed:
        result.forward.append(rules[node.name].forward(node))

    active = needed & graph.descendants(graph.wrt)
    namer = names if names is not None else getattr(graph, "names", None)
    if namer is None:
        namer = SymbolTable.holding(list(graph.nodes)
                                    + [a for n in graph for a in n.attrs.get("aux", {}).values()])
    adjoint = {}                                  # node name -> adjoint variable name
    out = graph.output
    if seeds:
        for name, variable in seeds.items():
            adjoint[name] = namer.claim(variable)
    else:
        result.seed = adjoint[out] = namer.adjoint(out, out)
    forward_text = {s.node.name: s.code for s in result.forward}
    reads = set()
    parts = {}                                    # operand -> [(start, adjoint)] of its column parts
    for node in reversed(computed):
        if node.name not in active:
            continue
        if node.name in parts:
            result.backward.append(_assemble_parts(node.name, parts.pop(node.name), adjoint, namer, out))
        if node.name not in adjoint:              # nothing downstream needs it
            continue
        g = adjoint[node.name]
        op = tensor_op(node) if rules[node.name] is tensor else None
        if op is not None and op.part_of:
            fmt = node.attrs["fmt"]
            parts.setdefault(node.operands[0], []).append((int(fmt["a"]), int(fmt["b"]), int(fmt["width"]), g))
            reads.add(g)
            continue
        where = f"({targets(node)} = {forward_text[node.name]})"
        for operand, code, used, term, alias, *consume in rules[node.name].adjoints(node, g, active):
            reads |= used
            if isinstance(operand, tuple):
                result.backward.extend(_joint_statements(operand, code, used, node, adjoint, namer, out, where))
                continue
            step = f"d{out}/d{operand} += d{out}/d{node.name} * d{node.name}/d{operand}   {where}"
            accumulate = operand in adjoint
            if term is not None and term == 0:
                # the partials cancel (x - x): nothing to add, or an adjoint of zeros with
                # the shape of the node's adjoint (the number 0 would lose the shape)
                if accumulate:
                    continue
                code, used = f"np.zeros_like({g})", frozenset({g})
            if accumulate:
                name = adjoint[operand]
                code = accumulated(name, code, term, alias)
                used, alias, consume = used | {name}, None, [()]
            else:
                name = adjoint[operand] = namer.adjoint(out, operand)
            result.backward.append(Statement((name,), code, frozenset(used), step, node, operand, term,
                                             accumulate, alias, consume=consume[0] if consume else ()))

    result.grads = [(name, adjoint.get(name)) for name in graph.wrt]
    result.adjoints = adjoint
    forward_names = {}
    for node in graph:
        if node.name in needed:
            for name in [node.name, *node.attrs.get("aux", {}).values()]:
                forward_names[name] = True
    result.cache = [n for n in forward_names if n in reads]
    return result


def _assemble_parts(name, pieces, adjoint, namer, out):
    """The adjoint of a block whose column parts each have an adjoint: their concatenation."""
    pieces.sort()
    width = pieces[0][2]
    covered = [a for a, _, _, _ in pieces] == list(range(0, width, pieces[0][1] - pieces[0][0])) \
        and pieces[-1][1] == width
    if not covered:     # every part of a fused block feeds the output: the front end checks
        raise ValueError(f"the column parts of {name} do not cover it")
    code = f"np.concatenate([{', '.join(g for *_, g in pieces)}], axis=-1)"
    step = f"d{out}/d{name} = [the adjoints of its column parts, side by side]"
    reads = frozenset(g for *_, g in pieces)
    if name in adjoint:
        return Statement((adjoint[name],), f"{adjoint[name]} + {code}", reads | {adjoint[name]}, step,
                         accumulate=True)
    adjoint[name] = namer.adjoint(out, name)
    return Statement((adjoint[name],), code, reads, step)


def _joint_statements(operands, code, reads, node, adjoint, namer, out, where):
    """`dJ_da, dJ_db = kernel(...)` (or, for a rule that returns its results by name,
    `results = kernel(...)` and `dJ_da = results["a"]`), then additions for adjoints
    that already existed."""
    names, later = [], []
    for operand in operands:
        if operand is None:
            names.append(None)
        elif operand in adjoint:
            part = namer.fresh(f"d{out}_d{operand}_part")
            names.append(part)
            later.append(Statement((adjoint[operand],), f"{adjoint[operand]} + {part}",
                                   frozenset({adjoint[operand], part}), f"accumulate {where}",
                                   node, operand, accumulate=True))
        else:
            adjoint[operand] = namer.adjoint(out, operand)
            names.append(adjoint[operand])
    step = f"the operands' adjoints from d{out}/d{node.name}, through {tensor_op(node).name}'s backward"
    keys = tensor_op(node).joint_keys
    if not keys:
        return [Statement(tuple(names), code, reads, step, node)] + later
    results = namer.fresh(f"{node.name}_grads")
    picked = [Statement((name,), f'{results}["{key}"]', frozenset({results}), node=node)
              for name, key in zip(names, keys) if name is not None]
    return [Statement((results,), code, reads, step, node)] + picked + later


def accumulated(name, code, term, alias):
    """`name + contribution`: printed from the SymPy term where there is one (the printer
    knows precedence), else with the contribution in parentheses."""
    if term is not None:
        return to_numpy(sp.Add(symbol(name), term, evaluate=False))
    return f"{name} + {code}" if alias else f"{name} + ({code})"
