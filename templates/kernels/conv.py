# Convolution and max-pooling kernels (forward and exact backward) in plain NumPy.
#
# Layout: the public functions take and return arrays *shaped* (B, C, H, W), but
# work internally in the batch-last memory order (C, H, W, B).  There, every slice
# the kernels touch (a window offset, a pooling plane, a col2im target) is a run
# of at least W_out * B contiguous numbers, whereas in (B, C, H, W) order the runs
# are only W_out long and NumPy's per-run overhead dominates on small images
# (measured: col2im 5x and pooling 10x slower).  Returned arrays are
# (B, C, H, W)-shaped views of batch-last memory; element-wise ops such as ReLU
# keep that memory order, so the next kernel's transpose to (C, H, W, B) is free.
# Inputs with any strides are accepted.
#
# Two more measured facts about the 2-core OpenBLAS machine shape the code:
# * page-faulting fresh memory costs ~4x the time of writing it, so the im2col
#   matrix is never materialised whole: it is built band by band (a few output
#   rows at a time) in one reused buffer of about 512 kB, and rebuilt in backward
#   from the saved padded input; that buffer and the col2im partial sums are kept
#   between calls (conv_scratch), since arrays allocated afresh at every call were
#   page-faulted at every call (LeNet-5's step: 717 faults, 5.6-7.2 ms; kept: none,
#   4.0-4.3 ms);
# * OpenBLAS hands some products to a second thread, for some shapes from about
#   5e5 multiply-adds on; measured: 3x slower for thin products, and ~8 ms instead
#   of 0.02 ms per call when the other core is busy.  Products of up to 2**18
#   multiply-adds always ran on one thread, so BLAS calls are cut to that size.
import math
import threading

import numpy as np

# the kernels' own temporaries, kept between calls: each thread has its own
_CONV_SCRATCH = threading.local()


def conv_scratch(role, shape, dtype):
    """An uninitialised array for a temporary that never leaves the kernel: a view of
    the same memory at every call with this role and dtype in this thread, grown
    when a call needs more (so one buffer per role serves every layer's shape).
    Below 128 kB a fresh array: malloc hands back memory it already has at that
    size, in 0.2-0.3 us (this lookup: 0.9 us; with np.prod for the size it took
    4.5 us, about 6% of an 8x8-digits step at batch 16).  From 64 MB on a fresh
    array too, not held after the call (such layers' products cost far more than
    the page faults)."""
    dtype, size = np.dtype(dtype), math.prod(shape)
    if not 1 << 17 <= size * dtype.itemsize <= 1 << 26:
        return np.empty(shape, dtype)
    kept = _CONV_SCRATCH.__dict__
    buffer = kept.get((role, dtype))
    if buffer is None or buffer.size < size:
        buffer = kept[role, dtype] = np.empty(size, dtype)
    return buffer[:size].reshape(shape)


def conv_batch_last(x):
    """Return x (B, C, H, W) as a C-contiguous (C, H, W, B) array (no copy if it already is)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def conv_out_size(size, k, s, p):
    """Number of windows of length k at stride s over size + 2p (a last window that
    does not fit is dropped)."""
    return (size + 2 * p - k) // s + 1


def conv_column_blocks(n_cols, macs_per_col):
    """Split n_cols columns into (n_blocks, size) equal blocks plus a remainder of
    fewer than n_blocks columns, each block at most 2**18 multiply-adds (see the top of
    the file) but at least 128 columns, below which the per-call overhead dominates."""
    n_blocks = max(1, -(-n_cols // max(128, 2 ** 18 // macs_per_col)))
    return n_blocks, n_cols // n_blocks


def conv_matmul_into(a, b, out):
    """out[...] = a @ b for a (m, k), b (k, n), in column blocks.

    The equal blocks go through one stacked np.matmul (one BLAS call per block
    inside NumPy, ~15% faster than a Python loop of calls).
    """
    (m, k), n = a.shape, b.shape[1]
    n_blocks, size = conv_column_blocks(n, m * k)
    full = n_blocks * size
    np.matmul(a, b[:, :full].reshape(k, n_blocks, size).transpose(1, 0, 2),
              out=out[:, :full].reshape(m, n_blocks, size).transpose(1, 0, 2))
    if full < n:
        np.matmul(a, b[:, full:], out=out[:, full:])


def conv_gram_add(a, b, out):
    """out += a @ b.T for a (m, n), b (k, n) with long rows, in column blocks (as above).

    OpenBLAS runs a block of a @ b.T up to 1.6x faster when the operand with more
    rows comes first, e.g. (150 x 218) @ (218 x 16) rather than (16 x 218) @ (218 x 150).
    """
    (m, n), k = a.shape, b.shape[0]
    n_blocks, size = conv_column_blocks(n, m * k)
    full = n_blocks * size
    out += np.matmul(a[:, :full].reshape(m, n_blocks, size).transpose(1, 0, 2),
                     b[:, :full].reshape(k, n_blocks, size).transpose(1, 2, 0)).sum(axis=0)
    if full < n:
        out += a[:, full:] @ b[:, full:].T


def conv_padded_batch_last(x, ph, pw):
    """x (B, C, H, W) -> zero-padded batch-last array (C, H + 2ph, W + 2pw, B)."""
    B, C, H, Wd = x.shape
    if not (ph or pw):
        return conv_batch_last(x)
    xp = np.zeros((C, H + 2 * ph, Wd + 2 * pw, B), dtype=x.dtype)
    xp[:, ph:ph + H, pw:pw + Wd, :] = x.transpose(1, 2, 3, 0)
    return xp


def conv_windows(xp, kh, kw, sh, sw):
    """(C, H_out, W_out, B, kh, kw) read-only view of every window of the C-contiguous
    batch-last array xp (C, H, W, B); a last window that does not fit is dropped.

    Made from xp's strides directly: sliding_window_view took 16-70 us a call, which
    was 6-7% of LeNet-5's forward (four calls a step).
    """
    C, H, Wd, B = xp.shape
    c, h, w, b = xp.strides
    win = np.ndarray((C, conv_out_size(H, kh, sh, 0), conv_out_size(Wd, kw, sw, 0), B, kh, kw),
                     xp.dtype, xp, 0, (c, h * sh, w * sw, b, h, w))
    win.flags.writeable = False
    return win


def conv_band_rows(n_rows, row_cols, k_rows, itemsize):
    """Output rows per im2col band: about 512 kB of numbers, at least one row.

    Measured on LeNet-5: 1 MB bands page-faulted on every step, 512 kB ones did not.
    """
    return max(1, min(n_rows, 2 ** 19 // max(1, itemsize * k_rows * row_cols)))


def conv_im2col_band(win, r0, r1, buf):
    """Copy the windows of output rows r0:r1 into buf; return them as (C*kh*kw, (r1-r0)*W_out*B).

    Row (c, i, j) of the result holds pixel (c, h*sh + i, w*sw + j, b) in column (h, w, b).
    """
    C, _, Wo, B, kh, kw = win.shape
    cols = buf[:, :(r1 - r0) * Wo * B]
    np.copyto(cols.reshape(C, kh, kw, r1 - r0, Wo, B), win[:, r0:r1].transpose(0, 4, 5, 1, 2, 3))
    return cols


def conv2d_forward(x, W, b, stride, padding):
    """2-D cross-correlation with zero padding: x (B, C, H, W), W (O, C, kh, kw), b (O,).

    Returns (out, saved): out (B, O, H_out, W_out); saved = (xp, x.shape, stride,
    padding), xp being the zero-padded input in (C, H + 2ph, W + 2pw, B) order.
    """
    B, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = conv_out_size(H, kh, sh, ph), conv_out_size(Wd, kw, sw, pw)
    xp = conv_padded_batch_last(x, ph, pw)
    win = conv_windows(xp, kh, kw, sh, sw)
    W2 = W.reshape(O, C * kh * kw)
    # out = W2 @ im2col(x): one matrix product, evaluated band by band.
    out = np.empty((O, Ho * Wo * B), dtype=np.result_type(x, W))
    rows = conv_band_rows(Ho, Wo * B, C * kh * kw, xp.itemsize)
    buf = conv_scratch("band", (C * kh * kw, rows * Wo * B), xp.dtype)
    for r0 in range(0, Ho, rows):
        r1 = min(Ho, r0 + rows)
        conv_matmul_into(W2, conv_im2col_band(win, r0, r1, buf), out[:, r0 * Wo * B:r1 * Wo * B])
    out += b[:, None]
    return out.reshape(O, Ho, Wo, B).transpose(3, 0, 1, 2), (xp, x.shape, stride, padding)


def conv2d_backward(dout, saved, W, need_dx=True):
    """Gradients of conv2d_forward: returns (dx, dW, db); dx is None when need_dx is False."""
    xp, (B, C, H, Wd), (sh, sw), (ph, pw) = saved
    O, _, kh, kw = W.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    d2 = conv_batch_last(dout).reshape(O, Ho * Wo * B)
    # A product with a ones vector sums the rows ~3x faster than d2.sum(axis=1).
    db = d2 @ np.ones(d2.shape[1], dtype=d2.dtype)
    # dW = d2 @ im2col(x).T, with the im2col bands rebuilt from the saved input;
    # accumulated transposed (see conv_gram_add).
    dWt = np.zeros((C * kh * kw, O), dtype=np.result_type(dout, xp))
    win = conv_windows(xp, kh, kw, sh, sw)
    rows = conv_band_rows(Ho, Wo * B, C * kh * kw, xp.itemsize)
    buf = conv_scratch("band", (C * kh * kw, rows * Wo * B), xp.dtype)
    for r0 in range(0, Ho, rows):
        r1 = min(Ho, r0 + rows)
        conv_gram_add(conv_im2col_band(win, r0, r1, buf), d2[:, r0 * Wo * B:r1 * Wo * B], dWt)
    dW = np.ascontiguousarray(dWt.T).reshape(W.shape)
    if not need_dx:
        return None, dW, db
    # dx = col2im(W2.T @ d2), one kernel column j at a time so that no
    # (C*kh*kw, N) matrix is materialised: t[i] = W[:, :, i, j].T @ d2 (one
    # product for all i, with kh*C rows: BLAS is slow with few) is the gradient
    # of the im2col rows of offset (i, j), whose entries came from the padded
    # pixels (c, h*sh + i, w*sw + j, b): one strided slice per offset.  The row
    # shifts i are summed first into u (C, Hp, W_out*B), where a target is a set
    # of whole rows (long contiguous runs: ~3x faster adds than slices that are
    # also cut along w); u is then added into dxp once per column shift j.
    Hp = xp.shape[1]
    dxp = np.zeros(xp.shape, dtype=np.result_type(dout, W))
    t = conv_scratch("col2im_products", (kh, C, Ho * Wo * B), dxp.dtype)
    u = conv_scratch("col2im_rows", (C, Hp, Wo * B), dxp.dtype)
    for j in range(kw):
        u.fill(0)
        conv_matmul_into(W[:, :, :, j].transpose(2, 1, 0).reshape(kh * C, O), d2,
                         t.reshape(kh * C, Ho * Wo * B))
        for i in range(kh):
            u[:, i:i + sh * (Ho - 1) + 1:sh] += t[i].reshape(C, Ho, Wo * B)
        dxp[:, :, j:j + sw * (Wo - 1) + 1:sw] += u.reshape(C, Hp, Wo, B)
    dx = dxp[:, ph:ph + H, pw:pw + Wd].transpose(3, 0, 1, 2)
    return dx, dW, db


def maxpool2d_forward(x, kernel, stride):
    """Max pooling without padding: x (B, C, H, W) -> out (B, C, H_out, W_out).

    saved = (arg, x.shape, kernel, stride); arg (C, H_out, W_out, B) holds, per
    window, the row-major offset i*kw + j of its first maximum (small unsigned ints).
    """
    B, C, H, Wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = conv_out_size(H, kh, sh, 0), conv_out_size(Wd, kw, sw, 0)
    xt = conv_batch_last(x)
    if (kh, kw) == (sh, sw):
        # Non-overlapping windows: crop to whole windows and split each spatial
        # axis into (window, offset) -> (C, Ho, Wo, B, kh, kw) view.
        win = xt[:, :Ho * kh, :Wo * kw].reshape(C, Ho, kh, Wo, kw, B).transpose(0, 1, 3, 5, 2, 4)
    else:
        win = conv_windows(xt, kh, kw, sh, sw)
    out, arg = window_first_max(win, kh, kw)
    return out.transpose(3, 0, 1, 2), (arg, x.shape, kernel, stride)


def window_first_max(win, kh, kw):
    """(each window's maximum, the row-major offset of its first maximum) of windows
    `win` (..., kh, kw).  Scans the offsets with element-wise ops over whole planes (a
    max/argmax over the tiny trailing window axes is ~20x slower).  Only a strictly
    greater value moves the argmax, so ties keep the first maximum.  Offsets grow
    during the scan, so "arg = max(arg, o * greater)" records the latest strict
    improvement (~40x faster than masked assignment)."""
    arg_type = np.min_scalar_type(kh * kw - 1)
    out = win[..., 0, 0].copy()
    arg = np.zeros(out.shape, dtype=arg_type)
    for o in range(1, kh * kw):
        plane = win[..., o // kw, o % kw]
        greater = plane > out
        np.maximum(out, plane, out=out)
        np.maximum(arg, greater * arg_type.type(o), out=arg)
    return out, arg


def maxpool2d_backward(dout, saved):
    """Gradient of maxpool2d_forward: each window's gradient goes to its first maximum."""
    arg, (B, C, H, Wd), (kh, kw), (sh, sw) = saved
    Ho, Wo = arg.shape[1], arg.shape[2]
    dt = conv_batch_last(dout)
    disjoint = (kh, kw) == (sh, sw)
    if disjoint and H == Ho * kh and Wd == Wo * kw:
        dx = np.empty((C, H, Wd, B), dtype=dout.dtype)  # every pixel is written below
    else:
        dx = np.zeros((C, H, Wd, B), dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            # The pixels at offset (i, j) of every window form one strided slice.
            target = dx[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
            if disjoint:
                np.multiply(dt, arg == i * kw + j, out=target)
            else:
                target += dt * (arg == i * kw + j)
    return dx.transpose(3, 0, 1, 2)
