"""Train/eval mode and randomness in layer modules: dropout, batch norm, loss: none.

Gradients are checked against central differences in float64 (dropout's masks held
fixed by giving every evaluation a generator seeded the same way), and values against
NumPy references of PyTorch's definitions written here (nn.Dropout, nn.BatchNorm1d/2d:
batch statistics with the biased variance in train mode, running statistics updated
with momentum and the unbiased variance, running statistics in eval mode).
"""

import textwrap

import numpy as np
import pytest

from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.errors import SpecError

pytestmark = pytest.mark.both_targets

TOL = 1e-7


def module_from(text):
    compiled = compile_spec(load_spec(textwrap.dedent(text), "spec.yaml"))
    return load_module(compiled.source, compiled.name), compiled


def spec(layers, loss="softmax_cross_entropy", inputs="[5]", dtype="float64", extra=""):
    body = "\n".join(f"  - {layer}" for layer in layers)
    return f"name: net\ndtype: {dtype}\ninput: {inputs}\nlayers:\n{body}\nloss: {loss}\n{extra}"


def central(f, value, h=1e-6):
    """d f() / d value, entry by entry (value is changed in place and restored)."""
    grad = np.zeros_like(value)
    flat, gflat = value.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + h
        plus = f()
        flat[i] = original - h
        minus = f()
        flat[i] = original
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def relative(a, b):
    """Norm-wise relative error, where an error of 1e-8 per entry counts as none: a
    gradient that is zero (a bias before a batch norm in train mode) has differences
    that measure only rounding."""
    excess = max(np.linalg.norm(a - b) - 1e-8 * np.sqrt(a.size), 0.0)
    return excess / max(np.linalg.norm(a), np.linalg.norm(b), 1e-12)


def random_params(module, seed=0):
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    for key in module.PARAMS:
        params[key] = params[key] + rng.normal(0, 0.3, size=params[key].shape)
    return params


# --- NumPy references of PyTorch's definitions ------------------------------------------

def batchnorm_reference(x, gamma, beta, mean_run, var_run, momentum, eps, train):
    """(out, new running mean, new running var), as torch.nn.functional.batch_norm."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if train:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)                          # biased, for normalizing
        n = x.size // x.shape[1]
        unbiased = x.var(axis=axes, ddof=1)
        assert np.allclose(unbiased, var * n / (n - 1))
        mean_run = (1 - momentum) * mean_run + momentum * mean
        var_run = (1 - momentum) * var_run + momentum * unbiased
    else:
        mean, var = mean_run, var_run
    out = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return out * gamma.reshape(shape) + beta.reshape(shape), mean_run, var_run


# --- batch norm ---------------------------------------------------------------------------

BN_MLP = ["linear: 4", "batchnorm: {momentum: 0.3, eps: 0.001}", "tanh", "linear: 3"]
BN_CONV = ["conv2d: {out_channels: 3, kernel: 2}", "batchnorm", "relu", "flatten", "linear: 3"]


@pytest.mark.parametrize("layers,inputs,batch", [(BN_MLP, "[5]", 6), (BN_CONV, "[2, 4, 4]", 3)])
def test_batchnorm_gradients_match_central_differences_in_train_and_eval_mode(layers, inputs, batch):
    module, _ = module_from(spec(layers, inputs=inputs))
    rng = np.random.default_rng(1)
    params = random_params(module, 1)
    params["batchnorm1.running_mean"][:] = rng.normal(size=3 if "conv" in layers[0] else 4)
    params["batchnorm1.running_var"][:] = rng.uniform(0.5, 2, size=params["batchnorm1.running_var"].shape)
    x = rng.normal(size=(batch,) + tuple(module.INPUT_SHAPE))
    y = rng.integers(0, 3, size=batch)
    for train in (True, False):
        _, grads = module.value_and_grad(params, x, y, train=train)
        assert set(grads) == set(module.PARAMS)
        for key in module.PARAMS:
            numeric = central(lambda: module.forward(params, x, y, train=train)[0], params[key])
            assert relative(grads[key], numeric) < TOL, (train, key)


def test_batchnorm_gradient_through_the_batch_statistics_is_the_closed_form():
    """dJ/dx = gamma/std (g - mean g - xhat mean(g xhat)) against differences in x itself."""
    module, _ = module_from(spec(["batchnorm"], loss="none", inputs="[3]"))
    rng = np.random.default_rng(2)
    params = random_params(module, 2)
    x = rng.normal(size=(5, 3))
    seed = rng.normal(size=(5, 3))
    out, grads, dx = module.vjp(params, x, seed)
    numeric = central(lambda: float(np.sum(seed * module.forward(params, x)[0])), x)
    assert relative(dx, numeric) < TOL
    gamma = params["batchnorm1.gamma"]
    xhat = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    closed = gamma / np.sqrt(x.var(0) + 1e-5) * (seed - seed.mean(0) - xhat * (seed * xhat).mean(0))
    assert np.allclose(dx, closed, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("inputs,batch", [("[4]", 7), ("[3, 2, 5]", 2)])
def test_batchnorm_matches_pytorch_definition_train_then_eval(inputs, batch):
    module, _ = module_from(spec(["batchnorm: {momentum: 0.25, eps: 0.01}"], loss="none", inputs=inputs))
    rng = np.random.default_rng(3)
    params = random_params(module, 3)
    size = int(inputs.strip("[]").split(",")[0])
    mean_run, var_run = np.zeros(size), np.ones(size)
    for step in range(3):        # running statistics follow the reference step by step
        x = rng.normal(2.0, 3.0, size=(batch,) + tuple(module.INPUT_SHAPE))
        out, _ = module.forward(params, x, update_buffers=True)
        expected, mean_run, var_run = batchnorm_reference(
            x, params["batchnorm1.gamma"], params["batchnorm1.beta"], mean_run, var_run, 0.25, 0.01, True)
        assert np.allclose(out, expected, rtol=1e-12, atol=1e-12)
        assert np.allclose(params["batchnorm1.running_mean"], mean_run, rtol=1e-12, atol=1e-14)
        assert np.allclose(params["batchnorm1.running_var"], var_run, rtol=1e-12, atol=1e-14)
    x = rng.normal(size=(batch,) + tuple(module.INPUT_SHAPE))
    expected, _, _ = batchnorm_reference(x, params["batchnorm1.gamma"], params["batchnorm1.beta"],
                                         mean_run, var_run, 0.25, 0.01, False)
    for out in (module.forward(params, x, train=False)[0], module.predict(params, x)):
        assert np.allclose(out, expected, rtol=1e-12, atol=1e-12)
    # eval mode leaves the running statistics alone
    assert np.array_equal(params["batchnorm1.running_mean"], mean_run)


def test_batchnorm_buffers_are_not_parameters():
    module, _ = module_from(spec(BN_MLP))
    assert list(module.PARAMS) == ["linear1.W", "linear1.b", "batchnorm1.gamma", "batchnorm1.beta",
                                   "linear2.W", "linear2.b"]
    assert module.BUFFERS == {"batchnorm1.running_mean": (4,), "batchnorm1.running_var": (4,)}
    params = module.init_params(0)
    assert set(params) == set(module.PARAMS) | set(module.BUFFERS)
    assert np.array_equal(params["batchnorm1.gamma"], np.ones(4))
    assert np.array_equal(params["batchnorm1.running_var"], np.ones(4))
    assert np.array_equal(params["batchnorm1.running_mean"], np.zeros(4))
    x, y = np.random.default_rng(0).normal(size=(5, 5)), np.array([0, 1, 2, 0, 1])
    # sgd_step: a plain SGD step on the parameters, the running statistics as in forward
    reference = {k: v.copy() for k, v in params.items()}
    J, grads = module.value_and_grad(reference, x, y)
    J_step = module.sgd_step(params, x, y, 0.1)
    assert J_step == pytest.approx(J, rel=1e-12)
    for key in module.PARAMS:
        assert np.allclose(params[key], reference[key] - 0.1 * grads[key], rtol=1e-12, atol=1e-14)
    for key in module.BUFFERS:
        assert np.allclose(params[key], reference[key], rtol=1e-12, atol=1e-14)
        assert not np.array_equal(params[key], module.init_params(0)[key])
    # the optimizers take the parameters alone
    state = {}
    module.adam_update({k: params[k] for k in module.PARAMS}, grads, state, lr=0.01)
    missing = dict(params)
    del missing["batchnorm1.running_var"]
    with pytest.raises(ValueError, match="batchnorm1.running_var"):
        module.forward(missing, x, y)


def test_only_training_steps_move_the_running_statistics():
    module, _ = module_from(spec(BN_MLP))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 5)), rng.integers(0, 3, size=5)
    fresh = module.init_params(0)

    def moved(call):
        params = module.init_params(0)
        call(params)
        return not all(np.array_equal(params[k], fresh[k]) for k in module.BUFFERS)

    assert not moved(lambda p: module.forward(p, x, y))
    assert not moved(lambda p: module.predict(p, x))
    assert not moved(lambda p: module.value_and_grad(p, x, y, train=False))
    assert not moved(lambda p: module.sgd_step(p, x, y, 0.1, train=False))
    assert moved(lambda p: module.forward(p, x, y, update_buffers=True))
    assert moved(lambda p: module.value_and_grad(p, x, y))
    assert moved(lambda p: module.sgd_step(p, x, y, 0.1))
    with pytest.raises(ValueError, match="^update_buffers: expected True or False"):
        module.forward(fresh, x, y, update_buffers=None)


def test_one_value_per_channel_is_refused_by_a_training_step_only():
    """PyTorch refuses it in train mode: the unbiased variance of one value is undefined.
    forward (a training loop's check that the data fit) and eval mode accept it."""
    module, _ = module_from(spec(BN_MLP))
    params = module.init_params(0)
    x, y = np.ones((1, 5)), np.array([1])
    for step in (lambda: module.value_and_grad(params, x, y), lambda: module.sgd_step(params, x, y, 0.1)):
        with pytest.raises(ValueError, match="more than one value per channel"):
            step()
    J, cache = module.forward(params, x, y)      # train mode: the batch's variance is 0
    assert np.isfinite(J)
    assert module.predict(params, x[0]).shape == (3,)
    assert np.isfinite(module.forward(params, x, y, train=False)[0])


@pytest.mark.parametrize("layer,message", [
    ("batchnorm: {momentum: 1.5}", "momentum must lie in [0, 1]"),
    ("batchnorm: {eps: 0}", "eps must be positive"),
    ("batchnorm: {eps: yes}", "eps must be a number"),
    ("batchnorm: {mom: 0.1}", "unknown option"),
    ("dropout: {p: 1}", "must lie in [0, 1)"),
    ("dropout: -0.1", "must lie in [0, 1)"),
    ("dropout: {p: .nan}", "p must be a number"),
])
def test_bad_options_are_one_error_line(layer, message):
    with pytest.raises(SpecError) as err:
        module_from(spec(["linear: 4", layer, "linear: 3"]))
    assert message in str(err.value)
    assert str(err.value).startswith("spec.yaml:")


def test_batchnorm_needs_features_or_channels():
    with pytest.raises(SpecError, match="batchnorm needs a"):
        module_from(spec(["batchnorm"], inputs="[2, 3]", loss="none"))


# --- dropout ------------------------------------------------------------------------------

DROPOUT_MLP = ["linear: 6", "relu", "dropout: {p: 0.4}", "linear: 3"]


def test_dropout_gradients_match_central_differences_with_the_mask_held_fixed():
    module, _ = module_from(spec(DROPOUT_MLP))
    params = random_params(module, 4)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 5)), rng.integers(0, 3, size=5)
    _, grads = module.value_and_grad(params, x, y, rng=np.random.default_rng(7))
    mask = module.forward(params, x, y, rng=np.random.default_rng(7))[1]["dropout1_mask"]
    assert 0 < np.count_nonzero(mask) < mask.size         # some units dropped, some kept
    for key in module.PARAMS:
        numeric = central(lambda: module.forward(params, x, y, rng=np.random.default_rng(7))[0], params[key])
        assert relative(grads[key], numeric) < TOL, key


def test_dropout_matches_the_inverted_dropout_definition():
    p = 0.3
    module, _ = module_from(spec([f"dropout: {p}"], loss="none", inputs="[200]"))
    params = module.init_params(0)
    x = np.random.default_rng(5).normal(size=(50, 200))
    out, cache = module.forward(params, x, rng=np.random.default_rng(11))
    # the reference draws the same uniforms: a unit is kept where u >= p
    keep = np.random.default_rng(11).random(x.shape) >= p
    assert np.array_equal(out == 0, ~keep)
    assert np.allclose(out, np.where(keep, x / (1 - p), 0.0), rtol=1e-15, atol=0)
    assert abs(keep.mean() - (1 - p)) < 0.01
    # backward: the kept units' adjoints scaled by 1/(1 - p)
    seed = np.random.default_rng(6).normal(size=x.shape)
    _, dx = module.backward(params, cache, seed)
    assert np.allclose(dx, np.where(keep, seed / (1 - p), 0.0), rtol=1e-15, atol=0)
    # eval mode, and predict: the identity
    assert np.array_equal(module.forward(params, x, train=False)[0], x)
    assert np.array_equal(module.predict(params, x), x)


def test_dropout_p_zero_is_the_identity_in_train_mode():
    module, _ = module_from(spec(["dropout: 0"], loss="none", inputs="[4]"))
    x = np.random.default_rng(0).normal(size=(3, 4))
    out, grads, dx = module.vjp(module.init_params(0), x, np.ones((3, 4)))
    assert np.array_equal(out, x) and np.array_equal(dx, np.ones((3, 4)))


def test_masks_are_reproducible_from_a_seed():
    module, _ = module_from(spec(DROPOUT_MLP))
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5)), rng.integers(0, 3, size=8)

    def masks(seed, steps=3):
        generator = np.random.default_rng(seed)
        return [module.forward(params, x, y, rng=generator)[1]["dropout1_mask"] for _ in range(steps)]

    first, again, other = masks(1), masks(1), masks(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))      # same seed, same masks
    assert not np.array_equal(first[0], first[1])                        # the generator advances
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))   # another seed, others
    # training from a seed is reproducible: the same parameters after the same steps
    trained = []
    for _ in range(2):
        p, generator = module.init_params(0), np.random.default_rng(9)
        for _ in range(4):
            module.sgd_step(p, x, y, 0.1, rng=generator)
        trained.append(p)
    assert all(np.array_equal(trained[0][k], trained[1][k]) for k in module.PARAMS)


def test_default_rng_is_the_module_generator_and_train_is_the_default():
    module, _ = module_from(spec(DROPOUT_MLP))
    params = module.init_params(0)
    x, y = np.ones((4, 5)), np.array([0, 1, 2, 0])
    module._RNG = np.random.default_rng(0)
    a = module.forward(params, x, y)[1]["dropout1_mask"]
    b = module.forward(params, x, y)[1]["dropout1_mask"]
    assert a is not None and not np.array_equal(a, b)        # train mode, fresh masks
    module._RNG = np.random.default_rng(0)
    assert np.array_equal(module.forward(params, x, y)[1]["dropout1_mask"], a)
    assert module.forward(params, x, y, train=False)[1]["dropout1_mask"] is None


def test_mode_arguments_are_checked():
    module, _ = module_from(spec(DROPOUT_MLP))
    params, x, y = module.init_params(0), np.ones((2, 5)), np.array([0, 1])
    with pytest.raises(ValueError, match="^train: expected True or False"):
        module.forward(params, x, y, train=1)
    with pytest.raises(ValueError, match="^rng: expected a numpy.random.Generator"):
        module.value_and_grad(params, x, y, rng=3)
    with pytest.raises(TypeError):
        module.forward(params, x, y, False)            # train is keyword-only


def test_float32_module_with_modes_keeps_its_dtype():
    module, _ = module_from(spec(["linear: 4", "batchnorm", "dropout: 0.5", "linear: 3"], dtype="float32"))
    params = module.init_params(0)
    x, y = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32), np.arange(6) % 3
    J, grads = module.value_and_grad(params, x, y)
    assert all(g.dtype == np.float32 for g in grads.values())
    module.sgd_step(params, x, y, 0.1)
    assert all(v.dtype == np.float32 for v in params.values())
    assert module.predict(params, x).dtype == np.float32


# --- the one-example path -----------------------------------------------------------------

@pytest.mark.parametrize("layer", ["dropout: 0.5", "batchnorm"])
def test_modules_with_modes_take_no_one_example_path(layer):
    module, _ = module_from(spec(["linear: 4", layer, "linear: 3"]))
    assert not hasattr(module, "_sgd_step_one")
    plain, _ = module_from(spec(["linear: 4", "linear: 3"]))
    assert hasattr(plain, "_sgd_step_one")


def test_sgd_step_on_one_example_with_dropout_is_the_batch_step():
    module, _ = module_from(spec(DROPOUT_MLP))
    params = module.init_params(0)
    reference = {k: v.copy() for k, v in params.items()}
    x, y = np.random.default_rng(1).normal(size=(1, 5)), np.array([2])
    _, grads = module.value_and_grad(reference, x, y, rng=np.random.default_rng(3))
    module.sgd_step(params, x, y, 0.5, rng=np.random.default_rng(3))
    for key in module.PARAMS:
        assert np.allclose(params[key], reference[key] - 0.5 * grads[key], rtol=1e-12, atol=1e-15)


# --- loss: none ---------------------------------------------------------------------------

@pytest.mark.parametrize("layers,inputs", [
    (["linear: 4", "tanh", "linear: 3"], "[5]"),
    (["conv2d: {out_channels: 3, kernel: 2}", "batchnorm", "sigmoid", "dropout: 0.3"], "[2, 4, 4]"),
    (["linear: 4", "batchnorm", "dropout: 0.5", "relu", "linear: 2"], "[3]"),
])
def test_loss_none_vjp_matches_central_differences_of_a_random_linear_functional(layers, inputs):
    module, _ = module_from(spec(layers, loss="none", inputs=inputs))
    rng = np.random.default_rng(8)
    params = random_params(module, 8)
    x = rng.normal(size=(4,) + tuple(module.INPUT_SHAPE))

    def fixed_masks():      # a generator seeded the same way for every evaluation
        return {"rng": np.random.default_rng(1)} if hasattr(module, "BUFFERS") else {}

    out = module.forward(params, x, **fixed_masks())[0]
    assert out.shape == (4,) + module.OUTPUT_SHAPE
    seed = rng.normal(size=out.shape)
    value, grads, dx = module.vjp(params, x, seed, **fixed_masks())
    assert np.array_equal(value, out)

    def functional():
        return float(np.sum(seed * module.forward(params, x, **fixed_masks())[0]))

    assert set(grads) == set(module.PARAMS)
    for key in module.PARAMS:
        assert relative(grads[key], central(functional, params[key])) < TOL, key
    assert dx.shape == x.shape
    assert relative(dx, central(functional, x)) < TOL


def test_loss_none_module_contract():
    module, compiled = module_from(spec(["linear: 4", "tanh"], loss="none"))
    for name in ("forward", "backward", "vjp", "predict", "init_params", "sgd_update", "adam_update"):
        assert callable(getattr(module, name))
    for name in ("value_and_grad", "sgd_step", "BUFFERS", "_sgd_step_one"):
        assert not hasattr(module, name)
    assert module.LOSS == "none" and module.OUTPUT_SHAPE == (4,)
    params = module.init_params(0)
    x = np.random.default_rng(0).normal(size=(3, 5))
    out, cache = module.forward(params, x)
    assert np.allclose(out, np.tanh(x @ params["linear1.W"].T + params["linear1.b"]))
    assert np.array_equal(module.predict(params, x), out)
    assert np.array_equal(module.predict(params, x[0]), out[0])
    with pytest.raises(ValueError, match=r"^seed: expected the adjoint of the output"):
        module.backward(params, cache, np.ones((3, 5)))
    grads, dx = module.backward(params, cache, [[1, 0, 0, 0]] * 3)     # a list, cast
    assert np.allclose(dx, (1 - out[:, 0:1] ** 2) * params["linear1.W"][0])
    # backward leaves the cache and the seed as they were: it can be called twice
    seed = np.ones((3, 4))
    first = module.backward(params, cache, seed)
    second = module.backward(params, cache, seed)
    assert np.array_equal(seed, np.ones((3, 4)))
    assert all(np.array_equal(first[0][k], second[0][k]) for k in module.PARAMS)


def test_loss_none_refuses_l2_and_sequences():
    with pytest.raises(SpecError, match="l2 needs a loss"):
        module_from(spec(["linear: 4"], loss="none", extra="l2: 0.1\n"))
    with pytest.raises(SpecError, match="loss: none is supported for specs without a time axis"):
        module_from("name: s\ninput: {vocab: 5}\nlayers:\n  - embedding: 3\n  - rnn: {hidden: 4}\n"
                    "  - linear: 5\nloss: none\n")


def test_modules_without_modes_keep_their_signatures():
    import inspect
    module, compiled = module_from(spec(["linear: 4", "relu", "linear: 3"]))
    assert str(inspect.signature(module.forward)) == "(params, x, y)"
    assert str(inspect.signature(module.sgd_step)) == "(params, x, y, lr)"
    assert "_mode_arguments" not in compiled.source and "\nBUFFERS" not in compiled.source


@pytest.mark.parametrize("name", ["train", "rng", "update_buffers", "seed", "output", "dx"])
def test_layers_named_like_the_mode_locals_do_not_break_them(name):
    module, _ = module_from(spec(["linear: 4", f"batchnorm: {{name: {name}}}", "dropout: 0.5",
                                 f"linear: {{out: 3, name: {name}_head}}"], loss="none"))
    assert f"{name}.gamma" in module.PARAMS and f"{name}.running_var" in module.BUFFERS
    params = random_params(module)
    x = np.random.default_rng(0).normal(size=(4, 5))
    seed = np.random.default_rng(1).normal(size=(4, 3))
    _, grads, dx = module.vjp(params, x, seed, rng=np.random.default_rng(2))

    def functional():
        return float(np.sum(seed * module.forward(params, x, rng=np.random.default_rng(2))[0]))

    assert relative(dx, central(functional, x)) < TOL


def test_dropout_in_a_sequence_spec_matches_central_differences_with_the_mask_held_fixed():
    module, _ = module_from("name: tagger\ndtype: float64\ninput: {vocab: 6}\nlayers:\n  - embedding: 3\n"
                            "  - dropout: 0.4\n  - rnn: {hidden: 4}\n  - linear: 3\n"
                            "loss: softmax_cross_entropy\n")
    params = random_params(module, 5)
    rng = np.random.default_rng(5)
    x, y, mask = rng.integers(0, 6, size=(2, 4)), rng.integers(0, 3, size=(2, 4)), np.ones((2, 4))
    _, grads = module.value_and_grad(params, x, y, mask, rng=np.random.default_rng(3))
    for key in module.PARAMS:
        numeric = central(lambda: module.forward(params, x, y, mask, rng=np.random.default_rng(3))[0],
                          params[key])
        assert relative(grads[key], numeric) < TOL, key
    eval_J = module.forward(params, x, y, mask, train=False)[0]
    assert module.forward(params, x, y, mask, train=False)[0] == eval_J
    assert module.forward(params, x, y, mask, rng=np.random.default_rng(3))[0] != eval_J
