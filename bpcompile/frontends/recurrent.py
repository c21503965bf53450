"""Recurrent layers: a cell written as equations, compiled into a loop over time.

A recurrence is one construct, a scan: the cell's equations (parsed by the
same safe parser, with `W @ v` for matrix-vector products) become a small
graph for one time step, the generic scheduler gives its forward and adjoint
statements, and this module wraps them in a forward loop over t (storing
what the backward needs) and a reversed loop that carries the state
adjoints (backpropagation through time).  One pair of functions serves both
directions of a bidirectional layer: they take `reverse` (a reverse-only layer
calls them with reverse=True alone).  Reversed, a padded step still keeps the
state, so with right padding each sequence starts from the initial state at its
own last unpadded step, as PyTorch's packed reverse direction does.

Three rewrites make the loop fast without knowing the cell:
- every product `W @ x` with the layer input is taken out of the loop: the
  weights of all of them are stacked side by side and one matmul computes
  them for every time step at once (with the biases added to them);
- the products with a previous state (`W_hi @ h_prev`, `W_hf @ h_prev`, ...)
  are stacked so one matmul per step serves all gates;
- the backward step's partials that read only stored values are computed for
  every step before the backward loop (step_factors).
A product written twice is one slot; a weight in several slots gets the sum of
its slices' gradients.  Their weight gradients are one matmul each after the
backward loop: the per-step adjoints of the stacked products go into one
time-major buffer.
Masking: a padded step keeps the previous state, `h_next = where(m, h, h_prev)`;
the step graph itself ends at the new states, and the template adds the
masking only at steps whose mask column has a 0 (sorted batches pad only
their last steps, so most steps run the plain cell).

Every local of the generated functions comes from one SymbolTable per layer:
the cell's own names are bound first (kept as written when free), then the
scan's names (`xs`, `t`, `carry_h`, ...) are minted around them.
"""

import functools
import textwrap
from dataclasses import dataclass, field

import sympy as sp

from ..codegen import layout
from ..memory import planner
from .quote import printed
from . import step_factors
from ..core.autodiff import schedule
from ..errors import SpecError
from .programs import _Lowering
from ..core.ir import Graph, Node
from ..core.naming import SymbolTable
from ..core.parser import Assignment, parse_program, symbol
from ..core.primitives import matmul as _matmul, matvec
from ..core.tensor_ops import TensorOp



# --- the built-in cells, by their equations -------------------------------------------

def rnn_equations(nonlinearity):
    return f"h = {nonlinearity}(W_xh @ x + W_hh @ h_prev + b_h)"


def lstm_equations(peephole):
    """The LSTM of Graves et al. (2013) as the lecture writes it; peepholes optional."""
    ci, cf, co = ((" + w_ci * c_prev", " + w_cf * c_prev", " + w_co * c") if peephole else ("", "", ""))
    return (f"i = sigmoid(W_xi @ x + W_hi @ h_prev{ci} + b_i)\n"
            f"f = sigmoid(W_xf @ x + W_hf @ h_prev{cf} + b_f)\n"
            f"c = f * c_prev + i * tanh(W_xc @ x + W_hc @ h_prev + b_c)\n"
            f"o = sigmoid(W_xo @ x + W_ho @ h_prev{co} + b_o)\n"
            f"h = o * tanh(c)\n")


@dataclass
class Cell:
    """A parsed, checked cell: equations and parameters with their shapes."""

    equations: list                      # Assignments, in order
    states: list                         # state names, e.g. ["h", "c"]
    output: str                          # the state the layer outputs (h)
    hidden: int
    input_size: int
    params: dict = field(default_factory=dict)   # name -> shape, in order of appearance
    text: str = ""                       # the equations as written


def parse_cell(text, states, hidden, input_size, output=None):
    """Cell equation text -> Cell; SpecError (positions within `text`) when bad."""
    if len(set(states)) != len(states):
        twice = next(s for s in states if states.count(s) > 1)
        raise SpecError(f"state {twice!r} is listed twice")
    assignments = parse_program(text, matmul=_matmul)
    targets = [a.target for a in assignments]
    for s in states:
        if s not in targets:
            raise SpecError(f"state {s!r} is not assigned by the equations")
    defined = {"x"} | {f"{s}_prev" for s in states}
    params = {}
    assigned = {}
    for a in assignments:
        if a.target in assigned:
            raise SpecError(f"{a.target!r} is assigned twice (first on line {assigned[a.target]})",
                            line=a.line, col=a.col)
        if a.target in defined:
            raise SpecError(f"{a.target!r} cannot be assigned in a cell", line=a.line, col=a.col)
        assigned[a.target] = a.line
        for W, v in _products(a.expr):
            if not isinstance(W, sp.Symbol) or W.name in defined or W.name in targets:
                raise SpecError(f"the left side of @ must be a parameter, got {W}", line=a.line, col=a.col)
        for name in a.names:
            if name not in defined and name not in targets:
                params.setdefault(name, None)
            elif name in targets and name not in defined:
                line, col = a.name_cols[name]
                raise SpecError(f"{name!r} is used before it is assigned", line=line, col=col)
        defined.add(a.target)
    used = {name for a in assignments for name in a.names}
    for a in assignments:
        if a.target not in states and a.target not in used:
            raise SpecError(f"{a.target!r} is assigned but never used (a cell's values feed its "
                            "new states)", line=a.line, col=a.col)
    output = output or states[0]
    if output not in states:
        raise SpecError(f"output {output!r} is not a state")
    params.update(_Sizes(hidden, input_size, states).infer(assignments, list(params)))
    return Cell(assignments, list(states), output, hidden, input_size, params, text)


class _Sizes:
    """The size of every cell value (the input size I or the hidden size H) and the
    shape of every parameter, by unification; a located SpecError on a mismatch.

    A product `W @ v` has the hidden size and W has shape (H, size of v); an
    elementwise operation needs operands of one size (or scalars); a state has
    the hidden size.  A value that meets no sized value is a scalar or, for a
    parameter, a vector of the hidden size."""

    def __init__(self, hidden, input_size, states):
        self.H, self.I = hidden, input_size
        self.parent = {}
        self.value = {}
        self.fixed = {"x": input_size, **{f"{s}_prev": hidden for s in states}}
        self.states = set(states)
        self.kind = {}           # parameter -> "matrix" | "vector"
        self.varies = {"x"} | {f"{s}_prev" for s in states}   # depend on the input or a state

    def _find(self, key):
        while self.parent.get(key, key) != key:
            key = self.parent[key]
        return key

    def _size(self, key):
        return key if isinstance(key, int) else self.value.get(self._find(key))

    def _unify(self, a, b, what):
        """Make sizes a and b equal; `what` describes (a, b) for the message."""
        if a is None or b is None:
            return
        sa, sb = self._size(a), self._size(b)
        if sa is not None and sb is not None and sa != sb:
            raise SpecError(what(sa, sb), line=self.where.line, col=self.where.col)
        if isinstance(a, int) and isinstance(b, int):
            return
        if isinstance(a, int):
            a, b = b, a
        ra = self._find(a)
        if isinstance(b, int):
            self.value[ra] = b
            return
        rb = self._find(b)
        if ra != rb:
            self.parent[ra] = rb
            if self.value.get(ra) is not None:
                self.value[rb] = self.value[ra]

    def _use(self, name, kind):
        if name in self.fixed or name in self.targets:
            return
        first = self.kind.setdefault(name, kind)
        if first != kind:
            raise SpecError(f"parameter {name!r} is used both as a matrix (left of @) and as a vector",
                            line=self.where.line, col=self.where.col)

    def infer(self, assignments, params):
        self.targets = set()
        for a in assignments:
            self.where = a
            size = self._walk(a.expr)
            target = a.target
            if a.target in self.states:
                self._unify(size, self.H, lambda n, h: (
                    f"state {target!r} must have the hidden size {h}, but its value has size {n}"))
                if not (_names(a.expr) & self.varies):
                    raise SpecError(f"state {target!r} does not depend on the input or a previous "
                                    "state", line=a.line, col=a.col)
            self._unify(f"v:{target}", size, lambda n, m: f"sizes {n} and {m} do not match")
            if _names(a.expr) & self.varies:
                self.varies.add(target)
            self.targets.add(target)
        shapes = {}
        for p in params:
            if self.kind.get(p) == "matrix":
                shapes[p] = (self.H, self._size(f"cols:{p}") or self.H)
            else:
                shapes[p] = (self._size(f"v:{p}") or self.H,)
        return shapes

    def _key(self, name):
        return self.fixed.get(name, f"v:{name}")

    def _walk(self, expr):
        """The size of expr: an int, a unification key, or None for a scalar."""
        if isinstance(expr, matvec):
            W, v = expr.args
            self._use(W.name, "matrix")
            size = self._walk(v)
            if size is None or not (_names(v) & self.varies):
                raise SpecError(f"the right side of @ must be a vector that depends on the input "
                                f"or a state, got {printed(v)}", line=self.where.line, col=self.where.col)
            first = self.first_vector = getattr(self, "first_vector", {})
            first.setdefault(W.name, printed(v))
            self._unify(f"cols:{W.name}", size, lambda n, m: (
                f"{W.name} multiplies vectors of different sizes: {first[W.name]} (size {n}) "
                f"and {printed(v)} (size {m})"))
            return self.H
        if isinstance(expr, sp.Symbol):
            self._use(expr.name, "vector")
            return self._key(expr.name)
        if not expr.args or expr.is_Number:
            return None
        sizes = [(arg, self._walk(arg)) for arg in expr.args]
        sized = [(arg, s) for arg, s in sizes if s is not None]
        for (a0, s0), (a1, s1) in zip(sized, sized[1:]):
            self._unify(s0, s1, lambda n, m, a0=a0, a1=a1: (
                f"size mismatch: {printed(a0)} has size {n} but {printed(a1)} has size {m} "
                f"(the input size is {self.I}, the hidden size {self.H})"))
        return sized[0][1] if sized else None


def _names(expr):
    return {s.name for s in expr.free_symbols}


def _products(expr):
    return [(e.args[0], e.args[1]) for e in sp.preorder_traversal(expr) if isinstance(e, matvec)]


# --- from cell to loop ------------------------------------------------------------------------

@dataclass
class Slot:
    """One stacked projection: rows [start, start+H) of a stacked weight (user names)."""

    weight: str
    bias: str = None
    symbol: str = ""


# The scan's own locals, by role; minted after the cell's names, so never equal to one.
SCAN_LOCALS = ("xs", "mask", "reverse", "B", "T", "order", "full", "out", "t", "k", "m",
               "saved", "dout", "need_dx", "_Wx", "_X", "_Xt", "_S", "_Hp", "_dX", "_dXt",
               "_dWx", "_dbx", "dxs", "_dx_direct")
# What the generated functions call: never a local's name.
SCAN_CALLS = ("_stacked",)


class ScanCompiler:
    """Compiles one recurrent cell into forward/backward functions over time
    (both directions: the functions take `reverse`)."""

    def __init__(self, cell, fn):
        self.cell, self.fn = cell, fn
        self.H = cell.hidden
        self.names = SymbolTable(reserved=SCAN_CALLS)
        users = (["x"] + [f"{s}_prev" for s in cell.states] + list(cell.params)
                 + [a.target for a in cell.equations])
        self.var = {u: self.names.bind(u) for u in users}          # user name -> variable
        self.user = {v: u for u, v in self.var.items()}
        self.n = {role: self.names.fresh(role) for role in SCAN_LOCALS}
        self.state_names = {s: {
            "init": self.names.fresh(f"{s}0"), "prev": self.var[f"{s}_prev"],
            "value": self.var[s], "next": self.names.fresh(f"{s}_next"),
            "carry": self.names.fresh(f"carry_{s}"), "seed": self.names.fresh(f"dJ_d{s}"),
            "keep": self.names.fresh(f"_keep_{s}")} for s in cell.states}
        self.X = symbol(self.var["x"])
        self.x_slots, self.h_slots, self.pairs = [], {}, 0
        self.memo = {}               # a product (with its bias, its pair) -> its slot symbol
        self.uses_x = False
        self.graph = Graph(fn)
        self._build()
        self.stack_names = {s: {role: self.names.fresh(role if s == cell.states[0] else f"{role}_{s}")
                                for role in ("_Wh", "_Hp", "_dHp", "_dHs", "_dWh")}
                            for s in self.h_slots}

    def V(self, user):
        return self.var[user]

    def _prev(self, s):
        return symbol(self.var[f"{s}_prev"])

    def _is_bias(self, term):
        return (isinstance(term, sp.Symbol) and self.user.get(term.name) in self.cell.params
                and len(self.cell.params[self.user[term.name]]) == 1)

    # -- rewriting the projections into slots ------------------------------------------------
    def _rewrite(self, expr, target):
        """Replace W @ x and W @ s_prev by slot symbols; pair and fold inside sums."""
        if isinstance(expr, matvec):
            return self._slot(self._inner(expr, target), target)
        if isinstance(expr, sp.Add):
            args = [self._inner(a, target) if isinstance(a, matvec) else self._rewrite(a, target)
                    for a in _terms(expr)]
            first = self._prev(self.cell.states[0])
            xs = [i for i, a in enumerate(args) if isinstance(a, matvec) and a.args[1] == self.X]
            hs = [i for i, a in enumerate(args) if isinstance(a, matvec) and a.args[1] == first]
            new, used = [], set()
            if len(xs) == 1:
                W = self.user[args[xs[0]].args[0].name]
                bias = next((i for i, a in enumerate(args) if i not in xs + hs and self._is_bias(a)), None)
                b = self.user[args[bias].name] if bias is not None else None
                used |= {xs[0]} | ({bias} if bias is not None else set())
                if len(hs) == 1:
                    U = self.user[args[hs[0]].args[0].name]
                    used.add(hs[0])
                    key = ("pair", W, U, b)
                    if key not in self.memo:
                        name = self.memo[key] = self.names.fresh(f"z_{target}")
                        self.x_slots.insert(self.pairs, Slot(W, b, name))
                        self.h_slots.setdefault(self.cell.states[0], []).insert(
                            self.pairs, Slot(U, None, name))
                        self.pairs += 1
                else:
                    key = ("x", W, b)
                    if key not in self.memo:
                        self.memo[key] = self.names.fresh(f"zx_{target}")
                        self.x_slots.append(Slot(W, b, self.memo[key]))
                new.append(symbol(self.memo[key]))
            rest = [self._slot(a, target) if isinstance(a, matvec) else a
                    for i, a in enumerate(args) if i not in used]
            args = new + rest
            return args[0] if len(args) == 1 else sp.Add(*args, evaluate=False)
        if not expr.args or expr.is_Number or expr.is_Symbol:
            return expr
        return expr.func(*[self._rewrite(a, target) for a in expr.args], evaluate=False)

    def _inner(self, product, target):
        """A product whose vector has its own products rewritten (W @ (U @ x))."""
        W, v = product.args
        inner = self._rewrite(v, target)
        return product if inner == v else matvec(W, inner, evaluate=False)

    def _slot(self, product, target):
        W, v = product.args
        weight = self.user[W.name]
        if v == self.X:
            key = ("x", weight, None)
            if key not in self.memo:
                self.memo[key] = self.names.fresh(f"zx_{target}")
                self.x_slots.append(Slot(weight, None, self.memo[key]))
            return symbol(self.memo[key])
        for s in self.cell.states:
            if v == self._prev(s):
                key = ("h", s, weight)
                if key not in self.memo:
                    self.memo[key] = self.names.fresh(f"zh_{target}")
                    self.h_slots.setdefault(s, []).append(Slot(weight, None, self.memo[key]))
                return symbol(self.memo[key])
        return product          # a product with a computed vector: stays in the loop

    # -- the step graph --------------------------------------------------------------------------
    def _build(self):
        g = self.graph
        cell = self.cell
        renaming = {symbol(u): symbol(v) for u, v in self.var.items() if u != v}
        rewritten = [(a, self._rewrite(a.expr.xreplace(renaming), self.V(a.target)))
                     for a in cell.equations]
        self.blocks = [(s.symbol, [s]) for s in self.x_slots]     # slices of the stacked products
        fused = self._fuse(rewritten) if self._all_pairs() else []
        slot_names = [b for b, _ in self.blocks] if self._all_pairs() else \
            [s.symbol for s in self.x_slots] + [s.symbol for slots in self.h_slots.values() for s in slots]
        used = set()
        for _, expr in rewritten:
            if expr is not None:
                used |= _names(expr)
        self.uses_x = self.V("x") in used
        self.vector_params = [p for p in cell.params if self.V(p) in used and len(cell.params[p]) == 1]
        self.loop_matrices = sorted({self.user[W.name] for _, e in rewritten if e is not None
                                     for W, _ in _products(e)})
        step_inputs = [self.V(f"{s}_prev") for s in cell.states]
        params = [self.V(p) for p in self.vector_params + self.loop_matrices]
        x = [self.V("x")] if self.uses_x else []
        for name in dict.fromkeys(slot_names + step_inputs + x + params):
            g.add(Node(name, "input"))
        lowering = _Lowering(g, self.names)
        for block, act, name, parts in fused:
            lowering.assignment(Assignment(name, act(symbol(block), evaluate=False), 0, 1, [], {}))
            width = len(parts) * self.H
            for k, part in enumerate(parts):
                g.add(Node(part, "cols", (name,), attrs={"rule": COLS, "fmt": {
                    "a": str(k * self.H), "b": str((k + 1) * self.H), "width": str(width)}}))
        inputs = set(slot_names + step_inputs + x + params)    # not constants
        for a, expr in rewritten:
            if expr is None:             # computed by a fused block
                continue
            try:
                expr = self._lower_products(expr, lowering)
                lowering.assignment(Assignment(self.V(a.target), expr, a.line, a.col, [], {}))
                if not g.ancestors(self.V(a.target)) & inputs:
                    raise SpecError(f"{a.target!r} is a constant once simplified; a cell's "
                                    "values must depend on x, a state or a parameter")
            except SpecError as err:
                raise err.located(line=a.line, col=a.col) from None
        # The step graph ends at the new states: masking (a padded step keeps the
        # previous state) is added around it by the template, and only at steps
        # that have padding.
        g.output = "J"
        g.wrt = [n for n in dict.fromkeys(slot_names + step_inputs + params + x) if n in g.nodes]
        seeds = {names["value"]: names["seed"] for names in self.state_names.values()}
        self.schedule = schedule(g, seeds=seeds, names=self.names)

    def _all_pairs(self):
        first = self.cell.states[0]
        return self.pairs and len(self.x_slots) == self.pairs == len(self.h_slots.get(first, [])) \
            and len(self.h_slots) == 1

    def _h_prefix(self):
        """The first state's products are exactly the paired ones, which lead the
        stacked input products: one buffer holds both, and their adjoints too."""
        first = self.cell.states[0]
        hs = [s.symbol for s in self.h_slots.get(first, [])]
        return bool(self.pairs) and hs == [s.symbol for s in self.x_slots[:self.pairs]]

    def _fuse(self, rewritten):
        """Gates with the same activation of their own pre-activation (i, f, o =
        sigmoid(z_i), ...) become one activation over adjacent columns.

        Reorders the stacked slots so each group is contiguous; rewrites
        `rewritten` in place; returns (block symbol, activation, block name, parts).
        """
        from ..core.primitives import sigmoid
        symbols = {s.symbol: s for s in self.x_slots}
        uses = {}
        for _, expr in rewritten:
            for sym in sp.preorder_traversal(expr):
                if isinstance(sym, sp.Symbol):
                    uses[sym.name] = uses.get(sym.name, 0) + 1
        groups = {}
        for i, (a, expr) in enumerate(rewritten):
            if type(expr) in (sigmoid, sp.tanh) and expr.args[0].is_Symbol:
                slot = expr.args[0].name
                if slot in symbols and uses[slot] == 1:
                    groups.setdefault(type(expr), []).append((i, self.V(a.target), slot))
        fused, order = [], []
        for act, members in groups.items():
            if len(members) < 2:
                continue
            names = [target for _, target, _ in members]
            block = self.names.fresh("z_" + "_".join(names))
            name = self.names.fresh(f"{act.__name__}_" + "_".join(names))
            fused.append((block, act, name, names))
            order.append((block, [symbols[slot] for _, _, slot in members]))
            for i, _, _ in members:
                rewritten[i] = (rewritten[i][0], None)
        grouped = {s.symbol for _, slots in order for s in slots}
        order += [(s.symbol, [s]) for s in self.x_slots if s.symbol not in grouped]
        self.blocks = order
        stacked = [s for _, slots in order for s in slots]
        position = {s.symbol: k for k, s in enumerate(stacked)}
        first = self.cell.states[0]
        self.x_slots = stacked
        self.h_slots[first] = sorted(self.h_slots[first], key=lambda s: position[s.symbol])
        return fused

    def _lower_products(self, expr, lowering):
        """Products with computed vectors become `matvec` nodes of the step graph
        (innermost first, so a product's vector may hold products itself)."""
        while True:
            product = next((e for e in sp.postorder_traversal(expr) if isinstance(e, matvec)), None)
            if product is None:
                return expr
            W, v = product.args
            if not isinstance(v, sp.Symbol):
                v_name = self.names.fresh(f"{W.name}_in")
                lowering.assignment(Assignment(v_name, v, 0, 1, [], {}))
                v = symbol(v_name)
            name = self.names.fresh(f"{W.name}_{v.name}")
            self.graph.add(Node(name, "matvec", (v.name, W.name), attrs={"rule": MATVEC}))
            expr = expr.xreplace({product: symbol(name)})

    # -- what the template needs ---------------------------------------------------------------
    def _slices(self, buffer, slots, offset=0):
        H = self.H
        return [f"{slot.symbol} = {buffer}[:, {(offset + k) * H}:{(offset + k + 1) * H}]"
                for k, slot in enumerate(slots)]

    def stacks(self):
        """Cell parameters the scan uses side by side, each group in slot order: the input
        weights, their biases (when every slot has one), the weights of each state.  A group
        that names a parameter twice is not stored side by side (the scan copies it)."""
        groups = []
        if len(self.x_slots) > 1:
            groups.append([sl.weight for sl in self.x_slots])
            if all(sl.bias for sl in self.x_slots):
                groups.append([sl.bias for sl in self.x_slots])
        groups += [[sl.weight for sl in slots] for slots in self.h_slots.values() if len(slots) > 1]
        return [g for g in groups if len(set(g)) == len(g)]

    def _step_shapes(self):
        """Each step value's shape for the memory planner: (B, n) when it varies by
        example (it depends on x, a state or a pre-activation), (n,) when it is made of
        parameters alone (and broadcasts)."""
        params = {self.V(p) for p in self.cell.params}
        shapes = {}
        for node in self.graph:
            if node.op == "input":
                per_example = node.name not in params
            else:
                per_example = any(shapes.get(o) == ("B", "n") for o in node.node_operands())
            shapes[node.name] = ("B", "n") if per_example else ("n",)
        return shapes

    def _slot_names(self):
        """Names loop_top defines: columns of this step's own pre-activation buffers."""
        names = {str(block) for block, _ in self.blocks} | {str(sl.symbol) for sl in self.x_slots}
        return names | {str(sl.symbol) for slots in self.h_slots.values() for sl in slots}

    def loop_top(self):
        """Statements at the top of a forward step: the per-step projections as slots."""
        n, first = self.n, self.cell.states[0]
        x_slots, h_slots, P = self.x_slots, self.h_slots.get(first, []), self.pairs
        prev = self.state_names[first]["prev"]
        Wh = self.stack_names[first]["_Wh"] if h_slots else None
        lines = []
        if self._all_pairs():
            lines.append(f"{n['_S']} = {n['_X']}[{n['t']}]  # becomes this step's pre-activations")
            lines.append(f"{n['_S']} += {_times_transpose(prev, Wh)}")
            start = 0
            for block, slots in self.blocks:
                stop = start + len(slots) * self.H
                lines.append(f"{block} = {n['_S']}[:, {start}:{stop}]")
                start = stop
            return lines + self._other_states()
        H = self.H
        if self._h_prefix():
            lines.append(f"{n['_S']} = {n['_X']}[{n['t']}]  # becomes this step's pre-activations")
            lines.append(f"{n['_S']}[:, 0:{P * H}] += {_times_transpose(prev, Wh)}")
            return lines + self._slices(n["_S"], x_slots) + self._other_states()
        if x_slots:
            lines.append(f"{n['_Xt']} = {n['_X']}[{n['t']}]")
        if h_slots:
            lines.append(f"{n['_Hp']} = {_times_transpose(prev, Wh)}")
        for k in range(P):
            cols = f"[:, {k * H}:{(k + 1) * H}]"
            lines.append(f"{x_slots[k].symbol} = {n['_Xt']}{cols} + {n['_Hp']}{cols}")
        lines += self._slices(n["_Xt"], x_slots[P:], P) + self._slices(n["_Hp"], h_slots[P:], P)
        return lines + self._other_states()

    def _other_states(self):
        lines = []
        for s, slots in self.h_slots.items():
            if s != self.cell.states[0]:
                names, prev = self.stack_names[s], self.state_names[s]["prev"]
                lines.append(f"{names['_Hp']} = {_times_transpose(prev, names['_Wh'])}")
                lines += self._slices(names["_Hp"], slots)
        return lines

    def _x_parts(self):
        return ([block for block, _ in self.blocks] if self._all_pairs()
                else [s.symbol for s in self.x_slots])

    def _dx_columns(self):
        """(adjoint variable or None, where it goes in _dX[t]) of each stacked input product."""
        n, grads = self.n, dict(self.schedule.grads)
        x_parts = self._x_parts()
        widths = [len(b) for _, b in self.blocks] if self._all_pairs() else [1] * len(x_parts)
        if len(x_parts) == 1:
            return [(grads.get(str(x_parts[0])), f"{n['_dX']}[{n['t']}]")]
        result, start = [], 0
        for part, w in zip(x_parts, widths):
            result.append((grads.get(str(part)), f"{n['_dXt']}[:, {start * self.H}:{(start + w) * self.H}]"))
            start += w
        return result

    @functools.cached_property
    def _stored(self):
        """(saved, parts): the forward values the backward step reads, kept for every
        step (lists, by step); the gates that are columns of a fused block are re-sliced
        from the stored block: {part: (block, start, stop)}."""
        constant = {self.V(p) for p in self.vector_params + self.loop_matrices}
        saved = [v for v in self.schedule.cache if v not in constant]
        nodes = {node.name: node for node in self.graph if node.op == "cols" and node.name in saved}
        for node in nodes.values():
            if node.operands[0] not in saved:
                saved.insert(saved.index(node.name), node.operands[0])
        parts = {name: (node.operands[0], node.attrs["fmt"]["a"], node.attrs["fmt"]["b"])
                 for name, node in nodes.items()}
        return [v for v in saved if v not in parts], parts

    @functools.cached_property
    def _hoisted(self):
        """(backward statements, factors): the step's partials that read only stored
        values, computed for every step before the loop (step_factors)."""
        saved, parts = self._stored
        keep = {g for _, g in self.schedule.grads if g}
        adjoint_of = {a: v for v, a in self.schedule.adjoints.items()}
        # values of parameters alone, (n,) at every step, would stack without the batch axis
        shapes = self._step_shapes()
        stored = {v for v in [*saved, *parts] if shapes.get(v) == ("B", "n")}
        return step_factors.hoist(self.schedule.backward, stored, keep, self.names, adjoint_of)

    @functools.cached_property
    def _direct(self):
        """(backward statements, adjoints written): stacked products' adjoints that one
        elementwise statement computes go straight into their columns of _dX[t]."""
        columns = {adjoint: dest for adjoint, dest in self._dx_columns() if adjoint}
        return planner.write_into(self._hoisted[0], columns)

    @property
    def direct_adjoints(self):
        return self._direct[1]

    def _zeros(self):
        n = self.n
        return f"np.zeros(({n['B']}, {self.H}), {n['dout']}.dtype)"

    def loop_bottom(self):
        """Backward-step statements after the cell's adjoints: projections' adjoints and carries."""
        n, grads = self.n, dict(self.schedule.grads)
        first = self.cell.states[0]
        lines = []
        adj = lambda name: grads.get(name) or self._zeros()  # noqa: E731
        x_parts = self._x_parts()
        direct = self.direct_adjoints
        if len(x_parts) > 1 and not direct:    # (else defined before the cell's statements)
            lines.append(f"{n['_dXt']} = {n['_dX']}[{n['t']}]")
        for adjoint, dest in self._dx_columns():
            if adjoint not in direct:
                lines.append(f"{dest} = {adjoint or self._zeros()}")
        step = n["_dXt"] if len(x_parts) > 1 else f"{n['_dX']}[{n['t']}]"
        carries = {s: grads.get(self.state_names[s]["prev"]) for s in self.cell.states}
        for s, slots in self.h_slots.items():
            names = self.stack_names[s]
            if s == first and self._h_prefix():      # the leading columns of _dX[t]
                width = self.pairs * self.H
                whole = width == len(self.x_slots) * self.H
                lines.append(f"{names['_dHp']} = {step}" + ("" if whole else f"[:, 0:{width}]"))
            else:
                lines.append(f"{names['_dHp']} = {_side_by_side([adj(sl.symbol) for sl in slots])}")
                lines.append(f"{names['_dHs']}.append({names['_dHp']})")
            term = f"{names['_dHp']} @ {names['_Wh']}"
            carries[s] = f"{carries[s]} + {term}" if carries[s] else term
        for s in self.cell.states:
            lines.append(f"{self.state_names[s]['carry']} = {carries[s] or self._zeros()}")
        for p in self.vector_params:
            g = grads.get(self.V(p))
            if g:
                size = self.cell.params[p][0]
                lines.append(f"{self.grad_vars[p]} += np.sum({g}.reshape(-1, {size}), axis=0)")
        for W in self.loop_matrices:
            g = grads.get(self.V(W))
            if g:
                lines.append(f"{self.grad_vars[W]} += {g}")
        if self.uses_x and grads.get(self.V("x")):
            lines.append(f"{n['_dx_direct']}[:, {n['t']}] = {grads[self.V('x')]}")
        return lines

    def after_loop(self):
        """Weight gradients of the stacked projections: one matmul each after the loop, then a
        named view per gate.  A weight in several slots gets the sum of its slices."""
        n, H = self.n, self.H
        first = self.cell.states[0]
        lines, parts = [], {p: [] for p in self.cell.params}

        def view(param, block, k, rows=True):
            name = self.names.fresh(f"d{self.V(param)}")
            cols = f"[{k * H}:{(k + 1) * H}]"
            lines.append(f"{name} = {block}{cols}")
            parts[param].append(name)

        if self.x_slots:
            width = len(self.x_slots) * H
            lines += [f"{n['_dX']} = {n['_dX']}.reshape({n['T']} * {n['B']}, {width})",
                      f"{n['_dWx']} = {n['_dX']}.T @ {n['xs']}.transpose(1, 0, 2).reshape("
                      f"{n['T']} * {n['B']}, -1)",
                      f"{n['_dbx']} = {n['_dX']}.sum(axis=0)",
                      f"{n['dxs']} = None",
                      f"if {n['need_dx']}:",
                      f"    {n['dxs']} = ({n['_dX']} @ {n['_Wx']}).reshape({n['T']}, {n['B']}, -1)"
                      f".transpose(1, 0, 2)"]
            for k, slot in enumerate(self.x_slots):
                view(slot.weight, n["_dWx"], k)
                if slot.bias:
                    view(slot.bias, n["_dbx"], k)
        else:
            lines.append(f"{n['dxs']} = np.zeros_like({n['xs']}) if {n['need_dx']} else None")
        if self.uses_x:
            lines.append(f"{n['dxs']} = {n['_dx_direct']} if {n['dxs']} is None "
                         f"else {n['dxs']} + {n['_dx_direct']}")
        for s, slots in self.h_slots.items():
            names = self.stack_names[s]
            saved = self.saved_vars[self.state_names[s]["prev"]]
            if s == first and self._h_prefix():      # _dX holds them, by time
                width = self.pairs * H
                cols = n["_dX"] if width == len(self.x_slots) * H else f"{n['_dX']}[:, 0:{width}]"
                lines.append(f"{saved} = {saved}[::-1] if {n['reverse']} else {saved}  # by time")
                lines.append(f"{names['_dWh']} = {cols}.T @ np.concatenate({saved})")
            else:
                lines.append(f"{names['_dWh']} = np.concatenate({names['_dHs']}[::-1]).T @ "
                             f"np.concatenate({saved})")
            for k, slot in enumerate(slots):
                view(slot.weight, names["_dWh"], k)
        for p in self.vector_params + self.loop_matrices:
            parts[p].append(self.grad_vars[p])
        grads = {}
        for p in self.cell.params:
            grads[p] = " + ".join(parts[p]) or f"np.zeros_like({self.V(p)})"
        return lines, grads

    def _backward_statements(self):
        statements, direct = self._direct
        n = self.n
        top = [f"{n['_dXt']} = {n['_dX']}[{n['t']}]"] if direct and len(self._dx_columns()) > 1 else []
        return top + [line for s in statements for line in layout.statement(s.text(), s.comment, 8)]

    def context(self, dtype):
        cell, sched, n = self.cell, self.schedule, self.n
        saved, parts = self._stored
        saved = list(saved)
        statements, factors = self._hoisted
        read = set().union(*(st.reads for st in statements))
        # the gates that are columns of a fused block, re-sliced from the stored block
        restore = [f"{name} = {block}[:, {start}:{stop}]"
                   for name, (block, start, stop) in parts.items() if name in read]
        read |= {parts[name][0] for name in parts if name in read}
        restored = [v for v in saved if v in read]     # what the backward loop reads
        for s in self.h_slots:
            prev = self.state_names[s]["prev"]
            if prev not in saved:
                saved.append(prev)         # for the weight gradients after the loop
        self.saved_vars = {v: self.names.fresh(f"saved_{v}") for v in saved}
        self.grad_vars = {p: self.names.fresh(f"grad_{self.V(p)}")
                          for p in self.vector_params + self.loop_matrices}
        loop_bottom = self.loop_bottom()
        after, param_grads = self.after_loop()
        backward = self._backward_statements()
        before_loop, factor_steps = step_factors.steps_lines(
            factors, {v: self.saved_vars[v] for v in saved}, parts, self.names)
        first = cell.states[0]
        states = [self.state_names[s] for s in cell.states]
        params = [self.V(p) for p in cell.params]
        forward_args = [n["xs"], n["mask"]] + [s["init"] for s in states] + params
        stacks = ([n["_Wx"]] if self.x_slots else []) + [self.stack_names[s]["_Wh"] for s in self.h_slots]
        # what the forward hands the backward, by name: its own local names
        keys = list(self.saved_vars.values()) + [n["full"], n["reverse"]] + stacks
        backward_args = [n["dout"], n["saved"], n["xs"], n["mask"]] + params
        results = [(n["xs"], n["dxs"]), (n["mask"], "None")]
        results += [(s["init"], s["carry"]) for s in states]
        results += [(self.V(p), param_grads[p]) for p in cell.params]
        forward = planner.plan(sched.forward, self.graph, {}, set(saved) | {s["value"] for s in states},
                             fresh=self._slot_names(), shapes=self._step_shapes())
        return {
            "fn": self.fn, "H": self.H, "n": n,
            "forward_signature": layout.wrap(
                f"def {self.fn}_forward({', '.join(forward_args)}, {n['reverse']}=False):", 0),
            "backward_signature": layout.wrap(
                f"def {self.fn}_backward({', '.join(backward_args)}, {n['need_dx']}=True):", 0),
            "states": states, "output": self.state_names[cell.output],
            "equations": _docstring_lines(cell.equations),
            "x_slots": [{"weight": self.V(sl.weight), "bias": sl.bias and self.V(sl.bias)}
                        for sl in self.x_slots],
            "h_stacks": [(self.stack_names[s]["_Wh"], [self.V(sl.weight) for sl in slots],
                          self.state_names[s]["prev"]) for s, slots in self.h_slots.items()],
            "uses_x": self.uses_x, "x": self.V("x"),
            "loop_top": [line for text in self.loop_top() for line in layout.statement(text, indent=8)],
            "forward": [line for s in forward for line in layout.statement(s.text(), s.comment, 8)],
            "saved": [(self.saved_vars[v], v) for v in saved],
            "restored": [(v, self.saved_vars[v]) for v in restored],
            "restore": restore,
            "before_loop": [line for text in before_loop for line in layout.statement(text, indent=4)],
            "factors": factor_steps,
            "keys": keys,
            "backward": backward,
            "loop_bottom": [line for text in loop_bottom for line in layout.statement(text, indent=8)],
            "after_loop": [line for text in after for line in layout.statement(text, indent=4)],
            "results": results,
            "grad_vars": [(self.grad_vars[p], self.V(p)) for p in self.vector_params + self.loop_matrices],
            "dHs": [self.stack_names[s]["_dHs"] for s in self.h_slots
                    if not (s == first and self._h_prefix())],
            # the numba target renders its compiled loop from the structured statements
            "scan": self, "forward_args": forward_args, "backward_args": backward_args,
        }


def _docstring_lines(equations):
    """The cell's equations as parsed (never the spec's raw text), wrapped."""
    lines = []
    for a in equations:
        lines += textwrap.wrap(f"{a.target} = {printed(a.expr)}", layout.WIDTH - 8,
                               break_long_words=False, subsequent_indent="    ")
    return lines


def _side_by_side(parts):
    """Code joining (B, n) arrays along their columns."""
    return f"np.concatenate([{', '.join(parts)}], axis=1)" if len(parts) > 1 else parts[0]


def _terms(expr):
    """The terms of a sum, through nested (unevaluated) sums."""
    if isinstance(expr, sp.Add):
        return [t for a in expr.args for t in _terms(a)]
    return [expr]


def _times_transpose(v, W):
    """Code for v @ W.T, each row of v (B, n) times a weight W (m, n), a step's product.

    Written (W @ v.T).T: OpenBLAS multiplies a few rows by the transpose of a row-major
    weight up to twice as slowly as it multiplies the weight, as stored, by the rows'
    transpose (1024x256 weight, 1 row: the same; 4 rows: 151 vs 67 us; 16: 212 vs 121;
    64: 463 vs 395), and a recurrent layer does this once per step.  The result is
    a transposed view, which the elementwise code reads as it is."""
    return f"({W} @ {v}.T).T"


# in-loop product with a computed vector; its weight gradient is accumulated per step
MATVEC = TensorOp("matvec", _times_transpose("{0}", "{1}"), ("{g} @ {1}", "{g}.T @ {0}"))
# columns [a, b) of a fused gate block; the block's adjoint is the concatenation of its parts'
COLS = TensorOp("cols", "{0}[:, {a}:{b}]", ("{g}",), part_of=True)
