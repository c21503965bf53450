# The numba target's versions of functions of templates/kernels/conv.py (same names,
# same arguments, same results), which replace those in the module: max pooling as one
# compiled pass over the windows, where the NumPy kernels take a dozen whole-array
# calls (pooling was a sixth of a LeNet-5 step).  Each window's maximum is its first
# strictly greater value in row-major order, as in window_first_max, so ties and nan
# go where they go there.
import numba
import numpy as np


@numba.njit(cache=_CACHE, nogil=True)
def pool_first_max(xt, kh, kw, sh, sw, out, arg):
    """out[c, i, j, b] = the maximum of window (i, j) of xt (C, H, W, B), batch-last
    (nan if the window holds one); arg = the row-major offset in the window of its first
    maximum, moved only by a strictly greater value."""
    C, Ho, Wo, B = out.shape
    for c in range(C):
        for i in range(Ho):
            for j in range(Wo):
                for b in range(B):
                    out[c, i, j, b] = xt[c, i * sh, j * sw, b]
                    arg[c, i, j, b] = 0
                for o in range(1, kh * kw):
                    row, column = i * sh + o // kw, j * sw + o % kw
                    for b in range(B):
                        value = xt[c, row, column, b]
                        if value > out[c, i, j, b]:
                            out[c, i, j, b] = value
                            arg[c, i, j, b] = o
                        elif value != value:     # nan: the maximum is nan (np.maximum's rule)
                            out[c, i, j, b] = value


@numba.njit(cache=_CACHE, nogil=True)
def pool_scatter_add(dt, arg, kw, sh, sw, dx):
    """dx[c, pixel, b] += dt[c, i, j, b] at each window's first maximum (dx batch-last)."""
    C, Ho, Wo, B = dt.shape
    for c in range(C):
        for i in range(Ho):
            for j in range(Wo):
                for b in range(B):
                    o = arg[c, i, j, b]
                    dx[c, i * sh + o // kw, j * sw + o % kw, b] += dt[c, i, j, b]


def maxpool2d_forward(x, kernel, stride):
    """kernels/conv.py's maxpool2d_forward (same arguments, same out and saved), with
    the windows' maxima and first offsets from one compiled pass (pool_first_max)."""
    B, C, H, Wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = conv_out_size(H, kh, sh, 0), conv_out_size(Wd, kw, sw, 0)
    out = np.empty((C, Ho, Wo, B), dtype=x.dtype)
    arg = np.empty((C, Ho, Wo, B), dtype=np.min_scalar_type(kh * kw - 1))
    pool_first_max(conv_batch_last(x), kh, kw, sh, sw, out, arg)
    return out.transpose(3, 0, 1, 2), (arg, x.shape, kernel, stride)


def maxpool2d_backward(dout, saved):
    """kernels/conv.py's maxpool2d_backward: each window's gradient added at its first
    maximum, in one compiled pass (pool_scatter_add)."""
    arg, (B, C, H, Wd), (kh, kw), (sh, sw) = saved
    dx = np.zeros((C, H, Wd, B), dtype=dout.dtype)
    pool_scatter_add(conv_batch_last(dout), arg, kw, sh, sw, dx)
    return dx.transpose(3, 0, 1, 2)
