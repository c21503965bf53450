"""The generated layer modules' run-time contract on careless arguments (issue 10):
every bad argument is a ValueError that names it, and grads has exactly PARAMS' keys."""

import numpy as np
import pytest

import bpcompile
from bpcompile.training.gradcheck import random_problem

pytestmark = pytest.mark.both_targets

MLP = {"name": "mlp", "dtype": "float64", "input": [3], "layers": [{"linear": 4}, "tanh", {"linear": 2}],
       "loss": "softmax_cross_entropy"}
CONV = {"name": "conv", "dtype": "float64", "input": [1, 4, 4], "loss": "mse",
        "layers": [{"conv2d": {"out_channels": 2, "kernel": 3}}, "flatten", {"linear": 2}]}
TAGGER = {"name": "tagger", "dtype": "float64", "input": {"vocab": 6}, "loss": "softmax_cross_entropy",
          "layers": [{"embedding": 3}, {"lstm": {"hidden": 4}}, {"linear": 3}]}


@pytest.fixture(scope="module", params=[MLP, CONV, TAGGER], ids=lambda s: s["name"])
def problem(request, code_target):
    module = bpcompile.compile(request.param)
    params, x, y = random_problem(module, batch=3, seed=0)
    return module, params, x, y


def test_an_empty_batch_is_a_value_error_naming_x(problem):
    module, params, x, y = problem
    for call in (lambda: module.forward(params, x[:0], y[:0]),
                 lambda: module.value_and_grad(params, x[:0], y[:0]),
                 lambda: module.sgd_step(params, x[:0], y[:0], 0.1),
                 lambda: module.predict(params, x[:0])):
        with pytest.raises(ValueError, match="x: the batch is empty"):
            call()


def test_no_time_steps_is_a_value_error_naming_x():
    module = bpcompile.compile(TAGGER)
    params, x, y = random_problem(module, batch=3, seed=0)
    with pytest.raises(ValueError, match="x: the batch is empty"):
        module.value_and_grad(params, x[:, :0], y[:, :0])


@pytest.mark.parametrize("mask, message", [
    (lambda m: -m, "every entry must be 0 \\(padding\\) or 1"),
    (lambda m: 2 * m, "every entry must be 0 \\(padding\\) or 1"),
    (lambda m: m.astype(str), "expected an array of 0s and 1s"),
    (lambda m: 0 * m, "every position is padding"),
    (lambda m: m[:, :1], "expected an array of 0s and 1s"),
])
def test_bad_masks_are_value_errors_naming_mask(mask, message):
    module = bpcompile.compile(TAGGER)
    params, x, y = random_problem(module, batch=3, seed=0)
    with pytest.raises(ValueError, match="mask: " + message):
        module.value_and_grad(params, x, y, mask(np.ones(x.shape)))


@pytest.mark.parametrize("state", [{"nope": np.zeros((3, 4))}, [1], "lstm1.h"])
def test_a_state_that_is_not_the_modules_is_a_value_error(state):
    module = bpcompile.compile(TAGGER)
    params, x, y = random_problem(module, batch=3, seed=0)
    with pytest.raises(ValueError, match="state: expected None or a dict"):
        module.forward(params, x, y, None, state)


def test_grads_have_exactly_the_keys_of_params_and_the_state_gradient_is_separate():
    module = bpcompile.compile(TAGGER)
    params, x, y = random_problem(module, batch=3, seed=0)
    J, grads = module.value_and_grad(params, x, y)
    assert set(grads) == set(module.PARAMS)
    for key in grads:          # the loop a user writes
        params[key] -= 0.1 * grads[key]
    state = {k: np.full(v.shape, 0.3) for k, v in module.forward(params, x, y)[1]["state"].items()}
    J2, grads2, dstate = module.value_and_grad(params, x, y, None, state, state_grad=True)
    assert set(grads2) == set(module.PARAMS) and set(dstate) == set(state) == set(module.STATE_KEYS)
    # dJ/dstate by central differences along one direction
    direction = {k: np.random.default_rng(1).normal(size=v.shape) for k, v in state.items()}
    h = 1e-6
    plus = module.forward(params, x, y, None, {k: state[k] + h * direction[k] for k in state})[0]
    minus = module.forward(params, x, y, None, {k: state[k] - h * direction[k] for k in state})[0]
    analytic = sum(np.vdot(dstate[k], direction[k]) for k in state)
    assert analytic == pytest.approx((plus - minus) / (2 * h), rel=1e-6)


# --- predict(..., logits=True) (issue 14) ------------------------------------------------

def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


BCE = {"name": "bce", "dtype": "float64", "input": [3], "layers": [{"linear": 4}, "tanh", {"linear": 2}],
       "loss": "sigmoid_binary_cross_entropy"}


@pytest.mark.parametrize("spec,link", [(MLP, _softmax), (CONV, lambda a: a), (TAGGER, _softmax),
                                       (BCE, lambda a: 1 / (1 + np.exp(-a)))],
                         ids=["softmax", "mse", "sequence", "sigmoid"])
def test_predict_returns_the_logits_before_the_losss_link(spec, link):
    module = bpcompile.compile(spec)
    params, x, y = random_problem(module, batch=3, seed=0)
    extra = {"mask": np.array([[1, 1, 1, 0]] * 3)} if module.SEQUENCE else {}
    logits = module.predict(params, x, logits=True, **extra)
    predicted = module.predict(params, x, **extra)
    assert logits.shape == predicted.shape == x.shape[:1 + module.SEQUENCE] + (module.OUTPUTS,)
    np.testing.assert_allclose(link(logits), predicted, rtol=1e-12, atol=1e-15)
    if spec is not CONV:
        assert not np.allclose(logits, predicted)          # the link was applied
    # the logits are what the loss reads: J from them, written out here
    J = module.forward(params, x, y, **extra)[0]
    if spec is MLP:
        assert J == pytest.approx(-np.mean(np.log(_softmax(logits)[np.arange(3), y])), rel=1e-12)
    elif spec is CONV:
        assert J == pytest.approx(np.sum((logits - y) ** 2) / 2 / 3, rel=1e-12)
    elif spec is BCE:
        s = link(logits)
        assert J == pytest.approx(-np.sum(y * np.log(s) + (1 - y) * np.log(1 - s)) / 3, rel=1e-12)


@pytest.mark.parametrize("name", ["logits", "prediction", "one_example"])
def test_a_layer_named_like_predicts_locals_does_not_break_it(name):
    spec = dict(MLP, layers=[{"linear": 4}, "tanh", {"linear": {"out": 2, "name": name}}])
    module = bpcompile.compile(spec)
    params, x, _ = random_problem(module, batch=3, seed=0)
    assert f"{name}.W" in module.PARAMS
    p = module.predict(params, x)
    np.testing.assert_allclose(p, _softmax(module.predict(params, x, logits=True)), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
