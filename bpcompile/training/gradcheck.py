"""Central finite differences in float64: the independent oracle for gradients."""

from dataclasses import dataclass

import inspect

import numpy as np

SHOWN = 3           # entries of each gradient that a check reports side by side


@dataclass
class GradientCheck:
    """One gradient against its finite differences: the norm-wise relative error over
    the `checked` entries, and a few of them as (index, analytic, numeric)."""

    name: str
    error: float
    entries: list
    checked: int


def _shown(analytic, numeric, indices, shape):
    """The first SHOWN entries as (index tuple, analytic, numeric)."""
    return [(tuple(int(i) for i in np.unravel_index(k, shape)), float(a), float(n))
            for k, a, n in zip(indices[:SHOWN], analytic[:SHOWN], numeric[:SHOWN])]


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
    return {c.name: c.error for c in module_checks(module, args, h)}


def module_checks(module, args, h=1e-6):
    """A GradientCheck of each WRT gradient of a compiled program module, in WRT order."""
    args = [np.array(a, dtype=np.float64) for a in args]
    _, grads = module.value_and_grad(*args)
    checks = []
    for name, grad in zip(module.WRT, grads):
        index = module.INPUTS.index(name)
        numeric = numerical_gradient(module.evaluate, args, index, h)
        analytic = np.broadcast_to(np.asarray(grad, dtype=np.float64), numeric.shape)
        entries = _shown(analytic.reshape(-1), numeric.reshape(-1), np.arange(numeric.size),
                         numeric.shape)
        checks.append(GradientCheck(name, relative_error(analytic, numeric), entries, numeric.size))
    return checks


NOISE_MARGIN = 100          # entries below this many rounding units of J / h are noise
RESOLVED_ERROR = 1e-6       # the relative error that such an entry counts as


def layer_gradient_errors(module, params, x, y, max_entries=None, seed=0, h=1e-6, richardson=False):
    """Norm-wise relative error of each parameter gradient of a layer module.

    Compares `value_and_grad` with central differences of `forward`'s loss,
    over every entry of every parameter, or over `max_entries` random
    entries per parameter (the same entries on both sides).  richardson=True
    combines steps h and h/2 into a fourth-order estimate, so that a larger h
    (less rounding noise on tiny gradient entries) keeps a small truncation error.
    """
    checks = layer_gradient_checks(module, params, x, y, max_entries, seed, h, richardson)
    return {key: c.error for key, c in checks.items()}


def layer_gradient_checks(module, params, x, y, max_entries=None, seed=0, h=1e-6, richardson=False):
    """{parameter key: GradientCheck}: what `layer_gradient_errors` measures, with a
    few of the checked entries side by side.  The parameters are PARAMS (batch norm's
    running statistics are no parameters); dropout's masks are held fixed by giving every
    evaluation a generator seeded alike; a `loss: none` module is checked through its
    vjp with a random seed, as J = sum(seed * output)."""
    rng = np.random.default_rng(seed)
    loss, value_and_grad = _objective(module, params, x, y, seed)
    J, grads = value_and_grad(params)
    J = np.sum(J)
    # Central differences cannot resolve an entry smaller than their rounding noise,
    # about eps * |J| / h; a gradient that is zero by structure (a bias before a batch
    # norm) is measured as that noise.  Below NOISE_MARGIN times the noise, an entry
    # counts as resolved: the error is taken relative to noise / RESOLVED_ERROR at least.
    noise = NOISE_MARGIN * np.finfo(np.float64).eps * max(1.0, abs(float(J))) / h
    checks = {}
    for key in module.PARAMS:
        value = params[key]
        flat = value.reshape(-1)
        entries = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            entries = np.sort(rng.choice(flat.size, max_entries, replace=False))
        numeric = np.empty(len(entries))
        for k, i in enumerate(entries):
            step = h * max(1.0, abs(flat[i]))
            numeric[k] = _central(loss, params, flat, i, step)
            if richardson:
                numeric[k] = (4 * _central(loss, params, flat, i, step / 2) - numeric[k]) / 3
        analytic = np.asarray(grads[key], dtype=np.float64).reshape(-1)[entries]
        floor = noise * np.sqrt(len(entries)) / RESOLVED_ERROR
        checks[key] = GradientCheck(key, relative_error(analytic, numeric, floor),
                                    _shown(analytic, numeric, entries, value.shape), len(entries))
    return checks


def _objective(module, params, x, y, seed):
    """(loss(params) -> J, value_and_grad(params) -> (J, grads)) of a layer module on (x, y)."""
    def modes():          # the same dropout masks in every evaluation
        return {"rng": np.random.default_rng(seed)} if _has_modes(module) else {}
    if not hasattr(module, "value_and_grad"):          # loss: none -> a vjp with a fixed seed
        shape = module.forward(params, x, **modes())[0].shape
        direction = np.random.default_rng(seed + 1).normal(size=shape).astype(module.DTYPE)
        def loss(params):
            return float(np.vdot(direction, module.forward(params, x, **modes())[0]))
        def value_and_grad(params):
            return loss(params), module.vjp(params, x, direction, **modes())[1]
        return loss, value_and_grad
    # J is a number, or per-example losses (reduction: none) whose sum the gradients are of
    return (lambda params: float(np.sum(module.forward(params, x, y, **modes())[0])),
            lambda params: module.value_and_grad(params, x, y, **modes()))


def _has_modes(module):
    """Whether the module's functions take train=/rng= (it has dropout or batch norm)."""
    return "rng" in inspect.signature(module.forward).parameters


def _central(loss, params, flat, i, step):
    """(J(p + step e_i) - J(p - step e_i)) / (2 step), with flat a view of a parameter."""
    original = flat[i]
    flat[i] = original + step
    plus = loss(params)
    flat[i] = original - step
    minus = loss(params)
    flat[i] = original
    return (plus - minus) / (2 * step)


def random_problem(module, batch=4, seed=0, scale=0.1):
    """Random float64 parameters (init plus noise), inputs and targets for a layer module."""
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    for key in params:
        params[key] = params[key] + rng.normal(0.0, scale, params[key].shape).astype(params[key].dtype)
    if module.SEQUENCE:          # (B, T) token ids or (B, T, I) features, per-step targets
        steps = 4
        x = (rng.integers(0, module.VOCAB, (batch, steps)) if hasattr(module, "VOCAB")
             else rng.normal(size=(batch, steps) + tuple(module.INPUT_SHAPE)).astype(module.DTYPE))
        if module.LOSS == "softmax_cross_entropy":
            return params, x, rng.integers(0, module.OUTPUTS, (batch, steps))
        targets = rng.normal(size=(batch, steps, module.OUTPUTS))
        if module.LOSS == "sigmoid_binary_cross_entropy":
            targets = rng.integers(0, 2, targets.shape)
        return params, x, targets.astype(module.DTYPE)
    x = rng.normal(size=(batch,) + tuple(module.INPUT_SHAPE)).astype(module.DTYPE)
    if module.LOSS == "none":                 # the module's output is the result: no targets
        y = None
    elif module.LOSS == "softmax_cross_entropy":
        y = rng.integers(0, module.OUTPUTS, batch)
    elif module.LOSS == "mse":
        y = rng.normal(size=(batch, module.OUTPUTS)).astype(module.DTYPE)
    else:
        y = rng.integers(0, 2, (batch, module.OUTPUTS)).astype(module.DTYPE)
    return params, x, y


def one_sided_gradients(module, args, h=1e-6):
    """name -> (backward difference, forward difference) of a program module's value
    in each WRT input, summed over its entries: where a function has a kink
    (relu at 0, max(x, y) at x = y) the two disagree, where it is smooth they agree."""
    args = [np.array(a, dtype=np.float64) for a in args]
    base = np.sum(module.evaluate(*args))
    sides = {}
    for name in module.WRT:
        x = args[module.INPUTS.index(name)]
        flat = x.reshape(-1)
        left = right = 0.0
        for i in range(flat.size):
            original = flat[i]
            step = h * max(1.0, abs(original))
            flat[i] = original + step
            right += (np.sum(module.evaluate(*args)) - base) / step
            flat[i] = original - step
            left += (base - np.sum(module.evaluate(*args))) / step
            flat[i] = original
        sides[name] = (float(left), float(right))
    return sides
