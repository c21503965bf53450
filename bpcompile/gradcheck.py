"""Central finite differences in float64: the independent oracle for gradients."""

import numpy as np


def numerical_gradient(f, args, index, h=1e-6):
    """d sum(f(*args) * 1) / d args[index] by central differences, element by element."""
    args = [np.array(a, dtype=np.float64) for a in args]
    x = args[index]
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        step = h * max(1.0, abs(original))
        flat[i] = original + step
        plus = np.sum(f(*args))
        flat[i] = original - step
        minus = np.sum(f(*args))
        flat[i] = original
        gflat[i] = (plus - minus) / (2 * step)
    return grad


def relative_error(analytic, numeric, floor=1e-12):
    """||a - n|| / max(||a||, ||n||): the norm-wise relative error of a gradient.

    For a scalar this is |a - n| / max(|a|, |n|).  Norm-wise, so that entries
    far smaller than the gradient's scale (where finite differences only see
    rounding noise) do not dominate.
    """
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    if not a.size:
        return 0.0
    scale = max(np.linalg.norm(a), np.linalg.norm(n), floor)
    return float(np.linalg.norm(a - n) / scale)


def check_module(module, args, h=1e-6):
    """Max relative error of each WRT gradient of a compiled program module."""
    args = [np.array(a, dtype=np.float64) for a in args]
    _, grads = module.value_and_grad(*args)
    errors = {}
    for name, grad in zip(module.WRT, grads):
        index = module.INPUTS.index(name)
        numeric = numerical_gradient(module.evaluate, args, index, h)
        errors[name] = relative_error(grad, numeric)
    return errors
