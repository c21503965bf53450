"""The optimizer updates of the generated layer modules (issue 14): sgd_update,
adam_update and adamw_update against the update formulas as PyTorch's docs give
them for torch.optim.SGD, Adam and AdamW, written out below in float64."""

import numpy as np
import pytest

import bpcompile
from bpcompile.training.gradcheck import random_problem

pytestmark = pytest.mark.both_targets

MLP = {"name": "mlp", "dtype": "float64", "input": [3], "layers": [{"linear": 4}, "tanh", {"linear": 2}],
       "loss": "softmax_cross_entropy"}
CONV = {"name": "conv", "dtype": "float64", "input": [1, 4, 4], "loss": "mse",
        "layers": [{"conv2d": {"out_channels": 2, "kernel": 3}}, "flatten", {"linear": 2}]}
TAGGER = {"name": "tagger", "dtype": "float64", "input": {"vocab": 6}, "loss": "softmax_cross_entropy",
          "layers": [{"embedding": 3}, {"lstm": {"hidden": 4}}, {"linear": 3}]}
STEPS = 20


@pytest.fixture(scope="module")
def mlp(code_target):
    return bpcompile.compile(MLP)


# --- the formulas, one param at a time (PyTorch's documented algorithms) ----------------

def sgd_reference(p, gradients, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """p after each step of torch.optim.SGD's algorithm."""
    p, b, out = p.copy(), None, []
    for t, g in enumerate(gradients, start=1):
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
        out.append(p)
    return out


def adam_reference(p, gradients, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                   amsgrad=False, decoupled=False):
    """p after each step of torch.optim.Adam's algorithm (AdamW's with decoupled=True)."""
    beta1, beta2 = betas
    p, m, v, v_max, out = p.copy(), 0 * p, 0 * p, 0 * p, []
    for t, g in enumerate(gradients, start=1):
        if decoupled:
            p = p - lr * weight_decay * p
        elif weight_decay != 0:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            v_hat = v_max / (1 - beta2**t)
        else:
            v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def random_gradients(module, seed, steps=STEPS):
    """Gradients whose scale changes from step to step, and is small in the second half
    (so that v shrinks there, and amsgrad's maximum matters)."""
    rng = np.random.default_rng(seed)
    scales = [rng.uniform(0.05, 3.0) if t < steps // 2 else rng.uniform(1e-3, 1e-2)
              for t in range(steps)]
    return [{k: scale * rng.normal(size=shape) for k, shape in module.PARAMS.items()}
            for scale in scales]


SGD_OPTIONS = [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.8, dampening=0.3),
               dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, weight_decay=0.01),
               dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.02),
               dict(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.05)]
ADAM_OPTIONS = [dict(), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(lr=0.01, weight_decay=0.1),
                dict(lr=0.01, amsgrad=True), dict(lr=0.02, weight_decay=0.05, amsgrad=True)]
CASES = ([("sgd", o) for o in SGD_OPTIONS] + [("adam", o) for o in ADAM_OPTIONS]
         + [("adamw", o) for o in ADAM_OPTIONS + [dict(lr=0.01, weight_decay=0.3)]])


def update_and_reference(module, name, options):
    if name == "sgd":
        return module.sgd_update, lambda p, gs: sgd_reference(p, gs, **options)
    decoupled = name == "adamw"
    reference = dict(options, decoupled=decoupled)
    if decoupled:
        reference.setdefault("weight_decay", 0.01)       # AdamW's default
    return getattr(module, f"{name}_update"), lambda p, gs: adam_reference(p, gs, **reference)


def slots_of(name, options):
    if name == "sgd":
        return ["momentum_buffer"] if options.get("momentum") else []
    return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if options.get("amsgrad") else [])


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_twenty_steps_follow_the_formulas(mlp, name, options):
    update, reference = update_and_reference(mlp, name, options)
    params = mlp.init_params(1)
    gradients = random_gradients(mlp, seed=2)
    expected = {k: reference(params[k], [g[k] for g in gradients]) for k in params}
    arrays = dict(params)
    state = {}
    for step, grads in enumerate(gradients):
        given = {k: g.copy() for k, g in grads.items()}
        assert update(params, grads, state, **options) is None
        for k in params:
            assert params[k] is arrays[k]                                   # in place
            np.testing.assert_array_equal(grads[k], given[k])              # grads untouched
            np.testing.assert_allclose(params[k], expected[k][step], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{k} after step {step + 1}")
    # the state: arrays only, the documented keys, each slot shaped and typed like its param
    keys = {"step"} | {f"{slot}/{k}" for slot in slots_of(name, options) for k in params}
    assert set(state) == keys
    assert state["step"].shape == () and state["step"].dtype == np.int64 and state["step"] == STEPS
    for key in keys - {"step"}:
        param = params[key.split("/", 1)[1]]
        assert isinstance(state[key], np.ndarray)
        assert state[key].shape == param.shape and state[key].dtype == param.dtype


def test_amsgrad_keeps_the_maximum_and_changes_the_steps(mlp):
    gradients = random_gradients(mlp, seed=3)
    results = []
    for amsgrad in (False, True):
        params, state = mlp.init_params(0), {}
        for grads in gradients:
            mlp.adam_update(params, grads, state, lr=0.01, amsgrad=amsgrad)
        results.append(params)
    key = "linear1.W"
    assert np.all(state["max_exp_avg_sq/" + key] >= state["exp_avg_sq/" + key])
    assert np.any(state["max_exp_avg_sq/" + key] > state["exp_avg_sq/" + key])
    assert not np.allclose(results[0][key], results[1][key], rtol=1e-6, atol=0)


def test_adamw_decouples_the_decay_from_the_gradient(mlp):
    """With weight decay the two differ; without it they are the same update."""
    gradients = random_gradients(mlp, seed=4, steps=3)
    runs = {}
    for name, decay in (("adam", 0.1), ("adamw", 0.1), ("adam", 0.0), ("adamw", 0.0)):
        params, state = mlp.init_params(0), {}
        for grads in gradients:
            getattr(mlp, f"{name}_update")(params, grads, state, lr=0.01, weight_decay=decay)
        runs[name, decay] = params
    assert not np.allclose(runs["adam", 0.1]["linear1.W"], runs["adamw", 0.1]["linear1.W"])
    for k in runs["adam", 0.0]:
        np.testing.assert_array_equal(runs["adam", 0.0][k], runs["adamw", 0.0][k])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_a_float32_module_keeps_float32_params_and_state(name):
    module = bpcompile.compile(dict(MLP, dtype="float32"))
    params, state = module.init_params(0), {}
    options = dict(lr=0.1, momentum=0.9) if name == "sgd" else dict(lr=0.01, amsgrad=True)
    for grads in random_gradients(module, seed=5, steps=3):   # float64 gradients: cast to float32
        getattr(module, f"{name}_update")(params, grads, state, **options)
    assert all(p.dtype == np.float32 for p in params.values())
    slots = [v for k, v in state.items() if k != "step"]
    assert slots and all(v.dtype == np.float32 for v in slots)
    assert state["step"].dtype == np.int64


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_an_f_ordered_weight_is_updated_like_a_c_ordered_one(mlp, name):
    options = dict(lr=0.1, momentum=0.9, nesterov=True) if name == "sgd" else dict(lr=0.01)
    update = getattr(mlp, f"{name}_update")
    gradients = random_gradients(mlp, seed=6, steps=5)
    c_params, f_params = mlp.init_params(0), mlp.init_params(0)
    f_params["linear1.W"] = np.asfortranarray(f_params["linear1.W"])
    c_state, f_state = {}, {}
    for grads in gradients:
        update(c_params, grads, c_state, **options)
        update(f_params, grads, f_state, **options)
    assert f_params["linear1.W"].flags.f_contiguous and not f_params["linear1.W"].flags.c_contiguous
    slot = "momentum_buffer" if name == "sgd" else "exp_avg"
    assert f_state[f"{slot}/linear1.W"].flags.f_contiguous          # laid out like its param
    assert not f_state[f"{slot}/linear1.W"].flags.c_contiguous
    for k in c_params:
        np.testing.assert_allclose(f_params[k], c_params[k], rtol=1e-14, atol=0)


def test_a_large_layer_stored_transposed_gets_a_transposed_state():
    module = bpcompile.compile({"name": "wide", "dtype": "float64", "input": [300],
                                "layers": [{"linear": 300}, "tanh", {"linear": 2}],
                                "loss": "softmax_cross_entropy"})
    _, x, y = random_problem(module, batch=4, seed=0)
    params = module.init_params(0)
    assert params["linear1.W"].flags.f_contiguous and not params["linear1.W"].flags.c_contiguous
    _, grads = module.value_and_grad(params, x, y)
    expected = {k: adam_reference(v, [grads[k]], lr=0.01)[0] for k, v in params.items()}
    state = {}
    module.adam_update(params, grads, state, lr=0.01)
    for slot in ("exp_avg", "exp_avg_sq"):
        assert state[f"{slot}/linear1.W"].flags.f_contiguous
        assert not state[f"{slot}/linear1.W"].flags.c_contiguous
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-15)


def test_the_state_survives_np_savez_and_the_run_continues_exactly(mlp, tmp_path):
    gradients = random_gradients(mlp, seed=7, steps=6)
    params, state = mlp.init_params(0), {}
    for grads in gradients[:3]:
        mlp.adamw_update(params, grads, state, lr=0.01, amsgrad=True)
    np.savez(tmp_path / "state.npz", **state)
    with np.load(tmp_path / "state.npz") as saved:
        loaded = dict(saved)
    assert set(loaded) == set(state)
    resumed = {k: v.copy() for k, v in params.items()}
    for grads in gradients[3:]:
        mlp.adamw_update(params, grads, state, lr=0.01, amsgrad=True)
        mlp.adamw_update(resumed, grads, loaded, lr=0.01, amsgrad=True)
    for k in params:
        np.testing.assert_array_equal(params[k], resumed[k])
    assert int(loaded["step"]) == 6


@pytest.mark.parametrize("call,message", [
    (lambda m, p, g, s: m.sgd_update(p, g, s, -0.1), "lr: expected a finite number >= 0"),
    (lambda m, p, g, s: m.sgd_update(p, g, s, float("nan")), "lr: "),
    (lambda m, p, g, s: m.sgd_update(p, g, s, 0.1, momentum=-0.5), "momentum: "),
    (lambda m, p, g, s: m.sgd_update(p, g, s, 0.1, dampening=1.5), "dampening: "),
    (lambda m, p, g, s: m.sgd_update(p, g, s, 0.1, weight_decay=-1), "weight_decay: "),
    (lambda m, p, g, s: m.sgd_update(p, g, s, 0.1, nesterov=True), "nesterov: "),
    (lambda m, p, g, s: m.sgd_update(p, g, s, 0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "nesterov: "),
    (lambda m, p, g, s: m.adam_update(p, g, s, lr=-1e-3), "lr: "),
    (lambda m, p, g, s: m.adam_update(p, g, s, betas=(1.0, 0.999)), r"betas\[0\]: expected a number in \[0, 1\)"),
    (lambda m, p, g, s: m.adam_update(p, g, s, betas=(0.9, -0.1)), r"betas\[1\]: "),
    (lambda m, p, g, s: m.adam_update(p, g, s, betas=0.9), "betas: expected a pair"),
    (lambda m, p, g, s: m.adam_update(p, g, s, eps=-1e-8), "eps: "),
    (lambda m, p, g, s: m.adamw_update(p, g, s, weight_decay=-0.01), "weight_decay: "),
    (lambda m, p, g, s: m.adamw_update(p, g, s, lr="fast"), "lr: "),
    (lambda m, p, g, s: m.adam_update(p, {k: v for k, v in g.items() if k != "linear2.b"}, s),
     "grads: expected a dict with the keys of PARAMS"),
    (lambda m, p, g, s: m.adam_update(p, {**g, "extra": g["linear2.b"]}, s), "grads: "),
    (lambda m, p, g, s: m.adam_update(p, {**g, "linear2.b": g["linear2.b"][:1]}, s),
     r"grads\['linear2.b'\]: expected an array of shape \(2,\)"),
    (lambda m, p, g, s: m.sgd_update(p, {**g, "linear1.b": list(g["linear1.b"])}, s, 0.1),
     r"grads\['linear1.b'\]"),
    (lambda m, p, g, s: m.adam_update(p, g, [s]), "state: expected a dict"),
    (lambda m, p, g, s: m.adam_update(p, g, {**s, "step": 3.5}), r"state\['step'\]"),
    (lambda m, p, g, s: m.adam_update(p, g, {**s, "exp_avg/linear1.W": np.zeros((2, 2))}),
     r"state\['exp_avg/linear1.W'\]: expected a float64 array of shape \(4, 3\)"),
    (lambda m, p, g, s: m.adam_update(list(p.values()), g, s), "params: expected a dict"),
])
def test_bad_arguments_raise_before_anything_changes(mlp, call, message):
    params = mlp.init_params(0)
    grads = random_gradients(mlp, seed=8, steps=1)[0]
    state = {}
    mlp.adam_update(params, grads, state)        # a state with every slot but amsgrad's
    before_params = {k: v.copy() for k, v in params.items()}
    before_state = {k: v.copy() for k, v in state.items()}
    with pytest.raises(ValueError, match=message):
        call(mlp, params, grads, state)
    for k in params:
        np.testing.assert_array_equal(params[k], before_params[k])
    assert set(state) == set(before_state)
    for k in state:
        np.testing.assert_array_equal(state[k], before_state[k])


@pytest.fixture(scope="module", params=[MLP, CONV, TAGGER], ids=lambda s: s["name"])
def problem(request, code_target):
    module = bpcompile.compile(request.param)
    params, x, y = random_problem(module, batch=3, seed=0)
    return module, params, x, y


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_every_kind_of_module_steps_with_its_own_gradients(problem, name):
    """MLP, conv and recurrent modules alike; the recurrent module's weights are views of
    one block (init_params stores them side by side): updated through the views."""
    module, params, x, y = problem
    params = {k: v.copy() if v.base is None else v for k, v in module.init_params(0).items()}
    options = dict(lr=0.1, momentum=0.9) if name == "sgd" else dict(lr=0.01, weight_decay=0.01)
    update, reference = update_and_reference(module, name, options)
    state, gradients = {}, []
    start = {k: v.copy() for k, v in params.items()}
    for _ in range(3):
        J, grads = module.value_and_grad(params, x, y)
        gradients.append(grads)
        update(params, grads, state, **options)
    for k in params:
        np.testing.assert_allclose(params[k], reference(start[k], [g[k] for g in gradients])[-1],
                                   rtol=1e-12, atol=1e-15, err_msg=k)
    copies = {k: v.copy() for k, v in params.items()}       # no views: the updated values
    assert module.forward(params, x, y)[0] == pytest.approx(module.forward(copies, x, y)[0], rel=1e-14)
    assert module.forward(params, x, y)[0] < module.forward(start, x, y)[0]


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_torch_optim_takes_the_same_steps(mlp, name, options):
    """Only where PyTorch is installed (not a dependency)."""
    torch = pytest.importorskip("torch")
    update, _ = update_and_reference(mlp, name, options)
    params, state = mlp.init_params(1), {}
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                 "adamw": torch.optim.AdamW}[name](list(tensors.values()), **options)
    for grads in random_gradients(mlp, seed=9):
        update(params, grads, state, **options)
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        optimizer.step()
    for k, t in tensors.items():
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=k)
