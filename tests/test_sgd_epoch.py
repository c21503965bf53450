"""sgd_epoch(params, x, y, lr, batch_size=1): one pass of minibatch SGD in the given
order, on every layer module of both targets.

Its contract is written here from the issue, not read from the module: the same
updates as sgd_step on consecutive batches (the last one smaller), and the mean
of the steps' losses weighted by examples (sequences: by real positions).  For
the numba target, the epoch at batch_size 1 is one compiled loop
(_sgd_epoch_one); it is checked against the NumPy target and, independently,
against central finite differences of the loss.
"""

import re

import numpy as np
import pytest

import bpcompile
from bpcompile.codegen import targets

from conftest import fd_gradient

pytestmark = pytest.mark.both_targets

MLP_SIGMOID = {"name": "lecture", "dtype": "float64", "input": [6],
               "layers": [{"linear": 5}, "sigmoid", {"linear": 1}],
               "loss": "sigmoid_binary_cross_entropy"}
MLP_SOFTMAX = {"name": "digits", "dtype": "float64", "input": [7],
               "layers": [{"linear": 6}, "tanh", {"linear": 4}],
               "loss": "softmax_cross_entropy"}
MLP_MSE = {"name": "regress", "dtype": "float64", "input": [3],
           "layers": [{"linear": 4}, "tanh", {"linear": 2}], "loss": "mse"}
MLP_BCE_MANY = {"name": "labels", "dtype": "float64", "input": [4],
                "layers": [{"linear": 3}, "sigmoid", {"linear": 3}],
                "loss": "sigmoid_binary_cross_entropy"}
MLP_L2_F32 = {"name": "small32", "dtype": "float32", "input": [5], "l2": 0.01,
              "layers": [{"linear": 4}, "relu", {"linear": 3}],
              "loss": "softmax_cross_entropy"}
CONV = {"name": "tinyconv", "dtype": "float64", "input": [1, 6, 6],
        "layers": [{"conv2d": {"out_channels": 2, "kernel": 3}}, "relu",
                   {"maxpool2d": {"kernel": 2}}, "flatten", {"linear": 3}],
        "loss": "softmax_cross_entropy"}
DROPOUT = {"name": "dropper", "dtype": "float64", "input": [5],
           "layers": [{"linear": 6}, "relu", {"dropout": {"p": 0.5}}, {"linear": 3}],
           "loss": "softmax_cross_entropy"}
TAGGER = {"name": "tagger", "dtype": "float64", "input": {"vocab": 9},
          "layers": [{"embedding": 4}, {"rnn": {"hidden": 5}}, {"linear": 3}],
          "loss": "softmax_cross_entropy"}

ROW_SPECS = [MLP_SIGMOID, MLP_SOFTMAX, MLP_MSE, MLP_BCE_MANY, MLP_L2_F32]


def data(module, n, seed=0):
    rng = np.random.default_rng(seed)
    if module.SEQUENCE:
        x = rng.integers(0, module.VOCAB, (n, 6))
        y = rng.integers(0, module.OUTPUTS, (n, 6))
        return x, y
    x = rng.standard_normal((n,) + module.INPUT_SHAPE)
    if module.LOSS == "softmax_cross_entropy":
        y = rng.integers(0, module.OUTPUTS, n)
    elif module.LOSS == "sigmoid_binary_cross_entropy":
        y = (rng.random((n, module.OUTPUTS)) < 0.5).astype(float)
    else:
        y = rng.standard_normal((n, module.OUTPUTS))
    return x, y


def copy(params):
    return {k: v.copy() for k, v in params.items()}


def loop_of_steps(module, params, x, y, lr, batch_size, **keywords):
    """The contract, written out: sgd_step on consecutive batches; the mean of their
    losses weighted by examples."""
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        total += float(module.sgd_step(params, xb, yb, lr, **keywords)) * len(xb)
    return total / len(x)


@pytest.mark.parametrize("spec", ROW_SPECS + [CONV], ids=lambda s: s["name"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_the_same_as_sgd_step_on_consecutive_batches(spec, batch_size):
    module = bpcompile.compile(spec)
    x, y = data(module, 11)
    params = module.init_params(1)
    expected_params = copy(params)
    expected = loop_of_steps(module, expected_params, x, y, 0.05, batch_size)
    loss = module.sgd_epoch(params, x, y, 0.05, batch_size)
    tight = 1e-5 if module.DTYPE == np.float32 else 1e-12
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=tight)
    for key in params:
        np.testing.assert_allclose(params[key], expected_params[key], rtol=tight, atol=tight)
        assert not np.array_equal(params[key], module.init_params(1)[key]), key


@pytest.mark.parametrize("spec", ROW_SPECS, ids=lambda s: s["name"])
def test_batch_size_one_equals_the_numpy_target(spec):
    """On the numba target the epoch at batch_size 1 is the compiled loop; its result
    must be the NumPy target's (the same statements) to rounding."""
    module = bpcompile.compile(spec)
    reference = bpcompile.compile(spec, target="numpy")
    x, y = data(module, 40, seed=3)
    params = module.init_params(2)
    expected_params = copy(params)
    loss = module.sgd_epoch(params, x, y, 0.1)
    expected = reference.sgd_epoch(expected_params, x, y, 0.1)
    tight = 1e-5 if module.DTYPE == np.float32 else 1e-12
    assert loss == pytest.approx(expected, rel=tight)
    for key in params:
        np.testing.assert_allclose(params[key], expected_params[key], rtol=tight, atol=tight)


# activations whose one-example statements copy a value into a buffer (np.copyto, which
# numba lacks): the identity, and sums the in-place emitter builds from a copied operand
COPYING_ACTIVATIONS = ["x", "x + 1", "sqrt(x**2 + 1)", "relu(x) - relu(-x)", "cos(x) + x"]


@pytest.mark.parametrize("expr", COPYING_ACTIVATIONS)
def test_batch_size_one_equals_the_numpy_target_where_a_statement_copies(expr):
    """Found by the random specs: the compiled epoch of these did not compile (numba has
    no np.copyto)."""
    spec = {"name": "copying", "dtype": "float64", "input": [3],
            "layers": [{"linear": 4}, {"activation": {"expr": expr}}, {"linear": 2}],
            "loss": "softmax_cross_entropy"}
    test_batch_size_one_equals_the_numpy_target(spec)


@pytest.mark.parametrize("spec", [s for s in ROW_SPECS if s["dtype"] == "float64"],
                         ids=lambda s: s["name"])
def test_one_example_epoch_steps_by_the_finite_difference_gradient(spec):
    """An epoch of one example is params - lr * dJ/dparams: checked against central
    finite differences of value_and_grad's J, independently of every backward pass."""
    module = bpcompile.compile(spec)
    x, y = data(module, 1, seed=5)
    params = module.init_params(4)
    before = copy(params)
    lr = 0.25
    J = module.sgd_epoch(params, x, y, lr)
    keys = list(before)

    def loss(*arrays):
        return module.value_and_grad(dict(zip(keys, arrays)), x, y)[0]

    assert J == pytest.approx(loss(*before.values()), rel=1e-12)
    for i, key in enumerate(keys):
        numeric = fd_gradient(loss, list(before.values()), i)
        np.testing.assert_allclose((before[key] - params[key]) / lr, numeric, rtol=1e-6,
                                   atol=1e-9, err_msg=key)


def test_the_numba_epoch_is_one_compiled_call():
    module = bpcompile.compile(MLP_SIGMOID)
    if targets.DEFAULT_TARGET != "numba":
        assert not hasattr(module, "_sgd_epoch_one")
        assert "numba" not in module.SOURCE
        return
    import numba
    assert isinstance(module._sgd_epoch_one, numba.core.registry.CPUDispatcher)
    assert module.SOURCE.splitlines()[2].startswith("# Needs numba and scipy (pip install numba scipy")
    x, y = data(module, 5)
    module.sgd_epoch(module.init_params(0), x, y, 0.1)
    assert module._sgd_epoch_one.signatures, "the compiled loop did not run"


@pytest.mark.parametrize("spec", ROW_SPECS, ids=lambda s: s["name"])
def test_the_numba_epoch_declares_only_what_its_loop_reads(spec):
    """Each buffer, view and constant _sgd_epoch_one declares before its loop is read by
    the loop (or by a view that the loop reads): the column and row views of an outer
    product, which the NumPy step hands to BLAS, are gone where _subtract_outer does
    the update (they were declared unused before)."""
    module = bpcompile.compile(spec)
    if targets.DEFAULT_TARGET != "numba":
        return
    kernel = module.SOURCE.split("def _sgd_epoch_one(")[1].split("\ndef ")[0]
    head, loop = kernel.split("    total = 0.0\n")
    declared = re.findall(r"^    (_\w+) = ", head, flags=re.MULTILINE)
    assert declared
    for name in declared:
        readers = loop + "".join(line for line in head.splitlines()
                                 if not line.startswith(f"    {name} = "))
        assert re.search(rf"\b{name}\b", readers), name


@pytest.mark.parametrize("spec", ROW_SPECS, ids=lambda s: s["name"])
def test_the_numba_epoch_subtracts_each_weights_outer_product_in_place(spec):
    """Every linear weight whose gradient is an outer product (all but a one-unit
    output's) is updated by _subtract_outer in the compiled loop, which therefore
    holds no buffer for it; the NumPy one-example step keeps its BLAS product.  The
    results are the NumPy target's (test_batch_size_one_equals_the_numpy_target).
    With an l2 penalty a weight's gradient is a sum of two terms: the kernel keeps
    the buffer that adds them."""
    module = bpcompile.compile(spec)
    if targets.DEFAULT_TARGET != "numba":
        assert "_subtract_outer" not in module.SOURCE
        return
    kernel = module.SOURCE.split("def _sgd_epoch_one(")[1].split("\ndef ")[0]
    one_example = module.SOURCE.split("def _sgd_step_one(")[1].split("\ndef ")[0]
    for key, shape in module.PARAMS.items():
        if not key.endswith(".W") or shape[0] == 1:
            continue
        var = key.replace(".", "_")
        assert f"_dJ_d{var}_buf" in one_example, key
        if "l2" in spec:
            assert f"_subtract_outer({var}, " not in kernel, key
            assert f"subtract({var}, _dJ_d{var}_buf, {var})" in kernel, key
            continue
        assert f"_subtract_outer({var}, " in kernel, key
        assert f"_dJ_d{var}_buf" not in kernel, key
    if "_subtract_outer(" not in kernel:
        return
    x, y = data(module, 4)
    module.sgd_epoch(module.init_params(0), x, y, 0.1)
    assert module._subtract_outer.signatures, "the compiled update did not run"


def test_a_tagger_weights_the_steps_by_their_real_positions():
    module = bpcompile.compile(TAGGER)
    x, y = data(module, 5, seed=2)
    mask = np.ones(x.shape)
    mask[1, 3:] = 0
    mask[4, 1:] = 0
    params = module.init_params(0)
    expected_params = copy(params)
    total, positions = 0.0, 0
    for start in range(0, 5, 2):
        batch = slice(start, start + 2)
        J = module.sgd_step(expected_params, x[batch], y[batch], 0.1, mask=mask[batch])
        total += float(J) * mask[batch].sum()
        positions += mask[batch].sum()
    loss = module.sgd_epoch(params, x, y, 0.1, batch_size=2, mask=mask)
    assert loss == pytest.approx(total / positions, rel=1e-12)
    for key in params:
        np.testing.assert_allclose(params[key], expected_params[key], rtol=1e-12, atol=1e-14)


def test_dropout_draws_from_the_generator_given():
    module = bpcompile.compile(DROPOUT)
    x, y = data(module, 9)
    params = module.init_params(0)
    expected_params = copy(params)
    expected = loop_of_steps(module, expected_params, x, y, 0.1, 4,
                             rng=np.random.default_rng(7))
    loss = module.sgd_epoch(params, x, y, 0.1, 4, rng=np.random.default_rng(7))
    assert loss == pytest.approx(expected, rel=1e-12)
    for key in params:
        np.testing.assert_array_equal(params[key], expected_params[key])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "8", None])
def test_a_batch_size_that_is_no_positive_integer_is_refused(bad):
    module = bpcompile.compile(MLP_SOFTMAX)
    x, y = data(module, 4)
    params = module.init_params(0)
    before = copy(params)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
        module.sgd_epoch(params, x, y, 0.1, bad)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])


def test_bad_data_is_refused_before_any_step():
    module = bpcompile.compile(MLP_SOFTMAX)
    x, y = data(module, 4)
    params = module.init_params(0)
    before = copy(params)
    with pytest.raises(ValueError):
        module.sgd_epoch(params, x[:, :3], y, 0.1)
    with pytest.raises(ValueError):
        module.sgd_epoch(params, x, np.full(4, 99), 0.1)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])


# --- random specs: the compiled epoch against the gradient of value_and_grad --------------

from hypothesis import HealthCheck, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bpcompile.compiler import compile_spec, load_spec  # noqa: E402
from bpcompile.errors import SpecError  # noqa: E402
from spec_strategies import specs  # noqa: E402

# each drawn spec is a numba compilation (about a second) on the numba target
RANDOM_EXAMPLES = 25


@settings(max_examples=RANDOM_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(specs().filter(lambda drawn: not drawn.sequence), st.integers(0, 2**32 - 1))
def test_random_specs_one_example_epochs_are_sgd_on_each_example(drawn, seed):
    """Three examples, batch_size 1: after each, params - lr * (that example's gradient
    at the params before it), the gradient taken from value_and_grad (itself proven
    against finite differences by test_random_specs.py)."""
    note(drawn.text)
    try:
        module = bpcompile.load_module(compile_spec(load_spec(drawn.text, "spec.yaml")).source)
    except SpecError:
        return                       # refusals are test_random_specs.py's business
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0.0, 0.6, shape) for k, shape in module.PARAMS.items()}
    x, y = data(module, 3, seed=seed % 1000)
    lr = 0.05
    expected, losses = copy(params), []
    for n in range(3):
        J, grads = module.value_and_grad(expected, x[n:n + 1], y[n:n + 1])
        losses.append(J)
        for key in expected:
            expected[key] = expected[key] - lr * grads[key]
    loss = module.sgd_epoch(params, x, y, lr)
    assert loss == pytest.approx(np.mean(losses), rel=1e-9, abs=1e-12)
    for key in params:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-9, atol=1e-12,
                                   err_msg=key)


def test_one_example_step_of_a_spec_whose_one_output_reads_x_returns_a_float():
    """Found by the random specs: with one input feature and no linear layer the
    output unit was computed from x's 1-element vector, so the one-example sgd_step
    returned J as an array of shape (1,)."""
    spec = {"name": "nolinear", "dtype": "float64", "input": [1],
            "layers": [{"activation": "x + tanh(x)"}, "sigmoid"], "loss": "mse"}
    module = bpcompile.compile(spec)
    x, y = np.array([[0.3]]), np.array([[0.9]])
    J = module.sgd_step({}, x, y, 0.1)
    assert np.ndim(J) == 0
    assert float(J) == pytest.approx(module.value_and_grad({}, x, y)[0], rel=1e-14)
    assert isinstance(module.sgd_epoch({}, np.array([[0.3], [0.1]]), np.array([0.9, 0.2]), 0.1),
                      float)


def test_read_only_params_are_refused_with_a_value_error():
    module = bpcompile.compile(MLP_SIGMOID)
    x, y = data(module, 3)
    params = module.init_params(0)
    params["linear1.W"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        module.sgd_epoch(params, x, y, 0.1)
