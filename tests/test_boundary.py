"""What the generated layer modules accept at their boundary (issue 14): lists, other
dtypes and one example without the batch axis are converted where that is
unambiguous, and give exactly the results of the explicitly converted batch;
everything ambiguous is still a ValueError naming the argument."""

import numpy as np
import pytest

import bpcompile
from bpcompile.training.gradcheck import random_problem

pytestmark = pytest.mark.both_targets

MLP32 = {"name": "mlp32", "dtype": "float32", "input": [3], "layers": [{"linear": 4}, "tanh", {"linear": 3}],
         "loss": "softmax_cross_entropy"}
BCE = {"name": "bce", "dtype": "float64", "input": [3], "layers": [{"linear": 4}, "tanh", {"linear": 1}],
       "loss": "sigmoid_binary_cross_entropy"}
MSE32 = {"name": "mse32", "dtype": "float32", "input": [3], "layers": [{"linear": 2}],
         "loss": "mse"}
CONV = {"name": "conv", "dtype": "float64", "input": [1, 4, 4], "loss": "softmax_cross_entropy",
        "layers": [{"conv2d": {"out_channels": 2, "kernel": 3}}, "flatten", {"linear": 2}]}
TAGGER = {"name": "tagger", "dtype": "float64", "input": {"vocab": 6}, "loss": "softmax_cross_entropy",
          "layers": [{"embedding": 3}, {"lstm": {"hidden": 4}}, {"linear": 3}]}
FEATURES = {"name": "features", "dtype": "float32", "input": [2], "loss": "softmax_cross_entropy",
            "layers": [{"rnn": {"hidden": 3}}, {"linear": 3}]}


@pytest.fixture(scope="module")
def modules(code_target):
    return {spec["name"]: bpcompile.compile(spec) for spec in (MLP32, BCE, MSE32, CONV, TAGGER, FEATURES)}


def results(module, params, x, y, lr=0.1, **extra):
    """Everything the public functions return for (x, y), and params after one sgd_step."""
    J, grads = module.value_and_grad(params, x, y, **extra)
    stepped = {k: v.copy() for k, v in params.items()}
    step_J = module.sgd_step(stepped, x, y, lr, **extra)
    return {"J": module.forward(params, x, y, **extra)[0], "vg": J, "grads": grads,
            "predict": module.predict(params, x, **extra),
            "logits": module.predict(params, x, logits=True, **extra),
            "step_J": step_J, "stepped": stepped}


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key in got:
        a, b = got[key], want[key]
        if isinstance(a, dict):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{key}[{k}]")
                assert a[k].dtype == b[k].dtype
        else:
            np.testing.assert_array_equal(a, b, err_msg=key)
            assert np.asarray(a).dtype == np.asarray(b).dtype, key


def one_row(batch_results):
    """What one example gives, from what its batch of one gives: predict drops the batch axis."""
    return dict(batch_results, predict=batch_results["predict"][0], logits=batch_results["logits"][0])


# --- accepted: the same results as the explicitly converted batch ------------------------

@pytest.mark.parametrize("convert", [
    lambda x: x.tolist(),
    lambda x: tuple(map(tuple, x.tolist())),
    lambda x: x.astype(np.float64),
    lambda x: x.astype(np.float16),
    lambda x: np.round(x * 4).astype(np.int32),
    lambda x: x > 0,
], ids=["list", "tuple", "float64", "float16", "int32", "bool"])
def test_x_of_another_type_is_converted_to_the_modules_dtype(modules, convert):
    module = modules["mlp32"]
    params, x, y = random_problem(module, batch=5, seed=1)
    given = convert(x)
    explicit = np.asarray(given).astype(module.DTYPE)
    assert_same(results(module, params, given, y), results(module, params, explicit, y))


def test_an_array_of_the_right_dtype_is_not_copied(modules):
    """The usual call pays only for the checks: x and y come back as they were given."""
    for name in ("mlp32", "bce", "conv"):
        module = modules[name]
        params, x, y = random_problem(module, batch=3, seed=2)
        x_back, y_back, one = module._check(params, x, y)
        assert x_back is x and not one
        assert y_back is y or (y_back.base is y and y_back.shape == (3, 1))


@pytest.mark.parametrize("name", ["mlp32", "bce", "mse32", "conv"])
def test_one_example_gets_the_batch_axis(modules, name):
    module = modules[name]
    params, x, y = random_problem(module, batch=1, seed=3)
    want = one_row(results(module, params, x, y))
    assert want["predict"].shape == (module.OUTPUTS,)
    one_label = y[0]        # a class id, or one example's targets (OUTPUTS,)
    assert_same(results(module, params, x[0], one_label), want)
    assert_same(results(module, params, x[0].tolist(), np.asarray(one_label).tolist()), want)


@pytest.mark.parametrize("label", [lambda y: int(y[0]), lambda y: y[0], lambda y: np.asarray(y[0]),
                                   lambda y: y[:1], lambda y: [int(y[0])]],
                         ids=["int", "np.int64", "0-d", "(1,)", "list"])
def test_one_examples_class_id_in_any_form(modules, label):
    module = modules["mlp32"]
    params, x, y = random_problem(module, batch=1, seed=4)
    assert_same(results(module, params, x[0], label(y)), one_row(results(module, params, x, y)))


def test_the_per_example_loop_a_user_writes(modules):
    """for i: sgd_step(params, X[i], Y[i], lr) is the lecture's per-example SGD on rows."""
    module = modules["mlp32"]
    params, X, Y = random_problem(module, batch=6, seed=5)
    rows, batches = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    for i in range(len(X)):
        J_row = module.sgd_step(rows, X[i], Y[i], 0.1)
        J_batch = module.sgd_step(batches, X[i:i + 1], Y[i:i + 1], 0.1)
        assert J_row == J_batch
    for k in params:
        np.testing.assert_array_equal(rows[k], batches[k])


@pytest.mark.parametrize("convert", [lambda y: y.astype(np.int64), lambda y: y.astype(bool),
                                     lambda y: y.astype(np.float32), lambda y: y.tolist(),
                                     lambda y: y[:, 0].astype(np.int8)],
                         ids=["int64", "bool", "float32", "list", "1-D int8"])
def test_float_targets_of_another_type_are_cast(modules, convert):
    module = modules["bce"]
    params, x, y = random_problem(module, batch=4, seed=6)      # y: 0/1 float64, (4, 1)
    assert_same(results(module, params, x, convert(y)), results(module, params, x, y))


@pytest.mark.parametrize("label", [lambda y: float(y[0, 0]), lambda y: int(y[0, 0]),
                                   lambda y: y[0], lambda y: y[0].astype(bool)],
                         ids=["float", "int", "(1,)", "bool (1,)"])
def test_one_examples_single_target(modules, label):
    module = modules["bce"]
    params, x, y = random_problem(module, batch=1, seed=7)
    assert_same(results(module, params, x[0], label(y)), one_row(results(module, params, x, y)))


def test_mse_targets_float64_into_float32(modules):
    module = modules["mse32"]
    params, x, y = random_problem(module, batch=4, seed=8)
    assert_same(results(module, params, x, y.astype(np.float64)), results(module, params, x, y))
    assert_same(results(module, params, x[0].astype(np.float64), y[0].astype(np.float64)),
                one_row(results(module, params, x[:1], y[:1])))


@pytest.mark.parametrize("name", ["tagger", "features"])
def test_one_sequence_gets_the_batch_axis_with_its_mask_and_labels(modules, name):
    module = modules[name]
    params, x, y = random_problem(module, batch=1, seed=9)
    mask = np.array([[1, 1, 1, 0]])
    want = one_row(results(module, params, x, y, mask=mask))
    assert want["predict"].shape == (4, module.OUTPUTS)
    assert_same(results(module, params, x[0], y[0], mask=mask[0]), want)
    assert_same(results(module, params, x[0].tolist(), y[0].tolist(), mask=mask[0].tolist()), want)
    # without a mask too, and the final state has the batch axis
    assert_same(results(module, params, x[0], y[0]), one_row(results(module, params, x, y)))
    state = module.forward(params, x[0], y[0])[1]["state"]
    assert all(v.shape[0] == 1 for v in state.values())


def test_feature_sequences_of_another_dtype_are_cast(modules):
    module = modules["features"]
    params, x, y = random_problem(module, batch=2, seed=10)
    assert_same(results(module, params, x.astype(np.float64), y), results(module, params, x, y))
    assert_same(results(module, params, x.tolist(), y.tolist()), results(module, params, x, y))


# --- refused: still ambiguous ----------------------------------------------------------

@pytest.mark.parametrize("name,bad,message", [
    ("mlp32", lambda x, y: (x[:, :2], y), r"x: expected an array of shape \(B, 3\) or one example"),
    ("mlp32", lambda x, y: (x[0, :2], y[:1]), r"x: expected an array of shape \(B, 3\)"),
    ("mlp32", lambda x, y: (x[None], y), r"x: expected an array of shape \(B, 3\)"),
    ("mlp32", lambda x, y: ([[1.0, 2.0, 3.0], [1.0, 2.0]], y[:2]), "x: cannot make one array of this list"),
    ("mlp32", lambda x, y: (x.astype(complex), y), r"x: expected numbers \(a float, integer or bool array\)"),
    ("mlp32", lambda x, y: (x.astype(str), y), "x: expected numbers"),
    ("mlp32", lambda x, y: (None, y), "x: expected an array of shape"),
    ("mlp32", lambda x, y: (x, y.astype(np.float64)), "y: expected integer class ids of shape.*pass integer class ids"),
    ("mlp32", lambda x, y: (x, y.astype(bool)), "y: expected integer class ids"),
    ("mlp32", lambda x, y: (x, y + 3), r"y: class ids must lie in \[0, 3\)"),
    ("mlp32", lambda x, y: (x, y - 3), r"y: class ids must lie in \[0, 3\)"),
    ("mlp32", lambda x, y: (x, y.tolist()[:2]), r"y: expected integer class ids of shape \(4,\)"),
    ("mlp32", lambda x, y: (x[0], float(y[0])), r"y: expected integer class ids of shape \(1,\).*pass integer"),
    ("mlp32", lambda x, y: (x[0], y[:2]), r"y: expected integer class ids of shape \(1,\)"),
    ("mlp32", lambda x, y: (x[:1], int(y[0])), r"y: expected integer class ids of shape \(1,\)"),
    ("bce", lambda x, y: (x, y[:2]), r"y: expected a float64 array of shape \(4, 1\) or \(4,\)"),
    ("bce", lambda x, y: (x, y.astype(str)), "y: expected a float64 array"),
    ("bce", lambda x, y: (x[0], y[:2, 0]), r"y: expected a float64 array of shape \(1, 1\)"),
    ("mse32", lambda x, y: (x[0], y[0, :1]), r"y: expected a float32 array of shape \(1, 2\)"),
    ("mse32", lambda x, y: (x, y[:, 0]), r"y: expected a float32 array of shape \(4, 2\)"),
    ("conv", lambda x, y: (x[0, 0], y[:1]), r"x: expected an array of shape \(B, 1, 4, 4\)"),
    ("tagger", lambda x, y: (x.astype(np.float64), y), "x: expected integer token ids"),
    ("tagger", lambda x, y: (x + 6, y), r"x: token ids must lie in \[0, 6\)"),
    ("tagger", lambda x, y: (x[:, :, None], y), "x: expected integer token ids"),
    ("tagger", lambda x, y: (x, y.astype(np.float64)), "y: expected integer class ids.*pass integer class ids"),
    ("tagger", lambda x, y: (x[0], y), r"y: expected integer class ids of shape \(1, 4\)"),
    ("features", lambda x, y: (x[0, 0], y[0]), r"x: expected an array of shape \(B, T, 2\) or \(T, 2\)"),
    ("features", lambda x, y: (x.astype(complex), y), "x: expected numbers"),
])
def test_ambiguous_arguments_are_still_refused(modules, name, bad, message):
    module = modules[name]
    params, x, y = random_problem(module, batch=4, seed=11)
    x, y = bad(x, y)
    before = {k: v.copy() for k, v in params.items()}
    calls = [lambda: module.forward(params, x, y), lambda: module.value_and_grad(params, x, y),
             lambda: module.sgd_step(params, x, y, 0.1)]
    if "y:" not in message:
        calls.append(lambda: module.predict(params, x))
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


def test_one_sequences_mask_must_fit_it(modules):
    module = modules["tagger"]
    params, x, y = random_problem(module, batch=1, seed=12)
    with pytest.raises(ValueError, match=r"mask: expected an array of 0s and 1s of shape \(1, 4\)"):
        module.forward(params, x[0], y[0], mask=[1, 1, 0])
    with pytest.raises(ValueError, match="mask: every entry must be 0"):
        module.forward(params, x[0], y[0], mask=[1, 2, 1, 0])
