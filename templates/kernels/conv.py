# Convolution and max-pooling kernels (forward and exact backward) in plain NumPy.
#
# Layout: the public functions take and return arrays *shaped* (B, C, H, W), but
# internally they work on the batch-last memory order (C, H, W, B).  In that order
# every slice the kernels touch (a window offset, a pooling plane, a col2im
# target) is a run of at least W_out * B contiguous numbers, whereas in
# (B, C, H, W) order the runs are only W_out long and NumPy's per-run overhead
# dominates on small images (col2im was 5x slower, pooling 10x slower).
# The returned arrays are (B, C, H, W)-shaped *views* of batch-last memory; an
# element-wise op (ReLU) keeps that memory order, so the next kernel's transpose
# to (C, H, W, B) is free.  Any strides are accepted on input.
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_batch_last(x):
    """Return x (B, C, H, W) as a C-contiguous (C, H, W, B) array (no copy if it already is)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def conv_out_size(size, k, s, p):
    """Output length of a window of k at stride s over size + 2p (the last partial window is dropped)."""
    return (size + 2 * p - k) // s + 1


def conv_band_rows(n_rows, row_cols, k_rows, n_out):
    """Output rows per im2col band (each band is a (k_rows, rows * row_cols) matrix).

    Two measured effects on this class of machine (2 cores, OpenBLAS):
    * fresh memory is expensive: page-faulting a new 5 MB array costs ~4x the
      time of writing it, so the im2col matrix is built one band of output rows at
      a time in a reused buffer of ~1 MB instead of all at once;
    * OpenBLAS starts its second thread above 2**20 multiply-adds per call, which
      makes a thin product such as 6 x 25 x 7000 three times slower than
      6 x 25 x 6500; thin products are kept under that size.
    """
    thin_cols = 2 ** 20 // (n_out * k_rows)
    band_cols = thin_cols if thin_cols >= 2048 else 2 ** 18 // k_rows
    return max(1, min(n_rows, band_cols // row_cols))


def conv_im2col_band(win, r0, r1, buf):
    """Copy the windows of output rows r0:r1 into buf and return it as (C*kh*kw, n*W_out*B)."""
    C, _, Wo, B, kh, kw = win.shape
    cols = buf[:, :(r1 - r0) * Wo * B]
    np.copyto(cols.reshape(C, kh, kw, r1 - r0, Wo, B), win[:, r0:r1].transpose(0, 4, 5, 1, 2, 3))
    return cols


def conv_padded_batch_last(x, ph, pw):
    """x (B, C, H, W) -> zero-padded batch-last copy (C, H + 2ph, W + 2pw, B)."""
    B, C, H, Wd = x.shape
    if not (ph or pw):
        return conv_batch_last(x)
    xp = np.zeros((C, H + 2 * ph, Wd + 2 * pw, B), dtype=x.dtype)
    xp[:, ph:ph + H, pw:pw + Wd, :] = x.transpose(1, 2, 3, 0)
    return xp


def conv2d_forward(x, W, b, stride, padding):
    """2-D cross-correlation with zero padding: x (B, C, H, W), W (O, C, kh, kw), b (O,).

    Returns (out, saved): out is (B, O, H_out, W_out); saved = (xp, x.shape,
    stride, padding) where xp is the zero-padded input in (C, H+2ph, W+2pw, B)
    order, from which the backward pass rebuilds the im2col bands.
    """
    B, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    sh, sw = stride
    Ho, Wo = conv_out_size(H, kh, sh, padding[0]), conv_out_size(Wd, kw, sw, padding[1])
    xp = conv_padded_batch_last(x, *padding)
    # (C, Ho, Wo, B, kh, kw) view of every window; the strided slice keeps only the
    # window starts that the stride visits (and so drops a last window that does not fit).
    win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    W2 = W.reshape(O, -1)
    out = np.empty((O, Ho * Wo * B), dtype=np.result_type(x, W))
    rows = conv_band_rows(Ho, Wo * B, C * kh * kw, O)
    buf = np.empty((C * kh * kw, rows * Wo * B), dtype=x.dtype)
    for r0 in range(0, Ho, rows):
        r1 = min(Ho, r0 + rows)
        cols = conv_im2col_band(win, r0, r1, buf)
        np.matmul(W2, cols, out=out[:, r0 * Wo * B:r1 * Wo * B])
    out += b[:, None]
    return out.reshape(O, Ho, Wo, B).transpose(3, 0, 1, 2), (xp, x.shape, stride, padding)


def conv2d_backward(dout, saved, W, need_dx=True):
    """Gradients of conv2d_forward: returns (dx, dW, db); dx is None when need_dx is False."""
    xp, (B, C, H, Wd), (sh, sw), (ph, pw) = saved
    O, _, kh, kw = W.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    W2 = W.reshape(O, -1)
    d2 = conv_batch_last(dout).reshape(O, Ho * Wo * B)
    # A product with a ones vector sums each row ~3x faster than d2.sum(axis=1).
    db = d2 @ np.ones(d2.shape[1], dtype=d2.dtype)
    dW = np.zeros(W2.shape, dtype=np.result_type(dout, xp))
    win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    rows = conv_band_rows(Ho, Wo * B, C * kh * kw, O)
    buf = np.empty((C * kh * kw, rows * Wo * B), dtype=xp.dtype)
    dxp = np.zeros(xp.shape, dtype=np.result_type(dout, W)) if need_dx else None
    for r0 in range(0, Ho, rows):
        r1 = min(Ho, r0 + rows)
        dW += d2[:, r0 * Wo * B:r1 * Wo * B] @ conv_im2col_band(win, r0, r1, buf).T
    if need_dx:
        # dx = col2im(W2.T @ d2), one kernel offset (i, j) at a time so that no
        # (C*kh*kw, N) matrix is materialised: t = W[:, :, i, j].T @ d2 is the
        # gradient of the im2col rows of offset (i, j), whose entries came from the
        # padded pixels (c, h*sh + i, w*sw + j, b).  The row shifts i are summed
        # first into u (C, Hp, W_out*B), where each target is a set of whole rows
        # (long contiguous runs: ~3x faster adds than slices also cut along w);
        # then u is added into dxp once per column shift j.
        t = np.empty((C, Ho * Wo * B), dtype=dxp.dtype)
        u = np.empty((C, xp.shape[1], Wo * B), dtype=dxp.dtype)
        for j in range(kw):
            u.fill(0)
            for i in range(kh):
                np.matmul(W[:, :, i, j].T, d2, out=t)
                u[:, i:i + sh * (Ho - 1) + 1:sh] += t.reshape(C, Ho, Wo * B)
            dxp[:, :, j:j + sw * (Wo - 1) + 1:sw] += u.reshape(C, xp.shape[1], Wo, B)
    dx = dxp[:, ph:ph + H, pw:pw + Wd].transpose(3, 0, 1, 2) if need_dx else None
    return dx, dW.reshape(W.shape), db


def maxpool2d_forward(x, kernel, stride):
    """Max pooling without padding: x (B, C, H, W) -> out (B, C, H_out, W_out).

    saved = (arg, x.shape, kernel, stride): arg holds, per output, the row-major
    offset i*kw + j of the first maximum in its window (small unsigned ints).
    """
    B, C, H, Wd = x.shape
    kh, kw = kernel
    sh, sw = stride
    Ho, Wo = conv_out_size(H, kh, sh, 0), conv_out_size(Wd, kw, sw, 0)
    xt = conv_batch_last(x)
    if (kh, kw) == (sh, sw):
        # Non-overlapping windows: crop to whole windows and split each spatial
        # axis into (window, offset) -> (C, Ho, Wo, B, kh, kw) view.
        win = xt[:, :Ho * kh, :Wo * kw].reshape(C, Ho, kh, Wo, kw, B).transpose(0, 1, 3, 5, 2, 4)
    else:
        win = sliding_window_view(xt, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    # Scan the kh*kw offsets in row-major order.  Only a strictly greater value
    # moves the argmax, so ties keep the first maximum.  Offsets only grow during
    # the scan, so "arg = max(arg, o * greater)" records the latest strict
    # improvement; this arithmetic form is ~40x faster than masked assignment.
    arg_type = np.min_scalar_type(kh * kw - 1)
    out = win[..., 0, 0].copy()
    arg = np.zeros(out.shape, dtype=arg_type)
    for o in range(1, kh * kw):
        plane = win[..., o // kw, o % kw]
        greater = plane > out
        np.maximum(out, plane, out=out)
        np.maximum(arg, greater * arg_type.type(o), out=arg)
    return out.transpose(3, 0, 1, 2), (arg, x.shape, kernel, stride)


def maxpool2d_backward(dout, saved):
    """Gradient of maxpool2d_forward: each window's gradient goes to its first maximum."""
    arg, (B, C, H, Wd), (kh, kw), (sh, sw) = saved
    Ho, Wo = arg.shape[1], arg.shape[2]
    dt = conv_batch_last(dout)
    dx = np.zeros((C, H, Wd, B), dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            target = dx[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
            if (kh, kw) == (sh, sw):
                # Disjoint windows: each input pixel gets at most one value.
                np.multiply(dt, arg == i * kw + j, out=target)
            else:
                target += dt * (arg == i * kw + j)
    return dx.transpose(3, 0, 1, 2)
