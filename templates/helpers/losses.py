# Helper functions that generated modules include, one block per function,
# separated by lines of the form `# --- name`.  Plain Python so it can be
# linted and tested; each needs only NumPy.

# --- _softmax_cross_entropy
def _softmax_cross_entropy(a, y, overwrite=False):
    """(mean over the batch of -log softmax(a)[b, y_b], softmax(a)), via log-sum-exp.

    overwrite=True computes in a's buffer (the caller passes it when nothing
    else reads a): no temporaries of a's size.
    """
    shifted = np.subtract(a, a.max(axis=1, keepdims=True), out=a if overwrite else None)
    picked = shifted[np.arange(len(y)), y]
    e = np.exp(shifted, out=shifted)
    total = e.sum(axis=1, keepdims=True)
    J = (np.log(total[:, 0]) - picked).sum() / len(y)
    e /= total
    return J, e

# --- _softmax_cross_entropy_grad
def _softmax_cross_entropy_grad(p, y, scale, overwrite=False):
    """(p - onehot(y)) * scale, without building the one-hot matrix: scale p
    (in its own buffer when overwrite=True), then subtract scale at each target class."""
    grad = np.multiply(p, scale, out=p if overwrite else None)
    if grad.ndim == 2 and np.ndim(scale) == 0:
        grad[np.arange(len(y)), y] -= scale
        return grad
    target = y[..., None]
    np.put_along_axis(grad, target, np.take_along_axis(grad, target, axis=-1) - scale, axis=-1)
    return grad

# --- _linear_steps
def _linear_steps(x, W, b, workspace=None):
    """x (..., n) @ W.T + b at every position, as one 2-D product with the bias added in
    place; into the buffer _workspace keeps under the name `workspace` where given."""
    rows = x.reshape(-1, x.shape[-1])
    out = _workspace(workspace, (len(rows), W.shape[0]), np.result_type(rows, W))
    np.matmul(rows, W.T, out=out)
    out += b
    return out.reshape(x.shape[:-1] + (W.shape[0],))

# --- _workspace
def _workspace(key, shape, dtype):
    """An empty array for a temporary that nothing reads after the call (sgd_step's,
    a kernel's).  From _WORKSPACE_BYTES on, or where this thread already keeps a
    buffer under this key that is large enough, a view of that buffer, the same
    memory at every call (each thread has its own, grown when a call needs more): a
    fresh array that large may cost a page fault per page when first written (at
    minibatch 64 about 4% of a language model's step, at minibatch 4 a quarter in a
    process of its own).  key None, or a smaller array: a new one."""
    size = 1
    for n in shape:
        size *= n
    kept = _WORKSPACE.__dict__
    buffer = kept.get(key)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        if key is None or size * np.dtype(dtype).itemsize < _WORKSPACE_BYTES:
            return np.empty(shape, dtype)
        buffer = kept[key] = np.empty(size, dtype)
    return buffer[:size].reshape(shape)

# --- _sum_steps
def _sum_steps(g):
    """g (..., n) summed over all leading axes, as the product ones @ g: BLAS
    does it faster than np.sum."""
    rows = g.reshape(-1, g.shape[-1])
    return np.ones(len(rows), g.dtype) @ rows

# --- _matmul_steps
def _matmul_steps(a, b):
    """a (..., n) @ b (n, m) as one 2-D matrix product over all leading axes.  With b
    stored transposed (a large weight from init_params) it is (b.T @ a.T).T: OpenBLAS
    multiplies a few rows by a transposed row-major matrix slowly."""
    rows = a.reshape(-1, a.shape[-1])
    if b.flags.f_contiguous and not b.flags.c_contiguous:
        product = (b.T @ rows.T).T
    else:
        product = rows @ b
    return product.reshape(a.shape[:-1] + (b.shape[-1],))

# --- _sigmoid_binary_cross_entropy
def _sigmoid_binary_cross_entropy(a, y):
    """(mean over the batch of the summed binary cross-entropy of sigmoid(a), sigmoid(a)).

    -[y log s + (1-y) log(1-s)] = softplus(a) - y*a, which never takes log(0).
    """
    softplus = np.logaddexp(0.0, a)
    J = (softplus - y * a).sum() / len(a)
    return J, np.exp(a - softplus)     # sigmoid(a) = exp(a - softplus(a)), no overflow

# --- _mean_squared_error
def _mean_squared_error(a, y):
    """Mean over the batch of sum_k (a - y)**2 / 2."""
    d = (a - y).ravel()
    return np.dot(d, d) / (2 * len(a))

# --- _softmax
def _softmax(a):
    """Class probabilities, computed from shifted logits so exp cannot overflow."""
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

# --- _masked_softmax_cross_entropy
def _masked_softmax_cross_entropy(a, y, mask, overwrite=False):
    """(mean of -log softmax(a)[y] over the positions where mask is 1, e, total, n).

    e = exp(a - max(a)) and total = its sum over the classes, so softmax(a) is
    e / total: the division is left to the gradient, which scales every row
    anyway.  n is the number of real positions.  overwrite=True computes e in
    a's buffer (the caller passes it when nothing else reads a): no temporary
    of a's size.  The rows are taken about a megabyte at a time, so that the
    four passes over each block (max, subtract, exp, sum) find it in cache.
    """
    # e is row-major, so that its rows are a view of it
    e = a if overwrite and a.flags.c_contiguous else np.empty(a.shape, dtype=a.dtype)
    rows, out = a.reshape(-1, a.shape[-1]), e.reshape(-1, e.shape[-1])
    targets = y.reshape(-1)
    picked = np.empty(len(rows), dtype=e.dtype)
    total = np.empty(len(rows), dtype=e.dtype)
    ones = np.ones(rows.shape[1], dtype=e.dtype)
    block = max(1, (1 << 20) // max(1, rows.shape[1] * e.itemsize))
    for start in range(0, len(rows), block):
        part, into = rows[start:start + block], out[start:start + block]
        np.subtract(part, part.max(axis=1, keepdims=True), out=into)
        picked[start:start + block] = into[np.arange(len(into)), targets[start:start + block]]
        np.exp(into, out=into)
        np.dot(into, ones, out=total[start:start + block])     # row sums: BLAS beats np.sum
    picked, total = picked.reshape(e.shape[:-1]), total.reshape(e.shape[:-1])
    n = max(mask.sum(), 1)
    return np.sum((np.log(total) - picked) * mask) / n, e, total, n

# --- _masked_softmax_cross_entropy_grad
def _masked_softmax_cross_entropy_grad(e, total, y, scale, overwrite=False):
    """(softmax - onehot(y)) * scale at every position, from e and total of
    _masked_softmax_cross_entropy: one pass scales each row of e by
    scale / total (in e's buffer when overwrite=True), then scale is
    subtracted at each target class."""
    grad = np.multiply(e, (scale / total)[..., None], out=e if overwrite else None)
    target = y[..., None]
    picked = np.take_along_axis(grad, target, axis=-1) - scale[..., None]
    np.put_along_axis(grad, target, picked, axis=-1)
    return grad

# --- _embedding_grad
def _embedding_grad(ids, g, vocab):
    """dJ/dE: each row of E gets the sum of the adjoints of the positions that read it."""
    grad = np.zeros((vocab, g.shape[-1]), dtype=g.dtype)
    np.add.at(grad, ids.ravel(), g.reshape(-1, g.shape[-1]))
    return grad

# --- _loss_scale
def _loss_scale(weight, reduction, count, empty):
    """The factor of each loss term in J: weight / count for a mean (raising
    ValueError(empty) when count is 0, where PyTorch would give nan), weight
    itself for a sum or no reduction."""
    if reduction in ("mean", "batchmean"):
        if count == 0:
            raise ValueError(empty)
        return weight / count
    return weight

# --- _softmax_cross_entropy_options
def _softmax_cross_entropy_options(a, y, mask, weights, ignore_index, reduction):
    """(J, dJ/dlosses factor `scale`, p - onehot(y)) of PyTorch's
    cross_entropy(a, y, weight=weights, ignore_index=ignore_index, reduction=reduction)
    over the last axis of a, at the positions where mask is 1 (mask None: all).

    Every position's loss -log softmax(a)[y] is weighted by weights[y] (1
    without weights) and by 0 where y is ignore_index or mask is 0.  mean
    divides the weighted sum by the sum of those weights; none returns the
    weighted losses, shape y.shape.  The gradient is delta * scale * g.
    """
    keep = np.ones(y.shape, dtype=a.dtype) if mask is None else mask.astype(a.dtype)
    if ignore_index is not None:
        keep = keep * (y != ignore_index)
    labels = np.where(keep > 0, y, 0)      # an ignored label may lie outside [0, K)
    shifted = a - a.max(axis=-1, keepdims=True)
    delta = np.exp(shifted)
    total = delta.sum(axis=-1, keepdims=True)
    losses = np.log(total[..., 0]) - np.take_along_axis(shifted, labels[..., None], -1)[..., 0]
    weight = keep if weights is None else keep * np.asarray(weights, dtype=a.dtype)[labels]
    count = weight.sum()
    if count == 0 and reduction == "mean":
        empty = ("y: every label is ignore_index or padding: the mean is over no positions "
                 "(PyTorch gives nan); use reduction: sum" if not keep.any() else
                 "y: the class weights of the labels in the batch sum to 0: the weighted mean "
                 "is 0/0 (PyTorch gives nan)")
    else:
        empty = ""
    scale = _loss_scale(weight, reduction, count, empty)
    delta /= total
    np.put_along_axis(delta, labels[..., None],
                      np.take_along_axis(delta, labels[..., None], -1) - 1, axis=-1)
    J = losses * scale if reduction == "none" else np.dot(losses.ravel(), scale.ravel())
    return J, scale, delta

# --- _sigmoid_binary_cross_entropy_options
def _sigmoid_binary_cross_entropy_options(a, y, mask, pos_weight, reduction):
    """(J, scale, delta) of PyTorch's binary_cross_entropy_with_logits(a, y,
    pos_weight=pos_weight, reduction=reduction), at the positions where mask is 1.

    Each element's loss is pos_weight*y*softplus(-a) + (1-y)*softplus(a), computed
    from the logit (no log(0)); delta is its derivative sigmoid(a)*(pos_weight*y
    + 1 - y) - pos_weight*y.  mean is over the kept elements, batchmean (the
    default) sums over the outputs and averages over the kept positions, none
    returns every element's loss (0 on padding).  The gradient is delta * scale * g.
    """
    keep = (np.ones(a.shape[:-1], dtype=a.dtype) if mask is None else mask.astype(a.dtype))[..., None]
    softplus = np.logaddexp(0.0, a)                   # softplus(a); softplus(-a) = softplus(a) - a
    s = np.exp(a - softplus)                          # sigmoid(a), no overflow
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=a.dtype)
    losses = pw * y * (softplus - a) + (1 - y) * softplus
    delta = s * (pw * y + 1 - y) - pw * y
    positions = keep.sum()
    count = positions * a.shape[-1] if reduction == "mean" else positions
    scale = _loss_scale(np.broadcast_to(keep, a.shape), reduction, count, "mask: every position is padding")
    J = losses * scale if reduction == "none" else np.dot(losses.ravel(), scale.ravel())
    return J, scale, delta

# --- _mean_squared_error_options
def _mean_squared_error_options(a, y, mask, reduction, half):
    """(J, scale, delta) of PyTorch's mse_loss(a, y, reduction=reduction) at the
    positions where mask is 1: (a - y)**2 per element, mean over the kept elements,
    sum, or none (every element, 0 on padding).  half=True with batchmean is
    bpcompile's default mse: (a - y)**2 / 2, summed over the outputs, mean over the
    kept positions.  The gradient is delta * scale * g."""
    keep = (np.ones(a.shape[:-1], dtype=a.dtype) if mask is None else mask.astype(a.dtype))[..., None]
    d = a - y
    factor = 0.5 if half else 1.0
    positions = keep.sum()
    count = positions * a.shape[-1] if reduction == "mean" else positions
    scale = _loss_scale(np.broadcast_to(keep, a.shape), reduction, count, "mask: every position is padding")
    J = factor * d * d * scale if reduction == "none" else factor * np.dot((d * d).ravel(), scale.ravel())
    return J, scale, (2 * factor) * d
