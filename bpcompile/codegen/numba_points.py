"""The numba target of an elementwise program: one compiled loop over the points.

For each point i, value_and_grad's kernel reads the inputs at i into scalars of
the inputs' names, runs the program's forward statements and then its backward
statements on those scalars, and stores the value and every gradient at i: one
pass over memory instead of one per NumPy temporary.  The statements are the
steps of memory/blocks.py (the seed 1 folded into the adjoints, an adjoint's
contributions added in one sum, a value that several formulas divide by given
one reciprocal), printed for scalars with the vectorizable exp, log, sin and cos of
templates/numba/vector_math.py (printer.to_scalar).  evaluate's kernel runs the
forward statements only.

_sin and _cos are exact enough only for |x| <= _TRIG_RANGE: a kernel that calls them
counts the points with an argument beyond and returns the count, and its caller then
runs the kernel again compiled with math.sin and math.cos (`math_trig`).

`points_kernels` returns None for a program with an operation that reads whole
arrays (`sum(v)`, `a @ b`): no point can be computed alone, and the module keeps
its NumPy code.
"""

import ast
from dataclasses import dataclass

from . import layout
from ..core.parser import symbol
from ..core.printer import to_scalar, vector_calls
from ..memory import blocks

COMMENT_COLUMN = 40   # comments start here when the code is shorter (as in render.py)
LOOP_INDENT = 8       # the loop body's statements: function body, then the loop


@dataclass
class Kernel:
    """One loop over the points, as the template lays it out."""

    name: str           # the Python function numba compiles
    params: list        # flat float64 arrays: the inputs, then the results it writes
    index: str          # the loop's index
    body: list          # lines of the loop body, without its indent
    doc: str            # its docstring
    beyond: str = ""    # the count of points beyond _sin's range it returns, if it calls sin or cos

    @property
    def signature(self):
        return layout.wrap(f"def {self.name}({', '.join(self.params)}):", indent=0)


@dataclass
class PointsKernels:
    value_and_grad: Kernel
    evaluate: Kernel
    vector_calls: frozenset     # the functions of vector_math.py they call


def points_kernels(sched, graph):
    """The kernels of value_and_grad and evaluate for `sched`, or None (module doc)."""
    planned = blocks.scalar_steps(sched, graph.names)
    if planned is None:
        return None
    steps, known = planned
    names = graph.names
    arrays = {n: names.fresh(f"{n}_points") for n in list(graph.inputs) + _outputs(sched, graph)}
    index = names.fresh("i")
    reads = [f"{n} = {arrays[n]}[{index}]" for n in graph.inputs]
    adjoints = {t for s in sched.backward for t in s.targets}
    outputs = _outputs(sched, graph)
    beyond = names.fresh("beyond")
    grads = Kernel("_value_and_grad_points", [arrays[n] for n in list(graph.inputs) + outputs],
                   index, reads + _steps_lines(steps, adjoints)
                   + _stores(outputs, known, arrays, index),
                   "value_and_grad at every point: writes the value and the gradients there.")
    forward = [(s.targets[0], symbol(s.alias) if s.alias else s.term) for s in sched.forward]
    value = Kernel("_evaluate_points", [arrays[n] for n in list(graph.inputs) + [graph.output]],
                   index, reads + ["# forward (topological order)"]
                   + [f"{target} = {to_scalar(expr, vector=True)}" for target, expr in forward]
                   + _stores([graph.output], {}, arrays, index),
                   "evaluate at every point: writes the value there.")
    _count_beyond(grads, beyond)
    _count_beyond(value, beyond)
    printed = [expr for _, expr, _ in steps] + list(known.values()) + [expr for _, expr in forward]
    return PointsKernels(grads, value, vector_calls(printed))


def _count_beyond(kernel, beyond):
    """Have `kernel` count the points where an argument of sin or cos is beyond
    _TRIG_RANGE, when its loop body calls them (read from the printed code, so that
    no call is missed)."""
    arguments = {ast.unparse(node.args[0]): None
                 for node in ast.walk(ast.parse("\n".join(kernel.body)))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                 and node.func.id in ("_sin", "_cos")}
    if not arguments:
        return
    kernel.beyond = beyond
    kernel.doc += "\n    Returns how many points have an argument of sin or cos beyond _TRIG_RANGE."
    kernel.body += layout.comment_lines(
        "_sin and _cos are exact for |x| <= _TRIG_RANGE: points beyond are counted, and the "
        "caller runs the loop again with math's", LOOP_INDENT)
    tests = [f"(math.fabs({argument}) > _TRIG_RANGE)" for argument in arguments]
    # (one statement: numba's prange reduces a variable updated once per iteration)
    kernel.body += layout.wrap(f"{beyond} += {' | '.join(tests)}", LOOP_INDENT)


def _outputs(sched, graph):
    """The kernel's results: the value, then the gradients in the order of WRT."""
    return [graph.output] + [g for _, g in sched.grads]


def _steps_lines(steps, adjoints):
    """value_and_grad's loop body: the forward steps, then the backward ones with
    their chain-rule comments (lined up where they fit, else above their statement)."""
    lines = ["# forward (topological order)"]
    codes = [f"{target} = {to_scalar(expr, vector=True)}" for target, expr, _ in steps]
    width = max([len(code) for code, (_, _, notes) in zip(codes, steps)
                 if len(notes) == 1 and len(code) <= COMMENT_COLUMN] + [0])
    backward = False
    for code, (target, _, notes) in zip(codes, steps):
        if not backward and target in adjoints:
            backward = True
            lines.append("# backward (reverse topological order), with the seed 1")
        padded = f"{code.ljust(width)}  # {notes[0]}" if len(notes) == 1 else ""
        if padded and LOOP_INDENT + len(padded) <= layout.WIDTH:
            lines.append(padded)
            continue
        for note in notes:
            lines += layout.comment_lines(note, LOOP_INDENT)
        lines += layout.wrap(code, LOOP_INDENT)
    return lines


def _stores(outputs, known, arrays, index):
    """The results at point `index`: a value that folded to a number or to another
    name (dy/dx = 1, y = x) is stored as that."""
    stores = [f"{arrays[n]}[{index}] = {to_scalar(known.get(symbol(n), symbol(n)), vector=True)}"
              for n in outputs]
    return ["# the results at this point"] + stores
