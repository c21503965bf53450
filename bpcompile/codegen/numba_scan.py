"""The numba target's recurrent layers: a cell's loop over time as one compiled call.

render_scan(context) takes the context that the NumPy target renders through
templates/scan.py.j2 (frontends/recurrent.ScanCompiler.context) and returns the
functions' source for the numba target, or None where the NumPy loop is used.

`<fn>_forward` and `<fn>_backward` keep the NumPy target's signatures and results;
their work before and after the loop (the stacked products with the input, the
weight gradients) is the NumPy target's code, and the loop over time is one call
of a `numba.njit` kernel.  A step of the kernel runs the products with the
previous states as one `np.dot` (BLAS), then the cell's statements on scalars, in
loops over the batch rows b and the units j.  The statements come from the scan's
schedule (Statement.term printed by printer.to_scalar); what one phase of the loop
hands to a later one (a product with a computed vector, `W @ (r * h_prev)`, needs
all units first) goes through a (B, H) array.  What the backward reads is saved
in (T, B, H) arrays, by step.

Where a cell has what this does not compile (a value of the input's size, a vector
parameter of another size than the hidden one, a rule without a scalar form),
render_scan returns None and the layer keeps the NumPy loop.
"""

from dataclasses import dataclass, field

import sympy as sp

from . import layout
from ..core.parser import symbol
from ..core.printer import to_scalar

LOOP_INDENT = 16        # kernel statements inside `for k`, `for b`, `for j`
# The kernel's step costs about the same per element (rows x units) at any size, NumPy's
# per call: from this many elements per step on, the NumPy loop is faster (workload D,
# lstm 256 in float32: the kernel wins at 1 row, the NumPy loop from 2 rows on; a
# cell of 64 units: the kernel up to 7 rows).
NUMPY_LOOP_ELEMENTS = 512
STEP_INDENT = 8         # kernel statements inside `for k` only


class Unsupported(Exception):
    """A cell this renderer does not compile: the layer keeps the NumPy loop."""


@dataclass
class Item:
    """One piece of a step: scalar statements run for every (b, j), or step-level code
    on whole (B, .) arrays (`lines(arrays)` gets each name's array)."""

    scalar: bool
    defines: list
    reads: list
    lines: object             # scalar: list of lines; step-level: arrays -> list of lines


@dataclass
class Phase:
    scalar: bool
    items: list = field(default_factory=list)


def render_scan(context):
    """The numba functions of one recurrent layer, or None (the NumPy loop)."""
    try:
        kernels = ScanKernels(context)
        values = kernels.template_values()
    except Unsupported:
        return None
    from .render import render        # (render imports this module)
    numpy_loop = render("scan.py.j2", **{**context, **kernels.numpy_loop_signatures()})
    return numpy_loop + "\n\n" + render("scan_numba.py.j2", **context, **values)


def _scalar(target, expr, comment=""):
    """`target = expr` on scalars (a zero is a float, so its variable keeps one type)."""
    text = "0.0" if expr == 0 else to_scalar(expr)
    return layout.statement(f"{target} = {text}", comment, LOOP_INDENT)


class ScanKernels:
    """The forward and backward kernels of one scan, from its schedule."""

    def __init__(self, context):
        self.c = context
        self.scan = scan = context["scan"]
        self.names, self.n, self.H = scan.names, scan.n, scan.H
        self._check_sizes()
        self.b, self.j = self.names.fresh("b"), self.names.fresh("j")
        self.sched = scan.schedule
        self.nodes = {node.name: node for node in scan.graph}
        self.params = {scan.V(p) for p in scan.cell.params}
        self.vectors = {scan.V(p) for p in scan.vector_params}
        self._find_fused_blocks()
        self._find_slots()
        # a vector parameter's scalar at unit j has its name; the kernel's array another
        self.vector_arrays = {v: self.names.fresh(f"{v}_units") for v in sorted(self.vectors)}
        self.kernel_names = {d: self.names.fresh(f"_{scan.fn}_{d}_steps") for d in ("forward", "backward")}
        self.numpy_names = {d: self.names.fresh(f"_{scan.fn}_{d}_numpy") for d in ("forward", "backward")}
        self.rows_limit = self.names.fresh(f"_{scan.fn.upper()}_NUMPY_LOOP_ROWS")

    # -- what the cell is made of ----------------------------------------------------------
    def _check_sizes(self):
        cell = self.scan.cell
        if self.scan.uses_x and cell.input_size != cell.hidden:
            raise Unsupported("values of the input's size")
        for p in self.scan.vector_params:
            if cell.params[p] != (cell.hidden,):
                raise Unsupported("a vector parameter of another size")

    def _find_fused_blocks(self):
        """Fused gate blocks (sigmoid over i, f, o side by side): each part is computed
        on its own, from its own columns, so the block never exists as a whole."""
        self.fused = {}          # fused activation node -> block symbol
        self.part_slot = {}      # part name -> the slot symbol of its pre-activation
        slots_of = {str(block): slots for block, slots in self.scan.blocks}
        for node in self.scan.graph:
            if node.op == "cols":
                act = self.nodes[node.operands[0]]
                block = act.operands[0]
                self.fused[act.name] = block
                k = int(node.attrs["fmt"]["a"]) // self.H
                self.part_slot[node.name] = str(slots_of[block][k].symbol)
        self.parts_of = {f: [p for p, node in self.nodes.items() if node.op == "cols"
                             and node.operands[0] == f] for f in self.fused}

    def _find_slots(self):
        """Each slot's columns: in the stacked input products (_X), in a state's products."""
        scan = self.scan
        self.slot_terms = {}
        for k, sl in enumerate(scan.x_slots):
            self.slot_terms.setdefault(str(sl.symbol), []).append(("x", k))
        for s, slots in scan.h_slots.items():
            for k, sl in enumerate(slots):
                self.slot_terms.setdefault(str(sl.symbol), []).append((s, k))

    def _column(self, k):
        return f"{k * self.H} + {self.j}" if k else self.j

    # -- the forward kernel ----------------------------------------------------------------
    def forward_items(self):
        scan, n, b, j = self.scan, self.n, self.b, self.j
        items = [self._slot_loads(self._forward_statements_reads())]
        for st in self.sched.forward:
            node = st.node
            if node.name in self.fused:
                continue
            if node.op == "cols":
                act = next(s for s in self.sched.forward if s.node.name == node.operands[0])
                z = symbol(self.part_slot[node.name])
                expr = act.term.xreplace({symbol(self.fused[act.node.name]): z})
                items.append(Item(True, [node.name], _free(expr), _scalar(node.name, expr)))
            elif node.op == "matvec":
                items.append(self._matvec_forward(node))
            elif st.term is not None:
                items.append(Item(True, [st.targets[0]], _free(st.term), _scalar(st.targets[0], st.term)))
            else:
                raise Unsupported(f"no scalar form for {st.text()}")
        lines = ["# a padded sequence keeps its state"]
        reads = []
        for s in scan.cell.states:
            names = scan.state_names[s]
            rows = self.state_rows[s]
            lines.append(f"{rows['next']}[{b}, {j}] = {names['value']} if {n['mask']}[{b}, {n['t']}] "
                         f"!= 0 else {names['prev']}")
            reads += [names["value"], names["prev"]]
        out = self.state_rows[scan.cell.output]["next"]
        lines.append(f"{n['out']}[{b}, {n['t']}, {j}] = {out}[{b}, {j}]")
        items.append(Item(True, [], reads, lines))
        return items

    def _forward_statements_reads(self):
        reads = set()
        for st in self.sched.forward:
            if st.node.op == "cols":
                reads.add(self.part_slot[st.node.name])
            elif st.term is not None:
                reads |= set(_free(st.term))
            else:
                reads |= set(st.reads)
        return reads

    def _slot_loads(self, wanted):
        """This step's pre-activations: the input's products plus the states' products."""
        n, b, t = self.n, self.b, self.n["t"]
        lines, defines = [], []
        for slot, terms in self.slot_terms.items():
            if slot not in wanted:
                continue
            parts = [f"{n['_X']}[{t}, {b}, {self._column(k)}]" if where == "x" else
                     f"{self.scan.stack_names[where]['_Hp']}[{self._column(k)}, {b}]"
                     for where, k in terms]
            lines.append(f"{slot} = {' + '.join(parts)}")
            defines.append(slot)
        return Item(True, defines, [], lines)

    def _matvec_forward(self, node):
        v, W = node.operands
        return Item(False, [node.name], [v],
                    lambda arrays: layout.statement(f"{arrays[node.name]}[:, :] = np.dot({arrays[v]}, {W}.T)",
                                                    f"{node.name} = {W} @ {v}, every row", STEP_INDENT))

    # -- the backward kernel ---------------------------------------------------------------
    def backward_items(self):
        items = [self._seeds()]
        adjoints = self.sched.adjoints
        fused_adjoints = {adjoints.get(f) for f in self.fused}
        self.slot_adjoints = {s: a for s, a in self.sched.grads if s in self.slot_terms}
        for st in self.sched.backward:
            node = st.node
            if node is None and st.targets[0] in fused_adjoints and not st.accumulate:
                continue                              # the parts' adjoints side by side: not needed
            if node is not None and node.name in self.fused:
                items += self._fused_backward(st)
            elif node is not None and node.op == "matvec":
                items.append(self._matvec_backward(st))
            elif st.term is not None:
                expr = sp.Add(symbol(st.targets[0]), st.term, evaluate=False) if st.accumulate else st.term
                items.append(Item(True, [st.targets[0]], _free(expr),
                                  _scalar(st.targets[0], expr, st.comment)))
            else:
                raise Unsupported(f"no scalar form for {st.text()}")
        items.append(self._adjoint_stores())
        items.append(Item(False, [], [], self._carry_products))
        items.append(self._carry_finish())
        return items

    def _seeds(self):
        scan, n, b, j, t = self.scan, self.n, self.b, self.j, self.n["t"]
        lines, defines = [], []
        for s in scan.cell.states:
            names = scan.state_names[s]
            dout = f"{n['dout']}[{b}, {t}, {j}] + " if s == scan.cell.output else ""
            lines.append(f"{names['seed']} = {dout}{names['carry']}[{b}, {j}]")
            lines.append(f"{names['keep']} = 0.0")
            defines += [names["seed"], names["keep"]]
        lines += [f"if not {n['full']}[{t}]:  # a padded sequence passes its adjoint to the previous state",
                  f"    {n['m']} = {n['mask']}[{b}, {t}]"]
        for s in scan.cell.states:
            names = scan.state_names[s]
            lines += [f"    {names['keep']} = {names['seed']}*(1 - {n['m']})",
                      f"    {names['seed']} = {names['seed']}*{n['m']}"]
        return Item(True, defines, [], lines)

    def _fused_backward(self, st):
        """dJ/dz of each part of a fused block, from the part's own adjoint and value."""
        if st.accumulate or st.term is None:
            raise Unsupported("a fused block's adjoint accumulates")
        f = st.node.name
        adjoint_of_block = symbol(self.sched.adjoints[f])
        items = []
        for part in self.parts_of[f]:
            slot = self.part_slot[part]
            part_adjoint = self.sched.adjoints.get(part)
            if part_adjoint is None:
                raise Unsupported("a part of a fused block without an adjoint")
            expr = st.term.xreplace({adjoint_of_block: symbol(part_adjoint), symbol(f): symbol(part),
                                     symbol(self.fused[f]): symbol(slot)})
            target = self.names.adjoint(self.sched.output, slot)
            self.slot_adjoints[slot] = target
            comment = f"dJ/d{slot} += dJ/d{part} * d{part}/d{slot}"
            items.append(Item(True, [target], _free(expr), _scalar(target, expr, comment)))
        return items

    def _matvec_backward(self, st):
        node = st.node
        v, W = node.operands
        g = self.sched.adjoints[node.name]
        target = st.targets[0]
        if st.operand == W:
            grad = self.grad_of[W]
            return Item(False, [], [g, v],
                        lambda arrays: layout.statement(f"{grad} += np.dot({arrays[g]}.T, {arrays[v]})",
                                                        st.comment, STEP_INDENT))
        op = "+=" if st.accumulate else "="
        return Item(False, [target], [g] + ([target] if st.accumulate else []),
                    lambda arrays: layout.statement(f"{arrays[target]}[:, :] {op} np.dot({arrays[g]}, {W})",
                                                    st.comment, STEP_INDENT))

    def _adjoint_stores(self):
        """This step's adjoints of the stacked products, of the vector parameters, of x."""
        scan, n, b, j, t = self.scan, self.n, self.b, self.j, self.n["t"]
        lines, reads = [], []
        for slot, terms in self.slot_terms.items():
            adjoint = self.slot_adjoints.get(slot)
            reads += [adjoint] if adjoint else []
            for where, k in terms:
                dest = (f"{n['_dX']}[{t}, {b}, {self._column(k)}]" if where == "x" else
                        f"{self.dHp[where]}[{b}, {self._column(k)}]")
                lines.append(f"{dest} = {adjoint or '0.0'}")
        grads = dict(self.sched.grads)
        for p in scan.vector_params:
            g = grads.get(scan.V(p))
            if g:
                lines.append(f"{self.grad_of[scan.V(p)]}[{j}] += {g}")
                reads.append(g)
        gx = grads.get(scan.V("x")) if scan.uses_x else None
        if gx:
            lines.append(f"{n['_dx_direct']}[{b}, {t}, {j}] = {gx}")
            reads.append(gx)
        return Item(True, [], reads, lines)

    def _carry_products(self, arrays):
        """The adjoints of the previous states through the stacked products: one matmul each."""
        scan, n = self.scan, self.n
        lines = []
        for s in scan.cell.states:
            carry = scan.state_names[s]["carry"]
            if s in scan.h_slots:
                names = scan.stack_names[s]
                lines.append(f"{carry}[:, :] = np.dot({self.dHp[s]}, {names['_Wh']})")
                if names["_dHs"] in self.c["dHs"]:
                    lines.append(f"{names['_dHs']}[{n['T']} - 1 - {n['k']}] = {self.dHp[s]}")
            else:
                lines.append(f"{carry}[:, :] = 0.0")
        return lines

    def _carry_finish(self):
        scan, n, b, j, t = self.scan, self.n, self.b, self.j, self.n["t"]
        grads = dict(self.sched.grads)
        lines, reads = [], []
        for s in scan.cell.states:
            names = scan.state_names[s]
            direct = grads.get(names["prev"])
            if direct:
                lines.append(f"{names['carry']}[{b}, {j}] += {direct}")
                reads.append(direct)
        lines.append(f"if not {n['full']}[{t}]:")
        for s in scan.cell.states:
            names = scan.state_names[s]
            lines.append(f"    {names['carry']}[{b}, {j}] += {names['keep']}")
            reads.append(names["keep"])
        return Item(True, [], reads, lines)

    # -- laying out a step -------------------------------------------------------------------
    def step_lines(self, items, scalar_source, array_source, saved):
        """The body of `for k` from the step's items: scalar phases as loops over (b, j),
        with the values that cross phases in (B, H) arrays.  Returns (lines, arrays
        to allocate)."""
        phases = []
        for item in items:
            if not phases or not (item.scalar and phases[-1].scalar):
                phases.append(Phase(item.scalar))
            phases[-1].items.append(item)
        readers = {}                        # name -> indices of the phases that read it
        for i, phase in enumerate(phases):
            defined = set()
            for item in phase.items:
                for r in item.reads:
                    if r not in defined or not phase.scalar:
                        readers.setdefault(r, set()).add(i)
                defined |= set(item.defines)
        rows = {}                            # a value crossing phases -> its (B, H) array
        arrays = _Arrays(rows, array_source, self.names)
        lines, b, j, defined_before = [], self.b, self.j, set()
        for i, phase in enumerate(phases):
            if not phase.scalar:
                for item in phase.items:
                    lines += item.lines(arrays)
                    for d in item.defines:
                        arrays[d]                       # allocated
                        if d in saved:
                            lines.append(f"{saved[d]}[{self.n['k']}, :, :] = {arrays[d]}")
                    defined_before |= set(item.defines)
                continue
            body, known, defined = [], set(), set()
            for item in phase.items:
                for r in item.reads:
                    if r not in known:         # loaded where first read
                        body.append(f"{r} = {arrays.row(r)}[{b}, {j}]" if r in defined_before
                                    else f"{r} = {scalar_source(r)}")
                        known.add(r)
                body += item.lines
                defined |= set(item.defines)
                known |= set(item.defines)
            for d in dict.fromkeys(d for item in phase.items for d in item.defines):
                if d in saved:
                    body.append(f"{saved[d]}[{self.n['k']}, {b}, {j}] = {d}")
                if any(r > i for r in readers.get(d, ())):
                    body.append(f"{arrays.row(d)}[{b}, {j}] = {d}")
            defined_before |= defined
            if not body:                 # (nothing per unit at this point of the step)
                continue
            lines += [f"for {b} in range({self.n['B']}):", f"    for {j} in range({self.H}):"]
            lines += [f"        {line}" for line in body]
        return lines, rows

    def numpy_loop_signatures(self):
        """The NumPy loop's functions, renamed: the numba functions call them for batches
        of many rows."""
        n = self.n
        return {"forward_signature": layout.wrap(
                    f"def {self.numpy_names['forward']}({', '.join(self.c['forward_args'])}, "
                    f"{n['reverse']}=False):", 0),
                "backward_signature": layout.wrap(
                    f"def {self.numpy_names['backward']}({', '.join(self.c['backward_args'])}, "
                    f"{n['need_dx']}=True):", 0)}

    # -- everything the template needs ------------------------------------------------------
    def template_values(self):
        scan, n, c = self.scan, self.n, self.c
        states = scan.cell.states
        self.state_rows = {s: {"prev": self.names.fresh(f"{scan.state_names[s]['prev']}_rows"),
                               "next": self.names.fresh(f"{s}_next_rows")} for s in states}
        self.grad_of = {param: var for var, param in c["grad_vars"]}
        self.dHp = {s: scan.stack_names[s]["_dHp"] for s in scan.h_slots}
        backward = self.backward_items()
        saved = self._saved_names(backward)
        forward = self.forward_items()
        xs = [n["xs"]] if scan.uses_x else []
        X = [n["_X"]] if scan.x_slots else []
        stacks = [scan.stack_names[s]["_Wh"] for s in scan.h_slots]
        vectors = [scan.V(p) for p in scan.vector_params]
        matrices = [scan.V(p) for p in scan.loop_matrices]
        dtype_f, dtype_b = f"{n['out']}.dtype", f"{n['dout']}.dtype"

        def forward_scalar(name):
            prev = {scan.state_names[s]["prev"]: s for s in states}
            if name in prev:
                return f"{self.state_rows[prev[name]]['prev']}[{self.b}, {self.j}]"
            return self._common_source(name)

        def forward_array(name):
            prev = {scan.state_names[s]["prev"]: s for s in states}
            return self.state_rows[prev[name]]["prev"] if name in prev else None
        f_lines, f_rows = self.step_lines(forward, forward_scalar, forward_array, saved)
        prevs = {scan.state_names[s]["prev"]: s for s in states}
        saved_prev = [(saved[p], self.state_rows[s]["prev"]) for p, s in prevs.items() if p in saved]
        # the products with a state, transposed (units, rows): BLAS multiplies a stored
        # weight by the rows' transpose faster than the rows by the weight's transpose
        f_head = [f"{scan.stack_names[s]['_Hp']} = np.dot({scan.stack_names[s]['_Wh']}, "
                  f"{self.state_rows[s]['prev']}.T)  # products with {scan.state_names[s]['prev']}"
                  for s in scan.h_slots]
        f_tail = [f"{dest}[{n['k']}, :, :] = {rows}" for dest, rows in saved_prev]
        f_tail += [f"{self.state_rows[s]['prev']}[:, :] = {self.state_rows[s]['next']}" for s in states]

        def backward_scalar(name):
            if name in saved:
                return f"{saved[name]}[{n['k']}, {self.b}, {self.j}]"
            return self._common_source(name)

        def backward_array(name):
            return f"{saved[name]}[{n['k']}]" if name in saved else None
        b_lines, b_rows = self.step_lines(backward, backward_scalar, backward_array, {})
        grads = [self.grad_of[p] for p in vectors + matrices if p in self.grad_of]
        dHs = [scan.stack_names[s]["_dHs"] for s in scan.h_slots
               if scan.stack_names[s]["_dHs"] in c["dHs"]]
        carries = [scan.state_names[s]["carry"] for s in states]
        dx = [n["_dX"]] if scan.x_slots else []
        direct = [n["_dx_direct"]] if scan.uses_x else []
        prev_rows = [self.state_rows[s]["prev"] for s in states]
        next_rows = [self.state_rows[s]["next"] for s in states]
        saved_arrays = list(saved.values())
        values = {
            "kernels": self.kernel_names, "b": self.b, "j": self.j,
            "numpy_names": self.numpy_names, "rows_limit": self.rows_limit,
            "rows_limit_value": -(-NUMPY_LOOP_ELEMENTS // self.H),
            "numpy_forward_call": layout.wrap(
                f"return {self.numpy_names['forward']}({', '.join(c['forward_args'])}, "
                f"{n['reverse']})", 8),
            "numpy_backward_call": layout.wrap(
                f"return {self.numpy_names['backward']}({', '.join(c['backward_args'])}, "
                f"{n['need_dx']})", 8),
            "saved_arrays": saved_arrays,
            "prev_rows": list(zip(prev_rows, next_rows, [scan.state_names[s]["init"] for s in states])),
            "forward_kernel_args": [n["order"], n["full"], n["mask"]] + xs + X + stacks + vectors
            + matrices + prev_rows + next_rows + [n["out"]] + saved_arrays,
            "forward_allocations": self._allocations(f_rows, dtype_f),
            "forward_head": f_head, "forward_step": f_lines, "forward_tail": f_tail,
            "numba_keys": saved_arrays + [n["full"], n["order"], n["reverse"]]
            + ([n["_Wx"]] if scan.x_slots else []) + stacks,
            "backward_kernel_args": [n["order"], n["full"], n["mask"], n["dout"]] + xs + stacks
            + vectors + matrices + saved_arrays + dx + dHs + direct + grads + carries,
            "backward_allocations": self._allocations(b_rows, dtype_b)
            + [f"{self.dHp[s]} = np.empty(({n['B']}, {len(scan.h_slots[s]) * self.H}), {dtype_b})"
               for s in scan.h_slots],
            "backward_step": b_lines,
            "dHs_widths": [(scan.stack_names[s]["_dHs"], len(scan.h_slots[s]) * self.H)
                           for s in scan.h_slots if scan.stack_names[s]["_dHs"] in c["dHs"]],
        }
        for d in ("forward", "backward"):
            args = values[f"{d}_kernel_args"]
            params = ", ".join(self.vector_arrays.get(a, a) for a in args)
            values[f"{d}_kernel_signature"] = layout.wrap(f"def {self.kernel_names[d]}({params}):", 0)
            values[f"{d}_call"] = layout.wrap(f"{self.kernel_names[d]}({', '.join(args)})", 4)
        return values

    def _allocations(self, rows, dtype):
        return [f"{array} = np.empty(({self.n['B']}, {self.H}), {dtype})" for array in rows.values()]

    def _common_source(self, name):
        scan, n = self.scan, self.n
        if name in self.vectors:
            return f"{self.vector_arrays[name]}[{self.j}]"
        if scan.uses_x and name == scan.V("x"):
            return f"{n['xs']}[{self.b}, {n['t']}, {self.j}]"
        raise Unsupported(f"no scalar source for {name}")

    def _saved_names(self, backward):
        """Forward values the backward kernel reads (and the previous states that the
        weight gradients need), each with its (T, B, H) array's name: the NumPy
        target's name where it has one."""
        scan = self.scan
        forward_names = set(self.slot_terms) | {st.node.name for st in self.sched.forward}
        forward_names |= {scan.state_names[s]["prev"] for s in scan.cell.states}
        defined, wanted = set(), []
        for item in backward:
            for r in item.reads:
                if r in forward_names and r not in defined:
                    wanted.append(r)
            defined |= set(item.defines)
        wanted += [scan.state_names[s]["prev"] for s in scan.h_slots]
        numpy_names = {v: name for name, v in self.c["saved"]}
        return {v: numpy_names.get(v) or self.names.fresh(f"saved_{v}") for v in dict.fromkeys(wanted)}


class _Arrays(dict):
    """The array of each name a step-level statement reads or writes: a forward value
    or state's own array, else a (B, H) array of the step, allocated before the loop."""

    def __init__(self, rows, source, names):
        super().__init__()
        self.rows, self.source, self.names = rows, source, names

    def __missing__(self, name):
        found = self.source(name)
        if found is None:
            found = self.row(name)
        self[name] = found
        return found

    def row(self, name):
        if name not in self.rows:
            self.rows[name] = self.names.fresh(f"{name}_rows")
        return self.rows[name]


def _free(expr):
    return sorted(s.name for s in expr.free_symbols)
