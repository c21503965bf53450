"""The per-example SGD step (rowstep.py, inplace.py): sgd_step on one example
takes an in-place path on 1-D vectors; it must update exactly as the batch
path does, fall back to the batch path's errors on bad input, and its ufunc
statements must compute the expressions they were made from."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings, strategies as st

from bpcompile.errors import SpecError
from bpcompile.training.gradcheck import numerical_gradient, random_problem
from bpcompile.memory.inplace import ufunc_statements
from bpcompile.core.parser import parse_expression, symbol
from bpcompile.core.primitives import relu, step
from bpcompile.core.printer import to_numpy

from test_layers import module_from, spec_text

pytestmark = pytest.mark.both_targets

ACTIVATIONS = ["sigmoid", "tanh", "relu", "softplus",
               'activation: "x * tanh(softplus(x))"', 'activation: "max(x, 0.1*x)"',
               'activation: "x / (1 + abs(x))"', 'activation: "exp(-x**2) + sin(x) - 2*cos(x)"',
               'activation: "arcsinh(x) + arctan(x) + sqrt(x**2 + 1) - pow(x**2 + 2, 0.5)"']


def one_path_only(module):
    """Make the batch path fail loudly, so a passing step proves the one-example path ran."""
    def refuse(*args):
        raise AssertionError("sgd_step took the batch path")
    module._check = refuse


def step_both_ways(module, params, x, y, lr):
    """(loss and params after the one-example step, loss and params after p -= lr * grad)."""
    fast = {k: v.copy() for k, v in params.items()}
    J_fast = module.sgd_step(fast, x, y, lr)
    J, grads = module.value_and_grad(params, x, y)
    slow = {k: v - lr * grads[k] for k, v in params.items()}
    return (J_fast, fast), (J, slow)


def assert_same_step(text, dtype="float64", seed=0, rtol=1e-12):
    module, _ = module_from(text, dtype)
    assert hasattr(module, "_sgd_step_one")
    params, x, y = random_problem(module, batch=1, seed=seed)
    (J_fast, fast), (J, slow) = step_both_ways(module, params, x, y, lr=0.3)
    one_path_only(module)
    module.sgd_step({k: v.copy() for k, v in params.items()}, x, y, 0.3)
    assert isinstance(J_fast, float)
    assert J_fast == pytest.approx(float(J), rel=rtol)
    for key in params:
        assert fast[key].dtype == params[key].dtype
        np.testing.assert_allclose(fast[key], slow[key], rtol=rtol, atol=rtol, err_msg=key)
    return module


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_one_example_step_equals_the_batch_step_for_each_activation(activation):
    assert_same_step(spec_text(["linear: 6", activation, "linear: 3"]))


@pytest.mark.parametrize("loss,outputs", [("softmax_cross_entropy", 4),
                                          ("sigmoid_binary_cross_entropy", 1),
                                          ("sigmoid_binary_cross_entropy", 3),
                                          ("mse", 1), ("mse", 2)])
def test_one_example_step_equals_the_batch_step_for_each_loss(loss, outputs):
    assert_same_step(spec_text(["linear: 6", "tanh", f"linear: {outputs}"], loss=loss))


def test_deep_stack_with_l2_no_bias_and_float32():
    layers = ["linear: 7", "relu", "linear: {out: 6, bias: false}", "sigmoid", "linear: 5",
              'activation: "softplus(x) - log(2)"', "linear: {out: 1, bias: false}"]
    text = spec_text(layers, loss="sigmoid_binary_cross_entropy", extra="l2: 0.01\n")
    assert_same_step(text, seed=2)
    assert_same_step(text, dtype="float32", seed=2, rtol=2e-5)


def test_one_output_values_are_floats_through_activations_and_losses():
    # one unit, squashed, then regressed: the sigmoid node and its adjoint are Python floats
    module = assert_same_step(spec_text(["linear: 4", "tanh", "linear: 1", "sigmoid", 'activation: "x*x + x"'],
                                        loss="mse"))
    assert "_linear2_buf" not in module.__dict__ and "_sigmoid1_buf" not in module.__dict__


def test_a_single_unit_feeding_a_layer_has_no_one_example_path():
    module, _ = module_from(spec_text(["linear: 1", "tanh", "linear: 3"]))
    assert not hasattr(module, "_sgd_step_one")
    params, x, y = random_problem(module, batch=1, seed=0)
    (J_fast, fast), (J, slow) = step_both_ways(module, params, x, y, lr=0.3)
    for key in params:
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-12)


def test_one_example_gradient_matches_central_differences():
    """The lecture's Case 2 network: with lr = 1 the update is the gradient itself."""
    text = spec_text(["linear: 5", "sigmoid", "linear: 1"], loss="sigmoid_binary_cross_entropy")
    module, _ = module_from(text)
    params, x, y = random_problem(module, batch=1, seed=4)
    after = {k: v.copy() for k, v in params.items()}
    module.sgd_step(after, x, y, 1.0)
    for key in params:
        def loss(value, key=key):
            trial = dict(params, **{key: value})
            return float(module.forward(trial, x, y)[0])
        numeric = numerical_gradient(loss, [params[key]], 0)
        analytic = params[key] - after[key]
        err = np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-300)
        assert err < 1e-8, (key, err)


def test_extreme_logits_stay_finite():
    module, _ = module_from(spec_text(["linear: 1"], loss="sigmoid_binary_cross_entropy", inputs=2))
    for logit, target in ((1000.0, 0.0), (-1000.0, 1.0), (1000.0, 1.0)):
        params = {"linear1.W": np.array([[1.0, 0.0]]), "linear1.b": np.zeros(1)}
        J = module.sgd_step(params, np.array([[logit, 0.0]]), np.array([[target]]), 0.1)
        assert math.isfinite(J) and all(np.isfinite(v).all() for v in params.values())
        assert J == pytest.approx(1000.0 if logit * (2 * target - 1) < 0 else 0.0, abs=1e-9)


def test_bad_input_on_one_example_raises_the_batch_paths_errors_and_changes_nothing():
    module, _ = module_from(spec_text(["linear: 4", "tanh", "linear: 3"]))
    params, x, y = random_problem(module, batch=1, seed=0)
    before = {k: v.copy() for k, v in params.items()}
    cases = [
        (dict(params, **{"linear1.W": params["linear1.W"].astype(np.float32)}), x, y, "linear1.W"),
        (dict(params, **{"linear2.b": params["linear2.b"][:2]}), x, y, "linear2.b"),
        ({k: v for k, v in params.items() if k != "linear2.W"}, x, y, "linear2.W"),
        (params, x, np.array([3]), "class ids"),
        (params, x, np.array([-1]), "class ids"),
        (params, x, np.array([0.5]), "y"),
        (params, x.astype(complex), y, "x: expected numbers"),
        (list(params.values()), x, y, "params"),
    ]
    for p, xx, yy, message in cases:
        with pytest.raises(ValueError, match=message):
            module.sgd_step(p, xx, yy, 0.1)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])


def test_modules_without_a_one_example_form_have_no_such_path():
    lenet = module_from("""
        name: tiny_conv
        dtype: float64
        input: [1, 6, 6]
        layers:
          - conv2d: {out_channels: 2, kernel: 3}
          - relu
          - flatten
          - linear: 3
        loss: softmax_cross_entropy
        """)[0]
    assert not hasattr(lenet, "_sgd_step_one")


# --- the ufunc printer ------------------------------------------------------------------

def run_statements(lines, env):
    namespace = dict(env, np=np)
    exec("\n".join(lines), namespace)   # the statements the printer wrote, not user text


def scratch_names(shape, env):
    count = [0]

    def next_name(avoid=None):
        name = f"tmp{count[0]}"
        count[0] += 1
        env[name] = np.empty(shape)
        return name
    return next_name


def parsed(text):
    return parse_expression(text)[0]


@pytest.mark.parametrize("expr", [parsed(t) for t in [
    "a*(1 - a)", "1 - b**2", "-a - b", "1/(a*b)", "2*a - 3*b + 1", "a/b - b/a",
    "exp(-a) * sigmoid(b)", "max(a, b) - min(a, 0.5)", "sqrt(b) + log(b) + abs(a)",
    "pow(b, a)", "tanh(a + b) * (a - b) * (a + 1)", "softplus(a - b) / (1 + exp(a))",
    "-(a*b)", "a", "3"]] + [
    relu(symbol("a"), evaluate=False) + step(symbol("b"), evaluate=False),   # relu's partial
    sp.Piecewise((1, symbol("a") > symbol("b")), (0, True)),                 # max's partial
], ids=str)
def test_ufunc_statements_compute_the_expression(expr):
    rng = np.random.default_rng(0)
    env = {"a": rng.uniform(-2, 2, 7), "b": rng.uniform(0.5, 2, 7), "out": np.empty(7)}
    lines = ufunc_statements(expr, "out", scratch_names((7,), env))
    assert lines is not None
    expected = eval(to_numpy(expr), {"np": np, "a": env["a"], "b": env["b"]})  # our printer's text
    run_statements(lines, env)
    np.testing.assert_allclose(env["out"], np.broadcast_to(expected, (7,)), rtol=1e-13)


@settings(max_examples=60, deadline=None)
@given(st.recursive(
    st.sampled_from(["a", "b", "2", "0.5"]),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "/"]), inner, inner).map(lambda t: f"({t[1]} {t[0]} {t[2]})"),
        st.tuples(st.sampled_from(["tanh", "sin", "exp", "sigmoid", "softplus", "relu"]), inner)
          .map(lambda t: f"{t[0]}({t[1]})"),
        inner.map(lambda e: f"-({e})")),
    max_leaves=8))
def test_ufunc_statements_agree_with_the_printer_on_random_expressions(text):
    try:
        expr, names, _ = parse_expression(text)
    except SpecError:        # constants the parser folds and rejects, like softplus(2)
        assume(False)
    rng = np.random.default_rng(1)
    env = {"a": rng.uniform(0.5, 1.5, 5), "b": rng.uniform(0.5, 1.5, 5), "out": np.empty(5)}
    lines = ufunc_statements(expr, "out", scratch_names((5,), env))
    assert lines is not None
    with np.errstate(all="ignore"):
        expected = np.broadcast_to(eval(to_numpy(expr), {"np": np, "a": env["a"], "b": env["b"]}), (5,))
        run_statements(lines, env)
    np.testing.assert_allclose(env["out"], expected, rtol=1e-12, equal_nan=True)
