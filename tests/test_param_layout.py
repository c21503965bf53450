"""How init_params lays out weights is a speed choice, never a semantic one: a large
linear W is stored as the transpose of a row-major array (x @ W.T is then a
product of row-major arrays), and every function gives the same results for
row-major params, on the batch path and the one-example path."""

import numpy as np
import pytest

import bpcompile

SPEC = {"name": "layout", "dtype": "float64", "input": [200],
        "layers": [{"linear": 100}, "relu", {"linear": 10}], "loss": "softmax_cross_entropy"}


@pytest.fixture(scope="module")
def module():
    return bpcompile.compile(SPEC)


def test_large_weights_are_stored_transposed_small_ones_row_major(module):
    params = module.init_params(0)
    W1, W2 = params["linear1.W"], params["linear2.W"]
    assert W1.shape == (100, 200) and W1.flags.f_contiguous and W1.T.flags.c_contiguous
    assert W2.shape == (10, 100) and W2.flags.c_contiguous          # 1,000 entries: row-major
    assert params["linear1.b"].flags.c_contiguous


@pytest.mark.parametrize("batch", [1, 8])
def test_sgd_step_is_the_same_for_either_layout(module, batch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 200))
    y = rng.integers(0, 10, batch)
    stored = module.init_params(1)
    row_major = {k: np.array(v, order="C") for k, v in stored.items()}
    for _ in range(3):
        J1 = module.sgd_step(stored, x, y, 0.1)
        J2 = module.sgd_step(row_major, x, y, 0.1)
        assert J1 == pytest.approx(J2, rel=1e-12)
    for k in stored:
        np.testing.assert_allclose(stored[k], row_major[k], rtol=1e-12, atol=1e-14)
    assert stored["linear1.W"].flags.f_contiguous     # updated in place, layout kept


def test_gradients_are_the_same_for_either_layout(module):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 200))
    y = rng.integers(0, 10, 5)
    stored = module.init_params(3)
    row_major = {k: np.array(v, order="C") for k, v in stored.items()}
    J1, g1 = module.value_and_grad(stored, x, y)
    J2, g2 = module.value_and_grad(row_major, x, y)
    assert J1 == pytest.approx(J2, rel=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["i1", "i2", "i8", ">i4", "u1", "u8"])
def test_class_ids_out_of_range_are_refused_for_every_integer_type(module, dtype):
    params = module.init_params(0)
    x = np.zeros((3, 200))
    kind = np.dtype(dtype).kind
    bad = [np.array([0, 10, 1])] + ([np.array([0, -1, 1])] if kind == "i" else [])
    for y in bad:
        with pytest.raises(ValueError, match="class ids"):
            module.sgd_step(params, x, y.astype(dtype), 0.1)
    module.sgd_step(params, x, np.array([0, 9, 1]).astype(dtype), 0.1)


def test_a_sequence_model_gives_the_same_gradients_for_either_layout():
    spec = {"name": "seq_layout", "dtype": "float64", "input": {"vocab": 200},
            "layers": [{"embedding": 8}, {"lstm": {"hidden": 100}}, {"linear": 200}],
            "loss": "softmax_cross_entropy"}
    module = bpcompile.compile(spec)
    stored = module.init_params(0)
    assert stored["linear1.W"].flags.f_contiguous and not stored["linear1.W"].flags.c_contiguous
    row_major = {k: np.array(v, order="C") for k, v in stored.items()}
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 200, (3, 5)), rng.integers(0, 200, (3, 5))
    J1, g1 = module.value_and_grad(stored, x, y)
    J2, g2 = module.value_and_grad(row_major, x, y)
    assert J1 == pytest.approx(J2, rel=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-14)
    module.sgd_step(stored, x, y, 0.1)
    module.sgd_step(row_major, x, y, 0.1)
    for k in stored:
        np.testing.assert_allclose(stored[k], row_major[k], rtol=1e-10, atol=1e-14)
