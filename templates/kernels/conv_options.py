# The image-layer options beyond the tuned default paths of conv.py: dilated and
# grouped convolution, max-pooling with padding, dilation and ceil mode, average
# pooling and global average pooling, forward and exact backward, as PyTorch
# defines them.  They reuse conv.py's batch-last layout (conv_batch_last,
# conv_padded_batch_last, conv_matmul_into), so a module that includes this file
# includes conv.py too.  These paths favour plain code over speed: one product
# per group, the im2col matrix of a group materialised whole.
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def dilated_windows(xp, kernel, stride, dilation):
    """(C, H_out, W_out, B, kh, kw) view of every dilated window of the batch-last
    padded input xp (C, Hp, Wp, B); a last window that does not fit is dropped."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(1, 2))
    return span[:, ::sh, ::sw, :, ::dh, ::dw]


def dilated_offset_slice(i, d, s, n_out):
    """The padded-input rows that kernel offset i reads, one per output row."""
    return slice(i * d, i * d + s * (n_out - 1) + 1, s)


def grouped_columns(win, group, channels):
    """im2col of one group's channels: (channels*kh*kw, H_out*W_out*B), a copy."""
    part = win[group * channels:(group + 1) * channels]
    Cg, Ho, Wo, B, kh, kw = part.shape
    return part.transpose(0, 4, 5, 1, 2, 3).reshape(Cg * kh * kw, Ho * Wo * B)


def grouped_conv2d_forward(x, W, b, stride, padding, dilation, groups):
    """Cross-correlation with zero padding, dilation and groups (PyTorch's Conv2d):
    x (B, C, H, W), W (O, C/groups, kh, kw), b (O,) or None.  Output channel o
    reads only the input channels of its group o // (O/groups).

    Returns (out, saved): out (B, O, H_out, W_out); saved holds the padded input.
    """
    O, Cg, kh, kw = W.shape
    xp = conv_padded_batch_last(x, *padding)
    win = dilated_windows(xp, (kh, kw), stride, dilation)
    _, Ho, Wo, B = win.shape[:4]
    Og = O // groups
    out = np.empty((O, Ho * Wo * B), dtype=np.result_type(x, W))
    for g in range(groups):
        rows = slice(g * Og, (g + 1) * Og)
        conv_matmul_into(W[rows].reshape(Og, Cg * kh * kw), grouped_columns(win, g, Cg), out[rows])
    if b is not None:
        out += b[:, None]
    saved = (xp, x.shape, stride, padding, dilation, groups)
    return out.reshape(O, Ho, Wo, B).transpose(3, 0, 1, 2), saved


def grouped_conv2d_backward(dout, saved, W, need_dx=True):
    """Gradients of grouped_conv2d_forward: (dx, dW, db); dx is None unless need_dx."""
    xp, (B, C, H, Wd), (sh, sw), (ph, pw), (dh, dw), groups = saved
    O, Cg, kh, kw = W.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    Og = O // groups
    d2 = conv_batch_last(dout).reshape(O, Ho * Wo * B)
    db = d2.sum(axis=1)
    dtype = np.result_type(dout, W)
    dW = np.empty(W.shape, dtype=dtype)
    dxp = np.zeros(xp.shape, dtype=dtype) if need_dx else None
    win = dilated_windows(xp, (kh, kw), (sh, sw), (dh, dw))
    for g in range(groups):
        rows, chans = slice(g * Og, (g + 1) * Og), slice(g * Cg, (g + 1) * Cg)
        cols = grouped_columns(win, g, Cg)
        dW[rows] = (d2[rows] @ cols.T).reshape(Og, Cg, kh, kw)
        if not need_dx:
            continue
        # col2im: row (c, i, j) of the columns' gradient came from padded pixels
        # (c, h*sh + i*dh, w*sw + j*dw, b), one strided slice per kernel offset
        dcols = (W[rows].reshape(Og, Cg * kh * kw).T @ d2[rows]).reshape(Cg, kh, kw, Ho, Wo, B)
        for i in range(kh):
            for j in range(kw):
                heights = dilated_offset_slice(i, dh, sh, Ho)
                widths = dilated_offset_slice(j, dw, sw, Wo)
                dxp[chans, heights, widths] += dcols[:, i, j]
    if not need_dx:
        return None, dW, db
    return dxp[:, ph:ph + H, pw:pw + Wd].transpose(3, 0, 1, 2), dW, db


def pool_out_size(n, k, s, p, d, ceil_mode):
    """PyTorch's pooling output size: floor (or ceil) of (n + 2p - d(k-1) - 1)/s, plus one;
    in ceil mode a last window that would start in the right padding is dropped."""
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def pool_padded_batch_last(x, kernel, stride, padding, dilation, out_hw, fill):
    """x (B, C, H, W) -> (C, Hp, Wp, B) filled with `fill` around it: `padding` before,
    and after as much as the last window needs (more than `padding` in ceil mode)."""
    B, C, H, Wd = x.shape
    size = [max(n + 2 * p, (o - 1) * s + d * (k - 1) + 1)
            for n, k, s, p, d, o in zip((H, Wd), kernel, stride, padding, dilation, out_hw)]
    xp = np.full((C, size[0], size[1], B), fill, dtype=x.dtype)
    (ph, pw) = padding
    xp[:, ph:ph + H, pw:pw + Wd] = x.transpose(1, 2, 3, 0)
    return xp


def pool_out_hw(shape, kernel, stride, padding, dilation, ceil_mode):
    return tuple(pool_out_size(n, k, s, p, d, ceil_mode)
                 for n, k, s, p, d in zip(shape[2:], kernel, stride, padding, dilation))


def maxpool2d_padded_forward(x, kernel, stride, padding, dilation, ceil_mode):
    """Max pooling as PyTorch's MaxPool2d: implicit -inf padding, dilation, ceil mode.

    saved = (arg, x.shape, padded shape, kernel, stride, padding, dilation); arg holds
    per window the row-major offset i*kw + j of its first maximum.
    """
    (kh, kw) = kernel
    Ho, Wo = pool_out_hw(x.shape, kernel, stride, padding, dilation, ceil_mode)
    xp = pool_padded_batch_last(x, kernel, stride, padding, dilation, (Ho, Wo), -np.inf)
    win = dilated_windows(xp, kernel, stride, dilation)[:, :Ho, :Wo]
    out, arg = window_first_max(win, kh, kw)     # conv.py: ties keep the first maximum
    return out.transpose(3, 0, 1, 2), (arg, x.shape, xp.shape, kernel, stride, padding, dilation)


def maxpool2d_padded_backward(dout, saved):
    """Gradient of maxpool2d_padded_forward: each window's gradient goes to its first maximum."""
    arg, (B, C, H, Wd), padded, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = saved
    Ho, Wo = arg.shape[1], arg.shape[2]
    dt = conv_batch_last(dout)
    dxp = np.zeros(padded, dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, dilated_offset_slice(i, dh, sh, Ho), dilated_offset_slice(j, dw, sw, Wo)] += \
                dt * (arg == i * kw + j)
    return dxp[:, ph:ph + H, pw:pw + Wd].transpose(3, 0, 1, 2)


def avgpool_divisors(n, k, s, p, n_out, count_include_pad):
    """Per output position along one axis, how many of its window's k positions
    PyTorch divides by: those inside the padded input (count_include_pad), or
    only those inside the input; a ceil-mode window's part beyond the padded
    input never counts."""
    start = np.arange(n_out) * s - p
    end = np.minimum(start + k, n + p)
    if count_include_pad:
        return end - start
    return np.minimum(end, n) - np.maximum(start, 0)


def avgpool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """Average pooling as PyTorch's AvgPool2d (zero padding, ceil mode, count_include_pad).

    saved = (divisor (H_out, W_out, 1), x.shape, padded shape, kernel, stride, padding).
    """
    (kh, kw), (H, Wd) = kernel, x.shape[2:]
    Ho, Wo = pool_out_hw(x.shape, kernel, stride, padding, (1, 1), ceil_mode)
    xp = pool_padded_batch_last(x, kernel, stride, padding, (1, 1), (Ho, Wo), 0)
    win = dilated_windows(xp, kernel, stride, (1, 1))[:, :Ho, :Wo]
    # the window sums, one offset plane at a time (faster than a sum over the tiny window axes)
    total = win[..., 0, 0].copy()
    for o in range(1, kh * kw):
        total += win[..., o // kw, o % kw]
    rows = avgpool_divisors(H, kh, stride[0], padding[0], Ho, count_include_pad)
    cols = avgpool_divisors(Wd, kw, stride[1], padding[1], Wo, count_include_pad)
    divisor = np.multiply.outer(rows, cols)[:, :, None].astype(x.dtype)
    total /= divisor
    return total.transpose(3, 0, 1, 2), (divisor, x.shape, xp.shape, kernel, stride, padding)


def avgpool2d_backward(dout, saved):
    """Gradient of avgpool2d_forward: each window's gradient / divisor to all its pixels."""
    divisor, (B, C, H, Wd), padded, (kh, kw), (sh, sw), (ph, pw) = saved
    Ho, Wo = divisor.shape[:2]
    share = conv_batch_last(dout) / divisor
    dxp = np.zeros(padded, dtype=share.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, dilated_offset_slice(i, 1, sh, Ho), dilated_offset_slice(j, 1, sw, Wo)] += share
    return dxp[:, ph:ph + H, pw:pw + Wd].transpose(3, 0, 1, 2)


def global_avgpool2d_forward(x):
    """The mean of each channel over its whole plane: (B, C, H, W) -> (B, C, 1, 1);
    saved is x's shape."""
    return x.mean(axis=(2, 3), keepdims=True), x.shape


def global_avgpool2d_backward(dout, shape):
    """Gradient of global_avgpool2d_forward, in batch-last memory for the next kernel."""
    B, C, H, Wd = shape
    dx = np.empty((C, H, Wd, B), dtype=dout.dtype).transpose(3, 0, 1, 2)
    dx[...] = dout / (H * Wd)
    return dx
