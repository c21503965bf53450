"""Image-layer options as PyTorch defines them (issue 13): conv2d dilation and
groups, maxpool2d padding/dilation/ceil_mode, avgpool2d, global_avgpool2d, lrn.

Each option is checked three ways, in float64: its kernel against a direct-loop
NumPy reference of PyTorch's definition written here, its kernel's input and
weight gradients against central finite differences, and the compiled module
(values against the reference, parameter gradients against finite differences).
The edge cases are named: windows of only padding, ceil mode's last window,
count_include_pad with ceil mode, groups that do not divide the channels, LRN
with an even size, dilation with stride.
"""

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

import bpcompile
from bpcompile.cli.main import main
from bpcompile.training.gradcheck import layer_gradient_errors, numerical_gradient, random_problem, relative_error

pytestmark = pytest.mark.both_targets

KERNELS = Path(__file__).resolve().parent.parent / "templates" / "kernels"
TOL = 1e-6


def load_kernels():
    """conv.py and conv_options.py in one namespace, as a generated module has them."""
    spec = importlib.util.spec_from_file_location("conv_option_kernels", KERNELS / "conv_options.py")
    module = importlib.util.module_from_spec(spec)
    conv_spec = importlib.util.spec_from_file_location("conv_kernels_for_options", KERNELS / "conv.py")
    conv = importlib.util.module_from_spec(conv_spec)
    conv_spec.loader.exec_module(conv)
    module.__dict__.update({k: v for k, v in vars(conv).items() if not k.startswith("__")})
    spec.loader.exec_module(module)
    lrn_spec = importlib.util.spec_from_file_location("lrn_kernels", KERNELS / "lrn.py")
    lrn = importlib.util.module_from_spec(lrn_spec)
    lrn_spec.loader.exec_module(lrn)
    return module, lrn


K, L = load_kernels()


# ---------------------------------------------------------------- references (PyTorch's definitions)

def ref_pool_size(n, k, s, p, d, ceil_mode):
    """torch.nn.MaxPool2d's documented output size, with the ceil-mode rule that the
    last window must start inside the input or the left padding."""
    exact = (n + 2 * p - d * (k - 1) - 1) / s + 1
    out = math.ceil(exact) if ceil_mode else math.floor(exact)
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def ref_conv2d(x, W, b, stride, padding, dilation, groups):
    """out[n, o, i, j] = b[o] + sum_{c, q, r} W[o, c, q, r] x_pad[n, g*Cg + c, i*sh + q*dh, j*sw + r*dw],
    g = o // (O / groups): the group of output channel o."""
    B, C, H, Wd = x.shape
    O, Cg, kh, kw = W.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho = ref_pool_size(H, kh, sh, ph, dh, False)
    Wo = ref_pool_size(Wd, kw, sw, pw, dw, False)
    out = np.zeros((B, O, Ho, Wo))
    for n, o, i, j in itertools.product(range(B), range(O), range(Ho), range(Wo)):
        g = o // (O // groups)
        total = 0.0 if b is None else b[o]
        for c, q, r in itertools.product(range(Cg), range(kh), range(kw)):
            total += W[o, c, q, r] * xp[n, g * Cg + c, i * sh + q * dh, j * sw + r * dw]
        out[n, o, i, j] = total
    return out


def ref_maxpool2d(x, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's loop: the taps of window (i, j) that fall inside the input, the first
    maximum in row-major order; returns the output and where each maximum is."""
    B, C, H, Wd = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    Ho, Wo = ref_pool_size(H, kh, sh, ph, dh, ceil_mode), ref_pool_size(Wd, kw, sw, pw, dw, ceil_mode)
    out = np.zeros((B, C, Ho, Wo))
    where = np.zeros((B, C, Ho, Wo, 2), dtype=int)
    for n, c, i, j in itertools.product(range(B), range(C), range(Ho), range(Wo)):
        best = None
        for q, r in itertools.product(range(kh), range(kw)):
            h, w = i * sh - ph + q * dh, j * sw - pw + r * dw
            if 0 <= h < H and 0 <= w < Wd and (best is None or x[n, c, h, w] > best):
                best, where[n, c, i, j] = x[n, c, h, w], (h, w)
        assert best is not None, "a window of only padding"
        out[n, c, i, j] = best
    return out, where


def ref_maxpool2d_backward(dout, where, shape):
    dx = np.zeros(shape)
    for n, c, i, j in itertools.product(*map(range, dout.shape)):
        h, w = where[n, c, i, j]
        dx[n, c, h, w] += dout[n, c, i, j]
    return dx


def ref_avgpool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """PyTorch's AvgPool2d loop: the window is cut at the padded input's end; its
    divisor is that cut window's size (count_include_pad) or the part inside the input."""
    B, C, H, Wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Ho, Wo = ref_pool_size(H, kh, sh, ph, 1, ceil_mode), ref_pool_size(Wd, kw, sw, pw, 1, ceil_mode)
    out = np.zeros((B, C, Ho, Wo))
    for i, j in itertools.product(range(Ho), range(Wo)):
        h0, w0 = i * sh - ph, j * sw - pw
        h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, Wd + pw)
        pool_size = (h1 - h0) * (w1 - w0)
        h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, Wd)
        divisor = pool_size if count_include_pad else (h1 - h0) * (w1 - w0)
        out[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / divisor
    return out


def ref_lrn(x, size, alpha, beta, k):
    """torch.nn.LocalResponseNorm: b_c = a_c / (k + alpha/n sum_{c' = c - n//2}^{c + (n-1)//2} a_c'^2)^beta."""
    C = x.shape[1]
    out = np.empty_like(x)
    for c in range(C):
        window = range(max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1))
        total = sum(x[:, cc] ** 2 for cc in window)
        out[:, c] = x[:, c] / (k + alpha / size * total) ** beta
    return out


def input_and_weight_grads_match(f, args, wrt, analytic, rng_seed=0):
    """Central differences of sum(f(*args) * weights) for each index in wrt."""
    out = f(*args)
    weights = np.random.default_rng(rng_seed).standard_normal(out.shape)
    for index, grad in zip(wrt, analytic(weights)):
        numeric = numerical_gradient(lambda *a: f(*a) * weights, args, index)
        assert relative_error(grad, numeric) < TOL, (index, relative_error(grad, numeric))


# ---------------------------------------------------------------- conv2d: dilation and groups

CONV_CASES = [  # (input shape, W shape, stride, padding, dilation, groups)
    ((2, 4, 7, 7), (6, 2, 3, 3), (1, 1), (0, 0), (1, 1), 2),          # groups only
    ((2, 3, 9, 8), (4, 3, 3, 2), (1, 1), (1, 0), (2, 3), 1),          # dilation only, non-square
    ((1, 4, 10, 9), (4, 1, 3, 3), (2, 3), (2, 1), (2, 2), 4),         # dilation with stride, depthwise
    ((2, 6, 6, 6), (3, 2, 2, 2), (2, 1), (1, 1), (1, 2), 3),          # one output channel per group
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES)
def test_grouped_dilated_conv_kernel_matches_the_definition_and_finite_differences(
        xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(sum(xs + ws))
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    out, saved = K.grouped_conv2d_forward(x, W, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(out, ref_conv2d(x, W, b, stride, padding, dilation, groups), rtol=1e-12, atol=1e-12)

    def f(x, W, b):
        return K.grouped_conv2d_forward(x, W, b, stride, padding, dilation, groups)[0]
    input_and_weight_grads_match(f, [x, W, b], [0, 1, 2],
                                 lambda g: K.grouped_conv2d_backward(g, saved, W))
    none, dW, db = K.grouped_conv2d_backward(np.ones(out.shape), saved, W, need_dx=False)
    assert none is None and dW.shape == W.shape and db.shape == b.shape


def test_grouped_conv_without_bias_and_float32_keeps_the_dtype():
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal((2, 4, 6, 6)).astype(np.float32), rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    out, saved = K.grouped_conv2d_forward(x, W, None, (1, 1), (1, 1), (2, 2), 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref_conv2d(x.astype(float), W.astype(float), None, (1, 1), (1, 1), (2, 2), 2),
                               rtol=1e-4, atol=1e-4)
    dx, dW, _ = K.grouped_conv2d_backward(np.ones_like(out), saved, W)
    assert dx.dtype == dW.dtype == np.float32


# ---------------------------------------------------------------- maxpool2d: padding, dilation, ceil mode

POOL_CASES = [  # (input shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 2, 7, 7), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((2, 2, 6, 6), (3, 3), (2, 2), (0, 0), (1, 1), True),      # ceil mode: a last window hanging over
    ((1, 2, 6, 7), (3, 2), (2, 2), (1, 1), (1, 1), True),      # ceil mode with padding
    ((2, 1, 9, 8), (2, 3), (2, 1), (1, 1), (3, 2), False),     # dilation with stride and padding
    ((1, 2, 8, 8), (3, 3), (3, 3), (1, 1), (2, 2), True),      # all of it
]


@pytest.mark.parametrize("xs,kernel,stride,padding,dilation,ceil_mode", POOL_CASES)
def test_padded_maxpool_kernel_matches_the_definition_and_finite_differences(
        xs, kernel, stride, padding, dilation, ceil_mode):
    rng = np.random.default_rng(sum(xs))
    x = rng.standard_normal(xs)
    out, saved = K.maxpool2d_padded_forward(x, kernel, stride, padding, dilation, ceil_mode)
    expected, where = ref_maxpool2d(x, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_array_equal(out, expected)
    g = rng.standard_normal(out.shape)         # overlapping windows: sums in another order
    np.testing.assert_allclose(K.maxpool2d_padded_backward(g, saved), ref_maxpool2d_backward(g, where, xs),
                               rtol=1e-14, atol=1e-15)

    def f(x):
        return K.maxpool2d_padded_forward(x, kernel, stride, padding, dilation, ceil_mode)[0]
    input_and_weight_grads_match(f, [x], [0], lambda g: [K.maxpool2d_padded_backward(g, saved)])


def test_padded_maxpool_ties_go_to_the_first_maximum_and_padding_never_wins():
    x = np.full((1, 1, 3, 3), -5.0)          # every value below zero: -inf padding must still lose
    out, saved = K.maxpool2d_padded_forward(x, (3, 3), (2, 2), (1, 1), (1, 1), False)
    assert out.shape == (1, 1, 2, 2) and np.all(out == -5.0)
    dx = K.maxpool2d_padded_backward(np.ones(out.shape), saved)
    # window (0, 0) covers rows -1..1, cols -1..1: its first maximum is pixel (0, 0)
    expected = np.zeros((3, 3))
    expected[0, 0] += 1
    expected[0, 1] += 1                     # window (0, 1): cols 1..3, first is (0, 1)
    expected[1, 0] += 1
    expected[1, 1] += 1
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_ceil_mode_last_window_rules():
    # 6 = input, kernel 3, stride 2: floor gives 2 windows, ceil a third starting at 4 (inside)
    assert K.pool_out_size(6, 3, 2, 0, 1, True) == ref_pool_size(6, 3, 2, 0, 1, True) == 3
    # 5 = input, kernel 2, stride 2, padding 1: ceil's 4th window would start at 6 >= 5 + 1,
    # entirely in the right padding: PyTorch drops it
    assert K.pool_out_size(5, 2, 2, 1, 1, True) == 3 == K.pool_out_size(5, 2, 2, 1, 1, False)
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    out, _ = K.maxpool2d_padded_forward(x, (1, 2), (1, 2), (0, 1), (1, 1), True)
    np.testing.assert_array_equal(out[0, 0, 0], [0.0, 2.0, 4.0])


# ---------------------------------------------------------------- avgpool2d

AVG_CASES = [  # (input shape, kernel, stride, padding, ceil_mode, count_include_pad)
    ((2, 2, 6, 6), (2, 2), (2, 2), (0, 0), False, True),
    ((2, 2, 7, 7), (3, 3), (2, 2), (1, 1), False, True),
    ((2, 2, 7, 7), (3, 3), (2, 2), (1, 1), False, False),
    ((1, 2, 6, 5), (3, 2), (2, 2), (1, 1), True, True),       # count_include_pad with ceil mode
    ((1, 2, 6, 5), (3, 2), (2, 2), (1, 1), True, False),
    ((2, 1, 5, 8), (2, 4), (3, 3), (0, 2), True, True),
]


@pytest.mark.parametrize("xs,kernel,stride,padding,ceil_mode,count_include_pad", AVG_CASES)
def test_avgpool_kernel_matches_the_definition_and_finite_differences(
        xs, kernel, stride, padding, ceil_mode, count_include_pad):
    rng = np.random.default_rng(sum(xs))
    x = rng.standard_normal(xs)
    out, saved = K.avgpool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)
    np.testing.assert_allclose(out, ref_avgpool2d(x, kernel, stride, padding, ceil_mode, count_include_pad),
                               rtol=1e-13, atol=1e-14)

    def f(x):
        return K.avgpool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)[0]
    input_and_weight_grads_match(f, [x], [0], lambda g: [K.avgpool2d_backward(g, saved)])


def test_count_include_pad_with_ceil_mode_divisors_are_pytorchs():
    """Input 4, kernel 3, stride 2, padding 1, ceil mode: windows start at -1, 1, 3; the
    last one covers 3, 4, 5 of which 4 is padding and 5 lies beyond the padded input
    (end 4 + 1 = 5): the divisor counts the padding (2) but not the overhang."""
    x = np.ones((1, 1, 4, 1)) * np.array([1.0, 2.0, 3.0, 4.0])[None, None, :, None]
    out, _ = K.avgpool2d_forward(x, (3, 1), (2, 1), (1, 0), True, True)
    np.testing.assert_allclose(out[0, 0, :, 0], [(1 + 2) / 3, (2 + 3 + 4) / 3, 4 / 2])
    out, _ = K.avgpool2d_forward(x, (3, 1), (2, 1), (1, 0), True, False)
    np.testing.assert_allclose(out[0, 0, :, 0], [(1 + 2) / 2, (2 + 3 + 4) / 3, 4 / 1])


def test_global_avgpool_kernel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 2))
    out, saved = K.global_avgpool2d_forward(x)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3))[:, :, None, None], rtol=1e-14)
    input_and_weight_grads_match(lambda x: K.global_avgpool2d_forward(x)[0], [x], [0],
                                 lambda g: [K.global_avgpool2d_backward(g, saved)])


# ---------------------------------------------------------------- lrn

@pytest.mark.parametrize("size,alpha,beta,k,channels", [
    (5, 1e-4, 0.75, 2.0, 7),
    (4, 0.5, 0.75, 1.0, 6),        # even size: window c-2 .. c+1
    (2, 1.0, 1.5, 0.5, 3),         # even size, window c-1 .. c
    (1, 2.0, 0.5, 1.0, 3),
    (7, 3.0, 0.75, 1.0, 4),        # window wider than the channels
])
def test_lrn_kernel_matches_the_definition_and_finite_differences(size, alpha, beta, k, channels):
    rng = np.random.default_rng(size + channels)
    x = rng.standard_normal((2, channels, 3, 2))
    out, saved = L.lrn_forward(x, size, alpha, beta, k)
    np.testing.assert_allclose(out, ref_lrn(x, size, alpha, beta, k), rtol=1e-13)
    input_and_weight_grads_match(lambda x: L.lrn_forward(x, size, alpha, beta, k)[0], [x], [0],
                                 lambda g: [L.lrn_backward(g, saved)])


def test_lrn_even_size_window_placement():
    """PyTorch pads size//2 channels before and (size-1)//2 after: with size 2,
    channel c is normalized by channels c-1 and c, not c and c+1."""
    x = np.zeros((1, 3, 1, 1))
    x[0, 2] = 1.0
    out, _ = L.lrn_forward(x, 2, 2.0, 1.0, 1.0)
    assert out[0, 2, 0, 0] == pytest.approx(1.0 / (1.0 + 2.0 / 2 * 1.0))
    x = np.zeros((1, 3, 1, 1))
    x[0, 1], x[0, 2] = 1.0, 3.0
    out, _ = L.lrn_forward(x, 2, 2.0, 1.0, 1.0)
    assert out[0, 1, 0, 0] == pytest.approx(1.0 / (1.0 + 1.0))        # channels 0, 1
    assert out[0, 2, 0, 0] == pytest.approx(3.0 / (1.0 + 1.0 + 9.0))  # channels 1, 2


# ---------------------------------------------------------------- compiled modules

def spec(layers, input_shape, loss="softmax_cross_entropy", outputs=3):
    return {"name": "net", "dtype": "float64", "input": list(input_shape),
            "layers": layers + ["flatten", {"linear": outputs}], "loss": loss}


MODULE_CASES = [
    ([{"conv2d": {"out_channels": 4, "kernel": 3, "groups": 2, "dilation": 2, "stride": 2, "padding": 1}}],
     (4, 8, 7)),
    ([{"conv2d": {"out_channels": 6, "kernel": [2, 3], "groups": 3, "bias": False}}], (3, 5, 6)),
    ([{"conv2d": {"out_channels": 3, "kernel": 3, "padding": 1}}, "relu",
      {"maxpool2d": {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}}], (2, 6, 6)),
    ([{"conv2d": {"out_channels": 3, "kernel": 2}}, {"maxpool2d": {"kernel": 2, "dilation": 2, "stride": 1}}],
     (2, 7, 6)),
    ([{"conv2d": {"out_channels": 3, "kernel": 2}}, "tanh",
      {"avgpool2d": {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}}],
     (2, 7, 7)),
    ([{"conv2d": {"out_channels": 3, "kernel": 2}}, {"avgpool2d": {"kernel": 2}}], (1, 7, 7)),
    ([{"conv2d": {"out_channels": 4, "kernel": 3}}, "relu", "global_avgpool2d"], (2, 6, 6)),
    ([{"conv2d": {"out_channels": 6, "kernel": 3}}, {"lrn": {"size": 4, "alpha": 0.3, "beta": 0.75, "k": 2}},
      {"conv2d": {"out_channels": 2, "kernel": 2, "groups": 2}}], (2, 6, 6)),
]


@pytest.mark.parametrize("layers,input_shape", MODULE_CASES)
def test_modules_with_the_options_match_finite_differences(layers, input_shape):
    module = bpcompile.compile(spec(layers, input_shape))
    params, x, y = random_problem(module, batch=2, seed=len(str(layers)))
    errors = layer_gradient_errors(module, params, x, y)
    assert max(errors.values()) < TOL, errors


def reference_layer(layer, x, params, name):
    kind, options = (layer, {}) if isinstance(layer, str) else next(iter(layer.items()))
    pair = lambda key, default: (lambda v: (v, v) if isinstance(v, int) else tuple(v))(options.get(key, default))
    if kind == "conv2d":
        return ref_conv2d(x, params[f"{name}.W"], params.get(f"{name}.b"), pair("stride", 1), pair("padding", 0),
                          pair("dilation", 1), options.get("groups", 1))
    if kind == "maxpool2d":
        kernel = pair("kernel", None)
        return ref_maxpool2d(x, kernel, pair("stride", list(kernel)), pair("padding", 0), pair("dilation", 1),
                             options.get("ceil_mode", False))[0]
    if kind == "avgpool2d":
        kernel = pair("kernel", None)
        return ref_avgpool2d(x, kernel, pair("stride", list(kernel)), pair("padding", 0),
                             options.get("ceil_mode", False), options.get("count_include_pad", True))
    if kind == "global_avgpool2d":
        return x.mean(axis=(2, 3), keepdims=True)
    if kind == "lrn":
        return ref_lrn(x, options["size"], options.get("alpha", 1e-4), options.get("beta", 0.75), options.get("k", 1.0))
    return {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh}[kind](x)


def reference_logits(layers, x, params):
    counts = {}
    for layer in layers:
        kind = layer if isinstance(layer, str) else next(iter(layer))
        counts[kind] = counts.get(kind, 0) + 1
        x = reference_layer(layer, x, params, f"{kind}{counts[kind]}")
    return x.reshape(len(x), -1) @ params["linear1.W"].T + params["linear1.b"]


@pytest.mark.parametrize("layers,input_shape", MODULE_CASES)
def test_modules_with_the_options_match_the_reference(layers, input_shape):
    module = bpcompile.compile(spec(layers, input_shape))
    params, x, _ = random_problem(module, batch=2, seed=7)
    np.testing.assert_allclose(module.predict(params, x, logits=True), reference_logits(layers, x, params),
                               rtol=1e-10, atol=1e-12)


def test_grouped_conv_weight_shape_is_pytorchs():
    module = bpcompile.compile(spec([{"conv2d": {"out_channels": 6, "kernel": 3, "groups": 2}}], (4, 5, 5)))
    assert module.PARAMS["conv2d1.W"] == (6, 2, 3, 3)


def test_global_avgpool_gives_b_c_1_1_and_flatten_b_c():
    compiled = bpcompile.compile(spec(["global_avgpool2d"], (5, 3, 4)))
    shapes = {n.name: n.shape for n in compiled.GRAPH}
    assert shapes["global_avgpool2d1"] == ("B", 5, 1, 1) and shapes["flatten1"] == ("B", 5)


def test_default_options_keep_the_tuned_kernels():
    source = bpcompile.compile(spec([{"conv2d": {"out_channels": 2, "kernel": 3, "dilation": 1, "groups": 1}},
                                     {"maxpool2d": {"kernel": 2, "padding": 0, "dilation": 1,
                                                    "ceil_mode": True}}], (1, 6, 6))).SOURCE
    # 6 - 3 + 1 = 4 rows: ceil mode adds no window, so the tuned max-pool is used too
    assert "conv2d_forward(" in source and "maxpool2d_forward(" in source
    assert "grouped_conv2d_forward" not in source and "maxpool2d_padded_forward" not in source


@pytest.mark.parametrize("layer,message,column_key", [
    ("conv2d: {out_channels: 4, kernel: 3, groups: 3}", "groups 3 does not divide in_channels 2", "groups"),
    ("conv2d: {out_channels: 3, kernel: 3, groups: 2}", "groups 2 does not divide out_channels 3", "groups"),
    ("conv2d: {out_channels: 2, kernel: 3, groups: 0}", "groups must be a positive integer", "groups"),
    ("conv2d: {out_channels: 2, kernel: 3, dilation: 3}", "the dilated kernel height 7 (kernel 3, dilation 3) "
     "is larger than the padded input height 6", None),
    ("maxpool2d: {kernel: 3, padding: 2}", "padding 2 is more than half the window height 3", "padding"),
    ("avgpool2d: {kernel: [2, 4], padding: [1, 3]}", "padding 3 is more than half the window width 4", "padding"),
    ("maxpool2d: {kernel: 2, padding: 1, dilation: 7}", "covers only padding", None),
    ("avgpool2d: {kernel: 2, ceil_mode: 1}", "ceil_mode must be true or false", "ceil_mode"),
    ("lrn: {alpha: 1}", "missing `size:`", None),
    ("lrn: {size: 2, k: 0}", "k must be a positive number", "k"),
    ("lrn: {size: 2, beta: -1}", "beta must be a non-negative number", "beta"),
    ("global_avgpool2d: {kernel: 2}", "unknown option 'kernel'", None),
])
def test_option_errors_name_the_layer_and_its_position(tmp_path, capsys, layer, message, column_key):
    path = tmp_path / "bad.yaml"
    text = f"name: net\ninput: [2, 6, 6]\nlayers:\n  - tanh\n  - {layer}\n  - flatten\n  - linear: 2\nloss: mse\n"
    path.write_text(text)
    assert main([str(path), "-o", str(tmp_path / "out.py")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:5:") and "error: layer 2 (" in err and message in err, err
    if column_key:          # the message points at the option's value
        column = int(err.split(":")[2])
        assert text.splitlines()[4][:column - 1].endswith(f"{column_key}: "), err
    assert err.count("\n") == 1 and not (tmp_path / "out.py").exists()


def test_a_window_of_only_padding_needs_a_dilation_over_the_whole_input():
    """Under padding <= kernel/2, a window of only padding needs its taps to step over
    the input: input 1, kernel 2, padding 1, dilation 2 has taps at -1 and 1."""
    with pytest.raises(bpcompile.SpecError, match="covers only padding"):
        bpcompile.compile(spec([{"maxpool2d": {"kernel": [2, 1], "padding": [1, 0], "dilation": [2, 1]}}], (1, 1, 3)))
    # the same window over an input of 2 rows reaches row 1: allowed, and matches the reference
    layers = [{"maxpool2d": {"kernel": [2, 1], "padding": [1, 0], "dilation": [2, 1]}}]
    module = bpcompile.compile(spec(layers, (1, 2, 3)))
    params, x, _ = random_problem(module, batch=2, seed=3)
    np.testing.assert_allclose(module.predict(params, x, logits=True), reference_logits(layers, x, params))


# ---------------------------------------------------------------- random pooling geometry (property)

@st.composite
def pool_geometries(draw):
    """A pooling layer PyTorch accepts: padding <= kernel/2 and at least one window."""
    k = draw(st.integers(1, 4))
    p = draw(st.integers(0, k // 2))
    d = draw(st.integers(1, 3))
    s = draw(st.integers(1, 4))
    n = draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 12))
    return n, k, s, p, d, draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_geometries(), pool_geometries(), st.booleans())
def test_random_pool_geometries_match_the_reference(rows, cols, count_include_pad):
    (H, kh, sh, ph, dh, ceil_h), (Wd, kw, sw, pw, dw, ceil_w) = rows, cols
    ceil_mode = ceil_h or ceil_w
    x = np.random.default_rng(H * 10 + Wd).standard_normal((2, 2, H, Wd))
    kernel, stride, padding, dilation = (kh, kw), (sh, sw), (ph, pw), (dh, dw)
    if all(any(p <= w * s + i * d < p + n for i in range(k)) for n, k, s, p, d in zip(
            (H, Wd), kernel, stride, padding, dilation)
           for w in range(ref_pool_size(n, k, s, p, d, ceil_mode))):
        out, saved = K.maxpool2d_padded_forward(x, kernel, stride, padding, dilation, ceil_mode)
        expected, where = ref_maxpool2d(x, kernel, stride, padding, dilation, ceil_mode)
        np.testing.assert_array_equal(out, expected)
        g = np.ones(out.shape)
        np.testing.assert_array_equal(K.maxpool2d_padded_backward(g, saved), ref_maxpool2d_backward(g, where, x.shape))
    if H + 2 * ph >= kh and Wd + 2 * pw >= kw:
        out, saved = K.avgpool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)
        np.testing.assert_allclose(out, ref_avgpool2d(x, kernel, stride, padding, ceil_mode, count_include_pad),
                                   rtol=1e-12, atol=1e-14)
        # the adjoint of a linear map: <avgpool(x), g> = <x, avgpool_backward(g)>
        g = np.random.default_rng(1).standard_normal(out.shape)
        assert np.vdot(out, g) == pytest.approx(np.vdot(x, K.avgpool2d_backward(g, saved)), rel=1e-12, abs=1e-12)
