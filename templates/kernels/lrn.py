# Local response normalization across channels, as torch.nn.LocalResponseNorm:
#   b_c = a_c / (k + alpha/n * sum_{c' = c - n//2}^{c + (n-1)//2} a_c'^2) ** beta
# channels outside 0..C-1 counting as zeros; forward and exact backward.
import numpy as np


def lrn_channel_sums(v, before, after):
    """s[:, c] = v[:, c - before] + ... + v[:, c + after], zeros beyond the channels."""
    B, C = v.shape[:2]
    padded = np.zeros((B, C + before + after) + v.shape[2:], dtype=v.dtype)
    padded[:, before:before + C] = v
    total = padded[:, :C].copy()
    for o in range(1, before + after + 1):
        total += padded[:, o:o + C]
    return total


def lrn_forward(x, size, alpha, beta, k):
    """x (B, C, ...) -> (out, saved); saved = (x, scale, scale ** -beta, size, alpha, beta)."""
    scale = k + (alpha / size) * lrn_channel_sums(x * x, size // 2, (size - 1) // 2)
    factor = scale ** -beta
    return x * factor, (x, scale, factor, size, alpha, beta)


def lrn_backward(dout, saved):
    """dJ/da_j = g_j D_j^-beta - 2 beta alpha/n a_j sum_{c: j in window(c)} g_c a_c D_c^(-beta-1);
    j is in c's window when c runs from j - (n-1)//2 to j + n//2 (the window, mirrored)."""
    x, scale, factor, size, alpha, beta = saved
    inner = dout * x * factor / scale
    sums = lrn_channel_sums(inner, (size - 1) // 2, size // 2)
    return dout * factor - (2 * beta * alpha / size) * x * sums
