"""The scan's backward step, with the partials that read only saved values taken
out of the loop over time.

In a recurrent cell's backward step most factors of the adjoint formulas read
nothing but the forward values stored for that step: `dJ_dc = dJ_dc +
dJ_dh_1*(1 - h_1**2)` multiplies the incoming adjoint by `1 - h_1**2`.  Such a
factor is the same arithmetic at every step, so it is computed once for every
step at once before the loop (one NumPy call over (T, B, n) instead of T calls
over (B, n), which is what a step of a small batch costs: the calls, not the
numbers), and the step reads its slice.  Before that, an adjoint that is a
single adjoint times stored values and is only ever multiplied further
(`dJ_dh_1 = dJ_dh*o`, read only as `dJ_dh_1*(1 - h_1**2)`) is folded into the
statements that read it, so that the stored values of both steps become one
factor, `dh_dc = o*(1 - h_1**2)`, and the step makes one multiplication where
it made four.  The expert LSTM code precomputes its gate-derivative factors the
same way; here nothing knows the cell: it is a pass over the step's statements.
"""

import functools
from dataclasses import dataclass, replace

import sympy as sp

from ..core.autodiff import accumulated
from ..core.parser import symbol
from ..core.printer import to_numpy
from ..memory.planner import with_out


@dataclass(frozen=True)
class Factor:
    name: str           # the step's slice of it, read by the step's statements
    expr: object        # SymPy expression of stored values (the step's names)


def hoist(statements, stored, keep, names, adjoint_of):
    """(statements, factors): the step's backward `statements` with folded adjoints
    removed and every factor of stored values replaced by a Factor's name.

    stored: names of the values the forward pass kept for each step (and column parts
    of them); keep: names read outside these statements (the loop's carries and the
    stacked adjoints), which stay assigned; names: the layer's SymbolTable, which mints
    the factors' names; adjoint_of: every adjoint variable of the step (seeds included)
    -> the value it is the adjoint of (the factor of dJ_dc in dJ_dh's formula is dh_dc)."""
    stored = {symbol(n) for n in stored}
    adjoints = {symbol(a) for a in adjoint_of}
    statements = _fold(list(statements), stored, adjoints, set(keep))
    factors = {}                  # expression -> Factor
    result = []
    for s in statements:
        if s.term is None:
            result.append(s)
            continue
        named = functools.partial(_factor, s=s, factors=factors, names=names, adjoint_of=adjoint_of)
        term = _rewrite(s.term, stored, named)
        result.append(s if term == s.term else _with_term(s, term))
    return result, list(factors.values())


def _fold(statements, stored, adjoints, keep):
    """Fold `a = g*S` (g an adjoint, S stored values or numbers) into every statement
    that reads a, where each reads it as a factor of a product."""
    while True:
        for i, s in enumerate(statements):
            replacement = _foldable(i, statements, stored, adjoints, keep)
            if replacement is None:
                continue
            a = s.targets[0]
            folded = [u if a not in u.reads else
                      _with_term(u, u.term.xreplace({symbol(a): replacement}),
                                 comment="; ".join(c for c in (s.comment, u.comment) if c))
                      for u in statements[i + 1:]]
            statements = statements[:i] + folded
            break
        else:
            return statements


def _foldable(i, statements, stored, adjoints, keep):
    """The expression to put in place of statement i's target where it is read, or None."""
    s, later = statements[i], statements[i + 1:]
    if s.term is None or s.accumulate or len(s.targets) != 1 or s.targets[0] in keep:
        return None
    a = s.targets[0]
    if sum(a in u.targets for u in statements) != 1:
        return None                     # assigned again: not one value
    g = s.term.free_symbols & adjoints
    if len(g) != 1 or not s.term.free_symbols - g <= stored:
        return None
    g = g.pop()
    if not _is_product_with(s.term, g) or any(g.name in u.targets for u in later):
        return None                     # g is not a factor, or changes before the readers run
    readers = [u for u in later if a in u.reads]
    if not readers or any(u.term is None or not _is_product_with(u.term, symbol(a)) for u in readers):
        return None
    return s.term


def _is_product_with(term, x):
    """term is x, or a product in which x is one factor (to the first power) and the
    others do not contain x."""
    if term == x:
        return True
    return (term.is_Mul and x in term.args
            and not any(x in arg.free_symbols for arg in term.args if arg != x))


def _rewrite(expr, stored, named):
    """expr with its largest subexpressions of stored values that cost the step a call
    of their own replaced by named(subexpression)."""
    if _is_stored(expr, stored):
        return named(expr) if _worth_it(expr) else expr
    if expr.is_Mul:
        part = [arg for arg in expr.args if _is_stored(arg, stored)]
        if part:
            numbers = [arg for arg in expr.args if arg.is_Number]
            rest = [arg for arg in expr.args if arg not in part and not arg.is_Number]
            product = sp.Mul(*numbers, *part)
            if _worth_it(product):
                return sp.Mul(named(product), *[_rewrite(arg, stored, named) for arg in rest])
    if not expr.args:
        return expr
    return expr.func(*[_rewrite(arg, stored, named) for arg in expr.args])


def _is_stored(expr, stored):
    return bool(expr.free_symbols) and expr.free_symbols <= stored


def _worth_it(expr):
    """Whether computing expr takes the step a call of its own: not a name, and not a
    reciprocal (the printer divides by it instead)."""
    if expr.is_Symbol:
        return False
    return not (expr.is_Pow and expr.exp == -1 and expr.base.is_Symbol)


def _factor(expr, s, factors, names, adjoint_of):
    """The Factor's name for expr (one per distinct expression), minted as dw_dv for the
    factor in dJ_dv's formula that multiplies dJ_dw."""
    if expr not in factors:
        v = adjoint_of.get(s.targets[0])
        ws = [adjoint_of[x.name] for x in s.term.free_symbols if x.name in adjoint_of]
        wanted = f"d{ws[0]}_d{v}" if v and len(ws) == 1 else "factor"
        factors[expr] = Factor(names.fresh(wanted), expr)
    return symbol(factors[expr].name)


def _with_term(s, term, comment=None):
    """s computing `term` (its contribution, when s adds to an adjoint)."""
    target = s.targets[0]
    reads = frozenset(x.name for x in term.free_symbols)
    if s.accumulate:
        code, reads = accumulated(target, None, term, None), reads | {target}
    else:
        code = to_numpy(term)
    return replace(s, code=code, reads=reads, term=term, alias=term.name if term.is_Symbol else None,
                   comment=s.comment if comment is None else comment)


def steps_lines(factors, lists, parts, names):
    """(statements before the loop, [(factor, its array for every step)]): each factor
    computed once from the stored values stacked by step.  lists: stored name -> the
    list of its per-step values; parts: a column part's name -> (block, start, stop).
    A factor is written over the stack of one of its operands that no later factor
    reads, and the stacks are let go before the loop, which reads only the factors:
    memory at the loop grows by the factors alone."""
    lines, steps = [], {}

    def stacked(name):
        if name not in steps:
            if name in parts:
                block, start, stop = parts[name]
                code = f"{stacked(block)}[..., {start}:{stop}]"
            else:
                code = f"np.stack({lists[name]})"
            steps[name] = names.fresh(f"{name}_steps")
            lines.append(f"{steps[name]} = {code}")
        return steps[name]

    def reads(factor):
        used = {x.name for x in factor.expr.free_symbols}
        return used | {parts[n][0] for n in used if n in parts}     # a part reads its block

    result = []
    for index, factor in enumerate(factors):
        used = sorted(x.name for x in factor.expr.free_symbols)
        expr = factor.expr.xreplace({symbol(n): symbol(stacked(n)) for n in used})
        later = set().union(*map(reads, factors[index + 1:]))
        donors = [steps[n] for n in used if n not in parts and n not in later]
        all_steps = names.fresh(f"{factor.name}_steps")
        code = with_out(expr, donors[0]) if donors else None
        lines.append(f"{all_steps} = {code or to_numpy(expr)}")
        result.append((factor.name, all_steps))
    if steps:
        lines.append(f"del {', '.join(steps.values())}")
    return lines, result
