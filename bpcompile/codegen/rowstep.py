"""The per-example SGD step: the schedule rendered for a batch of one.

The lecture's Algorithm 1 updates the weights after every example.  With
one example the arrays are short vectors, and the batch code's cost is
NumPy's per-call overhead and allocation, not arithmetic.  So for a batch of
one, `sgd_step` calls `_sgd_step_one`, which runs the same statements of the
same schedule on 1-D vectors, and writes every value, adjoint and temporary
into a buffer allocated once when the module is imported:

* elementwise nodes become ufunc calls with `out` (inplace.py);
* tensor ops use their `row` rule (tensor_ops.py): `np.dot(W, h, out)` and an
  outer product handed to BLAS for the weight gradient;
* a bias's adjoint is the node's adjoint itself, not a copy;
* one-output losses run on Python floats.

The numba target compiles the same statements into one loop over an epoch
(`epoch_body`), with one difference: a weight whose gradient is an outer
product (`RowRule.outer`) is updated by `_subtract_outer(W, g, h)`, one
compiled pass of W[j, i] -= g[j] * h[i], instead of BLAS writing the outer
product into a buffer that the update then reads back (each entry is the
same one product either way).

This is only for graphs whose every op has a one-example form (MLPs); for the
others `render` returns None and sgd_step has no such path.  Buffers make the
step non-reentrant: the module says so.
"""

import ast
import string
from dataclasses import dataclass, field

from . import layout
from ..memory.inplace import ufunc_statements
from ..core.parser import symbol
from ..core.primitives import PRIMITIVES
from ..core.printer import to_numpy
from ..core.tensor_ops import TENSOR_OPS


@dataclass
class RowStep:
    buffers: list = field(default_factory=list)     # `name = np.empty(...)` lines, allocated once
    buffer_names: list = field(default_factory=list)  # the names they assign
    body: list = field(default_factory=list)        # the function's statements after the checks
    epoch_body: list = field(default_factory=list)  # the same for the numba epoch kernel
    epoch_buffers: list = field(default_factory=list)  # the buffers it uses
    outer_updates: bool = False                     # whether epoch_body calls _subtract_outer
    checks: list = field(default_factory=list)      # (variable, key, shape) of each parameter
    x_shape: tuple = ()
    helpers: list = field(default_factory=list)
    ufuncs: list = field(default_factory=list)      # (NumPy function, local name) bound as defaults


# Names for the 0-d constant arrays of common numbers.
CONSTANT_NAMES = {1.0: "_ONE", 2.0: "_TWO", 0.5: "_HALF", 0.0: "_ZERO", -1.0: "_MINUS_ONE"}


class _Value:
    """How a value is named in the one-example code; `.row`/`.col` are views of a vector."""

    def __init__(self, name, row=None, col=None, scalar=None, box=None):
        self.name, self._row, self._col, self._scalar, self._box = name, row, col, scalar, box

    def __str__(self):
        return self.name

    def __format__(self, spec):
        return self.name

    @property
    def row(self):
        return self._row() if callable(self._row) else self._row

    @property
    def col(self):
        return self._col() if callable(self._col) else self._col

    @property
    def box(self):
        """A 0-d array holding a float's value (ufuncs take it faster than a Python float)."""
        return self._box()

    @property
    def is_float(self):
        return self._box is not None

    @property
    def scalar(self):
        """A 0-d view of a one-element vector (a ufunc broadcasts it faster than shape (1,))."""
        return self._scalar()


def is_scalar(graph, name):
    """Whether a computed value is one number per example (a Python float here)."""
    node = graph.nodes.get(name)
    return (node is not None and node.op != "input"
            and (node.shape == () or tuple(node.shape[1:]) == (1,)))


def row_rule(graph, node):
    """The node's one-example rule: its scalar form when the node (an output unit)
    or its first operand (the logit a loss reads) is a float, else None if missing."""
    rule = TENSOR_OPS[node.op].row
    first = node.operands[0] if node.operands and isinstance(node.operands[0], str) else None
    if rule is not None and (is_scalar(graph, node.name) and node.shape != ()
                             or node.shape == () and first and is_scalar(graph, first)):
        return rule.scalar
    return rule


def supported(graph, sched, compiler):
    """Whether every statement of `sched` has a one-example form."""
    # a train/eval mode (dropout's masks, batch norm's batch statistics over the whole
    # batch) or an output adjoint instead of a loss: the one-example step does neither
    if compiler.sequence or len(compiler.input_shape) != 1 or compiler.modes or compiler.vjp:
        return False
    for s in sched.forward + sched.backward:
        node = s.node
        if node is None or len(node.shape) > 2 or (node.shape and node.shape[0] != "B"):
            return False
        if node.op in TENSOR_OPS:
            rule = row_rule(graph, node)
            scalar_in = any(isinstance(o, str) and is_scalar(graph, o) for o in node.operands)
            # a float feeds only a rule written for it (a loss); one unit feeding a layer does not fit
            if rule is None or scalar_in and not (node.shape == () and rule is TENSOR_OPS[node.op].row.scalar):
                return False
        elif node.op not in PRIMITIVES or node.op == "select":
            return False
        elif is_scalar(graph, node.name) and "x" in node.operands:
            # a float computed from x, which is a vector here even with one feature
            return False
    return True


def render(compiler, sched, graph):
    """The one-example step of an MLP graph, or None when some op has no such form."""
    if not supported(graph, sched, compiler):
        return None
    return _Renderer(compiler, sched, graph).run()


class _NumPy:
    """NumPy functions as the one-example step calls them: through local names bound as
    default arguments (with calls of a microsecond or less, `np.add`'s global and
    attribute lookups show).  A rule's text says `{np.dot}(...)`."""

    def __init__(self, mint):
        self._mint = mint
        self.bound = {}               # NumPy function -> its local name

    def __getattr__(self, function):
        if function.startswith("_"):
            raise AttributeError(function)
        if function not in self.bound:
            self.bound[function] = self._mint(function)
        return self.bound[function]

    def qualified(self, name):
        """The local name of "np.add" (the in-place emitter's spelling)."""
        return getattr(self, name.removeprefix("np."))


@dataclass
class _Split:
    """Lines that differ between the one-example step (NumPy) and the epoch kernel (numba)."""
    numpy: list
    numba: list


class _Renderer:
    def __init__(self, compiler, sched, graph):
        self.compiler, self.sched, self.graph = compiler, sched, graph
        self.step = RowStep(x_shape=(1,) + tuple(compiler.input_shape))
        self.declared = {}            # buffer name -> shape
        self.views = {}               # view name -> declaration
        self.values = {}              # graph name -> _Value
        self.adjoints = {}            # adjoint variable -> _Value (a buffer, or an alias)
        self.params = {p.var: p for p in compiler.params}
        self.scratch_in_use = {}      # shape -> count of scratch buffers of this statement
        self.constants = {}           # number -> name of its 0-d array
        self.minted = {}              # base -> the name the module's symbol table gave it
        self.np = _NumPy(self.mint)   # NumPy functions, called through local names
        self.outer = {}               # parameter adjoint -> (column, row): an outer product
        # how many statements add to each adjoint: a weight used twice sums two products,
        # and then the outer product cannot go straight into the update
        self.contributions = {}
        for s in sched.backward:
            self.contributions[s.target] = self.contributions.get(s.target, 0) + 1

    # --- names -------------------------------------------------------------------------
    def mint(self, base):
        """The module-level name of `base` (a buffer, a view, a local): minted from the
        module's symbol table once, so it can equal no other name of the module."""
        if base not in self.minted:
            self.minted[base] = self.compiler.namer.fresh(base)
        return self.minted[base]

    def buffer(self, base, shape):
        name = self.mint(base)
        self.declared.setdefault(name, shape)
        return name

    def view(self, buf, suffix, code):
        name = self.mint(f"{buf.removesuffix('_buf')}_{suffix}")
        self.views.setdefault(name, f"{name} = {code}")
        return name

    def vector(self, name, shape):
        buf = self.buffer(name, shape)
        return _Value(buf, row=lambda: self.view(buf, "row", f"{buf}[None, :]"),
                      col=lambda: self.view(buf, "col", f"{buf}[:, None]"),
                      scalar=lambda: self.view(buf, "0d", f"{buf}.reshape(())"))

    def value(self, name):
        """The _Value of a forward name (input, parameter, node or aux value)."""
        if name in self.values:
            return self.values[name]
        if name == "x":
            value = _Value("x", row="x_row")
        elif name == "y":
            value = _Value("y")               # targets, or a class id
        elif name in self.params:
            value = _Value(name)
        else:
            node = self.graph.nodes.get(name)
            if node is not None and len(node.shape) == 2 and not is_scalar(self.graph, name):
                value = self.vector(f"_{name}_buf", node.shape[1:])
            else:
                value = _Value(name)          # a Python float, y, or a loss's local value
        self.values[name] = value
        return value

    def float_value(self, name):
        """A float local; `.box` copies it into a 0-d buffer, once, when a ufunc needs it."""
        def box():
            base = f"_{name}_box"
            if base not in self.minted:
                self.step.body.append(f"{self.buffer(base, ())}[()] = {name}")
            return self.mint(base)
        return _Value(name, box=box)

    def constant(self, number):
        if number not in self.constants:
            base = CONSTANT_NAMES.get(number, f"_CONSTANT{len(self.constants)}")
            self.constants[number] = self.mint(base)
        return self.constants[number]

    def scratch(self, shape):
        def next_name(avoid=None):
            i = self.scratch_in_use.get(shape, 0)
            self.scratch_in_use[shape] = i + 1
            return self.buffer(f"_scratch{i}_" + "x".join(map(str, shape)), shape)
        return next_name

    def row_shape(self, name):
        node = self.graph.nodes[name]
        return tuple(node.shape[1:]) if node.shape and node.shape[0] == "B" else tuple(node.shape)

    def renamed(self, expr):
        """`expr` with every symbol renamed to its value's name in the one-example code."""
        mapping = {}
        for s in expr.free_symbols:
            if s.name in self.adjoints:
                mapping[s] = symbol(str(self.adjoints[s.name]))
            else:
                mapping[s] = symbol(str(self.value(s.name)))
        return expr.xreplace(mapping)

    # --- statements ----------------------------------------------------------------------
    def emit(self, lines, comment=None):
        body = self.step.body
        if comment and lines:
            body.extend(layout.statement(lines[0], comment))
            body.extend(lines[1:])
        else:
            body.extend(lines)

    def elementwise_into(self, expr, out, shape):
        lines = ufunc_statements(self.renamed(expr), out, self.scratch(shape), self.constant,
                                 self.np.qualified)
        if lines is None:       # no ufunc form: the plain expression, copied into the buffer
            lines = [f"{self.np.copyto}({out}, {to_numpy(self.renamed(expr))})"]
        return lines

    def forward(self, s):
        node = s.node
        if node.op in TENSOR_OPS:
            rule = row_rule(self.graph, node)
            fields = self.fields(node, rule)
            self.emit([line.format(*fields["operands"], np=self.np, **fields["named"]) for line in rule.forward],
                      f"{s.target} = {s.code}")
        elif not is_scalar(self.graph, node.name):
            from ..core.autodiff import forward_expr
            out = str(self.value(node.name))
            self.emit(self.elementwise_into(forward_expr(node), out, self.row_shape(node.name)),
                      f"{node.name} = {s.code}")
        else:       # floats: the plain expression
            from ..core.autodiff import forward_expr
            self.emit([f"{s.target} = {to_numpy(self.renamed(forward_expr(node)))}"])

    def fields(self, node, rule, g=None, adj=None):
        named = {"out": self.value(node.name)}
        for key, aux in node.attrs.get("aux", {}).items():
            named[key] = self.value(aux)
        for local in rule.locals:
            named[local] = self.mint(f"{node.name}_{local}")
        if g is not None:
            named["g"] = g
        if adj is not None:
            named["adj"] = adj
        operands = [self.value(o) if isinstance(o, str) else repr(o) for o in node.operands]
        return {"operands": operands, "named": named}

    def backward(self, s):
        node, operand = s.node, s.operand
        self.scratch_in_use = {}          # temporaries live for one statement
        g = self.adjoints.get(self.sched.adjoints[node.name])
        target = s.target
        if is_scalar(self.graph, operand):        # a float adjoint: plain Python arithmetic
            self.adjoints[target] = self.float_value(target)
            self.emit(self.scalar_adjoint(s, g), s.comment)
            return
        shape = self.shape_of(operand)
        own = _Value(f"_{target}_buf")          # declared below unless the adjoint is an alias
        if node.op in TENSOR_OPS:
            rule = row_rule(self.graph, node)
            vjp = rule.vjps[node.operands.index(operand)]
            if vjp == "=":
                if s.accumulate:
                    own = self.vector(own.name, shape)
                    self.emit([f"{self.np.add}({self.adjoints[target]}, {g}, {own})"], s.comment)
                    self.adjoints[target] = own
                else:
                    self.adjoints[target] = g        # a bias: its adjoint is the node's
                    self.step.body.extend(layout.comment_lines(f"{target} is {g}: {s.comment}"))
                return
            own = self.vector(own.name, shape)
            lines = (vjp,) if isinstance(vjp, str) else vjp
            into = self.vector(self.scratch(shape)(), shape) if s.accumulate else own
            fields = self.fields(node, rule, g=g, adj=into)
            code = [line.format(*fields["operands"], np=self.np, **fields["named"]) for line in lines]
            outer = rule.outer[node.operands.index(operand)] if rule.outer else None
            # (the vectors are read at the update, after every adjoint: a parameter among
            # them would have changed by then)
            if (outer and operand in self.params and self.contributions[target] == 1
                    and not _reads_params(outer, node, self.params)):
                # the numba epoch subtracts the outer product from the weight in the update
                column, row = (part.format(*fields["operands"], **fields["named"]) for part in outer)
                self.outer[target] = (column, row)
                self.adjoints[target] = own
                numpy = [*layout.statement(code[0], s.comment), *code[1:]]
                numba = layout.comment_lines(s.comment) + layout.comment_lines(
                    f"{target} = outer({column}, {row}): subtracted from the weight in the update")
                self.step.body.append(_Split(numpy, numba))
                return
        else:
            own = self.vector(own.name, shape)
            into = own
            if s.accumulate:
                into = self.scratch(shape)()
            code = self.elementwise_into(s.term, str(into), shape)
        if s.accumulate:
            current = self.adjoints[target]
            code.append(f"{self.np.add}({current}, {into}, {own})")
        self.adjoints[target] = own
        self.emit(code, s.comment)

    def scalar_adjoint(self, s, g):
        """Statements adding a contribution to a float adjoint."""
        target = s.target
        part = self.mint(f"{target}_part") if s.accumulate else target
        if s.term is not None:
            lines = [f"{part} = {to_numpy(self.renamed(s.term))}"]
        else:
            rule = row_rule(self.graph, s.node)
            fields = self.fields(s.node, rule, g=g, adj=part)
            lines = [rule.vjps[s.node.operands.index(s.operand)].format(*fields["operands"], np=self.np, **fields["named"])]
        if s.accumulate:
            lines.append(f"{target} = {target} + {part}")
        return lines

    def shape_of(self, name):
        if name in self.params:
            return tuple(self.params[name].shape)
        return self.row_shape(name)

    def run(self):
        sched, step = self.sched, self.step
        for p in self.compiler.params:
            step.checks.append((p.var, p.key, tuple(p.shape)))
        step.body.append("# forward (topological order)")
        for s in sched.forward:
            self.forward(s)
        step.body.append("# backward (reverse topological order), seeded with lr")
        step.body.append(f"{sched.seed} = lr")
        self.adjoints[sched.seed] = self.float_value(sched.seed)
        for s in sched.backward:
            self.backward(s)
        step.body.append("# update (in place)")
        for var, adjoint in sched.grads:
            if var in self.params and adjoint is not None:
                g = self.adjoints[adjoint]
                if g.is_float and self.params[var].shape == (1,):   # one bias: plain float arithmetic
                    step.body.append(f"{var}[0] -= {g}")
                elif adjoint in self.outer:
                    column, row = self.outer[adjoint]
                    step.body.append(_Split([f"{self.np.subtract}({var}, {g}, {var})"],
                                            [f"_subtract_outer({var}, {column}, {row})"]))
                else:
                    step.body.append(f"{self.np.subtract}({var}, {g.box if g.is_float else g}, {var})")
        step.buffers = [f"{name} = np.empty({shape!r}, dtype=DTYPE)" for name, shape in self.declared.items()]
        step.buffers += list(self.views.values())
        constants = sorted(self.constants.items(), key=lambda item: item[1])
        step.buffers += [f"{name} = np.array({number!r}, dtype=DTYPE)" for number, name in constants]
        step.buffer_names = [*self.declared, *self.views, *(name for _, name in constants)]
        step.body, step.epoch_body = _versions(step.body)
        step.epoch_buffers = _used_buffers(step.buffers, step.buffer_names, step.epoch_body)
        step.outer_updates = bool(self.outer)
        self.step.ufuncs = sorted(self.np.bound.items(), key=lambda item: item[1])
        step.helpers = sorted({h for n in self.graph if n.op in TENSOR_OPS
                               for h in row_rule(self.graph, n).helpers})
        return step


def _used_buffers(lines, names, body):
    """The declarations among `lines` (of `names`) that `body` reads, and those the kept
    ones read (a view's vector): the numba epoch updates an outer-product weight with
    _subtract_outer, so the views and buffers the NumPy step's product used fall away."""
    read = _names_read("\n".join(body))
    kept = set()
    for line, name in reversed(list(zip(lines, names))):     # views after their vectors
        if name in read:
            kept.add(name)
            read |= _names_read(line)
    return [line for line, name in zip(lines, names) if name in kept]


def _names_read(code):
    """The names that statements `code` read."""
    return {node.id for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _reads_params(texts, node, params):
    """Whether the format strings `texts` name an operand of `node` that is a parameter."""
    fields = {name.split(".")[0] for text in texts
              for _, name, _, _ in string.Formatter().parse(text) if name}
    return any(field.isdigit() and node.operands[int(field)] in params for field in fields)


def _versions(entries):
    """(the NumPy step's lines, the numba epoch's lines) of a body with _Split entries."""
    numpy, numba = [], []
    for entry in entries:
        numpy.extend(entry.numpy if isinstance(entry, _Split) else [entry])
        numba.extend(entry.numba if isinstance(entry, _Split) else [entry])
    return numpy, numba
