"""Tests of templates/kernels/conv.py: convolution and max-pooling kernels.

The kernels file is pasted verbatim into generated modules, so it is loaded here
by path.  Checks: forward against naive loop references, exact gradients by
central finite differences (float64), first-maximum tie rule of the pooling
gradient, the lecture's worked examples, and dtype preservation.
"""
import importlib.util
import itertools
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

KERNELS_PATH = Path(__file__).resolve().parent.parent / "templates" / "kernels" / "conv.py"


def load_kernels():
    spec = importlib.util.spec_from_file_location("conv_kernels_under_test", KERNELS_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


K = load_kernels()


# ---------------------------------------------------------------- references

def naive_conv2d(x, W, b, stride, padding):
    """Direct loop implementation of the lecture's forward formula (cross-correlation)."""
    B, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((B, C, H + 2 * ph, Wd + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + Wd] = x
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (Wd + 2 * pw - kw) // sw + 1
    out = np.zeros((B, O, Ho, Wo))
    for n in range(B):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    total = b[o]
                    for c in range(C):
                        for q in range(kh):
                            for r in range(kw):
                                total += W[o, c, q, r] * xp[n, c, i * sh + q, j * sw + r]
                    out[n, o, i, j] = total
    return out


def naive_maxpool2d(x, kernel, stride):
    """Loop reference for max pooling, returning the output and the gradient routing
    (first maximum in row-major order of each window)."""
    B, C, H, Wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = (H - kh) // sh + 1, (Wd - kw) // sw + 1
    out = np.zeros((B, C, Ho, Wo))
    where = np.zeros((B, C, Ho, Wo, 2), dtype=int)
    for n, c, i, j in itertools.product(range(B), range(C), range(Ho), range(Wo)):
        best = None
        for q in range(kh):
            for r in range(kw):
                v = x[n, c, i * sh + q, j * sw + r]
                if best is None or v > best:
                    best, where[n, c, i, j] = v, (i * sh + q, j * sw + r)
        out[n, c, i, j] = best
    return out, where


def naive_maxpool2d_backward(dout, where, x_shape):
    dx = np.zeros(x_shape)
    for n, c, i, j in itertools.product(*map(range, dout.shape)):
        q, r = where[n, c, i, j]
        dx[n, c, q, r] += dout[n, c, i, j]
    return dx


def numerical_grad(f, arr, eps):
    """Central differences of the scalar f() w.r.t. every entry of arr (modified in place)."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        fp = f()
        flat[k] = old - eps
        fm = f()
        flat[k] = old
        gflat[k] = (fp - fm) / (2 * eps)
    return grad


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


# Each case: (B, C, H, W), (O, kh, kw), stride, padding.
CONV_CASES = [
    ((2, 3, 6, 7), (4, 3, 3), (1, 1), (0, 0)),
    ((2, 3, 6, 7), (4, 3, 3), (1, 1), (1, 1)),
    ((2, 2, 7, 6), (3, 2, 3), (1, 1), (2, 2)),   # non-square kernel
    ((2, 2, 7, 8), (3, 2, 3), (2, 2), (0, 0)),   # last window does not fit
    ((3, 2, 7, 7), (3, 3, 3), (2, 2), (1, 1)),
    ((2, 2, 8, 9), (2, 3, 2), (2, 2), (2, 2)),
    ((2, 3, 9, 6), (2, 2, 3), (2, 1), (1, 0)),   # different strides / paddings per axis
    ((2, 1, 5, 5), (3, 5, 5), (1, 1), (2, 2)),   # LeNet-like first layer
    ((2, 4, 5, 6), (3, 1, 1), (1, 1), (0, 0)),   # 1x1 convolution
]


def case_id(case):
    (B, C, H, W), (O, kh, kw), s, p = case
    return f"x{B}x{C}x{H}x{W}-W{O}x{C}x{kh}x{kw}-s{s[0]}{s[1]}-p{p[0]}{p[1]}"


def make_conv_case(case, seed=0, dtype=np.float64):
    (B, C, H, Wd), (O, kh, kw), stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, Wd)).astype(dtype)
    W = rng.standard_normal((O, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, W, b, stride, padding


# ---------------------------------------------------------------- convolution

@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_forward_matches_naive_loops(case):
    x, W, b, stride, padding = make_conv_case(case)
    out, _ = K.conv2d_forward(x, W, b, stride, padding)
    ref = naive_conv2d(x, W, b, stride, padding)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv_gradients_match_finite_differences(case):
    x, W, b, stride, padding = make_conv_case(case, seed=1)
    out, saved = K.conv2d_forward(x, W, b, stride, padding)
    R = np.random.default_rng(2).standard_normal(out.shape)
    dx, dW, db = K.conv2d_backward(R, saved, W)
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape

    def loss():
        return float(np.sum(K.conv2d_forward(x, W, b, stride, padding)[0] * R))

    for arr, grad in ((x, dx), (W, dW), (b, db)):
        num = numerical_grad(loss, arr, 1e-5)
        assert rel_error(num, grad) < 1e-6


def test_conv_backward_without_dx():
    x, W, b, stride, padding = make_conv_case(CONV_CASES[2], seed=3)
    out, saved = K.conv2d_forward(x, W, b, stride, padding)
    R = np.random.default_rng(4).standard_normal(out.shape)
    dx, dW, db = K.conv2d_backward(R, saved, W)
    none, dW2, db2 = K.conv2d_backward(R, saved, W, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


def test_conv_banded_and_blocked_paths_agree(monkeypatch):
    """Force many im2col bands (last one partial) and tiny BLAS column blocks."""
    case = ((3, 2, 9, 8), (3, 2, 3), (1, 1), (1, 1))
    x, W, b, stride, padding = make_conv_case(case, seed=5)
    out, saved = K.conv2d_forward(x, W, b, stride, padding)
    R = np.random.default_rng(6).standard_normal(out.shape)
    grads = K.conv2d_backward(R, saved, W)
    monkeypatch.setattr(K, "conv_band_rows", lambda n_rows, row_cols, k_rows, itemsize: min(n_rows, 4))
    monkeypatch.setattr(K, "conv_column_blocks", lambda n_cols, macs_per_col: (n_cols // 7, 7))
    out2, saved2 = K.conv2d_forward(x, W, b, stride, padding)
    grads2 = K.conv2d_backward(R, saved2, W)
    np.testing.assert_allclose(out2, out, rtol=1e-12, atol=1e-12)
    for g2, g in zip(grads2, grads):
        np.testing.assert_allclose(g2, g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out2, naive_conv2d(x, W, b, stride, padding), rtol=1e-12, atol=1e-12)


def einsum_conv2d_and_grads(x, W, b, stride, padding, dout):
    """Independent reference at realistic sizes: einsum over a window view, and the
    input gradient scattered with np.add.at (fine in a test)."""
    (sh, sw), (ph, pw) = stride, padding
    kh, kw = W.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    out = np.einsum("bchwij,ocij->bohw", win, W) + b[None, :, None, None]
    dW = np.einsum("bchwij,bohw->ocij", win, dout)
    db = dout.sum(axis=(0, 2, 3))
    dwin = np.einsum("bohw,ocij->bchwij", dout, W)
    dxp = np.zeros_like(xp)
    Ho, Wo = out.shape[2:]
    rows = (np.arange(Ho)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None])
    cols = (np.arange(Wo)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :])
    np.add.at(dxp.transpose(2, 3, 0, 1), (rows, cols), dwin.transpose(2, 3, 4, 5, 0, 1))
    return out, dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], dW, db


@pytest.mark.parametrize("shapes", [((64, 1, 28, 28), (6, 1, 5, 5), (2, 2)),
                                    ((64, 6, 14, 14), (16, 6, 5, 5), (0, 0)),
                                    ((16, 3, 17, 15), (8, 3, 3, 3), (1, 1))],
                         ids=["lenet-conv1", "lenet-conv2", "rgb-3x3"])
def test_conv_realistic_sizes_against_einsum(shapes):
    """Sizes where the kernels really cut the work into several bands and BLAS blocks."""
    x_shape, w_shape, padding = shapes
    rng = np.random.default_rng(9)
    x, W, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    for stride in ((1, 1), (2, 2)):
        out, saved = K.conv2d_forward(x, W, b, stride, padding)
        dout = rng.standard_normal(out.shape)
        ref_out, ref_dx, ref_dW, ref_db = einsum_conv2d_and_grads(x, W, b, stride, padding, dout)
        np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-10)
        dx, dW, db = K.conv2d_backward(dout, saved, W)
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dW, ref_dW, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(db, ref_db, rtol=1e-10, atol=1e-10)


def test_conv_accepts_any_memory_layout():
    """(B, C, H, W)-shaped inputs with unusual strides give the same results."""
    x, W, b, stride, padding = make_conv_case(CONV_CASES[4], seed=7)
    x_odd = np.asfortranarray(x)
    out, saved = K.conv2d_forward(x, W, b, stride, padding)
    out2, saved2 = K.conv2d_forward(x_odd, W, b, stride, padding)
    np.testing.assert_array_equal(out2, out)
    R = np.random.default_rng(8).standard_normal(out.shape)
    for g2, g in zip(K.conv2d_backward(np.asfortranarray(R), saved2, W), K.conv2d_backward(R, saved, W)):
        np.testing.assert_allclose(g2, g, rtol=1e-13, atol=1e-13)


def conv_step(x, W, b, stride, padding, dout):
    out, saved = K.conv2d_forward(x, W, b, stride, padding)
    return (out.copy(),) + tuple(g.copy() for g in K.conv2d_backward(dout, saved, W))


def test_scratch_is_kept_between_calls_and_shared_by_layers():
    """The im2col band and the col2im sums live in one buffer per role, kept between
    calls (fresh arrays were page-faulted at every call); a layer that needs less
    takes a view of it, one that needs more replaces it, and the results stay those
    of the reference."""
    K._CONV_SCRATCH.__dict__.clear()    # other tests' calls have left buffers
    rng = np.random.default_rng(10)
    # every temporary of these layers is 128 kB or more (below, a fresh array)
    layers = [((32, 4, 16, 16), (5, 4, 3, 3), (1, 1)), ((32, 6, 12, 12), (4, 6, 3, 3), (0, 0)),
              ((32, 4, 24, 24), (6, 4, 5, 5), (2, 2))]
    kept = []
    for x_shape, w_shape, padding in layers:
        x, W, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
        out, _ = K.conv2d_forward(x, W, b, (1, 1), padding)
        dout = rng.standard_normal(out.shape)
        first = conv_step(x, W, b, (1, 1), padding, dout)
        buffers = dict(K._CONV_SCRATCH.__dict__)
        again = conv_step(x, W, b, (1, 1), padding, dout)
        assert K._CONV_SCRATCH.__dict__.keys() == buffers.keys()
        assert all(K._CONV_SCRATCH.__dict__[role] is buffer for role, buffer in buffers.items())
        ref = einsum_conv2d_and_grads(x, W, b, (1, 1), padding, dout)
        for got, got_again, want in zip(first, again, ref):
            np.testing.assert_array_equal(got_again, got)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)
        kept.append({role[0]: buffer.size for role, buffer in buffers.items()})
    assert set(kept[0]) == {"band", "col2im_products", "col2im_rows"}
    assert kept[1] == kept[0]           # the smaller layer used views of the same buffers
    assert kept[2]["col2im_products"] > kept[0]["col2im_products"]
    # below 128 kB and past 64 MB a fresh array, not kept
    small = K.conv_scratch("band", (4, (1 << 13) - 1), np.float32)
    large = K.conv_scratch("band", ((1 << 24) + 1,), np.float32)
    assert small.shape == (4, (1 << 13) - 1) and large.size == (1 << 24) + 1
    assert ("band", np.dtype(np.float32)) not in K._CONV_SCRATCH.__dict__
    assert all(buffer.nbytes <= 1 << 26 for buffer in K._CONV_SCRATCH.__dict__.values())
    kept_small = K.conv_scratch("band", (4, 1 << 13), np.float32)    # 128 kB: kept
    assert K._CONV_SCRATCH.__dict__[("band", np.dtype(np.float32))].size == kept_small.size


def test_threads_have_their_own_scratch():
    """Two threads running the kernels at once get what one thread gets."""
    rng = np.random.default_rng(11)
    x, W, b = rng.standard_normal((32, 3, 16, 16)), rng.standard_normal((6, 3, 5, 5)), rng.standard_normal(6)
    inputs = [(x * (1 + k), rng.standard_normal((32, 6, 16, 16))) for k in range(2)]
    expected = [conv_step(xk, W, b, (1, 1), (2, 2), dk) for xk, dk in inputs]
    results = [[], []]
    start = threading.Barrier(2)

    def run(slot):
        x_slot, dout_slot = inputs[slot]
        start.wait()
        for _ in range(20):
            results[slot].append(conv_step(x_slot, W, b, (1, 1), (2, 2), dout_slot))
    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for slot in range(2):
        assert len(results[slot]) == 20
        for result in results[slot]:
            for got, want in zip(result, expected[slot]):
                np.testing.assert_array_equal(got, want)


def test_conv_output_size_formula():
    # H_out = floor((H + 2p - K) / s + 1)
    for H, k, s, p in itertools.product(range(4, 10), (1, 2, 3), (1, 2, 3), (0, 1, 2)):
        x = np.zeros((1, 1, H, 5))
        out, _ = K.conv2d_forward(x, np.zeros((1, 1, k, 1)), np.zeros(1), (s, 1), (p, 0))
        assert out.shape[2] == int(np.floor((H + 2 * p - k) / s + 1))



def test_window_view_is_numpys_sliding_window_view_strided():
    from numpy.lib.stride_tricks import sliding_window_view
    rng = np.random.default_rng(3)
    for (C, H, W, B), (kh, kw), (sh, sw) in itertools.product(
            [(1, 5, 5, 1), (2, 7, 9, 3), (3, 6, 11, 2)], [(1, 1), (2, 3), (3, 3), (5, 2)],
            [(1, 1), (2, 2), (1, 3), (3, 2)]):
        if kh > H or kw > W:
            continue
        xp = rng.standard_normal((C, H, W, B))
        win = K.conv_windows(xp, kh, kw, sh, sw)
        want = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
        assert win.shape == want.shape
        np.testing.assert_array_equal(win, want)
        assert not win.flags.writeable


# ---------------------------------------------------------------- max pooling

# Each case: (B, C, H, W), kernel, stride.
POOL_CASES = [
    ((2, 3, 6, 6), (2, 2), (2, 2)),    # non-overlapping, sizes divide
    ((2, 2, 7, 9), (2, 2), (2, 2)),    # non-overlapping, cropped
    ((2, 2, 9, 7), (3, 3), (3, 3)),
    ((2, 2, 6, 7), (2, 3), (2, 3)),    # non-square, non-overlapping
    ((2, 2, 5, 6), (2, 2), (1, 1)),    # overlapping
    ((2, 2, 7, 8), (3, 3), (2, 2)),    # overlapping, last window dropped
    ((2, 2, 7, 7), (3, 2), (1, 2)),
]


def pool_id(case):
    shape, k, s = case
    return f"x{'x'.join(map(str, shape))}-k{k[0]}{k[1]}-s{s[0]}{s[1]}"


def distinct_input(shape, seed):
    """Input without ties: a random permutation (spacing 1 >> finite-difference step)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) * 0.5 - 10.0


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_maxpool_forward_and_backward_match_naive(case):
    shape, kernel, stride = case
    x = distinct_input(shape, seed=10)
    out, saved = K.maxpool2d_forward(x, kernel, stride)
    ref, where = naive_maxpool2d(x, kernel, stride)
    np.testing.assert_array_equal(out, ref)
    dout = np.random.default_rng(11).standard_normal(out.shape)
    np.testing.assert_allclose(K.maxpool2d_backward(dout, saved),
                               naive_maxpool2d_backward(dout, where, x.shape), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_maxpool_gradient_matches_finite_differences(case):
    shape, kernel, stride = case
    x = distinct_input(shape, seed=12)
    out, saved = K.maxpool2d_forward(x, kernel, stride)
    R = np.random.default_rng(13).standard_normal(out.shape)
    dx = K.maxpool2d_backward(R, saved)

    def loss():
        return float(np.sum(K.maxpool2d_forward(x, kernel, stride)[0] * R))

    num = numerical_grad(loss, x, 1e-4)
    assert rel_error(num, dx) < 1e-6


def test_maxpool_ties_go_to_first_maximum_row_major():
    x = np.array([[[[1., 3., 5., 5.],
                    [3., 2., 5., 5.],
                    [0., 0., 7., 1.],
                    [0., 0., 7., 7.]]]])
    out, saved = K.maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(out[0, 0], [[3., 5.], [0., 7.]])
    dx = K.maxpool2d_backward(np.array([[[[1., 2.], [3., 4.]]]]), saved)
    np.testing.assert_array_equal(dx[0, 0], [[0., 1., 2., 0.],
                                             [0., 0., 0., 0.],
                                             [3., 0., 4., 0.],
                                             [0., 0., 0., 0.]])


def test_maxpool_ties_overlapping_windows():
    # Constant image, 2x2 windows at stride 1: every window sends its gradient to
    # its own top-left pixel.
    x = np.zeros((1, 1, 3, 4))
    out, saved = K.maxpool2d_forward(x, (2, 2), (1, 1))
    dout = np.arange(1., 7.).reshape(1, 1, 2, 3)
    dx = K.maxpool2d_backward(dout, saved)
    expected = np.zeros((3, 4))
    expected[:2, :3] = dout[0, 0]
    np.testing.assert_array_equal(dx[0, 0], expected)
    # Overlapping 3x3 windows at stride 2 sharing a tied maximum column: the shared
    # pixels belong to the earlier position of each window, counted per window.
    x = np.array([[[[0., 0., 9., 0., 0.],
                    [0., 0., 9., 0., 0.],
                    [0., 0., 9., 0., 0.]]]])
    out, saved = K.maxpool2d_forward(x, (3, 3), (2, 2))
    np.testing.assert_array_equal(out[0, 0], [[9., 9.]])
    dx = K.maxpool2d_backward(np.array([[[[1., 10.]]]]), saved)
    expected = np.zeros((3, 5))
    expected[0, 2] = 11.
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_maxpool_accepts_any_memory_layout():
    x = distinct_input((2, 3, 6, 7), seed=14)
    for kernel, stride in (((2, 2), (2, 2)), ((3, 3), (2, 2))):
        out, saved = K.maxpool2d_forward(x, kernel, stride)
        out2, saved2 = K.maxpool2d_forward(np.asfortranarray(x), kernel, stride)
        np.testing.assert_array_equal(out2, out)
        dout = np.random.default_rng(15).standard_normal(out.shape)
        np.testing.assert_array_equal(K.maxpool2d_backward(np.asfortranarray(dout), saved2),
                                      K.maxpool2d_backward(dout, saved))


# ---------------------------------------------------------------- chained layers

def test_conv_pool_conv_chain_gradient():
    """Kernels fed with each other's (batch-last view) outputs: gradient of the chain."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 2, 9, 9))
    W1, b1 = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    W2, b2 = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal(2)

    def forward():
        c1, s1 = K.conv2d_forward(x, W1, b1, (1, 1), (1, 1))
        p1, sp = K.maxpool2d_forward(c1, (2, 2), (2, 2))
        c2, s2 = K.conv2d_forward(p1, W2, b2, (1, 1), (0, 0))
        return c2, (s1, sp, s2)

    c2, (s1, sp, s2) = forward()
    R = rng.standard_normal(c2.shape)
    dp1, dW2, db2 = K.conv2d_backward(R, s2, W2)
    dc1 = K.maxpool2d_backward(dp1, sp)
    dx, dW1, db1 = K.conv2d_backward(dc1, s1, W1)

    def loss():
        return float(np.sum(forward()[0] * R))

    for arr, grad in ((x, dx), (W1, dW1), (b1, db1), (W2, dW2), (b2, db2)):
        assert rel_error(numerical_grad(loss, arr, 1e-6), grad) < 1e-6


# ---------------------------------------------------------------- lecture examples

LECTURE_IMAGE = np.array([
    [0, 0, 0, 0, 0, 0, 0],
    [0, 1, 1, 1, 1, 1, 0],
    [0, 1, 0, 0, 1, 0, 0],
    [0, 1, 0, 1, 0, 0, 0],
    [0, 1, 1, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
], dtype=np.float64)

# The downsampling slides' 6x6 input (the identity-convolved image plus a zero border).
LECTURE_IMAGE_6X6 = np.array([
    [1, 1, 1, 1, 1, 0],
    [1, 0, 0, 1, 0, 0],
    [1, 0, 1, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
], dtype=np.float64)


def conv_single(image, kernel, stride=(1, 1), padding=(0, 0)):
    out, _ = K.conv2d_forward(image[None, None], np.asarray(kernel, float)[None, None],
                              np.zeros(1), stride, padding)
    return out[0, 0]


def test_lecture_convolution_example():
    out = conv_single(LECTURE_IMAGE, [[0, 0, 0], [0, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(out, [[3, 2, 2, 3, 1],
                                        [2, 0, 2, 1, 0],
                                        [2, 2, 1, 0, 0],
                                        [3, 1, 0, 0, 0],
                                        [1, 0, 0, 0, 0]])


def test_lecture_identity_convolution_returns_inner_image():
    out = conv_single(LECTURE_IMAGE, [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out, LECTURE_IMAGE[1:6, 1:6])
    np.testing.assert_array_equal(out, [[1, 1, 1, 1, 1],
                                        [1, 0, 0, 1, 0],
                                        [1, 0, 1, 0, 0],
                                        [1, 1, 0, 0, 0],
                                        [1, 0, 0, 0, 0]])


def test_lecture_stride_two_downsampling():
    out = conv_single(LECTURE_IMAGE_6X6, np.ones((2, 2)), stride=(2, 2))
    np.testing.assert_array_equal(out, [[3, 3, 1], [3, 1, 0], [1, 0, 0]])
    # "Downsampling by averaging": the same with weights 1/4.
    out = conv_single(LECTURE_IMAGE_6X6, np.full((2, 2), 0.25), stride=(2, 2))
    np.testing.assert_array_equal(out, [[0.75, 0.75, 0.25], [0.75, 0.25, 0], [0.25, 0, 0]])
    # "Max-pooling" slide: 2x2 windows at stride 2 on the same image.
    out, _ = K.maxpool2d_forward(LECTURE_IMAGE_6X6[None, None], (2, 2), (2, 2))
    np.testing.assert_array_equal(out[0, 0], [[1, 1, 1], [1, 1, 0], [1, 0, 0]])


def test_lecture_maxpool_3x3_window_2x2_stride_1():
    # y11 = max(x11, x12, x21, x22), y12 = max(x12, x13, x22, x23),
    # y21 = max(x21, x22, x31, x32), y22 = max(x22, x23, x32, x33)
    x = np.array([[4., 1., 6.],
                  [2., 3., 5.],
                  [9., 0., 7.]])
    out, saved = K.maxpool2d_forward(x[None, None], (2, 2), (1, 1))
    np.testing.assert_array_equal(out[0, 0], [[4., 6.], [9., 7.]])
    # dJ/dx_mn = sum over windows of dJ/dy_ij * [x_mn is that window's maximum]
    dx = K.maxpool2d_backward(np.array([[[[1., 10.], [100., 1000.]]]]), saved)
    np.testing.assert_array_equal(dx[0, 0], [[1., 0., 10.],
                                             [0., 0., 0.],
                                             [100., 0., 1000.]])


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_are_preserved(dtype):
    x, W, b, stride, padding = make_conv_case(((2, 3, 8, 8), (4, 3, 3), (1, 1), (1, 1)), seed=20, dtype=dtype)
    out, saved = K.conv2d_forward(x, W, b, stride, padding)
    assert out.dtype == dtype
    dx, dW, db = K.conv2d_backward(np.ones_like(out), saved, W)
    assert dx.dtype == dtype and dW.dtype == dtype and db.dtype == dtype
    p, psaved = K.maxpool2d_forward(out, (2, 2), (2, 2))
    assert p.dtype == dtype
    assert K.maxpool2d_backward(np.ones_like(p), psaved).dtype == dtype
    p, psaved = K.maxpool2d_forward(out, (3, 3), (1, 1))
    assert p.dtype == dtype
    assert K.maxpool2d_backward(np.ones_like(p), psaved).dtype == dtype


def test_float32_results_close_to_float64():
    x, W, b, stride, padding = make_conv_case(((2, 3, 9, 8), (4, 3, 2), (2, 1), (1, 2)), seed=21)
    out64, s64 = K.conv2d_forward(x, W, b, stride, padding)
    out32, s32 = K.conv2d_forward(x.astype(np.float32), W.astype(np.float32), b.astype(np.float32),
                                  stride, padding)
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    R = np.random.default_rng(22).standard_normal(out64.shape)
    for g32, g64 in zip(K.conv2d_backward(R.astype(np.float32), s32, W.astype(np.float32)),
                        K.conv2d_backward(R, s64, W)):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- file constraints

def test_kernels_file_is_plain_numpy_with_top_level_functions():
    import ast
    tree = ast.parse(KERNELS_PATH.read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            roots = {n.split(".")[0] for n in names}
            assert roots <= {"numpy"} | set(sys.stdlib_module_names), names
        elif isinstance(node, ast.FunctionDef):
            assert ast.get_docstring(node), f"{node.name} has no docstring"
        elif isinstance(node, ast.Assign):     # the one global: the per-thread scratch
            assert ast.unparse(node) == "_CONV_SCRATCH = threading.local()", ast.unparse(node)
        else:
            assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant), ast.dump(node)
    assert "add.at" not in KERNELS_PATH.read_text()
