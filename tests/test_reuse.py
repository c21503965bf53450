"""Dead temporaries reused in place (reuse.py): the batch code writes into arrays
nothing reads again, and must still compute exactly what it computed before:
backward() leaves the cache as it found it, and sgd_step equals p - lr * grad."""

import copy

import numpy as np
import pytest

from bpcompile.training.gradcheck import random_problem

from test_layers import module_from, spec_text

pytestmark = pytest.mark.both_targets

SPECS = [
    spec_text(["linear: 6", "relu", "linear: 3"]),
    spec_text(["linear: 6", "sigmoid", "linear: 5", "tanh", "linear: 3"], extra="l2: 0.01\n"),
    spec_text(["linear: 6", 'activation: "x * tanh(softplus(x))"', "linear: {out: 4, bias: false}",
               'activation: "max(x, 0.1*x) + exp(-x*x)"', "linear: 2"], loss="mse"),
    spec_text(["linear: 5", "relu", "linear: 1"], loss="sigmoid_binary_cross_entropy"),
    """name: small_conv
dtype: float64
input: [1, 6, 6]
layers:
  - conv2d: {out_channels: 2, kernel: 3}
  - relu
  - maxpool2d: {kernel: 2}
  - flatten
  - linear: 4
  - tanh
  - linear: 3
loss: softmax_cross_entropy
""",
]


@pytest.mark.parametrize("text", SPECS)
def test_backward_leaves_the_cache_intact_and_sgd_step_matches_the_gradient(text):
    module, compiled = module_from(text)
    params, x, y = random_problem(module, batch=5, seed=1)
    J, cache = module.forward(params, x, y)
    saved = copy.deepcopy(cache)
    first = module.backward(params, cache)
    second = module.backward(params, cache)
    assert_same(cache, saved)
    stepped = {k: v.copy() for k, v in params.items()}
    J_step = module.sgd_step(stepped, x, y, 0.25)
    assert J_step == pytest.approx(float(J), rel=1e-13)
    for key in params:
        np.testing.assert_array_equal(first[key], second[key])
        np.testing.assert_allclose(stepped[key], params[key] - 0.25 * first[key], rtol=1e-12, atol=1e-14)


def assert_same(a, b):
    """Equal nested dicts / tuples / arrays (a conv layer caches tuples of arrays)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_same(u, v)
    else:
        np.testing.assert_array_equal(a, b)


def test_relu_network_writes_into_dead_temporaries():
    _, compiled = module_from(SPECS[0])
    source = compiled.source
    assert "relu1 = np.maximum(linear1, 0.0, out=linear1)" in source
    assert "np.multiply(dJ_drelu1, (relu1 > 0), out=dJ_drelu1)" in source
    # cached values are never written over: relu1 is read by the backward pass
    assert "out=relu1" not in source


def test_a_large_weight_is_updated_block_by_block_exactly():
    # W of 4000 x 150 float64 is 4.8 MB: _subtract_product takes it in two blocks of rows
    module, compiled = module_from(spec_text(["linear: 150", "tanh", "linear: 4000"], inputs=20))
    # (the numba target starts it on the worker threads before the backward's last statements)
    assert ("_subtract_product(linear2_W, dJ_dlinear2, tanh1)" in compiled.source
            or "finish_linear2_W = _subtract_product_later(linear2_W, dJ_dlinear2, tanh1)"
            in compiled.source)
    params, x, y = random_problem(module, batch=7, seed=2)
    _, grads = module.value_and_grad(params, x, y)
    stepped = {k: v.copy() for k, v in params.items()}
    module.sgd_step(stepped, x, y, 0.5)
    for key in params:
        np.testing.assert_allclose(stepped[key], params[key] - 0.5 * grads[key], rtol=1e-12, atol=1e-15)
    for rows in (2, 200):            # blocks of W's rows, or (many rows of a) one product
        W = np.arange(200.0 * 3000).reshape(3000, 200)
        a, b = np.ones((rows, 3000)), np.ones((rows, 200))
        expected = W - a.T @ b
        module._subtract_product(W, a, b)
        np.testing.assert_array_equal(W, expected)


@pytest.mark.parametrize("text", SPECS, ids=range(len(SPECS)))
def test_the_planner_only_lends_buffers_nothing_reads_again(text):
    """The memory planner's decisions, read from the statements as data: a statement that
    writes into an existing buffer (its `buffer`) is the last to read it, and the buffer
    is no value the caller keeps (cache, gradients, output)."""
    from bpcompile.compiler import compile_spec, load_spec
    from bpcompile.memory import planner
    compiled = compile_spec(load_spec(text))
    sched, graph = compiled.schedule, compiled.graph
    grads = {g for _, g in sched.grads if g}
    cache = set(sched.cache)
    statements = sched.forward + sched.backward
    planned = planner.plan(statements, graph, sched.adjoints, grads | cache | {sched.output})
    lent = 0
    for k, s in enumerate(planned):
        if s.buffer is None:
            continue
        lent += 1
        assert s.buffer not in grads | cache | {sched.output}, s
        assert all(s.buffer not in later.reads for later in statements[k + 1:]), s
        assert s.buffer in statements[k].reads or s.buffer == s.node.operands[0]
    assert lent > 0
