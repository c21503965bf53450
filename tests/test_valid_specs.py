"""Valid layer specs off the examples' paths: every one compiles into a module whose
gradients equal finite differences and whose sgd_step is params - lr * grads, or is
refused with a located error.  Each case here was once silently wrong (issue 9)."""

import numpy as np
import pytest

import bpcompile
from bpcompile.training.gradcheck import layer_gradient_errors, random_problem
from bpcompile.core.naming import LAYER_LOCALS, MODULE_GLOBALS

pytestmark = pytest.mark.both_targets


def _mlp(name, loss="mse"):
    return {"name": "m", "dtype": "float64", "input": [4], "loss": loss,
            "layers": [{"linear": {"out": 3, "name": name}}, "tanh", {"linear": 2}]}


def assert_exact(spec, batches=(3, 1)):
    """Gradients equal central differences; sgd_step subtracts lr * grads, at every batch size."""
    module = bpcompile.compile(spec)
    assert len(module.PARAMS) == len(set(module.PARAMS))
    for batch in batches:
        params, x, y = random_problem(module, batch=batch, seed=batch)
        errors = layer_gradient_errors(module, params, x, y, max_entries=12, seed=0, h=1e-6)
        assert max(errors.values()) < 1e-6, errors
        J, grads = module.value_and_grad(params, x, y)
        assert set(grads) == set(module.PARAMS)
        stepped = {k: v.copy() for k, v in params.items()}
        assert module.sgd_step(stepped, x, y, 0.25) == pytest.approx(J, rel=1e-12)
        for key in module.PARAMS:
            np.testing.assert_allclose(stepped[key], params[key] - 0.25 * grads[key],
                                       rtol=1e-12, atol=1e-14, err_msg=key)
    return module


# names the generated module uses itself, builtins and NumPy-ish names
INTERNAL_NAMES = sorted((MODULE_GLOBALS | LAYER_LOCALS | {
    "len", "dict", "range", "float", "conv2d_forward", "conv2d_backward", "maxpool2d_forward",
    "maxpool2d_backward", "p", "s", "e", "n", "total", "data_loss", "l2_penalty", "sum", "zeros",
}) - {"np", "math", "numba"} | {"npx"})


@pytest.mark.parametrize("name", [n for n in INTERNAL_NAMES if n[0].isalpha()])
def test_layer_named_like_the_modules_own_names(name):
    """`lr` once overwrote sgd_step's learning rate; `len` shadowed the builtin."""
    for loss in ("mse", "softmax_cross_entropy"):
        assert_exact(_mlp(name, loss))


def test_layer_names_of_every_kind_of_internal_name_with_l2():
    spec = _mlp("lr", "sigmoid_binary_cross_entropy")
    spec["layers"][-1] = {"linear": {"out": 2, "name": "J"}}
    spec["l2"] = 0.01
    assert_exact(spec)


def test_conv_layers_named_like_kernels():
    spec = {"name": "m", "dtype": "float64", "input": [1, 6, 6], "loss": "softmax_cross_entropy",
            "layers": [{"conv2d": {"out_channels": 2, "kernel": 3, "name": "conv2d_forward"}},
                       {"relu": {"name": "maxpool2d_backward"}},
                       {"maxpool2d": {"kernel": 2, "name": "maxpool2d_forward"}},
                       {"flatten": {"name": "len"}}, {"linear": {"out": 3, "name": "lr"}}]}
    assert_exact(spec, batches=(2,))


def test_stacked_recurrent_layer_names_do_not_collide_with_a_later_layer():
    """lstm: {layers: 2} names its second layer lstm2; a later layer named lstm2 once
    got the same parameter keys (relative error 1.08)."""
    spec = {"name": "m", "dtype": "float64", "input": {"vocab": 5}, "loss": "softmax_cross_entropy",
            "layers": [{"embedding": 3}, {"lstm": {"hidden": 4, "layers": 2}},
                       {"lstm": {"hidden": 4, "name": "lstm2"}}, {"linear": 3}]}
    module = bpcompile.compile(spec)
    assert len(module.PARAMS) == 1 + 3 * 12 + 2
    params, x, y = random_problem(module, batch=2, seed=0)
    errors = layer_gradient_errors(module, params, x, y, max_entries=6, seed=0, h=1e-3,
                                   richardson=True)
    assert max(errors.values()) < 1e-6, errors


def test_duplicate_parameter_keys_are_refused_with_a_location():
    text = ("name: m\ninput: [4]\nlayers:\n  - linear: {out: 3, name: a}\n"
            "  - linear: {out: 2, name: a}\nloss: mse\n")
    with pytest.raises(bpcompile.SpecError, match="already used") as info:
        bpcompile.compiler.compile_spec(bpcompile.compiler.load_spec(text, "s.yaml"))
    assert (info.value.line, info.value.col) == (5, 5)


@pytest.mark.parametrize("size", [4, 1])
@pytest.mark.parametrize("layers", [["relu"], ["tanh", "sigmoid"], [{"activation": "x*x"}]])
def test_layer_spec_without_parameters(layers, size):
    """`layers: [relu]` with mse once wrote an IndentationError into _sgd_step_one, and with
    one input (a float step that calls no ufunc) a signature ending in a bare `*`."""
    spec = {"name": "m", "dtype": "float64", "input": [size], "layers": layers, "loss": "mse"}
    module = bpcompile.compile(spec)
    assert module.PARAMS == {}
    params, x, y = random_problem(module, batch=3, seed=0)
    J, grads = module.value_and_grad(params, x, y)
    assert grads == {} and np.isfinite(J)
    assert module.sgd_step(params, x[:1], y[:1], 0.1) == pytest.approx(
        module.value_and_grad(params, x[:1], y[:1])[0])


@pytest.mark.parametrize("loss, message", [
    ("[mse]", "unknown loss"), ("{a: 1}", "unknown loss"), ("3", "unknown loss"),
])
def test_loss_of_the_wrong_type_is_a_located_error(loss, message):
    text = f"name: m\ninput: [4]\nlayers: [{{linear: 2}}]\nloss: {loss}\n"
    with pytest.raises(bpcompile.SpecError, match=message) as info:
        bpcompile.compiler.compile_spec(bpcompile.compiler.load_spec(text, "s.yaml"))
    assert info.value.line == 4


@pytest.mark.parametrize("l2", [".nan", ".inf", "-1", "true", "[1]"])
def test_bad_l2_is_a_located_error(l2):
    text = f"name: m\ninput: [4]\nlayers: [{{linear: 2}}]\nloss: mse\nl2: {l2}\n"
    with pytest.raises(bpcompile.SpecError, match="l2") as info:
        bpcompile.compiler.compile_spec(bpcompile.compiler.load_spec(text, "s.yaml"))
    assert info.value.line == 5


@pytest.mark.parametrize("expr", ["x - x", "0*x", "x/x", "x**0"])
def test_an_activation_that_folds_to_a_constant_is_a_located_error(expr):
    """It once compiled to `activation1 = 0`, a scalar where a (B, n) array belongs."""
    text = f"name: m\ninput: [2]\nlayers:\n  - linear: 2\n  - activation: \"{expr}\"\n  - linear: 2\nloss: mse\n"
    with pytest.raises(bpcompile.SpecError, match="constant") as info:
        bpcompile.compiler.compile_spec(bpcompile.compiler.load_spec(text, "s.yaml"))
    assert info.value.line == 5


def test_an_activation_with_a_constant_part_keeps_its_shape():
    spec = {"name": "m", "dtype": "float64", "input": [3], "loss": "mse",
            "layers": [{"linear": 2}, {"activation": "x + (x - x) + max(x - x, x) + exp(x - x)"},
                       {"linear": 2}]}
    assert_exact(spec)


@pytest.mark.parametrize("layers, message", [
    (["tanh"] * 1001, "too many layers: 1001"),
    ([{"lstm": {"hidden": 2, "layers": 1000000}}], "at most 32 stacked"),
    ([{"lstm": {"hidden": 2, "layers": 30}}] * 40, "too many layers: 1200"),
    ([{"linear": 100000}, {"linear": 100000}], "more than 100,000,000 parameters"),
])
def test_model_size_limits_are_located_errors(layers, message):
    import time
    import yaml
    spec = {"name": "m", "input": [4], "layers": layers, "loss": "mse"}
    text = yaml.safe_dump(spec)
    start = time.perf_counter()
    with pytest.raises(bpcompile.SpecError, match=message):
        bpcompile.compiler.compile_spec(bpcompile.compiler.load_spec(text, "s.yaml"))
    assert time.perf_counter() - start < 5


def test_the_quoted_spec_holds_no_free_text():
    """The module docstring quotes the spec rebuilt from its parsed parts: comments,
    descriptions and odd characters of the spec's text never reach the module."""
    mark = "PWNED_MARK"
    text = (f"# {mark}1 \"\"\"\nname: m\ndescription: \"{mark}2 \\\"\\\"\\\"\"\ndtype: float64\n"
            "input: {vocab: 4}\nlayers:\n  - embedding: 3\n"
            f"  - activation: \"x * tanh(x)  # {mark}3\"\n"
            "  - recurrent:\n      hidden: 2\n      equations: |\n"
            f"        # {mark}4\n        h = tanh(W @ (U @ x) + h_prev)  # {mark}5 '''\n"
            "  - linear: 3\nloss: softmax_cross_entropy\n")
    compiled = bpcompile.compiler.compile_spec(bpcompile.compiler.load_spec(text, "s.yaml"))
    assert mark not in compiled.source
    doc = compiled.source.split('"""')[1]
    assert "activation: \"x*tanh(x)\"" in doc and "h = tanh(W @ (U @ x) + h_prev)" in doc
    assert "loss: softmax_cross_entropy" in doc
    bpcompile.load_module(compiled.source)


@pytest.mark.parametrize("expr", ["x - x + x", "x*(x - x) + x", "x + (x - x)*x*x"])
def test_cancelling_partials_keep_the_adjoints_shape(expr):
    """A contribution whose partials cancel once became the number 0."""
    spec = {"name": "m", "dtype": "float64", "input": [3], "loss": "mse",
            "layers": [{"linear": 2}, {"activation": expr}, {"linear": 2}]}
    assert_exact(spec)


def test_nested_max_that_sympy_flattens_compiles():
    """max(max(a, b), c) is one three-argument Max to SymPy: once 'unsupported construct
    Max' at <input>:2:1 (found by the nightly random run)."""
    spec = {"name": "m", "dtype": "float64", "input": [3], "loss": "mse", "l2": 0.5,
            "layers": [{"linear": 2}, {"activation": "max(max(x - x, x), x / (2 + sin(x)))"},
                       {"linear": 2}]}
    assert_exact(spec)
    module = bpcompile.compile("max(max(x, y), min(min(x, 2*y), 1 - x))")
    value, (dx, dy) = module.value_and_grad(0.3, 0.7)
    assert value == pytest.approx(0.7) and (dx, dy) == (0.0, 1.0)


def test_an_activation_constant_inside_a_function_is_a_located_error():
    text = ("name: m\ninput: [4]\nlayers:\n  - linear: 3\n"
            "  - activation: {expr: \"sigmoid((x) - (x))\"}\n  - linear: 2\nloss: mse\n")
    with pytest.raises(bpcompile.SpecError, match="constant once simplified") as info:
        bpcompile.compiler.compile_spec(bpcompile.compiler.load_spec(text, "s.yaml"))
    assert info.value.line == 5
