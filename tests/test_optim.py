"""bpcompile/training/optim.py: schedules, clipping and the Optimizer, each checked
against torch's formulas written out here in float64 (no torch needed)."""

import json
import math

import numpy as np
import pytest

from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.training.optim import (Constant, Cosine, Optimizer, StepDecay, Warmup,
                                      clip_grad_norm, clip_grad_value, make_schedule)


# --- torch.optim's algorithms, as written in its documentation (float64) -------------------

def reference_sgd(p, g, buf, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD (dampening 0) on one tensor; returns (p, buf)."""
    d = g + weight_decay * p
    if momentum:
        buf = d.copy() if buf is None else momentum * buf + d
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


def reference_adam(p, g, m, v, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                   decoupled=False):
    """torch.optim.Adam (decoupled=False) or AdamW (True) on one tensor; t is 1-based."""
    b1, b2 = betas
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


class LinearRegression:
    """A stand-in for a generated module: J = mean over the batch of |W x + b - y|^2 / 2,
    with the update functions of the contract written from torch's pseudo-code."""
    PARAMS = {"W": (2, 3), "b": (2,)}
    DTYPE = np.dtype(np.float64)

    def __init__(self):
        self.calls = []

    def init_params(self, seed=0):
        rng = np.random.default_rng(seed)
        return {"W": rng.normal(size=(2, 3)), "b": rng.normal(size=2)}

    def value_and_grad(self, params, x, y):
        r = x @ params["W"].T + params["b"] - y
        return 0.5 * np.mean(np.sum(r * r, axis=1)), {"W": r.T @ x / len(x), "b": r.mean(axis=0)}

    def sgd_step(self, params, x, y, lr):
        self.calls.append(("sgd_step", lr))
        J, grads = self.value_and_grad(params, x, y)
        for k in params:
            params[k] -= lr * grads[k]
        return J

    def sgd_update(self, params, grads, state, lr, momentum=0.0, dampening=0.0, nesterov=False,
                   weight_decay=0.0):
        self.calls.append(("sgd_update", lr, momentum, nesterov, weight_decay))
        state["step"] = np.array(int(state.get("step", 0)) + 1, dtype=np.int64)
        for k, p in params.items():
            d = grads[k] + weight_decay * p
            if momentum:
                key = f"momentum_buffer/{k}"
                if key not in state:
                    state[key] = d.copy()
                else:
                    state[key] *= momentum
                    state[key] += (1 - dampening) * d
                d = d + momentum * state[key] if nesterov else state[key]
            p -= lr * d

    def adam_update(self, params, grads, state, lr=0.001, betas=(0.9, 0.999), eps=1e-08,
                    weight_decay=0.0, amsgrad=False, decoupled=False):
        self.calls.append(("adamw_update" if decoupled else "adam_update", lr, betas, eps,
                           weight_decay))
        t = int(state.get("step", 0)) + 1
        state["step"] = np.array(t, dtype=np.int64)
        b1, b2 = betas
        for k, p in params.items():
            g = grads[k]
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
            m = state.setdefault(f"exp_avg/{k}", np.zeros_like(p))
            v = state.setdefault(f"exp_avg_sq/{k}", np.zeros_like(p))
            m += (1 - b1) * (g - m)
            v *= b2
            v += (1 - b2) * g * g
            denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
            p -= lr / (1 - b1 ** t) * m / denom

    def adamw_update(self, params, grads, state, lr=0.001, betas=(0.9, 0.999), eps=1e-08,
                     weight_decay=0.01, amsgrad=False):
        self.adam_update(params, grads, state, lr, betas, eps, weight_decay, amsgrad, True)


def batches(n=20, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(5, 3)), rng.normal(size=(5, 2))) for _ in range(n)]


def copy(params):
    return {k: np.array(v, copy=True) for k, v in params.items()}


# --- schedules ------------------------------------------------------------------------------

def test_step_decay_is_torch_steplr_closed_and_recursive():
    schedule = StepDecay(step_size=3, gamma=0.5)
    assert [schedule.lr(0.8, t) for t in range(8)] == [0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2]
    lr = 0.3                                    # torch's recursion: lr *= gamma at multiples
    for t in range(40):
        if t and t % 3 == 0:
            lr *= 0.5
        assert schedule.lr(0.3, t) == pytest.approx(lr, rel=1e-12)


def test_cosine_matches_the_documented_closed_form_and_torchs_recursion():
    T, base, eta_min = 7, 0.1, 0.01
    schedule = Cosine(T, eta_min)
    assert schedule.lr(base, 0) == base
    assert schedule.lr(base, T) == pytest.approx(eta_min, abs=1e-15)
    assert Cosine(4).lr(1.0, 1) == pytest.approx(0.8535533905932737, rel=1e-15)   # (1+cos(pi/4))/2
    # CosineAnnealingLR.get_lr, unperturbed, for three periods (it rises again past T)
    lr = base
    for t in range(1, 3 * T + 1):
        if (t - 1 - T) % (2 * T) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2
        else:
            lr = ((1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                  * (lr - eta_min) + eta_min)
        assert schedule.lr(base, t) == pytest.approx(lr, abs=1e-12 * base), t


def test_warmup_is_linearlr_then_the_schedule_from_its_start():
    schedule = Warmup(4, Cosine(10, 0.0), start_factor=0.25)
    base = 2.0
    # LinearLR: base * (start + (1 - start) * t / N) for t < N
    assert [schedule.lr(base, t) for t in range(4)] == pytest.approx([0.5, 0.875, 1.25, 1.625],
                                                                     rel=1e-15)
    for t in range(4, 20):
        expected = base * (1 + math.cos(math.pi * (t - 4) / 10)) / 2
        assert schedule.lr(base, t) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    stepped = Warmup(2, StepDecay(3, 0.1))
    assert [stepped.lr(1.0, t) for t in range(9)] == pytest.approx(
        [1 / 3, 2 / 3, 1, 1, 1, 0.1, 0.1, 0.1, 0.01], rel=1e-12)


def test_make_schedule_builds_what_the_command_line_names():
    assert make_schedule() == Constant()
    assert make_schedule("step", step_size=5, gamma=0.5) == StepDecay(5, 0.5)
    assert make_schedule("cosine", 100, eta_min=1e-4) == Cosine(100, 1e-4)
    assert make_schedule("cosine", 100, warmup_steps=10, warmup_start_factor=0.1) == Warmup(
        10, Cosine(90, 0.0), 0.1)
    assert make_schedule("constant", warmup_steps=3).lr(0.3, 0) == pytest.approx(0.1)


@pytest.mark.parametrize("call, message", [
    (lambda: make_schedule("linear"), "unknown schedule 'linear'"),
    (lambda: make_schedule("step"), "needs step_size"),
    (lambda: make_schedule("cosine"), "needs total_steps"),
    (lambda: make_schedule("cosine", 10, warmup_steps=10), "fewer than the run's 10 steps"),
    (lambda: StepDecay(0), "step_size must be a whole number >= 1"),
    (lambda: StepDecay(2.5), "step_size must be a whole number"),
    (lambda: StepDecay(2, gamma=0), "gamma must be a finite number > 0"),
    (lambda: StepDecay(2, gamma=1.5), "gamma must be a finite number > 0 and <= 1"),
    (lambda: Cosine(0), "total_steps must be a whole number >= 1"),
    (lambda: Cosine(5, eta_min=-1), "eta_min must be a finite number >= 0"),
    (lambda: Cosine(5, eta_min=float("nan")), "eta_min must be a finite number"),
    (lambda: Warmup(0), "warm-up steps must be a whole number >= 1"),
    (lambda: Warmup(3, start_factor=0), "start_factor must be a finite number > 0"),
    (lambda: Warmup(3, Warmup(2)), "followed by a constant, step or cosine"),
    (lambda: make_schedule("constant", warmup_steps=-1), "warmup_steps must be a whole number"),
])
def test_schedule_settings_are_checked(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- clipping -------------------------------------------------------------------------------

def test_clip_grad_norm_scales_all_gradients_as_one_vector():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0], [4.0]])}
    before = {k: v.copy() for k, v in grads.items()}
    assert clip_grad_norm(grads, 1.0) == 5.0
    for k in grads:                                 # torch: max_norm / (norm + 1e-6)
        np.testing.assert_array_equal(grads[k], before[k] * (1.0 / (5.0 + 1e-6)))
    assert grads["a"] is not before["a"]


def test_clip_grad_norm_leaves_small_gradients_alone_and_works_in_place():
    g = np.array([0.3, 0.4], dtype=np.float32)
    grads = {"g": g}
    assert clip_grad_norm(grads, 0.5) == pytest.approx(0.5, rel=1e-7)   # 0.5/(0.5+1e-6) < 1: scaled
    assert grads["g"] is g and g[0] < np.float32(0.3)
    h = {"h": np.array([0.3, 0.4])}
    assert clip_grad_norm(h, 0.6) == pytest.approx(0.5)
    np.testing.assert_array_equal(h["h"], [0.3, 0.4])


def test_clip_grad_norm_reports_a_non_finite_norm_and_leaves_the_gradients():
    for bad in (np.nan, np.inf):
        grads = {"a": np.array([1.0, bad]), "b": np.array([2.0])}
        norm = clip_grad_norm(grads, 1.0)
        assert not math.isfinite(norm)
        np.testing.assert_array_equal(grads["a"], [1.0, bad])
        np.testing.assert_array_equal(grads["b"], [2.0])


def test_clipping_replaces_read_only_gradients_instead_of_failing():
    ro = np.broadcast_to(np.array([6.0, 8.0]), (2,))
    grads = {"a": ro}
    clip_grad_norm(grads, 1.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.8], rtol=1e-6)
    grads = {"a": ro, "s": np.float64(-7.0)}
    clip_grad_value(grads, 5.0)
    np.testing.assert_array_equal(grads["a"], [5.0, 5.0])
    assert grads["s"] == -5.0


def test_clip_grad_value_clamps_in_place():
    g = np.array([-3.0, 0.5, 2.0, np.nan])
    grads = {"g": g}
    clip_grad_value(grads, 1.0)
    assert grads["g"] is g
    np.testing.assert_array_equal(g, [-1.0, 0.5, 1.0, np.nan])


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "1", None])
def test_clip_limits_are_checked(bad):
    with pytest.raises(ValueError, match="must be a"):
        clip_grad_norm({"a": np.ones(2)}, bad)
    with pytest.raises(ValueError, match="must be a"):
        clip_grad_value({"a": np.ones(2)}, bad)


# --- the optimizer against the formulas -----------------------------------------------------

def run(optimizer, params, data):
    return [optimizer.step(params, x, y) for x, y in data]


def reference_run(module, params, data, lr_at, update, clip_norm=None):
    """The loop written out: gradients, clipping by torch's formula, the update."""
    losses = []
    for t, (x, y) in enumerate(data):
        J, grads = module.value_and_grad(params, x, y)
        losses.append(J)
        if clip_norm is not None:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
            if norm > clip_norm:
                grads = {k: g * (clip_norm / (norm + 1e-6)) for k, g in grads.items()}
        update(params, grads, t, lr_at(t))
    return losses


def sgd_reference_update(momentum, nesterov, weight_decay):
    buffers = {}

    def update(params, grads, t, lr):
        for k in params:
            params[k], buffers[k] = reference_sgd(params[k], grads[k], buffers.get(k), lr,
                                                  momentum, nesterov, weight_decay)
    return update


def adam_reference_update(betas, eps, weight_decay, decoupled):
    moments = {}

    def update(params, grads, t, lr):
        for k in params:
            m, v = moments.get(k, (np.zeros_like(params[k]), np.zeros_like(params[k])))
            params[k], m, v = reference_adam(params[k], grads[k], m, v, t + 1, lr, betas, eps,
                                             weight_decay, decoupled)
            moments[k] = (m, v)
    return update


@pytest.mark.parametrize("settings", [
    dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
    dict(weight_decay=0.1), dict(momentum=0.5, clip_norm=0.5),
])
def test_sgd_follows_torch_with_schedule_and_clipping(settings):
    module = LinearRegression()
    data = batches()
    schedule = Warmup(3, Cosine(17, 0.001))
    clip_norm = settings.pop("clip_norm", None)
    optimizer = Optimizer(module, "sgd", 0.05, schedule=schedule, clip_norm=clip_norm, **settings)
    params, expected = module.init_params(), module.init_params()
    losses = run(optimizer, params, data)
    ref = reference_run(module, expected, data, lambda t: schedule.lr(0.05, t),
                        sgd_reference_update(settings.get("momentum", 0.0),
                                             settings.get("nesterov", False),
                                             settings.get("weight_decay", 0.0)), clip_norm)
    np.testing.assert_allclose(losses, ref, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)
    assert optimizer.steps == 20
    assert [c[1] for c in module.calls] == pytest.approx([schedule.lr(0.05, t) for t in range(20)])


@pytest.mark.parametrize("name, settings", [
    ("adam", {}), ("adam", dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)),
    ("adamw", {}), ("adamw", dict(weight_decay=0.1, clip_norm=0.3)),
])
def test_adam_and_adamw_follow_torch(name, settings):
    module = LinearRegression()
    data = batches()
    schedule = StepDecay(7, 0.5)
    clip_norm = settings.pop("clip_norm", None)
    optimizer = Optimizer(module, name, 0.01, schedule=schedule, clip_norm=clip_norm, **settings)
    params, expected = module.init_params(), module.init_params()
    run(optimizer, params, data)
    update = adam_reference_update(settings.get("betas", (0.9, 0.999)), settings.get("eps", 1e-8),
                                   settings.get("weight_decay", 0.01 if name == "adamw" else 0.0),
                                   name == "adamw")
    reference_run(module, expected, data, lambda t: schedule.lr(0.01, t), update, clip_norm)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)
    assert {c[0] for c in module.calls} == {f"{name}_update"}


def test_plain_sgd_uses_the_fused_step_and_other_settings_do_not():
    module = LinearRegression()
    assert Optimizer(module, "sgd", 0.1).fused
    for settings in (dict(momentum=0.9), dict(weight_decay=1e-4), dict(clip_norm=1.0),
                     dict(clip_value=1.0)):
        assert not Optimizer(module, "sgd", 0.1, **settings).fused
    params = module.init_params()
    run(Optimizer(module, "sgd", 0.1, schedule=StepDecay(2, 0.5)), params, batches(4))
    assert module.calls == [("sgd_step", 0.1), ("sgd_step", 0.1), ("sgd_step", 0.05),
                            ("sgd_step", 0.05)]


def test_clip_value_is_applied_before_the_update():
    module = LinearRegression()
    optimizer = Optimizer(module, "sgd", 0.1, clip_value=0.01)
    params = module.init_params()
    expected = copy(params)
    x, y = batches(1)[0]
    optimizer.step(params, x, y)
    _, grads = module.value_and_grad(expected, x, y)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k] - 0.1 * np.clip(grads[k], -0.01, 0.01),
                                   rtol=1e-14)


def test_a_non_finite_gradient_norm_stops_before_the_update():
    module = LinearRegression()
    optimizer = Optimizer(module, "adam", 0.1, clip_norm=1.0)
    params = module.init_params()
    before = copy(params)
    grads = {"W": np.full((2, 3), np.nan), "b": np.zeros(2)}
    with pytest.raises(ValueError, match="gradient norm is nan at step 1: training diverged"):
        optimizer.update(params, grads)
    assert optimizer.steps == 0 and optimizer.state == {}
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


# --- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, message", [
    (("rmsprop",), {}, "unknown optimizer 'rmsprop': expected one of sgd, adam, adamw"),
    (("sgd", 0), {}, "lr must be a finite number > 0"),
    (("sgd", float("inf")), {}, "lr must be a finite number > 0"),
    (("sgd", "0.1"), {}, "lr must be a number"),
    (("sgd",), dict(momentum=1.0), "momentum must be a finite number >= 0 and < 1"),
    (("sgd",), dict(momentum=-0.1), "momentum must be"),
    (("sgd",), dict(nesterov=True), "nesterov needs a momentum > 0"),
    (("sgd",), dict(nesterov="yes", momentum=0.9), "nesterov must be True or False"),
    (("sgd",), dict(weight_decay=-1), "weight_decay must be a finite number >= 0"),
    (("sgd",), dict(betas=(0.9, 0.99)), "betas applies to adam and adamw, not to sgd"),
    (("sgd",), dict(eps=1e-8), "eps applies to adam"),
    (("adam",), dict(momentum=0.9), "momentum and nesterov apply to sgd; adam uses betas"),
    (("adamw",), dict(nesterov=True), "apply to sgd"),
    (("adam",), dict(betas=(0.9,)), r"betas must be a pair \(beta1, beta2\)"),
    (("adam",), dict(betas="ab"), "betas must be a pair"),
    (("adam",), dict(betas=(0.9, 1.0)), "beta2 must be a finite number >= 0 and < 1"),
    (("adam",), dict(betas=(-0.1, 0.9)), "beta1 must be"),
    (("adam",), dict(eps=0), "eps must be a finite number > 0"),
    (("sgd",), dict(clip_norm=1, clip_value=1), "clip_norm and clip_value are exclusive"),
    (("sgd",), dict(clip_norm=-1), "clip_norm must be a finite number > 0"),
    (("sgd",), dict(schedule="cosine"), "schedule must be a schedule of this module"),
])
def test_every_setting_is_checked(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Optimizer(LinearRegression(), *args, **kwargs)


def test_a_module_without_the_update_function_is_refused():
    class Old:
        PARAMS = {"w": (1,)}

        def value_and_grad(self, params, x, y):
            return 0.0, {"w": np.zeros(1)}

        def sgd_step(self, params, x, y, lr):
            return 0.0
    Optimizer(Old(), "sgd", 0.1)                     # the fused step is enough for plain SGD
    with pytest.raises(ValueError, match="the module has no adam_update"):
        Optimizer(Old(), "adam", 0.1)


# --- state: exact resume --------------------------------------------------------------------

def npz_round_trip(tmp_path, arrays):
    path = tmp_path / "state.npz"
    np.savez(path, **arrays)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name, settings", [("sgd", dict(momentum=0.9, nesterov=True)),
                                            ("adamw", dict(clip_norm=0.5)), ("sgd", {})])
def test_a_resumed_run_continues_exactly(tmp_path, name, settings):
    data = batches(20)
    schedule = make_schedule("cosine", 20, warmup_steps=4)
    module = LinearRegression()
    straight = Optimizer(module, name, 0.02, schedule=schedule, **settings)
    params = module.init_params()
    run(straight, params, data)

    first = Optimizer(module, name, 0.02, schedule=schedule, **settings)
    half = module.init_params()
    run(first, half, data[:9])
    saved = npz_round_trip(tmp_path, first.state_dict())
    half = copy(half)
    resumed = Optimizer(LinearRegression(), name, 0.02, schedule=schedule, **settings)
    resumed.load_state_dict(saved)
    assert resumed.steps == 9 and resumed.lr == first.lr
    run(resumed, half, data[9:])
    for k in params:
        np.testing.assert_array_equal(half[k], params[k])
    assert resumed.steps == straight.steps == 20


def test_state_dict_is_flat_numpy_and_a_copy():
    module = LinearRegression()
    optimizer = Optimizer(module, "adam", 0.01, schedule=Cosine(10))
    params = module.init_params()
    run(optimizer, params, batches(2))
    saved = optimizer.state_dict()
    assert sorted(saved) == ["config", "state/exp_avg/W", "state/exp_avg/b", "state/exp_avg_sq/W",
                             "state/exp_avg_sq/b", "state/step", "steps"]
    assert all(isinstance(v, np.ndarray) for v in saved.values())
    assert saved["steps"].dtype == np.int64 and int(saved["steps"]) == 2
    config = json.loads(str(saved["config"]))
    assert config == {"optimizer": "adam", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8,
                      "weight_decay": 0.0, "clip_norm": None, "clip_value": None,
                      "schedule": {"name": "cosine", "total_steps": 10, "eta_min": 0.0}}
    kept = saved["state/exp_avg/W"].copy()
    run(optimizer, params, batches(1, seed=5))
    np.testing.assert_array_equal(saved["state/exp_avg/W"], kept)


def trained_state(name="adam", steps=2, **settings):
    module = LinearRegression()
    optimizer = Optimizer(module, name, 0.01, **settings)
    run(optimizer, module.init_params(), batches(steps))
    return optimizer.state_dict()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("config"), "not an optimizer state"),
    (lambda s: s.update(extra=np.zeros(1)), "not an optimizer state.*'extra'"),
    (lambda s: s.update(config=np.array("{")), "optimizer config is not valid JSON"),
    (lambda s: s.update(config=np.zeros(2)), "must be a 0-d str array"),
    (lambda s: s.update(steps=np.array(-1)), "steps must be a 0-d integer >= 0"),
    (lambda s: s.update(steps=np.array(1.5)), "steps must be a 0-d integer"),
    (lambda s: s.update({"state/step": np.array(5)}), r"step \(5\) differs from the optimizer's"),
    (lambda s: s.pop("state/exp_avg_sq/b"), "incomplete: no exp_avg_sq/b"),
    (lambda s: s.update({"state/exp_avg/W": np.zeros((3, 2))}), r"shape \(3, 2\).*\(2, 3\)"),
    (lambda s: s.update({"state/exp_avg/W": np.zeros((2, 3), dtype=np.int64)}), "int64 array"),
    (lambda s: s.update({"state/exp_avg/V": np.zeros(1)}),
     "unexpected optimizer state 'exp_avg/V'"),
    (lambda s: s.update({"state/momentum_buffer/W": np.zeros((2, 3))}),
     "unexpected optimizer state 'momentum_buffer/W'.*exp_avg, exp_avg_sq"),
])
def test_a_damaged_state_is_refused(change, message):
    saved = trained_state()
    change(saved)
    optimizer = Optimizer(LinearRegression(), "adam", 0.01)
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(saved)
    assert optimizer.steps == 0 and optimizer.state == {}


def test_a_state_with_other_settings_is_refused_and_says_what_differs():
    saved = trained_state("adam")
    with pytest.raises(ValueError, match="other settings.*optimizer: saved adam, now sgd"):
        Optimizer(LinearRegression(), "sgd", 0.01).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"lr: saved 0.01, now 0.02"):
        Optimizer(LinearRegression(), "adam", 0.02).load_state_dict(saved)
    with pytest.raises(ValueError, match="schedule: saved"):
        Optimizer(LinearRegression(), "adam", 0.01, schedule=Cosine(5)).load_state_dict(saved)


def test_slots_before_the_first_step_are_refused():
    saved = trained_state("sgd", steps=0, momentum=0.9)
    saved["state/momentum_buffer/W"] = np.zeros((2, 3))
    saved["state/momentum_buffer/b"] = np.zeros(2)
    with pytest.raises(ValueError, match="before its first step"):
        Optimizer(LinearRegression(), "sgd", 0.01, momentum=0.9).load_state_dict(saved)


# --- a real generated module ----------------------------------------------------------------

TINY = """\
name: tiny
dtype: float64
input: [3]
layers:
  - linear: 4
  - tanh
  - linear: 3
loss: softmax_cross_entropy
l2: 0.01
"""


@pytest.fixture(scope="module")
def tiny():
    return load_module(compile_spec(load_spec(TINY)).source, "tiny")


def class_batches(n=20, seed=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(6, 3)), rng.integers(0, 3, size=6)) for _ in range(n)]


def test_fused_sgd_on_a_generated_module_is_gradient_descent(tiny):
    data = class_batches()
    schedule = make_schedule("step", step_size=5, gamma=0.5)
    params, expected = tiny.init_params(1), tiny.init_params(1)
    optimizer = Optimizer(tiny, "sgd", 0.3, schedule=schedule)
    assert optimizer.fused
    losses = run(optimizer, params, data)
    ref = reference_run(tiny, expected, data, lambda t: schedule.lr(0.3, t),
                        sgd_reference_update(0.0, False, 0.0))
    np.testing.assert_allclose(losses, ref, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)


def _needs_updates(module):
    if not hasattr(module, "adam_update"):
        pytest.skip("generated modules do not have sgd_update/adam_update/adamw_update yet")


@pytest.mark.parametrize("name, settings", [
    ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("sgd", dict(weight_decay=1e-2, clip_norm=0.1)),
    ("adam", dict(weight_decay=1e-3)), ("adamw", dict(clip_norm=0.5)),
])
def test_the_generated_updates_follow_torch_through_the_optimizer(tiny, name, settings):
    _needs_updates(tiny)
    data = class_batches()
    schedule = make_schedule("cosine", 20, warmup_steps=3)
    clip_norm = settings.pop("clip_norm", None)
    optimizer = Optimizer(tiny, name, 0.05, schedule=schedule, clip_norm=clip_norm, **settings)
    params, expected = tiny.init_params(2), tiny.init_params(2)
    run(optimizer, params, data)
    if name == "sgd":
        update = sgd_reference_update(settings.get("momentum", 0.0),
                                      settings.get("nesterov", False),
                                      settings.get("weight_decay", 0.0))
    else:
        update = adam_reference_update((0.9, 0.999), 1e-8,
                                       settings.get("weight_decay", 0.01 if name == "adamw" else 0),
                                       name == "adamw")
    reference_run(tiny, expected, data, lambda t: schedule.lr(0.05, t), update, clip_norm)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)


def test_plain_sgd_update_matches_the_fused_step_on_a_generated_module(tiny):
    _needs_updates(tiny)
    data = class_batches()
    fused, unfused = tiny.init_params(4), tiny.init_params(4)
    run(Optimizer(tiny, "sgd", 0.2), fused, data)
    state = {}
    for x, y in data:
        _, grads = tiny.value_and_grad(unfused, x, y)
        tiny.sgd_update(unfused, grads, state, 0.2)
    for k in fused:
        np.testing.assert_allclose(fused[k], unfused[k], rtol=1e-12, atol=1e-14)


def test_a_generated_modules_state_resumes_exactly(tiny, tmp_path):
    _needs_updates(tiny)
    data = class_batches()
    straight = tiny.init_params(5)
    run(Optimizer(tiny, "adamw", 0.01), straight, data)
    first = Optimizer(tiny, "adamw", 0.01)
    params = tiny.init_params(5)
    run(first, params, data[:7])
    resumed = Optimizer(tiny, "adamw", 0.01)
    resumed.load_state_dict(npz_round_trip(tmp_path, first.state_dict()))
    run(resumed, params, data[7:])
    for k in params:
        np.testing.assert_array_equal(params[k], straight[k])



def test_clipping_keeps_zero_dimensional_gradients_arrays():
    grads = {"s": np.array(3.0), "v": np.array([4.0])}
    assert clip_grad_norm(grads, 1.0) == 5.0
    assert isinstance(grads["s"], np.ndarray) and grads["s"].shape == ()
    assert float(grads["s"]) == pytest.approx(3.0 / (5.0 + 1e-6))
    grads = {"s": np.float64(-2.0)}
    clip_grad_value(grads, 1.0)
    assert isinstance(grads["s"], np.ndarray) and float(grads["s"]) == -1.0


WIDE = """\
name: wide
input: [100]
layers:
  - linear: {out: 200, name: big}
  - tanh
  - linear: 2
loss: softmax_cross_entropy
"""


def test_a_loaded_state_is_laid_out_like_the_params_and_resumes_exactly(tmp_path):
    wide = load_module(compile_spec(load_spec(WIDE)).source, "wide")
    _needs_updates(wide)
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(4, 100)).astype(np.float32), rng.integers(0, 2, size=4))
            for _ in range(6)]
    straight = wide.init_params()
    assert straight["big.W"].flags.f_contiguous and not straight["big.W"].flags.c_contiguous
    run(Optimizer(wide, "adam", 1e-3), straight, data)
    first, params = Optimizer(wide, "adam", 1e-3), wide.init_params()
    run(first, params, data[:3])
    resumed = Optimizer(wide, "adam", 1e-3)
    saved = npz_round_trip(tmp_path, first.state_dict())
    assert saved["state/exp_avg/big.W"].flags.f_contiguous          # np.save keeps the order
    resumed.load_state_dict({k: np.array(v, order="C") for k, v in saved.items()})
    assert resumed.state["exp_avg/big.W"].flags.c_contiguous
    run(resumed, params, data[3:])
    assert resumed.state["exp_avg/big.W"].flags.f_contiguous
    for k in params:
        np.testing.assert_array_equal(params[k], straight[k])


TAGGER = """\
name: small_tagger
dtype: float64
input: {vocab: 12}
layers:
  - embedding: 4
  - lstm: {hidden: 3, bidirectional: true}
  - linear: 5
loss: softmax_cross_entropy
"""


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_sequence_modules_mask_reaches_the_gradients(name):
    tagger = load_module(compile_spec(load_spec(TAGGER)).source, "small_tagger")
    _needs_updates(tagger)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 12, size=(3, 6)), rng.integers(0, 5, size=(3, 6))
    mask = np.ones((3, 6))
    mask[0, 4:] = mask[2, 2:] = 0
    params, expected = tagger.init_params(1), tagger.init_params(1)
    optimizer = Optimizer(tagger, name, 0.05)
    losses = [optimizer.step(params, x, y, mask=mask) for _ in range(3)]
    update = (sgd_reference_update(0.0, False, 0.0) if name == "sgd" else
              adam_reference_update((0.9, 0.999), 1e-8, 0.0, False))
    reference = []
    for t in range(3):
        J, grads = tagger.value_and_grad(expected, x, y, mask=mask)
        reference.append(J)
        update(expected, grads, t, 0.05)
    np.testing.assert_allclose(losses, reference, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-10, atol=1e-13)
