# Layers with a train/eval mode (dropout, batch norm) and where their randomness
# comes from.  Blocks separated by `# --- name` lines, like losses.py.

# --- _mode_arguments
def _mode_arguments(train, rng, update_buffers=False):
    """(train, rng, update_buffers) checked: train and update_buffers bools; rng a
    numpy.random.Generator, or None for the module's own generator _RNG (seeded with 0
    when the module is loaded)."""
    for name, flag in (("train", train), ("update_buffers", update_buffers)):
        if flag is not True and flag is not False:
            raise ValueError(f"{name}: expected True or False, got {_describe(flag)}")
    if rng is None:
        rng = _RNG
    elif not isinstance(rng, np.random.Generator):
        raise ValueError("rng: expected a numpy.random.Generator (np.random.default_rng(seed)) "
                         f"or None, got {_describe(rng)}")
    return train, rng, update_buffers and train

# --- _dropout
def _dropout(x, p, rng, train):
    """(out, mask): inverted dropout.  In train mode each unit is kept with probability
    1 - p and scaled by 1/(1 - p), mask holding 0 or 1/(1 - p); in eval mode (or with
    p = 0) out is x itself and mask None."""
    if not train or p == 0:
        return x, None
    mask = (rng.random(x.shape) >= p).astype(x.dtype)
    mask *= x.dtype.type(1.0 / (1.0 - p))
    return x * mask, mask

# --- _dropout_grad
def _dropout_grad(g, mask):
    """dJ/dx of dropout: the kept units' adjoints, scaled as in the forward pass."""
    return g if mask is None else g * mask

# --- _batchnorm
def _batchnorm(x, gamma, beta, params, layer, momentum, eps, train, update_buffers):
    """(out, saved): batch normalization over every axis but 1 (features of (B, F),
    channels of (B, C, H, W)), as torch.nn.BatchNorm1d/2d.  Train mode normalizes by the
    batch mean and biased variance; with update_buffers it also updates the running
    statistics params[layer + ".running_mean"] and [".running_var"] in place, the
    variance unbiased: r = (1 - momentum) r + momentum s.  Eval mode normalizes by the
    running statistics."""
    running_mean, running_var = params[layer + ".running_mean"], params[layer + ".running_var"]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    count = x.size // x.shape[1]
    if train:
        mean = x.mean(axis=axes)
        centered = x - mean.reshape(shape)
        var = np.mean(centered * centered, axis=axes)
    if train and update_buffers:
        if count < 2:       # the unbiased variance of one value is undefined (PyTorch refuses too)
            raise ValueError(f"x: a batch norm training step needs more than one value per "
                             f"channel, got input shape {x.shape}")
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * count / (count - 1)) * var
    if not train:
        centered = x - running_mean.reshape(shape)
        var = running_var
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    xhat = centered * inv_std.reshape(shape)
    return xhat * gamma.reshape(shape) + beta.reshape(shape), (xhat, inv_std, train)

# --- _batchnorm_grad
def _batchnorm_grad(g, saved, gamma, need_dx=True):
    """(dJ/dx, dJ/dgamma, dJ/dbeta).  In train mode the mean and variance depend on x:
    dJ/dx = gamma/std * (g - mean(g) - xhat * mean(g * xhat)), the means per channel;
    in eval mode they are constants and dJ/dx = gamma/std * g."""
    xhat, inv_std, train = saved
    axes = (0,) + tuple(range(2, g.ndim))
    shape = (1, -1) + (1,) * (g.ndim - 2)
    dbeta = g.sum(axis=axes)
    dgamma = (g * xhat).sum(axis=axes)
    if not need_dx:
        return None, dgamma, dbeta
    scale = (gamma * inv_std).reshape(shape)
    if not train:
        return g * scale, dgamma, dbeta
    count = g.size // g.shape[1]
    dx = scale * (g - (dbeta / count).reshape(shape) - xhat * (dgamma / count).reshape(shape))
    return dx, dgamma, dbeta
