# Losses for the per-example SGD step (rowstep.py): one example, as 1-D
# vectors, returning Python floats.  Blocks separated by `# --- name` lines,
# like losses.py; generated modules that use them import math.

# --- _sigmoid_binary_cross_entropy_one
def _sigmoid_binary_cross_entropy_one(a, y):
    """(sum_k softplus(a) - y*a, sigmoid(a) - y) for one example's logits a and targets y,
    from the logits: no log(0), no overflow."""
    softplus = np.logaddexp(0.0, a)
    return float((softplus - y * a).sum()), np.exp(a - softplus) - y

# --- _sigmoid_binary_cross_entropy_scalar
def _sigmoid_binary_cross_entropy_scalar(a, y):
    """(softplus(a) - y*a, sigmoid(a) - y) for one logit a and target y, as Python floats.

    exp is only taken of -|a|, so it cannot overflow, and log1p never sees 0.
    """
    if a >= 0.0:
        e = math.exp(-a)
        return a + math.log1p(e) - y * a, 1.0 / (1.0 + e) - y
    e = math.exp(a)
    return math.log1p(e) - y * a, e / (1.0 + e) - y

# --- _softmax_cross_entropy_one
def _softmax_cross_entropy_one(a, y):
    """(-log softmax(a)[y], softmax(a)) for one example's logits a and class id y."""
    shifted = a - a.max()
    p = np.exp(shifted)
    total = float(p.sum())
    p /= total
    return math.log(total) - float(shifted[y]), p

# --- _mean_squared_error_one
def _mean_squared_error_one(a, y):
    """sum_k (a - y)**2 / 2 for one example."""
    d = a - y
    return 0.5 * float(np.dot(d, d))
