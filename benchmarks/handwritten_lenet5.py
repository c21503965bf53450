"""Hand-written NumPy LeNet-5 training step: the baseline for bench_conv_kernels.py.

This is written as an experienced NumPy programmer would write a fast CNN without
a compiler, independently of templates/kernels/conv.py:

* conventional (B, C, H, W) layout throughout;
* im2col with sliding_window_view into a (B*H_out*W_out, C*k*k) matrix and a
  single BLAS product per convolution;
* col2im as k*k strided slice additions (no np.add.at);
* 2x2 max pooling as element-wise maxima of the four strided sub-grids (a
  reduction over tiny trailing axes is much slower in NumPy), with the
  gradient routed to the first maximum of each window;
* float32 everywhere.

Network: conv(6, 5x5, pad 2) relu maxpool2 conv(16, 5x5) relu maxpool2 flatten
linear120 relu linear84 relu linear10, softmax cross-entropy, plain SGD.
Linear weights are (out, in), as in PyTorch, so parameters can be compared.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

DTYPE = np.float32


def init_params(seed):
    """LeCun-normal random initial parameters (float32) in a dict of arrays."""
    rng = np.random.default_rng(seed)

    def lecun(shape, fan_in):
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(DTYPE)

    return {
        "conv1_w": lecun((6, 1, 5, 5), 25), "conv1_b": np.zeros(6, DTYPE),
        "conv2_w": lecun((16, 6, 5, 5), 150), "conv2_b": np.zeros(16, DTYPE),
        "fc1_w": lecun((120, 400), 400), "fc1_b": np.zeros(120, DTYPE),
        "fc2_w": lecun((84, 120), 120), "fc2_b": np.zeros(84, DTYPE),
        "fc3_w": lecun((10, 84), 84), "fc3_b": np.zeros(10, DTYPE),
    }


def conv_forward(x, w, b, pad):
    """Stride-1 convolution; returns (out (B, O, Ho, Wo), cache)."""
    B, C, H, W = x.shape
    O, _, k, _ = w.shape
    if pad:
        xp = np.zeros((B, C, H + 2 * pad, W + 2 * pad), x.dtype)
        xp[:, :, pad:pad + H, pad:pad + W] = x
    else:
        xp = x
    Ho, Wo = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    win = sliding_window_view(xp, (k, k), axis=(2, 3))          # (B, C, Ho, Wo, k, k)
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(B * Ho * Wo, C * k * k)
    out = cols @ w.reshape(O, -1).T + b                          # (B*Ho*Wo, O)
    out = out.reshape(B, Ho, Wo, O).transpose(0, 3, 1, 2)
    return out, (cols, xp.shape, pad)


def conv_backward(dout, cache, w, need_dx=True):
    """Gradients (dx, dw, db) of conv_forward."""
    cols, (B, C, Hp, Wp), pad = cache
    O, _, k, _ = w.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    d2 = dout.transpose(0, 2, 3, 1).reshape(B * Ho * Wo, O)
    db = d2.sum(axis=0)
    dw = (d2.T @ cols).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = (d2 @ w.reshape(O, -1)).reshape(B, Ho, Wo, C, k, k)
    dcols = dcols.transpose(4, 5, 0, 3, 1, 2)                   # (k, k, B, C, Ho, Wo)
    dxp = np.zeros((B, C, Hp, Wp), dout.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + Ho, j:j + Wo] += dcols[i, j]
    if pad:
        dxp = dxp[:, :, pad:-pad, pad:-pad]
    return dxp, dw, db


def pool_forward(x):
    """2x2, stride-2 max pooling; cache holds the winning quadrant per window."""
    a, b = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
    c, d = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    top, bottom = np.maximum(a, b), np.maximum(c, d)
    out = np.maximum(top, bottom)
    # First maximum in row-major order: a beats b on ties, top beats bottom.
    use_bottom = bottom > top
    pick_right = np.where(use_bottom, d > c, b > a)
    return out, (use_bottom, pick_right, x.shape)


def pool_backward(dout, cache):
    use_bottom, pick_right, shape = cache
    dx = np.zeros(shape, dout.dtype)
    top, left = ~use_bottom, ~pick_right
    dx[:, :, 0::2, 0::2] = dout * (top & left)
    dx[:, :, 0::2, 1::2] = dout * (top & pick_right)
    dx[:, :, 1::2, 0::2] = dout * (use_bottom & left)
    dx[:, :, 1::2, 1::2] = dout * (use_bottom & pick_right)
    return dx


def relu_backward(dout, z):
    """Gradient of relu(z) given dout, computed in place in dout (a fresh array)."""
    dout *= z > 0
    return dout


def forward(params, x):
    """Forward pass; returns (logits, caches)."""
    p = params
    c1, k1 = conv_forward(x, p["conv1_w"], p["conv1_b"], 2)
    r1 = np.maximum(c1, 0)
    p1, q1 = pool_forward(r1)
    c2, k2 = conv_forward(p1, p["conv2_w"], p["conv2_b"], 0)
    r2 = np.maximum(c2, 0)
    p2, q2 = pool_forward(r2)
    h0 = p2.reshape(x.shape[0], -1)
    h1 = np.maximum(h0 @ p["fc1_w"].T + p["fc1_b"], 0)
    h2 = np.maximum(h1 @ p["fc2_w"].T + p["fc2_b"], 0)
    logits = h2 @ p["fc3_w"].T + p["fc3_b"]
    return logits, (c1, k1, q1, c2, k2, q2, p2.shape, h0, h1, h2)


def head_backward(p, logits, y, h0, h1, h2):
    """Softmax cross-entropy and the three fully connected layers' backward pass:
    (loss, gradients of fc1..fc3, dJ/dh0)."""
    B = len(y)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(B), y]))
    dz = e / s
    dz[np.arange(B), y] -= 1
    dz /= B
    g = {}
    g["fc3_w"], g["fc3_b"] = dz.T @ h2, dz.sum(0)
    dh2 = dz @ p["fc3_w"]
    dh2 *= h2 > 0
    g["fc2_w"], g["fc2_b"] = dh2.T @ h1, dh2.sum(0)
    dh1 = dh2 @ p["fc2_w"]
    dh1 *= h1 > 0
    g["fc1_w"], g["fc1_b"] = dh1.T @ h0, dh1.sum(0)
    return loss, g, dh1 @ p["fc1_w"]


def sgd_step(params, x, y, lr):
    """One SGD step on the mean softmax cross-entropy; updates params in place, returns the loss."""
    p = params
    logits, (c1, k1, q1, c2, k2, q2, p2_shape, h0, h1, h2) = forward(p, x)
    loss, g, dh0 = head_backward(p, logits, y, h0, h1, h2)
    dp2 = dh0.reshape(p2_shape)
    dr2 = pool_backward(dp2, q2)
    dp1, g["conv2_w"], g["conv2_b"] = conv_backward(relu_backward(dr2, c2), k2, p["conv2_w"])
    dr1 = pool_backward(dp1, q1)
    _, g["conv1_w"], g["conv1_b"] = conv_backward(relu_backward(dr1, c1), k1, p["conv1_w"], need_dx=False)
    for name, grad in g.items():
        p[name] -= lr * grad
    return loss
