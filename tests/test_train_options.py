"""`bpcompile train` optimizer, schedule and clipping options: each run's saved
weights equal a training loop written here with the update formulas of torch.optim's
documentation (float64), the spec's `train:` block gives the same settings (the
command line wins), no option is exactly the old SGD, and bad settings are one
error line."""

import math
import re

import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.compiler import compile_file, load_module
from bpcompile.training import train

ERROR = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+\n$")
SPEC = ("name: net\ninput: [3]\ndtype: float64\nlayers:\n  - linear: 4\n  - tanh\n"
        "  - linear: 2\nloss: mse\n")
N, BATCH, EPOCHS, SEED = 40, 8, 3, 2
STEPS = N // BATCH                       # optimizer steps per epoch


@pytest.fixture
def setup(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(SPEC)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + 10, 3))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x[:N], y_train=y[:N], x_test=x[N:], y_test=y[N:])
    compiled = compile_file(str(spec))
    return spec, data, load_module(compiled.source, compiled.name), x[:N], y[:N]


def _train(capsys, spec, data, tmp_path, *options):
    saved = tmp_path / "p.npz"
    status = main([str(a) for a in ("train", spec, "--data", data, "--epochs", EPOCHS,
                                    "--batch-size", BATCH, "--seed", SEED, "--quiet",
                                    "--save", saved, "--force", *options)])
    out, err = capsys.readouterr()
    assert status == 0, err
    return train.load_params(saved), out


def _by_hand(module, x, y, update, lr_at=lambda t: 0.1, clip=lambda g: g):
    """train.train's order of batches, with `update(params, grads, lr, t, state)`."""
    params, state, t = module.init_params(SEED), {}, 0
    for epoch in range(1, EPOCHS + 1):
        order = np.random.default_rng(SEED + epoch).permutation(N)
        for start in range(0, N, BATCH):
            index = order[start:start + BATCH]
            _, grads = module.value_and_grad(params, x[index], y[index])
            grads = clip({k: np.array(g, dtype=np.float64) for k, g in grads.items()})
            update(params, grads, lr_at(t), t, state)
            t += 1
    return params


def sgd(momentum=0.0, nesterov=False, weight_decay=0.0):
    def update(params, grads, lr, t, state):
        for k, p in params.items():
            g = grads[k] + weight_decay * p
            if momentum:
                b = g if t == 0 else momentum * state[k] + g
                state[k] = b
                g = g + momentum * b if nesterov else b
            p -= lr * g
    return update


def adam(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas

    def update(params, grads, lr, t, state):
        for k, p in params.items():
            g = grads[k]
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
            m = b1 * state.get(("m", k), 0.0) + (1 - b1) * g
            v = b2 * state.get(("v", k), 0.0) + (1 - b2) * g * g
            state[("m", k)], state[("v", k)] = m, v
            m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
            p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return update


def clip_norm(max_norm):
    def clip(grads):
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        factor = max_norm / (norm + 1e-6)
        return {k: g * factor for k, g in grads.items()} if factor < 1 else grads
    return clip


def warm_cosine(lr, warmup, eta_min=0.0):
    total = EPOCHS * STEPS

    def lr_at(t):
        if t < warmup:
            return lr * (1 / 3 + (2 / 3) * t / warmup)
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2
    return lr_at


CASES = {
    "momentum_nesterov_decay": (["--momentum", "0.9", "--nesterov", "--weight-decay", "0.01"],
                                dict(update=sgd(0.9, True, 0.01)), "sgd (nesterov momentum 0.9"),
    "momentum": (["--momentum", "0.5", "--lr", "0.05"], dict(update=sgd(0.5), lr_at=lambda t: 0.05),
                 "sgd (momentum 0.5)"),
    "adam": (["--optimizer", "adam", "--lr", "0.01", "--betas", "0.8", "0.99", "--eps", "1e-6",
              "--weight-decay", "0.1"],
             dict(update=adam((0.8, 0.99), 1e-6, 0.1), lr_at=lambda t: 0.01), "adam (betas 0.8 0.99"),
    "adamw": (["--optimizer", "adamw", "--lr", "0.01"],
              dict(update=adam(weight_decay=0.01, decoupled=True), lr_at=lambda t: 0.01),
              "adamw (betas 0.9 0.999, eps 1e-08, weight decay 0.01)"),
    "step": (["--schedule", "step", "--lr-step-size", "1", "--gamma", "0.5"],
             dict(update=sgd(), lr_at=lambda t: 0.1 * 0.5 ** (t // STEPS)),
             "lr 0.1 times 0.5 every 1 epoch"),
    "cosine_warmup": (["--schedule", "cosine", "--warmup", "4", "--eta-min", "0.01"],
                      dict(update=sgd(), lr_at=warm_cosine(0.1, 4, 0.01)),
                      "lr 0.1 cosine to 0.01 over 11 steps after 4 warm-up steps"),
    "clip_norm": (["--clip-norm", "0.05"], dict(update=sgd(), clip=clip_norm(0.05)), "clip norm 0.05"),
    "clip_value": (["--clip-value", "0.01"],
                   dict(update=sgd(), clip=lambda g: {k: np.clip(v, -0.01, 0.01) for k, v in g.items()}),
                   "clip value 0.01"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_option_trains_as_the_formulas_say(setup, tmp_path, capsys, name):
    spec, data, module, x, y = setup
    options, reference, start_line = CASES[name]
    params, out = _train(capsys, spec, data, tmp_path, *options)
    assert start_line in out.splitlines()[0], out.splitlines()[0]
    expected = _by_hand(module, x, y, **reference)
    plain = _by_hand(module, x, y, sgd())
    for key in expected:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-10, atol=1e-12, err_msg=key)
    assert any(not np.allclose(params[k], plain[k], rtol=1e-6) for k in plain)   # it had an effect


def test_no_option_is_the_fused_sgd_step_bit_for_bit(setup, tmp_path, capsys):
    spec, data, module, x, y = setup
    params, out = _train(capsys, spec, data, tmp_path)
    assert "sgd, lr 0.1 constant" in out.splitlines()[0]
    expected = module.init_params(SEED)
    for epoch in range(1, EPOCHS + 1):
        order = np.random.default_rng(SEED + epoch).permutation(N)
        for start in range(0, N, BATCH):
            module.sgd_step(expected, x[order[start:start + BATCH]], y[order[start:start + BATCH]], 0.1)
    for key in expected:
        np.testing.assert_array_equal(params[key], expected[key], err_msg=key)


def test_the_spec_train_block_gives_the_same_settings_and_the_command_line_wins(setup, tmp_path,
                                                                              capsys):
    spec, data, module, x, y = setup
    spec.write_text(SPEC + "train:\n  optimizer: adam\n  lr: 0.01\n  betas: [0.8, 0.99]\n"
                           "  eps: 1.0e-6\n  weight_decay: 0.1\n")
    params, out = _train(capsys, spec, data, tmp_path)
    expected = _by_hand(module, x, y, adam((0.8, 0.99), 1e-6, 0.1), lr_at=lambda t: 0.01)
    for key in expected:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-10, atol=1e-12)
    spec.write_text(SPEC + "train: {optimizer: adam, schedule: cosine}\n")
    params, out = _train(capsys, spec, data, tmp_path, "--optimizer", "sgd", "--schedule", "constant")
    assert "sgd, lr 0.1 constant" in out.splitlines()[0]


@pytest.mark.parametrize("block, message", [
    ("{optimizer: rmsprop}", r"net.yaml:\d+:\d+: error: train.optimizer: expected one of sgd, adam, adamw"),
    ("{optimizer: adam, momentum: 0.9}", r"net.yaml:9:\d+: error: train.momentum: momentum and nesterov apply to sgd"),
    ("{momentum: 1.5}", r"train.momentum: momentum must be a finite number >= 0 and < 1"),
    ("{optimizer: adam, betas: [0.9]}", r"train.betas: betas must be a pair"),
    ("{betas: [0.9, 0.99]}", r"train.betas: betas applies to adam and adamw, not to sgd"),
    ("{optimizer: adam, betas: [0.9, 1.0]}", r"train.betas: beta2 must be"),
    ("{nesterov: yes}", r"train.nesterov: nesterov needs a momentum > 0"),
    ("{schedule: step}", r"train.schedule: the step schedule needs --lr-step-size"),
    ("{schedule: step, lr_step_size: 0.5}", r"train.lr_step_size: must be a whole number >= 1"),
    ("{gamma: 0.5}", r"train.gamma: applies to the step schedule, not to constant"),
    ("{eta_min: 0.1}", r"train.eta_min: applies to the cosine schedule"),
    ("{warmup: -1}", r"train.warmup: must be a whole number >= 0"),
    ("{clip_norm: -1}", r"train.clip_norm: clip_norm must be a finite number > 0"),
    ("{clip_norm: 1, clip_value: 1}", r"clip_norm and clip_value are exclusive"),
    ("{optimiser: adam}", r"optimiser"),
])
def test_bad_settings_in_the_spec_are_one_error_line_at_their_place(setup, tmp_path, capsys,
                                                                   block, message):
    spec, data, *_ = setup
    spec.write_text(SPEC + f"train: {block}\n")
    status = main(["train", str(spec), "--data", str(data), "--quiet"])
    out, err = capsys.readouterr()
    assert status == 1 and ERROR.match(err) and re.search(message, err), err
    assert out == ""


@pytest.mark.parametrize("options, message", [
    (["--momentum", "-1"], r"--momentum: momentum must be"),
    (["--optimizer", "adamw", "--nesterov"], r"--nesterov: momentum and nesterov apply to sgd"),
    (["--optimizer", "adam", "--eps", "0"], r"--eps: eps must be a finite number > 0"),
    (["--eps", "1e-6"], r"--eps: eps applies to adam and adamw, not to sgd"),
    (["--schedule", "cosine", "--warmup", "15"], r"--warmup: warmup_steps \(15\) must be fewer"),
    (["--clip-value", "0"], r"--clip-value: clip_value must be"),
    (["--lr-step-size", "2"], r"--lr-step-size: applies to the step schedule"),
])
def test_bad_options_are_one_error_line(setup, capsys, options, message):
    spec, data, *_ = setup
    status = main(["train", str(spec), "--data", str(data), "--epochs", "3", "--batch-size", "8",
                   "--quiet", *options])
    out, err = capsys.readouterr()
    assert status == 1 and ERROR.match(err) and re.search(message, err), err


def test_a_language_model_clips_at_5_unless_told(tmp_path, capsys):
    from pathlib import Path
    text = Path(__file__).resolve().parent.parent / "examples" / "data" / "tiny.txt"
    spec = tmp_path / "lm.yaml"
    spec.write_text("name: lm\ninput: {vocab: 40}\nlayers:\n  - embedding: 4\n  - rnn: {hidden: 6}\n"
                    "  - linear: 40\nloss: softmax_cross_entropy\n")
    lines = {}
    for name, options in (("default", []), ("norm", ["--clip-norm", "1"]),
                          ("off", ["--clip-norm", "0"]), ("value", ["--clip-value", "0.1"])):
        status = main(["train", str(spec), "--data", str(text), "--epochs", "1", "--quiet", *options])
        out, err = capsys.readouterr()
        assert status == 0, err
        lines[name] = out.splitlines()[0]
    assert lines["default"].endswith("sgd, lr 0.1 constant, clip norm 5")
    assert lines["norm"].endswith("clip norm 1") and lines["value"].endswith("clip value 0.1")
    assert "clip" not in lines["off"]
