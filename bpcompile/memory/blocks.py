"""An elementwise program's value and gradient, one cache-sized block at a time.

Over 10^6 points every NumPy temporary is an 8 MB array that streams through
main memory once when it is written and again each time it is read.  When
every operation of a program is elementwise, value_and_grad can instead run
its statements on blocks of a few thousand points, writing each value into a
buffer of the block's size that is reused once the value is dead, so every
temporary stays in cache.  This module plans that kernel from the schedule:

  * the seed of value_and_grad is the number 1, so it is folded into the
    adjoint formulas (an adjoint that is the seed or a copy of another value
    costs nothing);
  * each remaining statement writes into a buffer: a dead value's, or the
    caller's output array for the value and the gradients; an accumulation
    `g = g + c` adds into g's own buffer;
  * the statements become ufunc calls with `out` (inplace.py).

`block_kernel` returns None, and the module keeps only the plain path, when
the program has a non-elementwise operation or a formula without a ufunc form.
A program's `sum(v)` and `a @ b` are such operations (tensor ops, not records
of the elementwise table): they read whole arrays, so a block of points
cannot compute them.
"""

from dataclasses import dataclass

import sympy as sp

from .inplace import negated as _negated, ufunc_statements
from ..core.parser import symbol
from ..core.primitives import PRIMITIVES
from ..core.printer import to_numpy


@dataclass
class BlockKernel:
    params: list        # the kernel's parameters: inputs, then the output arrays
    buffers: list       # names of the scratch buffers, unpacked from one argument
    body: list          # (code, comment) lines


class _Refuse(Exception):
    """The plan cannot prove a step safe: no blocked path."""


def block_kernel(sched, graph, names):
    """The kernel `(inputs..., value, gradients..., buffers)` for `sched`, or None."""
    try:
        return _plan(sched, graph, names)
    except _Refuse:
        return None


def _formulas(sched):
    """[(target, SymPy expression, comment)] of value_and_grad with the seed 1."""
    result = []
    for s in sched.forward:
        # only elementwise operations: sum and @ (tensor ops) refuse the blocked path
        if s.node is None or s.node.op not in PRIMITIVES or len(s.targets) != 1:
            raise _Refuse()
        term = symbol(s.alias) if s.alias else s.term
        result.append((s.targets[0], term, ()))
    for s in sched.backward:
        if s.node is None or s.node.op not in PRIMITIVES or s.term is None or len(s.targets) != 1:
            raise _Refuse()
        target = s.targets[0]
        term = symbol(target) + s.term if s.accumulate else s.term
        result.append((target, term, (s.comment,) if s.comment else ()))
    return result


def _is_leaf(expr):
    return isinstance(expr, sp.Symbol) or expr.is_Number or expr in (sp.pi, sp.E)


def scalar_steps(sched, names):
    """(steps, known) of value_and_grad with the seed 1, or None for a program with a
    non-elementwise operation: steps are [(target, SymPy expression, comments)] in
    order, known maps a name whose value is a number or another name to that value.
    The numba target's loop body (codegen/numba_points.py) is these steps on scalars."""
    try:
        return _steps(sched, names)
    except _Refuse:
        return None


def _steps(sched, names):
    known = {symbol(sched.seed): sp.Integer(1)}     # names whose value is a number or another name
    steps = _merge_accumulations(_fold(_formulas(sched), known))
    steps = _fold(_share_reciprocals(steps, names), known)
    return steps, known


def _plan(sched, graph, names):
    outputs = [graph.output] + [g for _, g in sched.grads]
    if None in outputs or len(set(outputs)) != len(outputs) or set(outputs) & set(graph.inputs):
        raise _Refuse()
    steps, known = _steps(sched, names)
    last_read = {}
    for k, (_, expr, _) in enumerate(steps):
        for s in expr.free_symbols:
            last_read[s.name] = k
    for name in outputs:               # an output that is a copy reads its value at the end
        for s in getattr(known.get(symbol(name)), "free_symbols", ()):
            last_read[s.name] = len(steps)
    return _emit(steps, last_read, known, graph, outputs, names)


def _fold(formulas, known):
    """The formulas that need code: one whose value is a number or another name is
    recorded in `known` and substituted into the later ones instead."""
    steps, seen = [], set()
    for target, expr, comment in formulas:
        expr = expr.xreplace(known)
        if target in seen and any(v == symbol(target) for v in known.values()):
            raise _Refuse()                         # a copy would change under it
        seen.add(target)
        if _is_leaf(expr):
            if expr != symbol(target):              # (g = g + 0 changes nothing)
                known[symbol(target)] = expr
            continue
        known.pop(symbol(target), None)
        steps.append((target, expr, comment))
    return steps


def _merge_accumulations(steps):
    """An adjoint assigned once and then accumulated, g = a; g = g + b; g = g + c,
    with nothing reading g in between, becomes one sum g = a + b + c, computed
    where the last term was: fewer passes over the block.  A term moves later only
    if nothing it reads is assigned in between."""
    steps = list(steps)
    i = 0
    while i < len(steps):
        target, merged, _ = steps[i]
        if sum(t == target for t, _, _ in steps[i + 1:]) == 0:
            i += 1
            continue
        chain, assigned = [i], set()
        for j in range(i + 1, len(steps)):
            other, expr, _ = steps[j]
            rest = _accumulated(expr, target) if other == target else None
            if rest is not None and not assigned & {s.name for s in merged.free_symbols}:
                merged, chain = merged + rest, chain + [j]
                continue
            if other == target or symbol(target) in expr.free_symbols:
                break
            assigned.add(other)
        if len(chain) > 1:
            notes = tuple(c for k in chain for c in steps[k][2])
            steps[chain[-1]] = (target, merged, notes)
            for k in reversed(chain[:-1]):
                del steps[k]
            continue
        i += 1
    return steps


def _accumulated(expr, target):
    """c where expr is target + c (c not reading target), else None."""
    t = symbol(target)
    if not expr.is_Add or t not in expr.args:
        return None
    rest = sp.Add(*[a for a in expr.args if a != t])
    return None if t in rest.free_symbols else rest


def _share_reciprocals(steps, names):
    """Where several formulas divide by the same value, its reciprocal is computed
    once and they multiply by it (a division costs several multiplications)."""
    defined = {}
    for target, _, _ in steps:
        defined[target] = defined.get(target, 0) + 1
    uses = {}
    for _, expr, _ in steps:
        for base in _reciprocal_bases(expr):
            if defined.get(base.name, 0) <= 1:     # one value throughout the kernel
                uses[base] = uses.get(base, 0) + 1
    shared, result = {}, []
    for target, expr, comment in steps:
        for base in sorted(_reciprocal_bases(expr), key=str):
            if uses.get(base, 0) >= 2 and base not in shared:
                shared[base] = symbol(names.fresh(f"{base.name}_inv"))
                result.append((shared[base].name, 1 / base, (f"1/{base.name}, which several "
                               "formulas divide by: a multiplication each, not a division",)))
        result.append((target, expr.xreplace({1 / b: r for b, r in shared.items()}), comment))
    return result


def _reciprocal_bases(expr):
    return {p.base for p in expr.atoms(sp.Pow) if p.exp == -1 and p.base.is_Symbol}


def _emit(steps, last_read, known, graph, outputs, names):
    inputs = set(graph.inputs)
    free, made = [], []                 # free buffers; every buffer, in order of creation
    owner = {}                          # name -> the buffer holding its value now
    body = []

    def take():
        if not free:
            made.append(names.fresh(f"t{len(made)}"))
            free.append(made[-1])
        return free.pop(0)

    for k, (target, expr, comment) in enumerate(steps):
        operands = {s.name for s in expr.free_symbols}
        if not operands <= inputs | set(owner):
            raise _Refuse()             # reads a value no step has placed in a buffer
        in_place = target in owner and expr.is_Add and symbol(target) in expr.args
        old = None
        if in_place:
            rest = sp.Add(*[a for a in expr.args if a != symbol(target)])
            negated, rest = _negated(rest)      # g - c: subtract c rather than add -c
            plan = [("", f"{target} = {to_numpy(expr)}")]
            scratch = []
            if _is_leaf(rest):
                source = to_numpy(rest)
            else:
                source = _track(take, scratch)
                lines = ufunc_statements(rest, source, lambda avoid: _track(take, scratch),
                                         exact=True)
                if lines is None:
                    raise _Refuse()
                plan += [(line, "") for line in lines]
            ufunc = "np.subtract" if negated else "np.add"
            plan.append((f"{ufunc}({target}, {source}, {target})", ""))
            free.extend(scratch)
        else:
            if target in owner:
                if target in outputs:
                    raise _Refuse()     # the output array would be read while written
                old = owner.pop(target)
            out = target if target in outputs else take()
            scratch = []
            lines = ufunc_statements(expr, target, lambda avoid: _track(take, scratch),
                                     exact=True)
            if lines is None:
                raise _Refuse()
            plan = [("", f"{target} = {to_numpy(expr)}")]
            if out != target:
                plan.append((f"{target} = {out}", ""))
            plan += [(line, "") for line in lines]
            owner[target] = out
            free.extend(scratch)
        body += _with_comment(plan, comment)
        if old is not None:
            free.append(old)
        if target not in outputs and last_read.get(target, -1) <= k:
            free.append(owner.pop(target))      # never read: its buffer is free again
        for name in sorted(operands - inputs - set(outputs)):
            if last_read.get(name, -1) <= k and name != target and name in owner:
                free.append(owner.pop(name))
    for name in outputs:
        value = known.get(symbol(name))
        if value is not None:            # a copy of another value, or a number
            body.append((f"np.copyto({name}, {to_numpy(value)})", f"{name} = {to_numpy(value)}"))
        elif name not in owner:
            raise _Refuse()
    params = list(graph.inputs) + outputs
    return BlockKernel(params, made, body)


def _track(take, scratch):
    buffer = take()
    scratch.append(buffer)
    return buffer


def _with_comment(plan, comments):
    """The first line's comment is the formula; the adjoint's chain-rule steps go above."""
    (_, formula), *calls = plan
    lines = [("", c) for c in comments]
    first, *rest = calls
    return lines + [(first[0], formula)] + rest
