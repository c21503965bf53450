"""Layer specs: gradients vs finite differences, the lecture's Case 2, stability,
dtype, run-time checks and the generated-module contract."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.training.gradcheck import layer_gradient_errors, random_problem

pytestmark = pytest.mark.both_targets

TOL = 1e-6


def module_from(text, dtype=None):
    spec = load_spec(textwrap.dedent(text), "spec.yaml")
    if dtype:
        spec.data["dtype"] = dtype
    compiled = compile_spec(spec)
    return load_module(compiled.source, compiled.name), compiled


def spec_text(layers, loss="softmax_cross_entropy", inputs=5, extra=""):
    body = "\n".join(f"  - {layer}" for layer in layers)
    return f"name: net\ndtype: float64\ninput: [{inputs}]\nlayers:\n{body}\nloss: {loss}\n{extra}"


def assert_gradients_match(text, batch=4, seed=0):
    module, _ = module_from(text)
    params, x, y = random_problem(module, batch=batch, seed=seed)
    errors = layer_gradient_errors(module, params, x, y)
    assert max(errors.values()) < TOL, errors
    return module


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "softplus",
                                        'activation: "x * tanh(softplus(x))"',
                                        'activation: "max(x, 0.1*x)"',
                                        'activation: "x / (1 + abs(x))"',
                                        'activation: "exp(-x**2) + sin(x)"'])
def test_each_activation_matches_finite_differences(activation):
    assert_gradients_match(spec_text(["linear: 6", activation, "linear: 3"]))


@pytest.mark.parametrize("loss,outputs", [("softmax_cross_entropy", 4),
                                          ("sigmoid_binary_cross_entropy", 1),
                                          ("sigmoid_binary_cross_entropy", 3),
                                          ("mse", 1), ("mse", 2)])
def test_each_loss_matches_finite_differences(loss, outputs):
    assert_gradients_match(spec_text(["linear: 6", "tanh", f"linear: {outputs}"], loss=loss))


def test_deep_stack_with_l2_and_no_bias_matches_finite_differences():
    layers = ["linear: 7", "relu", "linear: {out: 6, bias: false}", "sigmoid",
              "linear: 5", 'activation: "softplus(x) - log(2)"', "linear: 5", "tanh", "linear: 3"]
    module = assert_gradients_match(spec_text(layers, extra="l2: 0.01\n"), batch=6, seed=3)
    assert "linear2.b" not in module.PARAMS
    assert list(module.PARAMS) == ["linear1.W", "linear1.b", "linear2.W", "linear3.W", "linear3.b",
                                   "linear4.W", "linear4.b", "linear5.W", "linear5.b"]


def test_l2_adds_half_sum_of_squared_weights_not_biases():
    plain, _ = module_from(spec_text(["linear: 4", "tanh", "linear: 3"]))
    reg, _ = module_from(spec_text(["linear: 4", "tanh", "linear: 3"], extra="l2: 0.5\n"))
    params, x, y = random_problem(plain, seed=1)
    expected = plain.forward(params, x, y)[0] + 0.25 * sum(
        np.sum(params[k] ** 2) for k in params if k.endswith(".W"))
    assert reg.forward(params, x, y)[0] == pytest.approx(expected, rel=1e-12)


def test_lecture_case2_matches_hand_written_backward_equations():
    """Case 2: sigmoid hidden layer, sigmoid output, binary cross-entropy.

    The lecture writes J = y* log y + (1-y*) log(1-y) (a log-likelihood) with
    the bias folded in as x_0 = 1; our loss is its negative (a cross-entropy
    to minimise), so our gradients are the negatives of the lecture's.
    """
    module, _ = module_from("""
        name: case2
        dtype: float64
        input: [3]
        layers:
          - linear: 4
          - sigmoid
          - linear: 1
        loss: sigmoid_binary_cross_entropy
    """)
    rng = np.random.default_rng(7)
    params = {k: rng.normal(size=s) for k, s in module.PARAMS.items()}
    x = rng.normal(size=(1, 3))
    ystar = 1.0
    J, grads = module.value_and_grad(params, x, np.array([ystar]))

    # The lecture's forward pass, one scalar at a time (alpha_j0, beta_0 are the biases).
    M, D = 3, 4
    alpha = np.column_stack([params["linear1.b"], params["linear1.W"]])   # (D, M+1)
    beta = np.concatenate([params["linear2.b"], params["linear2.W"][0]])  # (D+1,)
    xs = np.concatenate([[1.0], x[0]])
    a = [sum(alpha[j, i] * xs[i] for i in range(M + 1)) for j in range(D)]
    z = [1.0] + [1 / (1 + np.exp(-a[j])) for j in range(D)]
    b = sum(beta[j] * z[j] for j in range(D + 1))
    y = 1 / (1 + np.exp(-b))
    J_lecture = ystar * np.log(y) + (1 - ystar) * np.log(1 - y)
    # The lecture's backward pass.
    dJ_dy = ystar / y + (1 - ystar) / (y - 1)
    dJ_db = dJ_dy * y * (1 - y)
    dJ_dbeta = [dJ_db * z[j] for j in range(D + 1)]
    dJ_dz = [dJ_db * beta[j] for j in range(D + 1)]
    dJ_da = [dJ_dz[j + 1] * z[j + 1] * (1 - z[j + 1]) for j in range(D)]
    dJ_dalpha = [[dJ_da[j] * xs[i] for i in range(M + 1)] for j in range(D)]

    assert J == pytest.approx(-J_lecture, rel=1e-12)
    for j in range(D):
        assert grads["linear1.b"][j] == pytest.approx(-dJ_dalpha[j][0], rel=1e-10)
        for i in range(M):
            assert grads["linear1.W"][j, i] == pytest.approx(-dJ_dalpha[j][i + 1], rel=1e-10)
        assert grads["linear2.W"][0, j] == pytest.approx(-dJ_dbeta[j + 1], rel=1e-10)
    assert grads["linear2.b"][0] == pytest.approx(-dJ_dbeta[0], rel=1e-10)


@pytest.mark.parametrize("loss,outputs", [("softmax_cross_entropy", 3),
                                          ("sigmoid_binary_cross_entropy", 2)])
def test_losses_are_stable_for_logits_of_plus_minus_1000(loss, outputs):
    module, _ = module_from(spec_text([f"linear: {outputs}"], loss=loss, inputs=2))
    params = {"linear1.W": np.array([[1000.0, 0.0], [-1000.0, 0.0], [0.0, 0.0]][:outputs]),
              "linear1.b": np.zeros(outputs)}
    x = np.array([[1.0, 0.0], [-1.0, 0.0]])
    y = np.array([1, 0]) if loss == "softmax_cross_entropy" else np.array([[0.0, 1.0], [1.0, 0.0]])
    J, grads = module.value_and_grad(params, x, y)
    assert np.isfinite(J) and all(np.all(np.isfinite(g)) for g in grads.values())
    # Every example puts +-1000 on a wrong class: the loss is about 1000 per wrong logit.
    assert J == pytest.approx(2000.0 if loss == "sigmoid_binary_cross_entropy" else 2000.0, rel=1e-3)
    p = module.predict(params, x)
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


def test_float32_is_kept_throughout():
    module, compiled = module_from(spec_text(["linear: 8", "sigmoid", 'activation: "x**2 + 0.5*x"',
                                              "linear: 3"], extra="l2: 0.001\n").replace(
        "float64", "float32"))
    params, x, y = random_problem(module)
    assert all(p.dtype == np.float32 for p in params.values())
    J, grads = module.value_and_grad(params, x, y)
    assert J.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    assert module.predict(params, x).dtype == np.float32
    loss = module.sgd_step(params, x, y, 0.1)
    assert loss.dtype == np.float32 and all(p.dtype == np.float32 for p in params.values())


def test_sgd_step_is_params_minus_lr_times_gradient():
    module, _ = module_from(spec_text(["linear: 5", "relu", "linear: 3"]))
    params, x, y = random_problem(module, seed=2)
    before = {k: v.copy() for k, v in params.items()}
    J, grads = module.value_and_grad(params, x, y)
    arrays = dict(params)
    loss = module.sgd_step(params, x, y, 0.3)
    assert loss == J
    for k in params:
        assert params[k] is arrays[k]                   # updated in place
        np.testing.assert_allclose(params[k], before[k] - 0.3 * grads[k], rtol=1e-12, atol=1e-15)


def test_predict_gives_probabilities_and_cache_holds_no_parameters():
    module, compiled = module_from(spec_text(["linear: 5", "tanh", "linear: 4"]))
    params, x, y = random_problem(module, batch=7)
    p = module.predict(params, x)
    assert p.shape == (7, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    _, cache = module.forward(params, x, y)
    assert not any(k.endswith(("_W", "_b")) for k in cache)
    assert "linear2" not in cache        # the logits are not needed: backward reads p


def test_init_params_is_deterministic_and_source_is_byte_identical():
    text = spec_text(["linear: 5", "tanh", "linear: 4"])
    m1, c1 = module_from(text)
    m2, c2 = module_from(text)
    assert c1.source == c2.source
    a, b = m1.init_params(3), m2.init_params(3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(m1.init_params(4)["linear1.W"], a["linear1.W"])
    assert np.all(a["linear1.b"] == 0)


@pytest.mark.parametrize("bad,message", [
    (lambda x, y, p: (x[:, :4], y, p), "x: expected an array of shape (B, 5)"),
    (lambda x, y, p: (x.astype(complex), y, p), "x: expected numbers (a float, integer or bool array)"),
    (lambda x, y, p: (x.astype(str), y, p), "x: expected numbers (a float, integer or bool array)"),
    (lambda x, y, p: (x, y[:2], p), "y: expected integer class ids of shape (4,)"),
    (lambda x, y, p: (x, y.astype(float), p), "y: expected integer class ids"),
    (lambda x, y, p: (x, y + 10, p), "y: class ids must lie in [0, 4)"),
    (lambda x, y, p: (x, y, {**p, "linear1.W": p["linear1.W"].T}), "params['linear1.W']: expected"),
    (lambda x, y, p: (x, y, {k: v for k, v in p.items() if k != "linear2.b"}), "params['linear2.b']"),
])
def test_run_time_checks_name_the_argument_and_expected_shape(bad, message):
    module, _ = module_from(spec_text(["linear: 3", "relu", "linear: 4"]))
    params, x, y = random_problem(module)
    x, y, params = bad(x, y, params)
    for call in (lambda: module.forward(params, x, y), lambda: module.sgd_step(params, x, y, 0.1)):
        with pytest.raises(ValueError) as info:
            call()
        assert message in str(info.value)


def test_single_output_targets_may_be_one_dimensional():
    module, _ = module_from(spec_text(["linear: 3", "linear: 1"], loss="sigmoid_binary_cross_entropy"))
    params, x, _ = random_problem(module)
    y1 = np.array([0.0, 1.0, 1.0, 0.0])
    assert module.forward(params, x, y1)[0] == module.forward(params, x, y1[:, None])[0]
    with pytest.raises(ValueError, match=r"y: expected a float64 array of shape \(4, 1\) or \(4,\)"):
        module.forward(params, x, y1[:3])


def test_generated_layer_module_runs_without_bpcompile_sympy_or_jinja(tmp_path):
    _, compiled = module_from(spec_text(["linear: 4", 'activation: "x*sigmoid(x)"', "linear: 3"]))
    path = tmp_path / "net.py"
    path.write_text(compiled.source)
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split('.')[0] in ('sympy', 'jinja2', 'yaml', 'bpcompile'):
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np, net
        params = net.init_params(0)
        x = np.ones((2, 5)); y = np.array([0, 2])
        J, grads = net.value_and_grad(params, x, y)
        print(sorted(grads), float(J) > 0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "['linear1.W', 'linear1.b', 'linear2.W', 'linear2.b'] True" in out.stdout


def test_mlp_digits_example_reaches_95_percent(capsys):
    from bpcompile.training import datasets, train
    from bpcompile.compiler import compile_file
    compiled = compile_file("examples/mlp_digits.yaml")
    module = load_module(compiled.source, compiled.name)
    settings = compiled.spec.get("train")
    params, history = train.train(module, datasets.load_digits("float32"), epochs=settings["epochs"],
                                  lr=settings["lr"], batch_size=settings["batch_size"], seed=0,
                                  progress=False)
    assert history[-1]["test_acc"] >= 0.95
    assert history[-1]["train_loss"] < history[0]["train_loss"]
