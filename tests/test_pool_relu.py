"""A relu directly followed by a max-pool is computed after it (layers.py,
_pool_before_relu): the module must give exactly what the spec says."""

import numpy as np
import pytest

import bpcompile

from conftest import fd_gradient

pytestmark = pytest.mark.both_targets


def _spec(order, pool=None):
    pool = pool or {"kernel": 2}
    layers = [{"conv2d": {"out_channels": 3, "kernel": 3, "padding": 1}}]
    layers += [order[0] if order[0] == "relu" else {"maxpool2d": pool},
               order[1] if order[1] == "relu" else {"maxpool2d": pool}]
    layers += ["flatten", {"linear": 4}]
    return {"name": "pool_relu", "dtype": "float64", "input": [2, 6, 6], "layers": layers,
            "loss": "softmax_cross_entropy"}


@pytest.mark.parametrize("pool", [{"kernel": 2}, {"kernel": 3, "stride": 1}])
def test_relu_then_pool_equals_pool_then_relu_exactly(pool):
    written = bpcompile.compile(_spec(["relu", "maxpool2d"], pool))
    swapped = bpcompile.compile(_spec(["maxpool2d", "relu"], pool))
    assert "relu1 is applied after maxpool2d1" in written.__doc__
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 6, 6))
    x[0] = -np.abs(x[0])          # windows with nothing positive: no gradient through them
    x[1, :, :3] = 0.0             # ties at zero
    y = rng.integers(0, 4, 5)
    params = written.init_params(0)
    J1, g1 = written.value_and_grad(params, x, y)
    J2, g2 = swapped.value_and_grad(params, x, y)
    assert J1 == J2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


def test_relu_then_pool_matches_its_definition_and_finite_differences():
    module = bpcompile.compile(_spec(["relu", "maxpool2d"]))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 6, 6))
    y = rng.integers(0, 4, 3)
    params = module.init_params(2)
    W, b = params["conv2d1.W"], params["conv2d1.b"]
    # the spec's order by definition: conv, then relu, then 2x2 max-pool
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((3, 3, 6, 6))
    for i in range(6):
        for j in range(6):
            conv[:, :, i, j] = np.einsum("bchw,ochw->bo", xp[:, :, i:i + 3, j:j + 3], W) + b
    pooled = np.maximum(conv, 0).reshape(3, 3, 3, 2, 3, 2).max(axis=(3, 5))
    logits = pooled.reshape(3, -1) @ params["linear1.W"].T + params["linear1.b"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    J_ref = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(3), y])
    J, grads = module.value_and_grad(params, x, y)
    assert J == pytest.approx(J_ref, rel=1e-12)

    def loss(W):
        return module.forward({**params, "conv2d1.W": W}, x, y)[0]
    numeric = fd_gradient(loss, [W], 0)
    np.testing.assert_allclose(grads["conv2d1.W"], numeric, rtol=1e-6, atol=1e-8)


def test_a_named_or_optioned_relu_is_still_swapped_only_before_a_max_pool():
    spec = _spec(["relu", "maxpool2d"])
    spec["layers"][1] = {"relu": {"name": "act"}}
    assert "act is applied after maxpool2d1" in bpcompile.compile(spec).__doc__
    spec = _spec(["maxpool2d", "relu"])
    assert "is applied after" not in bpcompile.compile(spec).__doc__


# maxpool2d's options (padding is -inf, dilation, ceil mode): the swap must still give
# what the spec says, values and gradients
POOL_OPTIONS = [
    {"kernel": 3, "stride": 2, "padding": 1},
    {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"kernel": 2, "stride": 1, "dilation": 2},
    {"kernel": 2, "stride": 2, "dilation": 2, "padding": 1, "ceil_mode": True},
    {"kernel": [3, 2], "stride": [2, 3], "padding": [1, 1], "dilation": [1, 2], "ceil_mode": True},
]


def _definition_order_loss(params, x, y, pool):
    """conv, relu, then max-pool (PyTorch's definition, -inf padding), linear, softmax CE."""
    from test_image_options import ref_maxpool2d
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    kernel = pair(pool["kernel"])
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.empty((len(x), 3, 6, 6))
    for i in range(6):
        for j in range(6):
            conv[:, :, i, j] = np.einsum("bchw,ochw->bo", xp[:, :, i:i + 3, j:j + 3],
                                         params["conv2d1.W"]) + params["conv2d1.b"]
    pooled = ref_maxpool2d(np.maximum(conv, 0), kernel, pair(pool.get("stride", kernel)),
                           pair(pool.get("padding", 0)), pair(pool.get("dilation", 1)),
                           pool.get("ceil_mode", False))[0]
    logits = pooled.reshape(len(x), -1) @ params["linear1.W"].T + params["linear1.b"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(x)), y])


@pytest.mark.parametrize("pool", POOL_OPTIONS)
def test_relu_then_padded_dilated_ceil_pool_matches_its_definition(pool):
    module = bpcompile.compile(_spec(["relu", "maxpool2d"], pool))
    assert "relu1 is applied after maxpool2d1" in module.__doc__
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 6, 6))
    x[0] = -np.abs(x[0])          # windows with nothing positive (and -inf padding beside them)
    y = rng.integers(0, 4, 3)
    params = module.init_params(1)
    params["conv2d1.b"] = params["conv2d1.b"] - 0.5    # many non-positive conv outputs
    J, grads = module.value_and_grad(params, x, y)
    assert J == pytest.approx(_definition_order_loss(params, x, y, pool), rel=1e-12)
    for key in ("conv2d1.W", "conv2d1.b"):
        def loss(value):
            return _definition_order_loss({**params, key: value}, x, y, pool)
        np.testing.assert_allclose(grads[key], fd_gradient(loss, [params[key]], 0), rtol=1e-6, atol=1e-8)
