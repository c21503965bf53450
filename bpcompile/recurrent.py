"""Recurrent layers: a cell written as equations, compiled into a loop over time.

A recurrence is one construct, a scan: the cell's equations (parsed by the
same safe parser, with `W @ v` for matrix-vector products) become a small
graph for one time step, the generic scheduler gives its forward and adjoint
statements, and this module wraps them in a forward loop over t (storing
what the backward needs) and a reversed loop that carries the state
adjoints (backpropagation through time).

Two rewrites make the loop fast without knowing the cell:
- every product `W @ x` with the layer input is taken out of the loop: the
  weights of all of them are stacked side by side and one matmul computes
  them for every time step at once (with the biases added to them);
- the products with a previous state (`W_hi @ h_prev`, `W_hf @ h_prev`, ...)
  are stacked so one matmul per step serves all gates.
Their weight gradients are one matmul each after the backward loop: the
per-step adjoints of the stacked products go into one time-major buffer.
Masking: a padded step keeps the previous state, `h_next = where(m, h, h_prev)`;
the step graph itself ends at the new states, and the template adds the
masking only at steps whose mask column has a 0 (sorted batches pad only
their last steps, so most steps run the plain cell).
"""

import functools
from dataclasses import dataclass, field, replace

import sympy as sp

from .autodiff import forward_expr, schedule
from .errors import SpecError
from .frontend import _Lowering
from .ir import Graph, Node
from .naming import Namer
from .parser import Assignment, parse_program, symbol
from .primitives import PRIMITIVES
from .tensor_ops import TensorOp


class matvec(sp.Function):
    """W @ v in a cell equation: a matrix times each example's vector."""

    nargs = 2


def _matmul(W, v):
    return matvec(W, v, evaluate=False)


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


def parse_cell(text, states, hidden, input_size, output=None):
    """Cell equation text -> Cell; SpecError (positions within `text`) when bad."""
    assignments = parse_program(text, matmul=_matmul)
    targets = [a.target for a in assignments]
    for s in states:
        if s not in targets:
            raise SpecError(f"state {s!r} is not assigned by the equations")
    defined = {"x"} | {f"{s}_prev" for s in states}
    params = {}
    matrices, vectors = {}, set()
    for a in assignments:
        if a.target in defined or a.target in ("x", "m"):
            raise SpecError(f"{a.target!r} cannot be assigned in a cell", line=a.line, col=a.col)
        for W, v in _products(a.expr):
            if not isinstance(W, sp.Symbol) or W.name in defined or W.name in targets:
                raise SpecError(f"the left side of @ must be a parameter, got {W}", line=a.line, col=a.col)
            matrices[W.name] = input_size if v == symbol("x") else hidden
        for name in a.names:
            if name not in defined and name not in targets:
                params.setdefault(name, None)
                if name not in matrices:
                    vectors.add(name)
            elif name in targets and name not in defined:
                line, col = a.name_cols[name]
                raise SpecError(f"{name!r} is used before it is assigned", line=line, col=col)
        defined.add(a.target)
    for name in params:
        if name in matrices and name in vectors and _used_elementwise(assignments, name):
            raise SpecError(f"parameter {name!r} is used both as a matrix (@) and elementwise")
        params[name] = (hidden, matrices[name]) if name in matrices else (hidden,)
    output = output or states[0]
    if output not in states:
        raise SpecError(f"output {output!r} is not a state")
    return Cell(assignments, list(states), output, hidden, input_size, params)


def _products(expr):
    return [(e.args[0], e.args[1]) for e in sp.preorder_traversal(expr) if isinstance(e, matvec)]


def _used_elementwise(assignments, name):
    s = symbol(name)
    for a in assignments:
        stripped = a.expr.replace(lambda e: isinstance(e, matvec), lambda e: sp.Integer(0))
        if s in stripped.free_symbols:
            return True
    return False


# --- from cell to loop ------------------------------------------------------------------------

@dataclass
class Slot:
    """One stacked projection: rows [start, start+H) of a stacked weight."""

    weight: str
    bias: str = None
    symbol: str = ""


class ScanCompiler:
    """Compiles one direction of one recurrent layer into forward/backward functions."""

    def __init__(self, cell, fn, reverse=False):
        self.cell, self.fn, self.reverse = cell, fn, reverse
        self.H = cell.hidden
        self.namer = Namer(["x", "m", "xs", "mask", "t", "k", "B", "T"] + list(cell.params)
                           + [a.target for a in cell.equations]
                           + [f"{s}_prev" for s in cell.states] + [f"{s}_next" for s in cell.states])
        self.x_slots, self.h_slots, self.pairs = [], {}, 0
        self.uses_x = False
        self.graph = Graph(fn)
        self._build()

    # -- rewriting the projections into slots ------------------------------------------------
    def _rewrite(self, expr, target):
        """Replace W @ x and W @ s_prev by slot symbols; pair and fold inside sums."""
        if isinstance(expr, sp.Add):
            args = [self._rewrite(a, target) if not isinstance(a, matvec) else a for a in _terms(expr)]
            xs = [a for a in args if isinstance(a, matvec) and a.args[1] == symbol("x")]
            hs = [a for a in args if isinstance(a, matvec) and a.args[1] == symbol(f"{self.cell.states[0]}_prev")]
            rest = [a for a in args if not any(a is b for b in xs + hs)]
            new = []
            if len(xs) == 1:
                bias = next((r for r in rest if isinstance(r, sp.Symbol) and r.name in self.cell.params
                             and len(self.cell.params[r.name]) == 1), None)
                if bias is not None:
                    rest = [r for r in rest if r is not bias]
                if len(hs) == 1:
                    name = self.namer.fresh(f"z_{target}")
                    self.x_slots.insert(self.pairs, Slot(xs[0].args[0].name, bias and bias.name, name))
                    self.h_slots.setdefault(self.cell.states[0], []).insert(
                        self.pairs, Slot(hs[0].args[0].name, None, name))
                    self.pairs += 1
                    new.append(symbol(name))
                    hs = []
                else:
                    name = self.namer.fresh(f"zx_{target}")
                    self.x_slots.append(Slot(xs[0].args[0].name, bias and bias.name, name))
                    new.append(symbol(name))
                xs = []
            rest = [self._slot(a, target) for a in xs + hs] + rest
            args = new + rest
            return args[0] if len(args) == 1 else sp.Add(*args, evaluate=False)
        if isinstance(expr, matvec):
            return self._slot(expr, target)
        if not expr.args or expr.is_Number or expr.is_Symbol:
            return expr
        return expr.func(*[self._rewrite(a, target) for a in expr.args], evaluate=False)

    def _slot(self, product, target):
        W, v = product.args
        if v == symbol("x"):
            name = self.namer.fresh(f"zx_{target}")
            self.x_slots.append(Slot(W.name, None, name))
            return symbol(name)
        for s in self.cell.states:
            if v == symbol(f"{s}_prev"):
                name = self.namer.fresh(f"zh_{target}")
                self.h_slots.setdefault(s, []).append(Slot(W.name, None, name))
                return symbol(name)
        return product          # a product with a computed vector: stays in the loop

    # -- the step graph --------------------------------------------------------------------------
    def _build(self):
        g = self.graph
        cell = self.cell
        rewritten = [(a, self._rewrite(a.expr, a.target)) for a in cell.equations]
        self.blocks = [(s.symbol, [s]) for s in self.x_slots]     # slices of the stacked products
        fused = self._fuse(rewritten) if self._all_pairs() else []
        self.step_inputs = [f"{s}_prev" for s in cell.states]
        slot_names = [b for b, _ in self.blocks] if self._all_pairs() else \
            [s.symbol for s in self.x_slots] + [s.symbol for slots in self.h_slots.values() for s in slots]
        used = set()
        for _, expr in rewritten:
            if expr is not None:
                used |= {s.name for s in expr.free_symbols}
        self.uses_x = "x" in used
        self.vector_params = [p for p in cell.params if p in used and len(cell.params[p]) == 1]
        self.loop_matrices = sorted({W.name for _, e in rewritten if e is not None
                                     for W, _ in _products(e)})
        for name in dict.fromkeys(slot_names + self.step_inputs + (["x"] if self.uses_x else [])
                                  + self.vector_params + self.loop_matrices):
            g.add(Node(name, "input"))
        lowering = _Lowering(g, self.namer)
        for block, act, name, parts in fused:
            lowering.assignment(Assignment(name, act(symbol(block), evaluate=False), 0, 1, [], {}))
            width = len(parts) * self.H
            for k, part in enumerate(parts):
                self.namer.claim(part)
                g.add(Node(part, "cols", (name,), attrs={"rule": COLS, "fmt": {
                    "a": str(k * self.H), "b": str((k + 1) * self.H), "width": str(width)}}))
        for a, expr in rewritten:
            if expr is None:             # computed by a fused block
                continue
            expr = self._lower_products(expr, lowering, a)
            self.namer.claim(a.target)
            lowering.assignment(Assignment(a.target, expr, a.line, a.col, [], {}))
        # The step graph ends at the new states: masking (a padded step keeps the
        # previous state) is added around it by the template, and only at steps
        # that have padding.
        g.output = "J"
        g.wrt = [n for n in slot_names + [f"{s}_prev" for s in cell.states] + self.vector_params
                 + self.loop_matrices + (["x"] if self.uses_x else []) if n in g.nodes]
        self.schedule = schedule(g, seeds={s: f"dJ_d{s}" for s in cell.states})

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
        from .primitives import sigmoid
        symbols = {s.symbol: s for s in self.x_slots}
        uses = {}
        for _, expr in rewritten:
            for sym in expr.free_symbols:
                uses[sym.name] = uses.get(sym.name, 0) + 1
        groups = {}
        for i, (a, expr) in enumerate(rewritten):
            if type(expr) in (sigmoid, sp.tanh) and expr.args[0].is_Symbol:
                slot = expr.args[0].name
                if slot in symbols and uses[slot] == 1:
                    groups.setdefault(type(expr), []).append((i, a.target, slot))
        fused, order = [], []
        for act, members in groups.items():
            if len(members) < 2:
                continue
            names = [target for _, target, _ in members]
            block = self.namer.fresh("z_" + "_".join(names))
            name = self.namer.fresh(f"{act.__name__}_" + "_".join(names))
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

    def _lower_products(self, expr, lowering, a):
        """Products with computed vectors become `matvec` nodes of the step graph."""
        for product in [e for e in sp.postorder_traversal(expr) if isinstance(e, matvec)]:
            W, v = product.args
            if not isinstance(v, sp.Symbol):
                v_name = self.namer.fresh(f"{W.name}_in")
                lowering.assignment(Assignment(v_name, v, a.line, a.col, [], {}))
                v = symbol(v_name)
            name = self.namer.fresh(f"{W.name}_{v.name}")
            self.graph.add(Node(name, "matvec", (v.name, W.name), attrs={"rule": MATVEC}))
            expr = expr.xreplace({product: symbol(name)})
        return expr

    # -- what the template needs ---------------------------------------------------------------
    def _slices(self, buffer, slots, offset=0):
        H = self.H
        return [f"{slot.symbol} = {buffer}[:, {(offset + k) * H}:{(offset + k + 1) * H}]"
                for k, slot in enumerate(slots)]

    def stacks(self):
        """Cell parameters the scan uses side by side, each group in slot order: the input
        weights, their biases (when every slot has one), the weights of each state."""
        groups = []
        if len(self.x_slots) > 1:
            groups.append([sl.weight for sl in self.x_slots])
            if all(sl.bias for sl in self.x_slots):
                groups.append([sl.bias for sl in self.x_slots])
        groups += [[sl.weight for sl in slots] for slots in self.h_slots.values() if len(slots) > 1]
        return groups

    def _slot_names(self):
        """Names loop_top defines: columns of this step's own pre-activation buffers."""
        names = {str(block) for block, _ in self.blocks} | {str(sl.symbol) for sl in self.x_slots}
        return names | {str(sl.symbol) for slots in self.h_slots.values() for sl in slots}

    def loop_top(self):
        """Statements at the top of a forward step: the per-step projections as slots."""
        first = self.cell.states[0]
        x_slots, h_slots, P = self.x_slots, self.h_slots.get(first, []), self.pairs
        lines = []
        if self._all_pairs():
            lines.append("_S = _X[t]                      # becomes this step's pre-activations")
            lines.append(f"_S += {first}_prev @ _Wh.T")
            start = 0
            for block, slots in self.blocks:
                stop = start + len(slots) * self.H
                lines.append(f"{block} = _S[:, {start}:{stop}]")
                start = stop
            return lines
        H = self.H
        if self._h_prefix():
            lines.append("_S = _X[t]                      # becomes this step's pre-activations")
            lines.append(f"_S[:, 0:{P * H}] += {first}_prev @ _Wh.T")
            lines += self._slices("_S", x_slots)
            for s, slots in self.h_slots.items():
                if s != first:
                    lines.append(f"_Hp_{s} = {s}_prev @ _Wh_{s}.T")
                    lines += self._slices(f"_Hp_{s}", slots)
            return lines
        if x_slots:
            lines.append("_Xt = _X[t]")
        if h_slots:
            lines.append(f"_Hp = {first}_prev @ _Wh.T")
        for k in range(P):
            lines.append(f"{x_slots[k].symbol} = _Xt[:, {k * H}:{(k + 1) * H}] + _Hp[:, {k * H}:{(k + 1) * H}]")
        lines += self._slices("_Xt", x_slots[P:], P) + self._slices("_Hp", h_slots[P:], P)
        for s, slots in self.h_slots.items():
            if s != first:
                lines.append(f"_Hp_{s} = {s}_prev @ _Wh_{s}.T")
                lines += self._slices(f"_Hp_{s}", slots)
        return lines

    def _dx_columns(self):
        """(adjoint variable or None, where it goes in _dX[t]) of each stacked input product."""
        grads = dict(self.schedule.grads)
        x_parts = ([block for block, _ in self.blocks] if self._all_pairs()
                   else [s.symbol for s in self.x_slots])
        widths = [len(b) for _, b in self.blocks] if self._all_pairs() else [1] * len(x_parts)
        if len(x_parts) == 1:
            return [(grads.get(str(x_parts[0])), "_dX[t]")]
        result, start = [], 0
        for part, w in zip(x_parts, widths):
            result.append((grads.get(str(part)), f"_dXt[:, {start * self.H}:{(start + w) * self.H}]"))
            start += w
        return result

    @functools.cached_property
    def direct_adjoints(self):
        """{adjoint: code} for stacked products' adjoints that one elementwise statement
        computes: it writes them straight into their columns of _dX[t] (no copy after)."""
        from . import reuse
        targets = [s.target for s in self.schedule.backward]
        direct = {}
        for adjoint, dest in self._dx_columns():
            found = [s for s in self.schedule.backward if s.target == adjoint]
            if adjoint and targets.count(adjoint) == 1 and found[0].term is not None:
                code = reuse.with_out(found[0].term, dest)
                if code:
                    direct[adjoint] = code
        return direct

    def loop_bottom(self):
        """Backward-step statements after the cell's adjoints: projections' adjoints and carries."""
        grads = dict(self.schedule.grads)
        first = self.cell.states[0]
        lines = []
        zeros = "np.zeros((B, {H}), dout.dtype)".format(H=self.H)
        adj = lambda name: grads.get(name) or zeros  # noqa: E731
        x_parts = ([block for block, _ in self.blocks] if self._all_pairs()
                   else [s.symbol for s in self.x_slots])
        direct = self.direct_adjoints
        if len(x_parts) > 1 and not direct:    # (else defined before the cell's statements)
            lines.append("_dXt = _dX[t]")
        for adjoint, dest in self._dx_columns():
            if adjoint not in direct:
                lines.append(f"{dest} = {adjoint or zeros}")
        step = "_dXt" if len(x_parts) > 1 else "_dX[t]"
        carries = {s: grads.get(f"{s}_prev") for s in self.cell.states}
        for s, slots in self.h_slots.items():
            suffix = "" if s == first else f"_{s}"
            if s == first and self._h_prefix():      # the leading columns of _dX[t]
                width = self.pairs * self.H
                full = width == len(self.x_slots) * self.H
                lines.append(f"_dHp = {step}" + ("" if full else f"[:, 0:{width}]"))
            else:
                lines.append(f"_dHp{suffix} = {_side_by_side([adj(sl.symbol) for sl in slots])}")
                lines.append(f"_dHs{suffix}.append(_dHp{suffix})")
            term = f"_dHp{suffix} @ _Wh{suffix}"
            carries[s] = f"{carries[s]} + {term}" if carries[s] else term
        for s in self.cell.states:
            lines.append(f"carry_{s} = {carries[s] or zeros}")
        for p in self.vector_params:
            if grads.get(p):
                lines.append(f"grad_{p} += np.sum({grads[p]}.reshape(-1, {self.H}), axis=0)")
        for W in self.loop_matrices:
            if grads.get(W):
                lines.append(f"grad_{W} += {grads[W]}")
        if self.uses_x and grads.get("x"):
            lines.append(f"_dx_direct[:, t] = {grads['x']}")
        return lines

    def after_loop(self):
        """Weight gradients of the stacked projections: one matmul each, after the loop."""
        first = self.cell.states[0]
        H, lines, names = self.H, [], {}
        if self.x_slots:
            n = len(self.x_slots) * H
            lines += [f"_dX = _dX.reshape(T * B, {n})",
                      "_dWx = _dX.T @ xs.transpose(1, 0, 2).reshape(T * B, -1)",
                      "_dbx = _dX.sum(axis=0)",
                      "dxs = (_dX @ _Wx).reshape(T, B, -1).transpose(1, 0, 2) if need_dx else None"]
            for k, slot in enumerate(self.x_slots):
                names[slot.weight] = f"_dWx[{k * H}:{(k + 1) * H}]"
                if slot.bias:
                    names[slot.bias] = f"_dbx[{k * H}:{(k + 1) * H}]"
        else:
            lines.append("dxs = np.zeros_like(xs) if need_dx else None")
        if self.uses_x:
            lines.append("dxs = _dx_direct if dxs is None else dxs + _dx_direct")
        for s, slots in self.h_slots.items():
            suffix = "" if s == first else f"_{s}"
            if s == first and self._h_prefix():      # _dX holds them, by time
                order = "[::-1]" if self.reverse else ""
                width = self.pairs * H
                cols = "_dX" if width == len(self.x_slots) * H else f"_dX[:, 0:{width}]"
                lines.append(f"_dWh = {cols}.T @ np.concatenate(saved_{s}_prev{order})")
            else:
                lines.append(f"_dWh{suffix} = np.concatenate(_dHs{suffix}[::-1]).T @ "
                             f"np.concatenate(saved_{s}_prev)")
            for k, slot in enumerate(slots):
                names[slot.weight] = f"_dWh{suffix}[{k * H}:{(k + 1) * H}]"
        for p in self.vector_params + self.loop_matrices:
            names.setdefault(p, f"grad_{p}")
        for p in self.cell.params:
            names.setdefault(p, f"np.zeros_like({p})")
        return lines, [names[p] for p in self.cell.params]

    def _backward_lines(self):
        from .codegen import aligned
        direct = self.direct_adjoints
        statements = [replace(s, code=direct.get(s.target, s.code)) for s in self.schedule.backward]
        top = ["_dXt = _dX[t]"] if direct and len(self._dx_columns()) > 1 else []
        return top + aligned(statements)

    def context(self, dtype):
        cell, sched = self.cell, self.schedule
        constant = set(self.vector_params + self.loop_matrices)
        saved = [n for n in sched.cache if n not in constant]
        # a gate that is columns of a fused block is re-sliced from the stored block
        parts = {n.name: n for n in self.graph if n.op == "cols" and n.name in saved}
        for node in parts.values():
            if node.operands[0] not in saved:
                saved.insert(saved.index(node.name), node.operands[0])
        saved = [n for n in saved if n not in parts]
        restore = [f"{name} = {node.operands[0]}[:, {node.attrs['fmt']['a']}:{node.attrs['fmt']['b']}]"
                   for name, node in parts.items()]
        restored = list(saved)             # what the backward loop reads
        for s in self.h_slots:
            if f"{s}_prev" not in saved:
                saved.append(f"{s}_prev")  # for the weight gradients after the loop
        after, param_grads = self.after_loop()
        first = cell.states[0]
        return {
            "fn": self.fn, "H": self.H, "reverse": self.reverse,
            "states": cell.states, "output": cell.output, "first": first,
            "equations": [f"{a.target} = {_text(a.expr)}" for a in cell.equations],
            "params": list(cell.params),
            "x_slots": self.x_slots, "h_slots": self.h_slots,
            "uses_x": self.uses_x,
            "loop_top": self.loop_top(),
            "forward": in_place_forward(sched.forward, set(saved) | set(cell.states), self._slot_names()),
            "saved": saved,
            "restored": restored,
            "restore": restore,
            "backward": self._backward_lines(),
            "loop_bottom": self.loop_bottom(),
            "after_loop": after,
            "param_grads": param_grads,
            "vector_params": self.vector_params,
            "loop_matrices": self.loop_matrices,
            "h_in_list": [s for s in self.h_slots if not (s == first and self._h_prefix())],
        }


def in_place_forward(statements, kept, slots):
    """A step's forward statements, where an elementwise node writes its value into
    an operand that nothing reads afterwards (no later statement, not saved for the
    backward pass, not a state): one fresh array fewer per such node and step.

    An operand qualifies if this step made it as a fresh array (an elementwise value,
    or a slot of the step's pre-activations, which are not read again): never a
    previous state, the input, a parameter, an alias or a view of a stored block."""
    from . import reuse
    made = {s.node.name for s in statements if s.node is not None and s.node.op in PRIMITIVES
            and s.node.op not in ("identity", "select")} | slots
    later = set()
    lines = []
    for s in reversed(statements):
        node = s.node
        code = None
        if node is not None and node.op in PRIMITIVES and node.op not in ("identity", "select"):
            donor = next((o for o in node.operands if isinstance(o, str) and o in made
                          and o not in kept and o not in later), None)
            code = reuse.with_out(forward_expr(node), donor) if donor else None
        lines.append(f"{s.target} = {code}  # in {donor}'s memory: nothing reads it again" if code
                     else f"{s.target} = {s.code}")
        if node is not None:
            later |= {o for o in node.operands if isinstance(o, str)}
    return lines[::-1]


def _side_by_side(parts):
    """Code joining (B, n) arrays along their columns."""
    return f"np.concatenate([{', '.join(parts)}], axis=1)" if len(parts) > 1 else parts[0]


def _terms(expr):
    """The terms of a sum, through nested (unevaluated) sums."""
    if isinstance(expr, sp.Add):
        return [t for a in expr.args for t in _terms(a)]
    return [expr]


def _text(expr):
    from .printer import to_numpy
    return to_numpy(expr.replace(lambda e: isinstance(e, matvec),
                                 lambda e: sp.Symbol(f"{e.args[0]} @ {e.args[1]}")))


# in-loop product with a computed vector; its weight gradient is accumulated per step
MATVEC = TensorOp("matvec", "{0} @ {1}.T", ("{g} @ {1}", "{g}.T @ {0}"))
# columns [a, b) of a fused gate block; the block's adjoint is the concatenation of its parts'
COLS = TensorOp("cols", "{0}[:, {a}:{b}]", ("{g}",), part_of=True)
