# Optimizer steps that every generated layer module includes after sgd_step:
# torch.optim's SGD, Adam and AdamW as functions of (params, grads, state).
# The state is a dict of NumPy arrays only, so that np.savez can store it:
# "step" (0-d int64) and "<slot>/<param key>" arrays laid out like the param.
# Blocks separated by `# --- name` lines, like losses.py.

# --- sgd_update
def sgd_update(params, grads, state, lr, momentum=0.0, dampening=0.0, nesterov=False,
               weight_decay=0.0):
    """One step of SGD on params, in place, as torch.optim.SGD takes it.

    For each param p with gradient g (grads is not modified):

        g = g + weight_decay * p
        b = g on the first step, else momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b           (only when momentum != 0)
        p = p - lr * g

    state is a dict, empty ({}) before the first step, passed on every call:
    "step" and, with momentum, "momentum_buffer/<key>" (b).
    """
    lr = _hyperparameter("lr", lr)
    momentum = _hyperparameter("momentum", momentum)
    dampening = _hyperparameter("dampening", dampening, high=1.0)
    weight_decay = _hyperparameter("weight_decay", weight_decay)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("nesterov: Nesterov momentum needs momentum > 0 and dampening = 0, "
                         f"got momentum={momentum}, dampening={dampening}")
    slots = ("momentum_buffer",) if momentum else ()
    checked = _checked_update(params, grads, state, slots)
    _next_step(state)
    for key, p, g in checked:
        scratch = np.empty_like(p)
        if weight_decay:                                 # g = g + weight_decay * p, in a new
            decayed = np.multiply(p, weight_decay)       # array (grads stays as it was)
            g = np.add(decayed, g, out=decayed)
        if momentum:
            b = state.get("momentum_buffer/" + key)
            if b is None:                                # b = g, a copy laid out like p
                b = state["momentum_buffer/" + key] = np.empty_like(p)
                np.copyto(b, g)
            else:                                        # b = momentum * b + (1 - dampening) * g
                b *= momentum
                b += np.multiply(g, 1.0 - dampening, out=scratch)
            if nesterov:                                 # g = g + momentum * b
                g = np.add(np.multiply(b, momentum, out=scratch), g, out=scratch)
            else:
                g = b
        # p = p - lr * g
        p -= np.multiply(g, lr, out=scratch)

# --- adam_update
def adam_update(params, grads, state, lr=0.001, betas=(0.9, 0.999), eps=1e-08,
                weight_decay=0.0, amsgrad=False):
    """One step of Adam on params, in place, as torch.optim.Adam takes it (the weight
    decay is added to the gradient, an L2 penalty; adamw_update decouples it).

    For each param p with gradient g (grads is not modified), at step t = 1, 2, ...:

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g                   (state "exp_avg/<key>")
        v = beta2 * v + (1 - beta2) * g**2                (state "exp_avg_sq/<key>")
        v_max = max(v_max, v), used as v below            (amsgrad: "max_exp_avg_sq/<key>")
        p = p - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    state is a dict, empty ({}) before the first step, passed on every call;
    state["step"] is t.
    """
    lr, beta1, beta2, eps, weight_decay = _adam_hyperparameters(lr, betas, eps, weight_decay)
    _adam(params, grads, state, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled=False)

# --- adamw_update
def adamw_update(params, grads, state, lr=0.001, betas=(0.9, 0.999), eps=1e-08,
                 weight_decay=0.01, amsgrad=False):
    """One step of AdamW on params, in place, as torch.optim.AdamW takes it: the
    weight decay shrinks the param itself, p = p - lr * weight_decay * p, before
    the step of adam_update without weight decay (same formulas, same state keys)."""
    lr, beta1, beta2, eps, weight_decay = _adam_hyperparameters(lr, betas, eps, weight_decay)
    _adam(params, grads, state, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled=True)

# --- _adam
def _adam(params, grads, state, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled):
    """The step of adam_update (decoupled=False) and adamw_update (decoupled=True)."""
    slots = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
    checked = _checked_update(params, grads, state, slots)
    t = _next_step(state)
    correction1, correction2 = 1.0 - beta1**t, 1.0 - beta2**t
    for key, p, g in checked:
        m, v = (_slot(state, slot, key, p) for slot in slots[:2])
        scratch = np.empty_like(p)
        if weight_decay and decoupled:
            p *= 1.0 - lr * weight_decay                 # p = p - lr * weight_decay * p
        elif weight_decay:                               # g = g + weight_decay * p, in a new
            decayed = np.multiply(p, weight_decay)       # array (grads stays as it was)
            g = np.add(decayed, g, out=decayed)
        m *= beta1                                       # m = beta1 * m + (1 - beta1) * g
        m += np.multiply(g, 1.0 - beta1, out=scratch)
        v *= beta2                                       # v = beta2 * v + (1 - beta2) * g**2
        np.multiply(g, g, out=scratch)
        v += np.multiply(scratch, 1.0 - beta2, out=scratch)
        if amsgrad:                                      # v_max = max(v_max, v), used as v
            v_max = _slot(state, "max_exp_avg_sq", key, p)
            v = np.maximum(v_max, v, out=v_max)
        denominator = np.divide(v, correction2, out=scratch)    # sqrt(v / (1 - beta2**t)) + eps
        np.sqrt(denominator, out=denominator)
        denominator += eps
        # p = p - lr * (m / (1 - beta1**t)) / denominator
        step = np.divide(m, denominator, out=scratch)
        p -= np.multiply(step, lr / correction1, out=step)

# --- _adam_hyperparameters
def _adam_hyperparameters(lr, betas, eps, weight_decay):
    """(lr, beta1, beta2, eps, weight_decay) as floats; ValueError naming a bad one."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    return (_hyperparameter("lr", lr),
            _hyperparameter("betas[0]", betas[0], high=1.0, below=True),
            _hyperparameter("betas[1]", betas[1], high=1.0, below=True),
            _hyperparameter("eps", eps),
            _hyperparameter("weight_decay", weight_decay))

# --- _hyperparameter
def _hyperparameter(name, value, high=None, below=False):
    """value as a Python float (so that the update computes in the param's dtype),
    or ValueError naming it unless it is finite, >= 0 and <= high (< high when below)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    fits = 0.0 <= number < float("inf") and (
        high is None or (number < high if below else number <= high))
    if isinstance(value, bool) or not fits:
        bounds = "a finite number >= 0" if high is None else \
            f"a number in [0, {high:g}{')' if below else ']'}"
        raise ValueError(f"{name}: expected {bounds}, got {value!r}")
    return number

# --- _checked_update
def _checked_update(params, grads, state, slots):
    """[(key, param, gradient in the param's dtype)], once params, grads and the state's
    arrays are checked: a bad argument raises ValueError before anything changes."""
    # the parameters are PARAMS; anything else in the params dict (batch norm's running
    # statistics, BUFFERS) is no parameter and takes no step
    if not isinstance(params, dict) or not set(PARAMS) <= set(params):
        given = sorted(map(str, params)) if isinstance(params, dict) else _describe(params)
        raise ValueError(f"params: expected a dict with the keys of PARAMS {sorted(PARAMS)}, "
                         f"got {given}")
    if not isinstance(grads, dict) or set(grads) != set(PARAMS):
        given = sorted(map(str, grads)) if isinstance(grads, dict) else _describe(grads)
        raise ValueError(f"grads: expected a dict with the keys of PARAMS {sorted(PARAMS)}, "
                         f"got {given}")
    if not isinstance(state, dict):
        raise ValueError("state: expected a dict (empty, {}, before the first step), "
                         f"got {_describe(state)}")
    step = state.get("step", np.zeros((), np.int64))
    if not isinstance(step, np.ndarray) or step.shape != () or step.dtype.kind not in "iu":
        raise ValueError(f"state['step']: expected a 0-d integer array, got {_describe(step)}")
    checked = []
    for key in PARAMS:
        p = params[key]
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or not p.flags.writeable:
            raise ValueError(f"params[{key!r}]: expected a writeable float array, "
                             f"got {_describe(p)}")
        g = grads[key]
        if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype.kind not in "biuf":
            raise ValueError(f"grads[{key!r}]: expected an array of shape {p.shape}, "
                             f"got {_describe(g)}")
        for slot in slots:
            value = state.get(f"{slot}/{key}")
            if value is not None and (not isinstance(value, np.ndarray)
                                      or value.shape != p.shape or value.dtype != p.dtype):
                raise ValueError(f"state['{slot}/{key}']: expected a {p.dtype} array of shape "
                                 f"{p.shape}, got {_describe(value)}")
        checked.append((key, p, g.astype(p.dtype, copy=False)))
    return checked

# --- _next_step
def _next_step(state):
    """Count one more step in state["step"] (a 0-d int64 array); return the new count."""
    t = int(state.get("step", 0)) + 1
    state["step"] = np.array(t, dtype=np.int64)
    return t

# --- _slot
def _slot(state, slot, key, p):
    """state["<slot>/<key>"], created as zeros laid out like p (an F-ordered W stays
    F-ordered) when the state does not hold it yet."""
    name = f"{slot}/{key}"
    if name not in state:
        state[name] = np.zeros_like(p)
    return state[name]
