"""`bpcompile train` and `eval` with issue 13's layers and losses: reverse and
bidirectional recurrences (no language model), loss: none and reduction none
(refused), loss options (the reported loss is the module's J over the whole
set), dropout and batch norm (train mode with one generator per run, eval mode
for scoring, a bit-exact --resume)."""

import io
import re
from pathlib import Path

import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.compiler import compile_file, load_module
from bpcompile.training import metrics, train

ERROR = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+\n$")
REPO = Path(__file__).resolve().parent.parent
TEXT = REPO / "examples/data/tiny.txt"


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _line_of(path, text):
    return path.read_text().splitlines().index(text) + 1


# ---------------------------------------------------------------------------
# 1. a language model runs forward only

LM = ("name: lm\ninput: {vocab: 60}\nlayers:\n  - embedding: 8\n  - lstm: {hidden: 8, direction: %s}\n"
      "  - linear: 60\nloss: softmax_cross_entropy\n")


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_a_declared_language_model_cannot_have_a_reverse_or_bidirectional_layer(
        tmp_path, capsys, direction):
    spec = _write(tmp_path, "lm.yaml", LM % direction + "train: {task: language_model}\n")
    status, _, err = _run(capsys, "train", spec, "--data", TEXT, "--epochs", "1", "--quiet")
    line = _line_of(spec, "train: {task: language_model}")
    assert status == 1 and ERROR.match(err), err
    assert err.startswith(f"{spec}:{line}:15: error: a language model cannot be bidirectional "
                          f"or reverse: lstm1 is {direction}"), err


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_a_reverse_or_bidirectional_vocabulary_sized_spec_is_inferred_a_tagger(
        tmp_path, capsys, direction):
    spec = _write(tmp_path, "lm.yaml", LM % direction)
    status, _, err = _run(capsys, "train", spec, "--data", TEXT, "--epochs", "1", "--quiet")
    assert status == 1 and "lm is a tagger, but --data" in err, err


def test_a_forward_direction_is_still_a_language_model(tmp_path, capsys):
    spec = _write(tmp_path, "lm.yaml", LM % "forward")
    status, out, err = _run(capsys, "train", spec, "--data", TEXT, "--epochs", "1", "--quiet",
                            "--batch-size", "4", "--seq-len", "10")
    assert status == 0, err
    assert "(language model)" in out


# ---------------------------------------------------------------------------
# 2. nothing to train against; one loss per example

NET = "name: net\ninput: [3]\nlayers:\n  - linear: 8\n  - tanh\n  - linear: 3\n"


def _class_data(tmp_path, n_train=60, n_test=23, seed=0, labels=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, 3))
    y = (np.argmax(x, axis=1) + (rng.random(len(x)) < 0.2)) % labels
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return path


@pytest.mark.parametrize("command", ["train", "eval"])
def test_loss_none_is_refused_at_the_loss_line(tmp_path, capsys, command):
    spec = _write(tmp_path, "net.yaml", NET + "loss: none\n")
    extra = ["--params", tmp_path / "p.npz"] if command == "eval" else ["--epochs", "1"]
    np.savez(tmp_path / "p.npz", x=np.zeros(1))
    status, _, err = _run(capsys, command, spec, "--data", _class_data(tmp_path), *extra)
    assert status == 1 and ERROR.match(err), err
    assert err.startswith(f"{spec}:{_line_of(spec, 'loss: none')}:7: error: {command} needs a "
                          "loss: with loss: none"), err


@pytest.mark.parametrize("command", ["train", "eval"])
def test_reduction_none_is_refused_at_the_reduction(tmp_path, capsys, command):
    text = "loss: {softmax_cross_entropy: {reduction: none}}"
    spec = _write(tmp_path, "net.yaml", NET + text + "\n")
    extra = ["--params", tmp_path / "p.npz"] if command == "eval" else ["--epochs", "1"]
    np.savez(tmp_path / "p.npz", x=np.zeros(1))
    status, _, err = _run(capsys, command, spec, "--data", _class_data(tmp_path), *extra)
    column = text.index("none") + 1          # the value that is refused
    assert status == 1 and ERROR.match(err), err
    assert err.startswith(f"{spec}:{_line_of(spec, text)}:{column}: error: {command} needs one "
                          "number"), err


def test_reduction_sum_trains_and_says_the_lr_scales_with_the_batch(tmp_path, capsys):
    spec = _write(tmp_path, "net.yaml", NET + "loss: {softmax_cross_entropy: {reduction: sum}}\n")
    status, out, err = _run(capsys, "train", spec, "--data", _class_data(tmp_path), "--epochs", "2",
                            "--lr", "0.01", "--quiet", "--save", tmp_path / "w.npz")
    assert status == 0, err
    assert "reduction: sum, so J and its gradient grow with the batch" in out
    module, params, x, y = _module_and_test_set(spec, tmp_path)
    total = float(module.forward(params, x, y)[0])          # the sum over the whole test set
    printed = float(re.search(r"test loss ([\d.]+)", out.splitlines()[-2]).group(1))
    assert printed == pytest.approx(total, abs=1e-4)


# ---------------------------------------------------------------------------
# 3. the reported loss is the module's J over the whole set

def _module(tmp_path, loss_line, outputs=3):
    spec = _write(tmp_path, "net.yaml", "name: net\ninput: [3]\ndtype: float64\nlayers:\n"
                  f"  - linear: 8\n  - tanh\n  - linear: {outputs}\n{loss_line}\n")
    compiled = compile_file(str(spec))
    from bpcompile.cli.train_command import loss_options
    return load_module(compiled.source, compiled.name), loss_options(compiled)


def _module_and_test_set(spec, tmp_path):
    compiled = compile_file(str(spec))
    module = load_module(compiled.source, compiled.name)
    with np.load(tmp_path / "w.npz") as saved:
        params = {k: saved[k] for k in module.PARAMS}
    with np.load(tmp_path / "d.npz") as data:
        x, y = data["x_test"].astype(module.DTYPE), data["y_test"]
    return module, params, x, y


CLASS_LOSSES = [
    "loss: {softmax_cross_entropy: {class_weights: [1.0, 3.0, 0.5]}}",
    "loss: {softmax_cross_entropy: {class_weights: [1.0, 3.0, 0.5], ignore_index: 2}}",
    "loss: {softmax_cross_entropy: {ignore_index: -100}}",
    "loss: {softmax_cross_entropy: {class_weights: [2.0, 1.0, 0.0], reduction: sum}}",
]


def _labels_with_ignored(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    y[rng.random(n) < 0.3] = -100
    return y


@pytest.mark.parametrize("loss_line", CLASS_LOSSES)
def test_a_class_loss_with_options_scores_as_the_module_on_the_whole_set(tmp_path, loss_line):
    module, options = _module(tmp_path, loss_line)
    params = module.init_params(3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(53, 3))
    y = _labels_with_ignored(53, 2) if "-100" in loss_line else rng.integers(0, 3, size=53)
    x, y = train.prepare_split(module, x, y, "test", params, options)
    whole = float(module.forward(params, x, y)[0])
    scored = train.score(module, params, x, y, chunk=7, loss_options=options)
    assert scored["loss"] == pytest.approx(whole, rel=1e-12)
    plain = train.score(module, params, x, y, chunk=7)["loss"] if -100 not in y else None
    if plain is not None:       # without the options the number would be another one
        assert plain != pytest.approx(whole, rel=1e-6)
    kept = y != options.get("ignore_index", -1)
    predicted = np.argmax(module.predict(params, x[kept]), axis=1)
    assert scored["acc"] == pytest.approx(np.mean(predicted == y[kept]))


@pytest.mark.parametrize("loss_line, outputs", [
    ("loss: {sigmoid_binary_cross_entropy: {pos_weight: [3.0, 0.5]}}", 2),
    ("loss: {sigmoid_binary_cross_entropy: {pos_weight: 2.0, reduction: mean}}", 2),
    ("loss: {sigmoid_binary_cross_entropy: {reduction: sum}}", 2),
    ("loss: {mse: {reduction: mean}}", 2),
    ("loss: {mse: {reduction: sum}}", 2),
    ("loss: mse", 2),
])
def test_binary_and_squared_losses_with_options_score_as_the_module(tmp_path, loss_line, outputs):
    module, options = _module(tmp_path, loss_line, outputs)
    params = module.init_params(4)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(41, 3))
    y = (rng.random((41, outputs)) < 0.4).astype(np.float64) if "binary" in loss_line \
        else rng.normal(size=(41, outputs))
    x, y = train.prepare_split(module, x, y, "test", params, options)
    whole = float(module.forward(params, x, y)[0])
    assert train.score(module, params, x, y, chunk=6, loss_options=options)["loss"] == \
        pytest.approx(whole, rel=1e-12)


def test_the_printed_test_loss_is_the_modules_j_with_class_weights(tmp_path, capsys):
    line = "loss: {softmax_cross_entropy: {class_weights: [1.0, 4.0, 0.25], ignore_index: 0}}"
    spec = _write(tmp_path, "net.yaml", NET + line + "\n")
    status, out, err = _run(capsys, "train", spec, "--data", _class_data(tmp_path), "--epochs", "2",
                            "--quiet", "--save", tmp_path / "w.npz")
    assert status == 0, err
    module, params, x, y = _module_and_test_set(spec, tmp_path)
    whole = float(module.forward(params, x, y)[0])
    printed = float(re.search(r"test loss ([\d.]+)$", out.splitlines()[-2]).group(1))
    assert printed == pytest.approx(whole, abs=1e-4)
    status, out, err = _run(capsys, "eval", spec, "--data", tmp_path / "d.npz", "--params",
                            tmp_path / "w.npz")
    assert status == 0, err
    assert float(re.search(r"loss\s+([\d.]+)", out).group(1)) == pytest.approx(whole, abs=1e-4)


def test_a_scorer_refuses_reduction_none():
    with pytest.raises(ValueError, match="one number per example"):
        metrics.Scorer("mse", {"reduction": "none"})


# ---------------------------------------------------------------------------
# 4. dropout and batch norm

DROPOUT_NET = ("name: dnet\ninput: [3]\nlayers:\n  - linear: 16\n  - batchnorm: {}\n  - tanh\n"
               "  - dropout: {p: 0.5}\n  - linear: 3\nloss: softmax_cross_entropy\n")


def _saved(path):
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files if "." in k and "/" not in k}


def _train_dropout(tmp_path, capsys, name, *extra):
    spec = _write(tmp_path, "dnet.yaml", DROPOUT_NET)
    status, out, err = _run(capsys, "train", spec, "--data", _class_data(tmp_path), "--quiet",
                            "--batch-size", "8", "--save", tmp_path / name, *extra)
    assert status == 0, err
    return _saved(tmp_path / name)


def test_a_dropout_run_is_reproducible_from_its_seed(tmp_path, capsys):
    first = _train_dropout(tmp_path, capsys, "a.npz", "--epochs", "2", "--seed", "3")
    again = _train_dropout(tmp_path, capsys, "b.npz", "--epochs", "2", "--seed", "3")
    other = _train_dropout(tmp_path, capsys, "c.npz", "--epochs", "2", "--seed", "4")
    assert "batchnorm1.running_mean" in first
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert any(not np.array_equal(first[k], other[k]) for k in first)


def test_a_dropout_run_draws_masks_from_one_generator_seeded_by_the_run(tmp_path, capsys):
    """The same updates by hand: sgd_step in train mode, rng=default_rng(seed) made once."""
    got = _train_dropout(tmp_path, capsys, "a.npz", "--epochs", "2", "--seed", "3")
    compiled = compile_file(str(tmp_path / "dnet.yaml"))
    module = load_module(compiled.source, compiled.name)
    with np.load(tmp_path / "d.npz") as data:
        x, y = data["x_train"].astype(np.float32), data["y_train"]
    params, rng = module.init_params(3), np.random.default_rng(3)
    for epoch in (1, 2):
        order = np.random.default_rng(3 + epoch).permutation(len(x))
        for start in range(0, len(x), 8):
            batch = order[start:start + 8]
            module.sgd_step(params, x[batch], y[batch], 0.1, train=True, rng=rng)
    for key in params:
        np.testing.assert_array_equal(got[key], params[key], err_msg=key)


def test_a_dropout_run_resumed_after_2_epochs_equals_4_epochs_in_one_run(tmp_path, capsys):
    whole = _train_dropout(tmp_path, capsys, "whole.npz", "--epochs", "4")
    _train_dropout(tmp_path, capsys, "half.npz", "--epochs", "2")
    resumed = _train_dropout(tmp_path, capsys, "resumed.npz", "--epochs", "4", "--resume",
                             tmp_path / "half.npz")
    for key in whole:
        np.testing.assert_array_equal(whole[key], resumed[key], err_msg=key)
    with np.load(tmp_path / "half.npz") as archive:
        assert "rng" in archive.files


def test_checking_and_scoring_leave_the_running_statistics_alone(tmp_path):
    compiled = compile_file(str(_write(tmp_path, "dnet.yaml", DROPOUT_NET)))
    module = load_module(compiled.source, compiled.name)
    params = module.init_params(0)
    params["batchnorm1.running_mean"][:] = 0.5
    before = {k: v.copy() for k, v in params.items()}
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 3
    x, y = train.prepare_split(module, x, y, "test", params)
    first = train.score(module, params, x, y, chunk=6)
    assert train.score(module, params, x, y, chunk=6) == first       # eval mode: no masks
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])
    eval_j = float(module.forward(params, x, y, train=False)[0])
    assert first["loss"] == pytest.approx(eval_j, rel=1e-5)


def test_train_draws_its_default_masks_from_default_rng_of_the_seed(tmp_path):
    """train.train without a step or rng: sgd_step in train mode, rng=default_rng(seed)."""
    compiled = compile_file(str(_write(tmp_path, "dnet.yaml", DROPOUT_NET)))
    module = load_module(compiled.source, compiled.name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = np.arange(30) % 3
    got, _ = train.train(module, (x, y, x[:5], y[:5]), epochs=2, lr=0.1, batch_size=8, seed=7,
                         progress=False, out=io.StringIO())
    params, masks = module.init_params(7), np.random.default_rng(7)
    for epoch in (1, 2):
        order = np.random.default_rng(7 + epoch).permutation(len(x))
        for start in range(0, len(x), 8):
            batch = order[start:start + 8]
            module.sgd_step(params, x[batch], y[batch], 0.1, train=True, rng=masks)
    for key in params:
        np.testing.assert_array_equal(got[key], params[key], err_msg=key)


TAGGER = (REPO / "examples/pos_tagger.yaml").read_text()


@pytest.mark.parametrize("old, new, column_of", [
    ("loss: softmax_cross_entropy", "loss: {softmax_cross_entropy: {reduction: sum}}", "reduction"),
    ("loss: softmax_cross_entropy", "loss: mse", "mse"),
])
def test_sequence_training_refuses_the_losses_its_loop_cannot_score(tmp_path, capsys, old, new,
                                                                    column_of):
    assert old in TAGGER
    spec = _write(tmp_path, "tagger.yaml", TAGGER.replace(old, new))
    status, _, err = _run(capsys, "train", spec, "--data", REPO / "examples/data/tiny.conllu",
                          "--epochs", "1", "--quiet")
    line = next(i for i, l in enumerate(spec.read_text().splitlines(), 1) if l.startswith(new))
    assert status == 1 and ERROR.match(err), err
    assert err.startswith(f"{spec}:{line}:{new.index(column_of) + 1}: error: train of a sequence "
                          "spec"), err
