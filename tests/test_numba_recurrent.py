"""The numba target's recurrent layers: the loop over time as one compiled kernel.

Each module compiled for numba is compared with the NumPy target's module of the
same spec (forward values, final states, every gradient, the state gradients, an
sgd_step), and its gradients with central differences in float64."""

import numpy as np
import pytest

import bpcompile
from bpcompile.codegen import numba_scan
from test_cells import gradient_error

numba = pytest.importorskip("numba")

EXACT = 1e-12          # float64: the two targets agree to rounding
FD_TOL = 1e-6


def spec(layer, dtype="float64", vocab=7, inputs=3, extra=()):
    first = [{"embedding": inputs}] if vocab else []
    return {"name": "seq", "dtype": dtype, "input": {"vocab": vocab} if vocab else [inputs],
            "layers": first + [layer, *extra, {"linear": 4}], "loss": "softmax_cross_entropy"}


def gru(hidden=4, **more):
    return {"recurrent": {"name": "gru", "hidden": hidden, "state": ["h"], **more, "equations": (
        "z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
        "r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)\n"
        "n = tanh(W_xn @ x + W_hn @ (r * h_prev) + b_n)\n"
        "h = (1 - z) * n + z * h_prev\n")}}


LAYERS = {
    "rnn": {"rnn": {"hidden": 4}},
    "rnn_relu": {"rnn": {"hidden": 4, "nonlinearity": "relu"}},
    "lstm": {"lstm": {"hidden": 5}},
    "peephole": {"lstm": {"hidden": 4, "peephole": True}},
    "gru": gru(),
    "reverse_gru": gru(direction="reverse"),
    "bidirectional_lstm": {"lstm": {"hidden": 3, "bidirectional": True}},
    "stacked_rnn": {"rnn": {"hidden": 3, "layers": 2, "bidirectional": True}},
    "stacked_lstm": {"lstm": {"hidden": 4, "layers": 2}},
    "two_states": {"recurrent": {"hidden": 3, "state": ["h", "c"], "equations": (
        "h = tanh(W @ x + U @ h_prev + V @ c_prev + b)\n"
        "c = c_prev + h * sigmoid(A @ c_prev)\n")}},
    "products_of_products": {"recurrent": {"hidden": 4, "equations":
                                           "h = tanh(W @ (U @ x) + V @ (A @ h_prev))"}},
}


def both(layer, **kw):
    """The same spec compiled for both targets."""
    return (bpcompile.compile(spec(layer, **kw), target="numpy"),
            bpcompile.compile(spec(layer, **kw), target="numba"))


def problem(module, batch=3, steps=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0.0, 0.5, s).astype(dtype) for k, s in module.PARAMS.items()}
    x = rng.integers(0, module.VOCAB, (batch, steps))
    y = rng.integers(0, module.OUTPUTS, (batch, steps))
    mask = np.ones((batch, steps))
    for b in range(1, batch):                  # lengths steps, steps-1, steps-2, ...
        mask[b, steps - b:] = 0
    return params, x, y, mask


def random_state(module, params, x, y, mask, seed=1):
    _, cache = module.forward(params, x, y, mask)
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=v.shape).astype(v.dtype) for k, v in cache["state"].items()}


def assert_close(a, b, tol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.max(np.abs(b)), 1e-300) if b.size else 1.0
    assert a.shape == b.shape, what
    assert np.max(np.abs(a - b), initial=0.0) <= tol * scale, (what, np.max(np.abs(a - b)))


def compare(reference, compiled, tol, dtype=np.float64, **kw):
    params, x, y, mask = problem(reference, dtype=dtype, **kw)
    state = random_state(reference, params, x, y, mask)
    J0, g0, s0 = reference.value_and_grad(params, x, y, mask, state, state_grad=True)
    J1, g1, s1 = compiled.value_and_grad(params, x, y, mask, state, state_grad=True)
    assert_close(J1, J0, tol, "loss")
    assert set(g1) == set(g0) == set(params)
    for key in g0:
        assert g1[key].dtype == g0[key].dtype, key
        assert_close(g1[key], g0[key], tol, key)
    for key in s0:
        assert_close(s1[key], s0[key], tol, key)
    _, c0 = reference.forward(params, x, y, mask, state)
    _, c1 = compiled.forward(params, x, y, mask, state)
    for key in c0["state"]:
        assert_close(c1["state"][key], c0["state"][key], tol, f"final state {key}")
    p0 = {k: v.copy() for k, v in params.items()}
    p1 = {k: v.copy() for k, v in params.items()}
    step0 = reference.sgd_step(p0, x, y, 0.1, mask)
    step1 = compiled.sgd_step(p1, x, y, 0.1, mask)
    assert_close(step1, step0, tol, "sgd_step loss")
    for key in p0:
        assert_close(p1[key], p0[key], tol, f"sgd_step {key}")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_numba_equals_numpy_in_float64(name):
    compare(*both(LAYERS[name]), EXACT)


@pytest.mark.parametrize("name", ["lstm", "peephole", "gru", "bidirectional_lstm", "rnn"])
def test_numba_equals_numpy_in_float32(name):
    compare(*both(LAYERS[name], dtype="float32"), 2e-5, dtype=np.float32)


def test_masks_in_both_directions_and_a_batch_of_one():
    reference, compiled = both(LAYERS["bidirectional_lstm"])
    compare(reference, compiled, EXACT, batch=1, steps=3)
    compare(reference, compiled, EXACT, batch=4, steps=7, seed=3)


def test_padding_keeps_the_state():
    """A padded step leaves the state as it was: the final state of a sequence padded
    at its end equals that of the sequence alone (the numba kernel's mask)."""
    _, module = both(LAYERS["gru"])
    params, x, y, mask = problem(module, batch=2, steps=5)
    mask[:] = 1
    mask[1, 3:] = 0
    _, cache = module.forward(params, x, y, mask)
    _, alone = module.forward(params, x[1:, :3], y[1:, :3], mask[1:, :3])
    for key, value in alone["state"].items():
        assert np.allclose(cache["state"][key][1:], value, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["lstm", "peephole", "gru", "reverse_gru", "stacked_rnn",
                                  "two_states"])
def test_numba_gradients_match_central_differences(name):
    module = bpcompile.compile(spec(LAYERS[name]), target="numba")
    assert gradient_error(module, batch=2, steps=4) < FD_TOL


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "bidirectional_lstm", "two_states"])
def test_the_loop_over_time_is_compiled(name):
    module = bpcompile.compile(spec(LAYERS[name]), target="numba")
    kernels = {k: v for k, v in vars(module).items() if k.endswith(("_forward_steps", "_backward_steps"))}
    assert len(kernels) >= 2
    for kernel in kernels.values():
        assert isinstance(kernel, numba.core.registry.CPUDispatcher)
    compare(bpcompile.compile(spec(LAYERS[name]), target="numpy"), module, EXACT)
    for kernel in kernels.values():        # called, so compiled once
        assert kernel.signatures


def test_numpy_target_has_no_kernel():
    module = bpcompile.compile(spec(LAYERS["lstm"]), target="numpy")
    assert "_forward_steps" not in module.SOURCE and "numba" not in module.SOURCE.split('"""', 2)[2]


@pytest.mark.parametrize("equations,inputs", [
    ("h = tanh(W @ (w * x) + U @ h_prev)", 3),       # a value of the input's size (3, not 4)
])
def test_cells_the_kernel_does_not_compile_keep_the_numpy_loop(equations, inputs):
    layer = {"recurrent": {"hidden": 4, "equations": equations}}
    reference = bpcompile.compile(spec(layer, inputs=inputs), target="numpy")
    module = bpcompile.compile(spec(layer, inputs=inputs), target="numba")
    assert "_forward_steps" not in module.SOURCE
    compare(reference, module, EXACT)


def test_render_scan_returns_none_for_what_it_cannot_compile():
    from bpcompile.frontends.recurrent import ScanCompiler, parse_cell
    cell = parse_cell("h = tanh(W @ (w * x) + U @ h_prev)", ["h"], 4, 3)
    assert numba_scan.render_scan(ScanCompiler(cell, "cell").context("float64")) is None
    cell = parse_cell("h = tanh(W @ x + U @ h_prev)", ["h"], 4, 3)
    source = numba_scan.render_scan(ScanCompiler(cell, "cell").context("float64"))
    assert "@numba.njit(cache=_CACHE, error_model=\"numpy\", nogil=True)" in source
    assert "def _cell_forward_steps(" in source and "def cell_forward(" in source


def _limits(module):
    return [k for k in vars(module) if k.endswith("_NUMPY_LOOP_ROWS")]


def test_many_rows_take_the_numpy_loop_and_the_backward_follows():
    """Above the rows limit the functions run the NumPy loop; the backward pass takes the
    path the forward pass took (its saved values say which)."""
    reference, module = both(LAYERS["bidirectional_lstm"])
    assert _limits(module)
    params, x, y, mask = problem(module)
    h0 = np.zeros((3, 3))
    xs = np.random.default_rng(0).normal(size=(3, 5, 3))
    cell_params = [params[k] for k in module.PARAMS if k.startswith("lstm1.fwd")]
    forward = next(v for k, v in vars(module).items() if k.endswith("cell_forward"))
    _, _, saved = forward(xs, mask, h0, h0, *cell_params)
    assert "order" in saved                       # 3 rows of 3 units: the kernel
    for key in _limits(module):
        setattr(module, key, 1)
    _, _, saved = forward(xs, mask, h0, h0, *cell_params)
    assert "order" not in saved                   # the NumPy loop's lists
    compare(reference, module, EXACT)


def test_the_rows_limit_follows_the_hidden_size():
    wide = bpcompile.compile(spec({"lstm": {"hidden": 256}}, vocab=5), target="numba")
    narrow = bpcompile.compile(spec({"lstm": {"hidden": 64}}, vocab=5), target="numba")
    assert [getattr(wide, k) for k in _limits(wide)] == [-(-numba_scan.NUMPY_LOOP_ELEMENTS // 256)]
    assert [getattr(narrow, k) for k in _limits(narrow)] == [-(-numba_scan.NUMPY_LOOP_ELEMENTS // 64)]


@pytest.mark.parametrize("equations", [
    "p = h_prev - h_prev\nh = tanh(U @ p) + h_prev",      # a step with no adjoint per unit
    "h = h_prev * 0.5 + x",                               # no parameters, x in the loop
])
def test_cells_with_empty_parts_of_a_step(equations):
    layer = {"recurrent": {"hidden": 3, "equations": equations}}
    reference, module = both(layer, inputs=3)
    assert "_forward_steps" in module.SOURCE
    compare(reference, module, EXACT)
