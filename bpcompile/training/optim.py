"""Optimizers for generated layer modules: learning-rate schedules, gradient
clipping, and an `Optimizer` that puts them together around the module's own
in-place updates.

The update arithmetic lives in the generated module (`sgd_update`,
`adam_update`, `adamw_update`, with torch.optim's semantics, and the fused
`sgd_step`); this file only decides which update to call, with which learning
rate, on which (clipped) gradients, and keeps the state that a checkpoint
needs for an exact resume.

Schedules count optimizer steps, not epochs: update number t + 1 (t = 0, 1,
...) uses ``schedule.lr(base_lr, t)``.  This is torch's scheduler called after
every optimizer step, with its step sizes and lengths given in steps; a caller
that thinks in epochs multiplies by the steps per epoch (the decay points of
StepLR per epoch are then exactly the same).
"""

import json
import math
from dataclasses import asdict, dataclass
from typing import Dict

import numpy as np

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
# the state slots each update function keeps per parameter (torch.optim's names)
SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
         "adamw": ("exp_avg", "exp_avg_sq")}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}   # torch.optim's defaults
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8
CLIP_EPS = 1e-6          # clip_grad_norm_'s max_norm / (norm + 1e-6)


# --- checking numbers ---------------------------------------------------------------------

def _number(name, value, low=None, high=None, low_open=False, high_open=False):
    """`value` as a float, or a ValueError that names `name` and the allowed range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    x = float(value)
    too_low = low is not None and (x <= low if low_open else x < low)
    too_high = high is not None and (x >= high if high_open else x > high)
    if not math.isfinite(x) or too_low or too_high:
        bounds = _range(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return x


def _range(low, high, low_open, high_open):
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _count(name, value, low=0):
    """`value` as an int >= low (an integral float is accepted), or a ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value).is_integer() and value >= low):
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


# --- schedules ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Constant:
    """lr(t) = base_lr."""

    def lr(self, base_lr, step):
        return base_lr

    def config(self):
        return {"name": "constant"}


@dataclass(frozen=True)
class StepDecay:
    """torch's StepLR: lr(t) = base_lr * gamma ** (t // step_size)."""
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "step_size", _count("step_size", self.step_size, low=1))
        object.__setattr__(self, "gamma", _number("gamma", self.gamma, 0, 1, low_open=True))

    def lr(self, base_lr, step):
        return base_lr * self.gamma ** (step // self.step_size)

    def config(self):
        return {"name": "step", **asdict(self)}


@dataclass(frozen=True)
class Cosine:
    """torch's CosineAnnealingLR in its documented closed form:

        lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / total_steps)) / 2

    so lr(0) = base_lr and lr(total_steps) = eta_min (an absolute rate, as in
    torch).  Past total_steps the cosine rises again, as torch's does; a run of
    total_steps updates uses t = 0 .. total_steps - 1."""
    total_steps: int
    eta_min: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "total_steps", _count("total_steps", self.total_steps, low=1))
        object.__setattr__(self, "eta_min", _number("eta_min", self.eta_min, low=0))

    def lr(self, base_lr, step):
        return self.eta_min + (base_lr - self.eta_min) * (
            1 + math.cos(math.pi * step / self.total_steps)) / 2

    def config(self):
        return {"name": "cosine", **asdict(self)}


@dataclass(frozen=True)
class Warmup:
    """A linear warm-up, then `then` (torch's SequentialLR of LinearLR and `then`).

    For t < steps: lr(t) = base_lr * (start_factor + (1 - start_factor) * t / steps)
    (LinearLR with end_factor 1); from t = steps on, `then` runs as if it had
    just started: lr(t) = then.lr(base_lr, t - steps).  So the peak rate is
    base_lr, reached at step `steps`, and a cosine given total_steps = the run's
    steps minus `steps` ends at eta_min with the run."""
    steps: int
    then: object = Constant()
    start_factor: float = 1 / 3          # LinearLR's default

    def __post_init__(self):
        object.__setattr__(self, "steps", _count("warm-up steps", self.steps, low=1))
        object.__setattr__(self, "start_factor",
                           _number("warm-up start_factor", self.start_factor, 0, 1, low_open=True))
        if not hasattr(self.then, "lr") or isinstance(self.then, Warmup):
            raise ValueError(f"a warm-up is followed by a constant, step or cosine schedule, "
                             f"got {self.then!r}")

    def lr(self, base_lr, step):
        if step < self.steps:
            return base_lr * (self.start_factor + (1 - self.start_factor) * step / self.steps)
        return self.then.lr(base_lr, step - self.steps)

    def config(self):
        return {"name": "warmup", "steps": self.steps, "start_factor": self.start_factor,
                "then": self.then.config()}


def make_schedule(name="constant", total_steps=None, *, step_size=None, gamma=0.1, eta_min=0.0,
                  warmup_steps=0, warmup_start_factor=1 / 3):
    """The schedule the command line names: `name` in SCHEDULES, all lengths in
    optimizer steps; with warmup_steps > 0 a linear warm-up comes first and the
    cosine spans the remaining total_steps - warmup_steps."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {', '.join(SCHEDULES)}")
    warmup_steps = _count("warmup_steps", warmup_steps)
    if name == "constant":
        main = Constant()
    elif name == "step":
        if step_size is None:
            raise ValueError("the step schedule needs step_size (steps between decays)")
        main = StepDecay(step_size, gamma)
    else:
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps (the run's optimizer steps)")
        total_steps = _count("total_steps", total_steps, low=1)
        if warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be fewer than the run's "
                             f"{total_steps} steps to leave room for the cosine")
        main = Cosine(total_steps - warmup_steps, eta_min)
    return Warmup(warmup_steps, main, warmup_start_factor) if warmup_steps else main


# --- gradient clipping --------------------------------------------------------------------

def global_norm(grads):
    """The 2-norm of all gradients taken as one vector (a Python float)."""
    total = 0.0
    for g in grads.values():
        flat = np.ravel(g, order="K")      # no copy for a Fortran-ordered W
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ on a dict of gradients: when the global
    2-norm exceeds `max_norm`, every gradient is multiplied in place by
    max_norm / (norm + 1e-6).  Returns the norm before clipping.

    A non-finite norm (a NaN or an infinity in some gradient) is returned and
    the gradients are left as they are: torch with error_if_nonfinite=False
    would multiply them by NaN or 0, which hides where the problem was.  The
    caller decides (`Optimizer` refuses to update)."""
    max_norm = _number("max_norm", max_norm, low=0, low_open=True)
    norm = global_norm(grads)
    if math.isfinite(norm):
        scale = max_norm / (norm + CLIP_EPS)
        if scale < 1.0:
            _scale_in_place(grads, scale)
    return norm


def clip_grad_value(grads, clip_value):
    """torch.nn.utils.clip_grad_value_: every entry clamped to [-clip_value, clip_value],
    in place (NaNs stay NaN)."""
    clip_value = _number("clip_value", clip_value, low=0, low_open=True)
    for key, g in grads.items():
        if _writeable(g):
            np.clip(g, -clip_value, clip_value, out=g)
        else:
            grads[key] = np.asarray(np.clip(g, -clip_value, clip_value))


def _scale_in_place(grads, scale):
    for key, g in grads.items():
        if _writeable(g):
            g *= scale
        else:                       # a read-only or non-array gradient gets a scaled copy
            grads[key] = np.asarray(np.asarray(g) * scale)


def _writeable(g):
    return isinstance(g, np.ndarray) and g.flags.writeable


# --- the optimizer ------------------------------------------------------------------------

class Optimizer:
    """One of torch.optim's SGD, Adam or AdamW over a generated module's params.

    `name` is "sgd" (with `momentum` and `nesterov`), "adam" or "adamw" (with
    `betas` and `eps`); `weight_decay` defaults to torch's (0, 0, 0.01).  An
    option that the chosen optimizer does not use is a ValueError, not
    silently ignored.  `schedule` (default Constant()) gives the rate of each
    step from `lr`; `clip_norm` or `clip_value` clip the gradients first.

    `step(params, x, y, **kw)` computes the loss and gradients with
    ``module.value_and_grad(params, x, y, **kw)`` (kw: mask=, state= of a
    sequence module), clips, and updates params in place; it returns the
    loss before the step.  Plain SGD (no momentum, no weight decay, no
    clipping) calls the module's fused ``sgd_step`` instead, with the same
    result to rounding.  `update(params, grads)` is the second half alone, for
    loops that compute gradients themselves (truncated BPTT).

    `state_dict()` / `load_state_dict()` give and take a flat dict of NumPy
    arrays: the configuration (JSON), the number of steps taken (the
    schedule's position) and the module's update state, so that a resumed run
    continues exactly.
    """

    def __init__(self, module, name="sgd", lr=0.1, *, momentum=None, nesterov=False,
                 weight_decay=None, betas=None, eps=None, schedule=None, clip_norm=None,
                 clip_value=None):
        self.module = module
        self.name = _check_name(name)
        self.base_lr = _number("lr", lr, low=0, low_open=True)
        self.hyper = _hyperparameters(self.name, momentum, nesterov, weight_decay, betas, eps)
        self.schedule = Constant() if schedule is None else _check_schedule(schedule)
        self.clip_norm, self.clip_value = _check_clipping(clip_norm, clip_value)
        self.steps = 0
        self.state: Dict[str, np.ndarray] = {}
        self._loaded = False                 # a loaded state is laid out like params once
        self._check_module()

    # --- stepping ---------------------------------------------------------------------------
    @property
    def lr(self):
        """The rate the next step will use."""
        return self.schedule.lr(self.base_lr, self.steps)

    @property
    def slots(self):
        """The per-parameter state arrays the update keeps (torch's names)."""
        if self.fused or (self.name == "sgd" and self.hyper["momentum"] == 0.0):
            return ()
        return SLOTS[self.name]

    @property
    def fused(self):
        """Whether `step` can use the module's fused sgd_step (same update, fewer passes)."""
        return (self.name == "sgd" and self.hyper["momentum"] == 0.0
                and self.hyper["weight_decay"] == 0.0 and self.clip_norm is None
                and self.clip_value is None)

    def step(self, params, x, y, **kwargs):
        """One step on the batch (x, y); returns the loss before it."""
        if self.fused:
            loss = self.module.sgd_step(params, x, y, self.lr, **kwargs)
            self.steps += 1
            return loss
        loss, grads = self.module.value_and_grad(params, x, y, **kwargs)
        self.update(params, grads)
        return loss

    def epoch(self, params, x, y, batch_size, rng=None):
        """Steps on the batches of (x, y) in order, in one call of the module's sgd_epoch
        (one compiled call in a numba module); returns their mean loss.  None, having
        done nothing, unless the steps are the fused sgd_step's at one rate."""
        if not (self.fused and isinstance(self.schedule, Constant)
                and hasattr(self.module, "sgd_epoch")):
            return None
        keywords = {} if rng is None else {"rng": rng}
        loss = self.module.sgd_epoch(params, x, y, self.lr, batch_size, **keywords)
        self.steps += -(-len(x) // batch_size)
        return loss

    def update(self, params, grads):
        """Clip `grads` (in place), then update `params` in place at the scheduled rate.

        Raises ValueError, leaving params and the state untouched, when clipping
        finds a non-finite gradient norm."""
        if self.clip_value is not None:
            clip_grad_value(grads, self.clip_value)
        if self.clip_norm is not None:
            norm = clip_grad_norm(grads, self.clip_norm)
            if not math.isfinite(norm):
                raise ValueError(f"the gradient norm is {norm} at step {self.steps + 1}: "
                                 "training diverged (try a smaller lr); params were not updated")
        update = getattr(self.module, f"{self.name}_update", None)
        if update is None:
            raise ValueError(f"the module has no {self.name}_update: compile it again with "
                             "this version of bpcompile")
        if self._loaded:
            _match_layout(self.state, params)
            self._loaded = False
        update(params, grads, self.state, self.lr, **self.hyper)
        self.steps += 1

    # --- state ------------------------------------------------------------------------------
    def config(self):
        """The settings that define the run's updates, as JSON-ready data."""
        return {"optimizer": self.name, "lr": self.base_lr,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.hyper.items()},
                "clip_norm": self.clip_norm, "clip_value": self.clip_value,
                "schedule": self.schedule.config()}

    def state_dict(self):
        """{"config": 0-d str (JSON), "steps": 0-d int64, "state/<key>": a copy of each
        array of the module's update state}."""
        saved = {"config": np.array(json.dumps(self.config(), sort_keys=True)),
                 "steps": np.array(self.steps, dtype=np.int64)}
        for key, value in self.state.items():
            saved[f"state/{key}"] = np.array(value, copy=True)
        return saved

    def load_state_dict(self, saved):
        """Take the state of `state_dict()` (for example from a checkpoint).

        Refuses, with a ValueError that says what differs, a state saved with
        other settings, or whose arrays do not fit the module's params."""
        saved = dict(saved)
        unknown = sorted(k for k in saved if k not in ("config", "steps")
                         and not k.startswith("state/"))
        if unknown or "config" not in saved or "steps" not in saved:
            raise ValueError("not an optimizer state: expected config, steps and state/... keys"
                             + (f", got {', '.join(map(repr, unknown[:5]))}" if unknown else ""))
        _check_same_config(_read_json("optimizer config", saved["config"]), self.config())
        steps = _scalar_int("optimizer steps", saved["steps"])
        state = check_update_state(self.module, self.slots,
                                   {k[len("state/"):]: v for k, v in saved.items()
                                    if k.startswith("state/")}, steps)
        self.steps, self.state, self._loaded = steps, state, True

    def _check_module(self):
        needed = ["PARAMS"] + (["sgd_step"] if self.fused else
                               ["value_and_grad", f"{self.name}_update"])
        for attribute in needed:
            if not hasattr(self.module, attribute):
                raise ValueError(f"the module has no {attribute}: {self.name} needs a module "
                                 "compiled from a layer spec by this version of bpcompile")


def _match_layout(state, params):
    """Lay each slot out like its param, as the module's updates create them
    (np.empty_like): a loaded state is C-ordered, and init_params stores some W
    in Fortran order.  Called once, on the first update after load_state_dict."""
    for key, value in state.items():
        param = params.get(key.partition("/")[2]) if "/" in key else None
        if isinstance(param, np.ndarray) and value.shape == param.shape:
            laid_out = np.empty_like(param)
            np.copyto(laid_out, value)
            state[key] = laid_out


def _check_name(name):
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")
    return name


def _hyperparameters(name, momentum, nesterov, weight_decay, betas, eps):
    """The keyword arguments of the module's `<name>_update`, checked."""
    decay = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else _number(
        "weight_decay", weight_decay, low=0)
    if name == "sgd":
        for option, value in (("betas", betas), ("eps", eps)):
            if value is not None:
                raise ValueError(f"{option} applies to adam and adamw, not to sgd")
        momentum = 0.0 if momentum is None else _number("momentum", momentum, 0, 1, high_open=True)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov needs a momentum > 0")
        return {"momentum": momentum, "nesterov": bool(nesterov), "weight_decay": decay}
    if momentum is not None or nesterov:
        raise ValueError(f"momentum and nesterov apply to sgd; {name} uses betas")
    return {"betas": _check_betas(DEFAULT_BETAS if betas is None else betas),
            "eps": DEFAULT_EPS if eps is None else _number("eps", eps, low=0, low_open=True),
            "weight_decay": decay}


def _check_betas(betas):
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return tuple(_number(f"beta{i + 1}", b, 0, 1, high_open=True) for i, b in enumerate(betas))


def _check_clipping(clip_norm, clip_value):
    if clip_norm is not None and clip_value is not None:
        raise ValueError("clip_norm and clip_value are exclusive: choose one")
    return (None if clip_norm is None else _number("clip_norm", clip_norm, low=0, low_open=True),
            None if clip_value is None else _number("clip_value", clip_value, low=0, low_open=True))


def _check_schedule(schedule):
    if not all(callable(getattr(schedule, method, None)) for method in ("lr", "config")):
        raise ValueError(f"schedule must be a schedule of this module (Constant, StepDecay, "
                         f"Cosine, Warmup), got {schedule!r}")
    return schedule


def _check_same_config(saved, current):
    if saved == json.loads(json.dumps(current)):
        return
    keys = sorted(set(saved) | set(current), key=str) if isinstance(saved, dict) else ["config"]
    differences = [f"{k}: saved {_short(saved.get(k) if isinstance(saved, dict) else saved)}, "
                   f"now {_short(current.get(k))}" for k in keys
                   if not isinstance(saved, dict) or saved.get(k) != json.loads(
                       json.dumps(current.get(k)))]
    raise ValueError("the optimizer state was saved with other settings (" +
                     "; ".join(differences[:6]) + ")")


def _short(value):
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _read_json(what, array):
    array = np.asarray(array)
    if array.shape != () or array.dtype.kind != "U":
        raise ValueError(f"{what} must be a 0-d str array (JSON), got {array.dtype} {array.shape}")
    try:
        return json.loads(str(array))
    except ValueError as err:
        raise ValueError(f"{what} is not valid JSON ({err})") from None


def _scalar_int(what, array):
    array = np.asarray(array)
    if array.shape != () or array.dtype.kind not in "iu" or int(array) < 0:
        raise ValueError(f"{what} must be a 0-d integer >= 0, got {array.dtype} {array.shape}")
    return int(array)


def check_update_state(module, slots, state, steps):
    """The module update state `state` ("step", "<slot>/<param key>"), checked
    against `module.PARAMS` and copied (slots in `module.DTYPE`): every key is
    a known slot of a known parameter, every array has its parameter's shape,
    and the state is complete for a run of `steps` steps (every slot of every
    parameter exists once the first update ran, none before)."""
    shapes = {k: tuple(v) for k, v in module.PARAMS.items()}
    dtype = np.dtype(getattr(module, "DTYPE", np.float64))
    checked = {}
    for key, value in state.items():
        value = np.asarray(value)
        if key == "step":
            if _scalar_int("the update state's step", value) != steps:
                raise ValueError(f"the update state's step ({int(value)}) differs from the "
                                 f"optimizer's step count ({steps})")
            checked[key] = np.array(steps, dtype=np.int64)
            continue
        slot, _, param = key.partition("/")
        if slot not in slots or param not in shapes:
            raise ValueError(f"unexpected optimizer state {key!r} (this optimizer keeps "
                             f"{', '.join(slots) or 'no state'} per parameter)")
        if value.shape != shapes[param] or value.dtype.kind != "f":
            raise ValueError(f"optimizer state {key!r} is a {value.dtype} array of shape "
                             f"{value.shape}; the parameter's shape is {shapes[param]}")
        checked[key] = np.array(value, dtype=dtype)
    expected = {f"{slot}/{param}" for slot in slots for param in shapes}
    present = expected & set(checked)
    if steps == 0 and present:
        raise ValueError("the optimizer state has per-parameter state before its first step")
    if steps > 0 and present != expected:
        missing = sorted(expected - present)
        raise ValueError(f"the optimizer state after {steps} steps is incomplete: no "
                         f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return checked
