"""The numba target's layer modules: same functions and results as the NumPy
target's, with the large matrix products split into row blocks on every core
(templates/numba/helpers.py).  The finite-difference suites run on both targets
(the both_targets mark); this file checks what only the numba target has."""

import subprocess
import sys

import numpy as np
import pytest

import bpcompile

numba = pytest.importorskip("numba")

# products of some twenty million multiply-adds, so that they are split between threads
LANGUAGE_MODEL = {"name": "lm", "dtype": "float64", "input": {"vocab": 3000},
                  "layers": [{"embedding": 16}, {"lstm": {"hidden": 48}}, {"linear": 3000}],
                  "loss": "softmax_cross_entropy"}
WIDE_MLP = {"name": "wide", "dtype": "float64", "input": [3000],
            "layers": [{"linear": 300}, "relu", {"linear": 10}],
            "loss": "softmax_cross_entropy"}


def both(spec):
    return bpcompile.compile(spec, target="numpy"), bpcompile.compile(spec, target="numba")


def problem(module, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: v * 3 for k, v in module.init_params(seed).items()}
    if module.SEQUENCE:
        return params, rng.integers(0, module.VOCAB, (batch, 9)), \
            rng.integers(0, module.OUTPUTS, (batch, 9))
    return params, rng.standard_normal((batch,) + module.INPUT_SHAPE), \
        rng.integers(0, module.OUTPUTS, batch)


def assert_close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert float(np.max(np.abs(a - b))) <= 1e-12 * scale, what


def assert_same_value_and_grad(module, reference, params, x, y):
    """module's value_and_grad is reference's to rounding."""
    J0, g0 = reference.value_and_grad(params, x, y)
    J1, g1 = module.value_and_grad(params, x, y)
    assert_close(J1, J0, "J")
    for key in g0:
        assert_close(g1[key], g0[key], key)


@pytest.mark.parametrize("spec", [LANGUAGE_MODEL, WIDE_MLP], ids=lambda s: s["name"])
def test_split_products_give_the_numpy_targets_results(spec):
    reference, module = both(spec)
    params, x, y = problem(module, 20)
    assert_same_value_and_grad(module, reference, params, x, y)
    stepped0 = {k: v.copy() for k, v in params.items()}
    stepped1 = {k: v.copy() for k, v in params.items()}
    reference.sgd_step(stepped0, x, y, 0.1)
    module.sgd_step(stepped1, x, y, 0.1)
    for key in stepped0:
        assert_close(stepped1[key], stepped0[key], key)
    if numba.config.NUMBA_NUM_THREADS > 1:
        assert module._WORKERS is not None, "no product was split between threads"


# products of about ten million multiply-adds (at 64 rows): numba's threads split them
# (_dot_split, _subtract_split; from _SPLIT_WORK, below the Python threads' 2**24)
MID_MLP = {"name": "mid", "dtype": "float64", "input": [784],
           "layers": [{"linear": 256}, "relu", {"linear": 10}],
           "loss": "softmax_cross_entropy"}


def counting(module, name):
    """Replace module.name by a wrapper that counts its calls; returns the count list."""
    calls, function = [], getattr(module, name)

    def wrapper(*args):
        calls.append(args)
        return function(*args)
    setattr(module, name, wrapper)
    return calls


def test_mid_sized_products_are_split_by_numbas_threads_with_the_numpy_targets_results():
    reference, module = both(MID_MLP)
    assert "linear1 = _dot_split(x, linear1_W.T)" in module.SOURCE
    assert "_dot_split" not in reference.SOURCE
    products, updates = counting(module, "_dot_rows"), counting(module, "_subtract_split")
    params, x, y = problem(module, 64)
    stepped0 = {k: v.copy() for k, v in params.items()}
    stepped1 = {k: v.copy() for k, v in params.items()}
    for _ in range(2):
        assert_close(module.sgd_step(stepped1, x, y, 0.1), reference.sgd_step(stepped0, x, y, 0.1), "J")
    for key in stepped0:
        assert_close(stepped1[key], stepped0[key], key)
    assert_close(module.predict(stepped1, x), reference.predict(stepped1, x), "predict")
    J0, g0 = reference.value_and_grad(params, x, y)
    J1, g1 = module.value_and_grad(params, x, y)
    assert_close(J1, J0, "J")
    for key in g0:
        assert_close(g1[key], g0[key], key)
    # linear1 (64 x 784 x 256: 12.8M multiply-adds) in 2 steps, predict and
    # value_and_grad; its update in the 2 steps; linear2 is too small for either
    split = numba.config.NUMBA_NUM_THREADS > 1
    assert (len(products), len(updates)) == ((4, 2) if split else (0, 0))


@pytest.mark.parametrize("rows, n, k, transposed", [
    (64, 400, 400, False), (64, 400, 400, True), (3, 2000, 1500, False),
    (3, 1500, 2000, True), (200, 200, 300, False)], ids=str)
def test_subtract_product_split_by_numbas_threads_equals_numpy(rows, n, k, transposed):
    """W -= a.T @ b in the range numba's threads take, W row-major or stored transposed,
    with few rows of a (W a megabyte of rows at a time where it is large) or many."""
    _, module = both(MID_MLP)
    calls = counting(module, "_subtract_split")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((rows, n)), rng.standard_normal((rows, k))
    W = rng.standard_normal((k, n)).T if transposed else rng.standard_normal((n, k))
    expected = W - a.T @ b
    module._subtract_product(W, a, b)
    assert_close(W, expected, "W")
    assert len(calls) == (1 if numba.config.NUMBA_NUM_THREADS > 1 else 0)


@pytest.mark.parametrize("rows, transposed", [(64, False), (64, True), (3, False)], ids=str)
def test_dot_split_equals_numpy_and_splits_only_large_products(rows, transposed):
    _, module = both(MID_MLP)
    calls = counting(module, "_dot_rows")
    rng = np.random.default_rng(2)
    a = rng.standard_normal((rows, 784))
    W = rng.standard_normal((784, 300)).T if transposed else rng.standard_normal((300, 784))
    assert_close(module._dot_split(a, W.T), np.dot(a, W.T), "a @ W.T")
    large = rows * 784 * 300 >= module._SPLIT_WORK
    assert len(calls) == (1 if large and numba.config.NUMBA_NUM_THREADS > 1 else 0)


def test_in_parallel_covers_every_row_once_and_stays_serial_when_small():
    _, module = both(WIDE_MLP)
    seen = []
    module._in_parallel(10, seen.append, work=1 << 30)
    rows = sorted(r for part in seen for r in range(10)[part])
    assert rows == list(range(10))
    assert len(seen) == min(numba.config.NUMBA_NUM_THREADS, 10)
    seen.clear()
    module._in_parallel(10, seen.append, work=100)
    assert seen == [slice(0, 10)]


def test_one_thread_when_numba_is_told_so(tmp_path):
    """NUMBA_NUM_THREADS=1 (e.g. one process per core under MPI) starts no thread."""
    path = tmp_path / "wide.py"
    path.write_text(bpcompile.compile(WIDE_MLP, target="numba").SOURCE)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import wide; "
            "p = wide.init_params(0); x = np.ones((64, 3000)); y = np.zeros(64, int); "
            "wide.sgd_step(p, x, y, 0.1); print(wide._WORKERS)")
    env = {"NUMBA_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_a_numba_module_says_what_it_needs_and_what_runs_compiled():
    source = bpcompile.compile(LANGUAGE_MODEL, target="numba").SOURCE
    assert source.splitlines()[2].startswith("# Needs numba and scipy (pip install numba scipy")
    assert "Compiled (target numba):" in source
    assert "Needs only NumPy." not in source
    numpy_source = bpcompile.compile(LANGUAGE_MODEL, target="numpy").SOURCE
    assert "numba" not in numpy_source and "_in_parallel" not in numpy_source


# --- max pooling, compiled (templates/numba/conv.py) --------------------------------------

def _kernels(target):
    """The conv kernels as a module of `target` holds them (the numba target's: kernels/conv.py
    without the functions templates/numba/conv.py replaces, then that file)."""
    from numpy.lib.stride_tricks import sliding_window_view
    from bpcompile.codegen import render
    text = render._numba_kernel_file("kernels/conv.py") if target == "numba" else \
        render._kernel_file("kernels/conv.py")
    scope = {"np": np, "numba": numba, "_CACHE": False, "math": __import__("math"),
             "threading": __import__("threading"), "sliding_window_view": sliding_window_view}
    exec(compile(text, f"<conv kernels, {target}>", "exec"), scope)
    return scope


POOLS = [((2, 2), (2, 2), (3, 4, 8, 6)),     # disjoint windows that cover the input
         ((2, 2), (2, 2), (2, 3, 7, 9)),     # a last row and column that no window reaches
         ((3, 3), (2, 2), (2, 2, 9, 7)),     # overlapping windows: a pixel in several
         ((2, 3), (1, 2), (3, 1, 5, 8)),     # non-square kernel and stride
         ((1, 1), (1, 1), (1, 2, 3, 3))]


@pytest.mark.parametrize("kernel, stride, shape", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_max_pooling_equals_the_numpy_kernels(kernel, stride, shape, dtype):
    """Values, first-maximum offsets and gradients equal the NumPy kernels', with ties
    (small integers), nan and -inf in the input."""
    numpy_kernels, numba_kernels = _kernels("numpy"), _kernels("numba")
    assert "pool_first_max" in numba_kernels and "pool_first_max" not in numpy_kernels
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-2, 3, shape).astype(dtype)
    x.flat[rng.choice(x.size, 3, replace=False)] = [np.nan, -np.inf, np.nan]
    x = x.transpose(3, 0, 1, 2).copy().transpose(1, 2, 3, 0)    # batch-last, as layers pass it
    want, want_saved = numpy_kernels["maxpool2d_forward"](x, kernel, stride)
    got, got_saved = numba_kernels["maxpool2d_forward"](x, kernel, stride)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_saved[0], want_saved[0])
    assert got_saved[0].dtype == want_saved[0].dtype and got_saved[1:] == want_saved[1:]
    dout = rng.standard_normal(want.shape).astype(dtype)
    np.testing.assert_allclose(numba_kernels["maxpool2d_backward"](dout, got_saved),
                               numpy_kernels["maxpool2d_backward"](dout, want_saved),
                               rtol=1e-6 if dtype == np.float32 else 1e-15, atol=0)


def test_a_conv_module_for_numba_has_one_maxpool_and_says_it_is_compiled():
    spec = {"name": "pooled", "dtype": "float64", "input": [1, 6, 6],
            "layers": [{"conv2d": {"out_channels": 2, "kernel": 3}}, "relu",
                       {"maxpool2d": {"kernel": 2}}, "flatten", {"linear": 3}],
            "loss": "softmax_cross_entropy"}
    fast, reference = (bpcompile.compile(spec, target=t) for t in ("numba", "numpy"))
    assert fast.SOURCE.count("def maxpool2d_forward(") == 1
    assert "def pool_first_max(" in fast.SOURCE and "pool_first_max" not in reference.SOURCE
    assert "Max pooling runs as compiled loops" in " ".join(fast.SOURCE.split())
    assert_same_value_and_grad(fast, reference, *problem(reference, 5))
