"""The scan's backward step with its partials of stored values computed before the
loop (bpcompile/frontends/step_factors.py): what is folded and hoisted, what must not
be, and the generated LSTM loop it gives."""

import ast

import sympy as sp

import bpcompile
from bpcompile.core.autodiff import Statement
from bpcompile.core.naming import SymbolTable
from bpcompile.core.parser import symbol
from bpcompile.core.printer import to_numpy
from bpcompile.frontends.step_factors import hoist, steps_lines

from test_cells import assert_exact


NAMES = ["o", "h_1", "s", "dJ_dh", "dJ_dh_1", "dJ_dc", "dJ_dz", "dJ_dg"]


def formula(text):
    """A test-written formula (never spec text) over the compiler's own symbols."""
    return sp.sympify(text, locals={n: symbol(n) for n in NAMES})


def statement(target, text, accumulate=False):
    term = formula(text)
    code = f"{target} + {to_numpy(term)}" if accumulate else to_numpy(term)
    reads = frozenset(s.name for s in term.free_symbols) | ({target} if accumulate else set())
    return Statement((target,), code, reads, comment=f"{target} from {text}", term=term,
                     accumulate=accumulate)


ADJOINTS = {"dJ_dh": "h", "dJ_dh_1": "h_1", "dJ_dc": "c", "dJ_dz": "z", "dJ_dg": "g"}


def run(statements, keep=()):
    names = SymbolTable.holding(["o", "h_1", "s", *ADJOINTS])
    return hoist(statements, {"o", "h_1", "s"}, set(keep), names, ADJOINTS)


def test_a_product_read_only_as_a_factor_is_folded_and_its_stored_factors_hoisted():
    result, factors = run([statement("dJ_dh_1", "dJ_dh*o"),
                           statement("dJ_dc", "dJ_dh_1*(1 - h_1**2)", accumulate=True)])
    assert [s.targets for s in result] == [("dJ_dc",)]
    assert [(f.name, f.expr) for f in factors] == [("dh_dc", formula("o*(1 - h_1**2)"))]
    assert result[0].code == "dJ_dc + dJ_dh*dh_dc"
    assert result[0].reads == {"dJ_dc", "dJ_dh", "dh_dc"}
    assert "dJ_dh_1 from dJ_dh*o" in result[0].comment and "dJ_dc from" in result[0].comment


def test_no_fold_where_the_adjoint_is_also_added():
    """dJ_dh_1 + ... would compute dJ_dh*o twice (once per reader): kept."""
    result, factors = run([statement("dJ_dh_1", "dJ_dh*o"),
                           statement("dJ_dc", "dJ_dh_1 + s", accumulate=True),
                           statement("dJ_dz", "dJ_dh_1*(1 - s**2)")])
    assert [s.targets[0] for s in result] == ["dJ_dh_1", "dJ_dc", "dJ_dz"]
    assert result[2].code == "dJ_dh_1*dh_1_dz"
    assert [f.expr for f in factors] == [formula("1 - s**2")]


def test_no_fold_where_the_incoming_adjoint_changes_before_the_reader():
    result, _ = run([statement("dJ_dh_1", "dJ_dh*o"),
                     statement("dJ_dh", "dJ_dc*s", accumulate=True),
                     statement("dJ_dz", "dJ_dh_1*s")])
    assert [s.targets[0] for s in result] == ["dJ_dh_1", "dJ_dh", "dJ_dz"]
    assert result[2].code == "dJ_dh_1*s"


def test_no_fold_of_an_adjoint_read_after_the_step_or_assigned_twice():
    kept, _ = run([statement("dJ_dh_1", "dJ_dh*o"), statement("dJ_dz", "dJ_dh_1*s")],
                  keep={"dJ_dh_1"})
    assert [s.targets[0] for s in kept] == ["dJ_dh_1", "dJ_dz"]
    twice, _ = run([statement("dJ_dh_1", "dJ_dh*o"), statement("dJ_dz", "dJ_dh_1*s"),
                    statement("dJ_dh_1", "dJ_dc*s", accumulate=True)])
    assert [s.targets[0] for s in twice] == ["dJ_dh_1", "dJ_dz", "dJ_dh_1"]


def test_a_bare_stored_value_or_its_reciprocal_is_no_factor_and_one_expression_one_factor():
    result, factors = run([statement("dJ_dz", "dJ_dh*s"), statement("dJ_dg", "dJ_dh/s"),
                           statement("dJ_dc", "dJ_dh*(1 - s**2) + dJ_dg*(1 - s**2)")])
    assert [s.code for s in result[:2]] == ["dJ_dh*s", "dJ_dh/s"]
    assert len(factors) == 1 and result[2].code.count(factors[0].name) == 2


def test_steps_lines_stack_each_stored_value_once_slice_parts_and_reuse_dead_stacks():
    _, factors = run([statement("dJ_dz", "dJ_dh*o*(1 - h_1**2)"), statement("dJ_dg", "dJ_dh*o*h_1")])
    names = SymbolTable.holding(["o", "h_1", "s", "dh_dz", "dh_dg", "block"])
    lines, steps = steps_lines(factors, {"h_1": "saved_h_1", "block": "saved_block"},
                               {"o": ("block", "0", "4")}, names)
    # h_1's stack is read again by the second factor, which then writes over it; a part
    # (o, a view of the block) is never written over
    assert lines == ["h_1_steps = np.stack(saved_h_1)", "block_steps = np.stack(saved_block)",
                     "o_steps = block_steps[..., 0:4]",
                     "dh_dz_steps = o_steps*(1 - h_1_steps**2)",
                     "dh_dg_steps = np.multiply(h_1_steps, o_steps, out=h_1_steps)",
                     "del h_1_steps, block_steps, o_steps"]
    assert steps == [("dh_dz", "dh_dz_steps"), ("dh_dg", "dh_dg_steps")]


def _backward_loop(source, name):
    tree = ast.parse(source)
    function = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == name)
    loop = next(node for node in function.body if isinstance(node, ast.For))
    return function, loop


def test_the_lstm_backward_step_makes_one_call_per_adjoint():
    """The lecture's LSTM: every 1 - tanh**2 and sigmoid derivative is computed before the
    loop, and the step multiplies each incoming adjoint once (19 ufunc calls per step
    before, counted the same way, 11 now)."""
    spec = {"name": "m", "dtype": "float64", "input": {"vocab": 7},
            "layers": [{"embedding": 3}, {"lstm": {"hidden": 4}}, {"linear": 7}],
            "loss": "softmax_cross_entropy"}
    source = bpcompile.compile(spec).SOURCE
    function, loop = _backward_loop(source, "lstm1_cell_backward")
    before = [node for node in function.body[:function.body.index(loop)]]
    assert any(isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)
               for statement in before for node in ast.walk(statement))
    padded = next(node for node in loop.body if isinstance(node, ast.If))
    body = [s for s in loop.body if s is not padded and not isinstance(s, ast.If)]
    operators = [node for s in body for node in ast.walk(s)
                 if isinstance(node, ast.BinOp) or (isinstance(node, ast.Call)
                                                    and ast.unparse(node.func).startswith("np."))]
    assert not any(isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) for node in operators)
    assert len(operators) == 11, [ast.unparse(node) for node in operators]


def test_hoisted_factors_with_padding_in_both_directions_are_exact():
    assert_exact("i = sigmoid(W @ x + U @ h_prev + b)\no = sigmoid(V @ x + A @ h_prev + b)\n"
                 "c = c_prev*i + (1 - i)*tanh(C @ x + D @ h_prev)\nh = o*tanh(c)*tanh(c)",
                 state=("h", "c"), bidirectional=True)


def test_a_stored_value_of_parameters_alone_is_not_stacked():
    """`2*p` is (n,) at every step: stacked it would lose the batch axis (caught by
    test_cells' parameters-alone case while this was written)."""
    module = assert_exact("a = 2*p\nh = tanh(a + W @ x) * a", inputs=4)
    assert "a_steps" not in module.SOURCE
