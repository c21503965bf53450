"""Loss options as PyTorch defines them (issue 13): cross-entropy's class_weights,
ignore_index and reduction; binary cross-entropy's pos_weight and reduction; mse's
reduction; and every loss per position in sequence specs, with the mask.

Each is checked against a NumPy reference written here from PyTorch's definitions
(torch.nn.functional.cross_entropy, binary_cross_entropy_with_logits, mse_loss),
loop by loop, and against central finite differences in float64.  With reduction
none, J holds one loss per example (or element) and the gradient is that of their
sum, as loss.backward(torch.ones_like(loss)) gives in PyTorch.
"""

import math
import runpy
import textwrap

import numpy as np
import pytest

from bpcompile.codegen.render import templates_dir
from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.errors import SpecError

pytestmark = pytest.mark.both_targets

H = 1e-6
TOL = 1e-7


# --- references: PyTorch's definitions, one term at a time -------------------------------

def log_softmax(row):
    shifted = row - row.max()
    return shifted - math.log(np.exp(shifted).sum())


def ref_cross_entropy(a, y, weight=None, ignore_index=-100, reduction="mean", mask=None):
    """torch.nn.functional.cross_entropy over the last axis; mask 0 acts as an ignored label."""
    a2, y2 = a.reshape(-1, a.shape[-1]), y.reshape(-1)
    m2 = np.ones(len(y2)) if mask is None else mask.reshape(-1)
    terms, weights = np.zeros(len(y2)), np.zeros(len(y2))
    for i, (row, label) in enumerate(zip(a2, y2)):
        if label == ignore_index or m2[i] == 0:
            continue
        w = 1.0 if weight is None else weight[label]
        terms[i], weights[i] = -w * log_softmax(row)[label], w
    if reduction == "none":
        return terms.reshape(y.shape)
    if reduction == "sum":
        return terms.sum()
    return terms.sum() / weights.sum()


def softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def ref_bce_with_logits(a, y, pos_weight=None, reduction="mean", mask=None, batch_mean=False):
    """torch.nn.functional.binary_cross_entropy_with_logits; batch_mean is bpcompile's
    default reduction (summed over outputs, mean over the (unmasked) positions)."""
    k = a.shape[-1]
    pw = np.ones(k) if pos_weight is None else np.broadcast_to(np.asarray(pos_weight, float), (k,))
    a2, y2 = a.reshape(-1, k), y.reshape(-1, k)
    m2 = np.ones(len(a2)) if mask is None else mask.reshape(-1)
    terms = np.zeros(a2.shape)
    for i in range(len(a2)):
        for j in range(k):
            if m2[i]:
                terms[i, j] = (-pw[j] * y2[i, j] * math.log(1 / (1 + math.exp(-a2[i, j])))
                               - (1 - y2[i, j]) * math.log(1 - 1 / (1 + math.exp(-a2[i, j]))))
    return _reduce_elements(terms, m2, reduction, batch_mean, a.shape)


def ref_mse(a, y, reduction="mean", mask=None, half_batch_mean=False):
    """torch.nn.functional.mse_loss; half_batch_mean is bpcompile's default mse."""
    k = a.shape[-1]
    a2, y2 = a.reshape(-1, k), y.reshape(-1, k)
    m2 = np.ones(len(a2)) if mask is None else mask.reshape(-1)
    terms = np.array([[(a2[i, j] - y2[i, j]) ** 2 * m2[i] for j in range(k)] for i in range(len(a2))])
    if half_batch_mean:
        terms = terms / 2
    return _reduce_elements(terms, m2, reduction, half_batch_mean, a.shape)


def _reduce_elements(terms, m2, reduction, batch_mean, shape):
    if batch_mean:
        return terms.sum() / m2.sum()
    if reduction == "none":
        return terms.reshape(shape)
    if reduction == "sum":
        return terms.sum()
    return terms.sum() / (m2.sum() * terms.shape[1])


# --- modules --------------------------------------------------------------------------

def module_from(text):
    compiled = compile_spec(load_spec(textwrap.dedent(text), "spec.yaml"))
    return load_module(compiled.source, compiled.name), compiled


def mlp(loss, k=3, extra=""):
    return module_from(f"name: net\ndtype: float64\ninput: [4]\nlayers:\n  - linear: 5\n  - tanh\n"
                       f"  - linear: {k}\nloss: {loss}\n{extra}")


def tagger(loss, k=3):
    return module_from(f"name: seq\ndtype: float64\ninput: [3]\nlayers:\n  - rnn: {{hidden: 4}}\n"
                       f"  - linear: {k}\nloss: {loss}\n")


def random_params(module, seed=0):
    rng = np.random.default_rng(seed)
    return {key: rng.normal(0.0, 0.5, shape) for key, shape in module.PARAMS.items()}


def assert_matches_finite_differences(module, params, *args):
    """Every entry of every parameter: the analytic gradient of sum(J) against central
    differences of sum(J) in float64."""
    _, grads = module.value_and_grad(params, *args)
    for key, value in params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            original = value[i]
            value[i] = original + H
            plus = np.sum(module.forward(params, *args)[0])
            value[i] = original - H
            minus = np.sum(module.forward(params, *args)[0])
            value[i] = original
            numeric[i] = (plus - minus) / (2 * H)
        error = np.abs(grads[key] - numeric).max() / max(1.0, np.abs(numeric).max())
        assert error < TOL, (key, error)


def batch(module, seed=1, size=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(size, 4)), rng


def logits_of(module, params, x, mask=None):
    return module.predict(params, x, logits=True) if mask is None else \
        module.predict(params, x, mask, logits=True)


# --- cross-entropy options -------------------------------------------------------------

CE_CASES = {
    "weights_mean": ({"class_weights": [1.0, 2.0, 0.5]}, {}),
    "weights_sum": ({"class_weights": [1.0, 2.0, 0.5], "reduction": "sum"}, {}),
    "weights_none": ({"class_weights": [1.0, 2.0, 0.5], "reduction": "none"}, {}),
    "reduction_sum": ({"reduction": "sum"}, {}),
    "reduction_none": ({"reduction": "none"}, {}),
    # an ignore_index inside [0, K): the labels of that class add nothing and do not count
    "ignore_class_1_mean": ({"ignore_index": 1}, {}),
    "weights_ignore_class_1_mean": ({"class_weights": [1.0, 2.0, 0.5], "ignore_index": 1}, {}),
    "weights_ignore_class_1_none": ({"class_weights": [1.0, 2.0, 0.5], "ignore_index": 1,
                                     "reduction": "none"}, {}),
}


def loss_text(name, options):
    body = ", ".join(f"{k}: {v}" for k, v in options.items())
    return f"{{{name}: {{{body}}}}}"


def reference_options(options):
    return {"weight": options.get("class_weights"), "ignore_index": options.get("ignore_index", -100),
            "reduction": options.get("reduction", "mean")}


@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_options_match_pytorch_definition_and_finite_differences(case):
    options, _ = CE_CASES[case]
    module, _ = mlp(loss_text("softmax_cross_entropy", options))
    params = random_params(module)
    x, rng = batch(module)
    y = np.array([0, 1, 2, 1, 0, 2, 1])
    J = module.forward(params, x, y)[0]
    expected = ref_cross_entropy(logits_of(module, params, x), y, **reference_options(options))
    np.testing.assert_allclose(J, expected, rtol=1e-12, atol=1e-14)
    assert np.shape(J) == np.shape(expected)
    assert_matches_finite_differences(module, params, x, y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignore_index_minus_100_outside_the_classes(reduction):
    module, _ = mlp(loss_text("softmax_cross_entropy", {"class_weights": [1.0, 2.0, 0.5],
                                                        "ignore_index": -100, "reduction": reduction}))
    params = random_params(module)
    x, _ = batch(module)
    y = np.array([0, -100, 2, 1, -100, 2, 1])
    J = module.forward(params, x, y)[0]
    expected = ref_cross_entropy(logits_of(module, params, x), y, [1.0, 2.0, 0.5], -100, reduction)
    np.testing.assert_allclose(J, expected, rtol=1e-12, atol=1e-14)
    assert_matches_finite_differences(module, params, x, y)


def test_labels_out_of_range_that_are_not_ignore_index_are_still_refused():
    module, _ = mlp(loss_text("softmax_cross_entropy", {"ignore_index": -100}))
    params = random_params(module)
    x, _ = batch(module, size=2)
    module.forward(params, x, np.array([-100, 1]))          # the ignored label passes
    with pytest.raises(ValueError, match="class ids"):
        module.forward(params, x, np.array([-1, 1]))


def test_all_labels_ignored_mean_is_refused_sum_is_zero():
    """PyTorch's mean over no labels is nan; the module refuses it, as it refuses a batch
    that is all padding.  The sum over no labels is 0, with a zero gradient."""
    module, _ = mlp(loss_text("softmax_cross_entropy", {"ignore_index": 1}))
    params = random_params(module)
    x, _ = batch(module, size=3)
    y = np.array([1, 1, 1])
    with pytest.raises(ValueError, match="every label is ignore_index"):
        module.forward(params, x, y)
    summed, _ = mlp(loss_text("softmax_cross_entropy", {"ignore_index": 1, "reduction": "sum"}))
    J, grads = summed.value_and_grad(params, x, y)
    assert J == 0.0
    assert all(not g.any() for g in grads.values())


def test_class_weights_that_sum_to_zero_over_the_batch_are_refused_for_mean():
    module, _ = mlp(loss_text("softmax_cross_entropy", {"class_weights": [0.0, 1.0, 2.0]}))
    params = random_params(module)
    x, _ = batch(module, size=2)
    with pytest.raises(ValueError, match="class weights of the labels in the batch sum to 0"):
        module.forward(params, x, np.array([0, 0]))
    J = module.forward(params, x, np.array([0, 2]))[0]      # one weighted label: its own loss
    expected = ref_cross_entropy(logits_of(module, params, x), np.array([0, 2]), [0.0, 1.0, 2.0])
    assert J == pytest.approx(expected, rel=1e-12)


def test_default_reduction_mean_is_the_plain_op_and_unchanged():
    """`{softmax_cross_entropy: {reduction: mean}}` is the short form's op: same code."""
    _, plain = mlp("softmax_cross_entropy")
    _, explicit = mlp(loss_text("softmax_cross_entropy", {"reduction": "mean"}))
    body = lambda source: source[source.index("DTYPE ="):]     # noqa: E731 (after the quoted spec)
    assert body(plain.source) == body(explicit.source)
    assert "_options" not in plain.source


# --- binary cross-entropy and mse options ----------------------------------------------

ELEMENT_CASES = {
    "bce_pos_weight_list_mean": ("sigmoid_binary_cross_entropy", {"pos_weight": [1.0, 3.0, 0.5],
                                                                  "reduction": "mean"}),
    "bce_pos_weight_number_sum": ("sigmoid_binary_cross_entropy", {"pos_weight": 2.5, "reduction": "sum"}),
    "bce_pos_weight_none": ("sigmoid_binary_cross_entropy", {"pos_weight": [1.0, 3.0, 0.5],
                                                             "reduction": "none"}),
    "bce_reduction_mean": ("sigmoid_binary_cross_entropy", {"reduction": "mean"}),
    "bce_pos_weight_default_reduction": ("sigmoid_binary_cross_entropy", {"pos_weight": [2.0, 1.0, 4.0]}),
    "mse_mean": ("mse", {"reduction": "mean"}),
    "mse_sum": ("mse", {"reduction": "sum"}),
    "mse_none": ("mse", {"reduction": "none"}),
}


def element_reference(name, options, a, y, mask=None):
    reduction = options.get("reduction")
    if name == "mse":
        return ref_mse(a, y, reduction or "mean", mask, half_batch_mean=reduction is None)
    return ref_bce_with_logits(a, y, options.get("pos_weight"), reduction or "mean", mask,
                               batch_mean=reduction is None)


@pytest.mark.parametrize("case", list(ELEMENT_CASES))
def test_bce_and_mse_options_match_pytorch_definition_and_finite_differences(case):
    name, options = ELEMENT_CASES[case]
    module, _ = mlp(loss_text(name, options))
    params = random_params(module)
    x, rng = batch(module)
    y = (rng.random((7, 3)) < 0.5).astype(float) if name != "mse" else rng.normal(size=(7, 3))
    J = module.forward(params, x, y)[0]
    expected = element_reference(name, options, logits_of(module, params, x), y)
    np.testing.assert_allclose(J, expected, rtol=1e-12, atol=1e-14)
    assert np.shape(J) == np.shape(expected)
    assert_matches_finite_differences(module, params, x, y)


def test_default_mse_keeps_its_meaning_and_reduction_mean_is_pytorchs():
    """The default mse is the batch mean of sum (a - y)**2 / 2 (unchanged); PyTorch's
    MSELoss() is reduction: mean, the mean over all B*K elements without the 1/2: the
    two differ by the factor K/2."""
    default, compiled = mlp("mse")
    torch_like, _ = mlp(loss_text("mse", {"reduction": "mean"}))
    params = random_params(default)
    x, rng = batch(default)
    y = rng.normal(size=(7, 3))
    a = logits_of(default, params, x)
    assert default.forward(params, x, y)[0] == pytest.approx(((a - y) ** 2).sum() / 2 / 7, rel=1e-12)
    assert torch_like.forward(params, x, y)[0] == pytest.approx(((a - y) ** 2).mean(), rel=1e-12)
    assert "_options" not in compiled.source


# --- the one-example fast path ---------------------------------------------------------

@pytest.mark.parametrize("loss", [loss_text("softmax_cross_entropy", {"class_weights": [1.0, 2.0, 0.5]}),
                                  loss_text("sigmoid_binary_cross_entropy", {"pos_weight": 2.0}),
                                  loss_text("mse", {"reduction": "sum"})])
def test_options_take_the_batch_path_for_one_example(loss):
    """The one-example step has no rule for the options: sgd_step of one example takes
    the batch path and updates by exactly lr * the gradient of value_and_grad."""
    module, compiled = mlp(loss)
    assert "_sgd_step_one" not in compiled.source
    params = random_params(module)
    x, rng = batch(module, size=1)
    y = np.array([2]) if "softmax" in loss else (rng.random((1, 3)) < 0.5).astype(float)
    _, grads = module.value_and_grad(params, x, y)
    expected = {k: v - 0.1 * grads[k] for k, v in params.items()}
    module.sgd_step(params, x, y, 0.1)
    for key in params:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-13, atol=1e-15)


def test_plain_losses_keep_the_one_example_path():
    """The check above can fail: without options the one-example step is there."""
    for loss in ("softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mse"):
        assert "_sgd_step_one" in mlp(loss)[1].source


# --- compile errors ----------------------------------------------------------------------

@pytest.mark.parametrize("loss,at,message", [
    # `at`: the text the error's line:column points to (its first occurrence in `loss`)
    ("{softmax_cross_entropy: {class_weights: [1, 2]}}", "[1, 2]",
     "class_weights has 2 entries, but the last layer has 3"),
    ("{softmax_cross_entropy: {class_weights: [1, -2, 1]}}", "-2", "class_weights must be finite numbers >= 0"),
    ("{softmax_cross_entropy: {class_weights: [1, .nan, 1]}}", ".nan", "class_weights must be finite numbers >= 0"),
    ("{softmax_cross_entropy: {class_weights: [0, 0, 0]}}", "[0", "class_weights are all 0"),
    ("{softmax_cross_entropy: {class_weights: 2}}", "2}", "class_weights must be a list of 3 numbers"),
    ("{softmax_cross_entropy: {ignore_index: 1.5}}", "1.5", "ignore_index must be a 64-bit integer"),
    ("{softmax_cross_entropy: {ignore_index: true}}", "true", "ignore_index must be a 64-bit integer"),
    ("{softmax_cross_entropy: {ignore_index: 9223372036854775808}}", "9223", "ignore_index must be a 64-bit"),
    ("{softmax_cross_entropy: {reduction: avg}}", "avg", "reduction must be one of mean, sum, none"),
    ("{softmax_cross_entropy: {pos_weight: 2}}", "pos_weight", "unknown key 'pos_weight'"),
    ("{sigmoid_binary_cross_entropy: {pos_weight: [1, 2]}}", "[1, 2]", "pos_weight has 2 entries"),
    ("{sigmoid_binary_cross_entropy: {pos_weight: -1}}", "-1", "pos_weight must be a finite number >= 0"),
    ("{mse: {class_weights: [1, 2, 3]}}", "class_weights", "unknown key 'class_weights'"),
    ("{softmax: {}}", "softmax", "unknown loss 'softmax'"),
    ("{softmax: 1}", "softmax", "unknown loss 'softmax'"),      # the name is checked first
    ("{softmax_cross_entropy: {}, mse: {}}", "{", "give one loss"),
    ("{softmax_cross_entropy: 3}", "3", "must be a mapping"),
])
def test_bad_loss_options_are_compile_errors_with_position(loss, at, message):
    text = f"name: net\ndtype: float64\ninput: [4]\nlayers:\n  - linear: 5\n  - tanh\n  - linear: 3\nloss: {loss}\n"
    with pytest.raises(SpecError) as error:
        compile_spec(load_spec(text, "spec.yaml"))
    assert message in str(error.value)
    assert f"spec.yaml:8:{len('loss: ') + loss.index(at) + 1}:" in str(error.value)


def test_l2_with_reduction_none_is_refused():
    with pytest.raises(SpecError, match="l2 needs a number J"):
        mlp(loss_text("softmax_cross_entropy", {"reduction": "none"}), extra="l2: 0.01")


# --- sequence specs: every loss per position, with the mask ------------------------------

def sequence_problem(module, seed=2, batch_size=3, steps=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, steps, 3))
    mask = np.ones((batch_size, steps))
    for b in range(batch_size):
        mask[b, steps - b:] = 0            # lengths 4, 3, 2
    return x, mask, rng


SEQUENCE_CE_CASES = {
    "weights_mean": {"class_weights": [1.0, 2.0, 0.5]},
    "weights_ignore_class_2_sum": {"class_weights": [1.0, 2.0, 0.5], "ignore_index": 2, "reduction": "sum"},
    "ignore_class_0_none": {"ignore_index": 0, "reduction": "none"},
}


@pytest.mark.parametrize("case", list(SEQUENCE_CE_CASES))
def test_sequence_cross_entropy_options_with_the_mask(case):
    options = SEQUENCE_CE_CASES[case]
    module, _ = tagger(loss_text("softmax_cross_entropy", options))
    params = random_params(module)
    x, mask, rng = sequence_problem(module)
    y = rng.integers(0, 3, mask.shape)
    J = module.forward(params, x, y, mask)[0]
    expected = ref_cross_entropy(logits_of(module, params, x, mask), y, mask=mask,
                                 **reference_options(options))
    np.testing.assert_allclose(J, expected, rtol=1e-12, atol=1e-14)
    assert_matches_finite_differences(module, params, x, y, mask)


def test_sequence_ignore_index_minus_100_beside_the_mask():
    module, _ = tagger(loss_text("softmax_cross_entropy", {"ignore_index": -100}))
    params = random_params(module)
    x, mask, rng = sequence_problem(module)
    y = rng.integers(0, 3, mask.shape)
    y[0, 1] = y[2, 0] = -100
    J = module.forward(params, x, y, mask)[0]
    expected = ref_cross_entropy(logits_of(module, params, x, mask), y, mask=mask)
    assert J == pytest.approx(expected, rel=1e-12)
    assert_matches_finite_differences(module, params, x, y, mask)


SEQUENCE_ELEMENT_CASES = {
    "bce_default": ("sigmoid_binary_cross_entropy", {}),
    "bce_pos_weight_mean": ("sigmoid_binary_cross_entropy", {"pos_weight": [1.0, 3.0, 0.5], "reduction": "mean"}),
    "mse_default": ("mse", {}),
    "mse_none": ("mse", {"reduction": "none"}),
}


@pytest.mark.parametrize("case", list(SEQUENCE_ELEMENT_CASES))
def test_sequence_bce_and_mse_with_the_mask(case):
    name, options = SEQUENCE_ELEMENT_CASES[case]
    module, _ = tagger(loss_text(name, options) if options else name)
    params = random_params(module)
    x, mask, rng = sequence_problem(module)
    y = (rng.random(mask.shape + (3,)) < 0.5).astype(float) if name != "mse" else rng.normal(size=mask.shape + (3,))
    J = module.forward(params, x, y, mask)[0]
    expected = element_reference(name, options, logits_of(module, params, x, mask), y, mask)
    np.testing.assert_allclose(J, expected, rtol=1e-12, atol=1e-14)
    assert_matches_finite_differences(module, params, x, y, mask)


def test_sequence_losses_compile_with_per_position_targets():
    """Sequence specs accept every loss: y is (B, T, K) floats for bce and mse."""
    for name in ("sigmoid_binary_cross_entropy", "mse"):
        _, compiled = tagger(name)
        assert f"LOSS = \"{name}\"" in compiled.source
        assert "_options(" in compiled.source


# --- the helpers themselves, with masks (independent of the template's argument checks) ----

@pytest.fixture(scope="module")
def helpers():
    return runpy.run_path(str(templates_dir() / "helpers" / "losses.py"), init_globals={"np": np})


def numeric_logit_gradient(f, a, g):
    """Central differences of sum(g * f(a)) with respect to every entry of a."""
    numeric = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        original = a[i]
        a[i] = original + H
        plus = np.sum(g * f(a))
        a[i] = original - H
        minus = np.sum(g * f(a))
        a[i] = original
        numeric[i] = (plus - minus) / (2 * H)
    return numeric


@pytest.mark.parametrize("name,options", list(SEQUENCE_ELEMENT_CASES.values()) + [
    ("sigmoid_binary_cross_entropy", {"pos_weight": 2.0, "reduction": "none"}),
    ("mse", {"reduction": "sum"}), ("mse", {"reduction": "mean"})])
def test_masked_element_helpers_match_the_reference_and_their_gradient(helpers, name, options):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 4, 3))
    mask = np.ones((3, 4))
    mask[1, 2:] = mask[2, 1:] = 0
    y = (rng.random(a.shape) < 0.5).astype(float) if name != "mse" else rng.normal(size=a.shape)
    reduction = options.get("reduction")

    def J(logits):
        if name == "mse":
            return helpers["_mean_squared_error_options"](logits, y, mask, reduction or "batchmean",
                                                          reduction is None)
        pw = options.get("pos_weight")
        pw = None if pw is None else np.broadcast_to(np.asarray(pw, float), (3,))
        return helpers["_sigmoid_binary_cross_entropy_options"](logits, y, mask, pw, reduction or "batchmean")

    value, scale, delta = J(a)
    np.testing.assert_allclose(value, element_reference(name, options, a, y, mask), rtol=1e-12, atol=1e-14)
    seed = rng.normal(size=np.shape(value))          # a vector-Jacobian product, any seed
    analytic = delta * (scale * seed)
    numeric = numeric_logit_gradient(lambda v: J(v)[0], a, seed)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_masked_cross_entropy_helper_with_out_of_range_ignored_labels(helpers):
    """ignore_index -100 in the helper itself: no index error, nothing added, nothing counted."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2, 5, 3))
    y = rng.integers(0, 3, (2, 5))
    y[0, 1] = y[1, 3] = -100
    mask = np.ones((2, 5))
    mask[1, 4] = 0
    weights = np.array([0.5, 2.0, 1.0])
    for reduction in ("mean", "sum", "none"):
        def J(logits):
            return helpers["_softmax_cross_entropy_options"](logits, y, mask, weights, -100, reduction)
        value, scale, delta = J(a)
        np.testing.assert_allclose(value, ref_cross_entropy(a, y, weights, -100, reduction, mask),
                                   rtol=1e-12, atol=1e-14)
        seed = rng.normal(size=np.shape(value))
        analytic = delta * (scale * seed)[..., None]
        np.testing.assert_allclose(analytic, numeric_logit_gradient(lambda v: J(v)[0], a, seed),
                                   rtol=1e-6, atol=1e-8)


def test_float32_options_stay_float32():
    module, _ = module_from("name: net\ninput: [4]\nlayers:\n  - linear: 3\n"
                            "loss: {softmax_cross_entropy: {class_weights: [1, 2, 3], reduction: sum}}\n")
    params = module.init_params(0)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    J, grads = module.value_and_grad(params, x, np.array([0, 1, 2, 1, 0]))
    assert np.asarray(J).dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
