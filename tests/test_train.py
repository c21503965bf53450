"""Tests for bpcompile.training.train: the SGD loop, scoring, label forms, progress,
keep-best, the step/start_epoch/on_epoch_end hooks, and parameter files.

Most tests train a hand-written softmax regression that follows the
generated-module contract, so they do not depend on the compiler; the tests
of other losses use small compiled modules.
"""

import io
import os

import numpy as np
import pytest

from bpcompile.training import datasets, train as tr


class SoftmaxRegression:
    """Softmax regression (64 -> 10) with hand-written gradients, per the module contract."""

    LOSS = "softmax_cross_entropy"
    DTYPE = np.dtype(np.float32)

    def __init__(self, n_in=64, n_out=10):
        self.PARAMS = {"linear1.W": (n_in, n_out), "linear1.b": (n_out,)}
        self.OUTPUTS = n_out
        self.steps = 0
        self.calls = {"forward": 0, "predict": 0}

    def init_params(self, seed=0):
        rng = np.random.default_rng(seed)
        n_in, n_out = self.PARAMS["linear1.W"]
        return {
            "linear1.W": (rng.standard_normal((n_in, n_out)) * 0.01).astype(np.float32),
            "linear1.b": np.zeros(n_out, dtype=np.float32),
        }

    @staticmethod
    def _probs(params, x):
        z = x @ params["linear1.W"] + params["linear1.b"]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def forward(self, params, x, y):
        self.calls["forward"] += 1
        p = self._probs(params, x)
        b = len(x)
        loss = -np.mean(np.log(p[np.arange(b), y] + 1e-12))
        return float(loss), (x, y, p)

    def backward(self, params, cache):
        x, y, p = cache
        d = p.copy()
        d[np.arange(len(x)), y] -= 1.0
        d /= len(x)
        return {"linear1.W": (x.T @ d).astype(np.float32), "linear1.b": d.sum(axis=0).astype(np.float32)}

    def value_and_grad(self, params, x, y):
        loss, cache = self.forward(params, x, y)
        return loss, self.backward(params, cache)

    def predict(self, params, x):
        self.calls["predict"] += 1
        return self._probs(params, x)

    def sgd_step(self, params, x, y, lr):
        loss, grads = self.value_and_grad(params, x, y)
        for k, g in grads.items():
            params[k] -= lr * g
        self.steps += 1
        return loss


@pytest.fixture(scope="module")
def digits():
    return datasets.load_digits()


def test_training_on_digits_lowers_loss_and_generalises(digits):
    m = SoftmaxRegression()
    out = io.StringIO()
    init = m.init_params(0)
    init_loss, init_acc = tr.evaluate(m, init, digits[0], digits[1])
    params, hist = tr.train(m, digits, epochs=4, lr=0.5, batch_size=32, seed=0,
                            progress=False, out=out)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert set(hist[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    assert init_loss == pytest.approx(np.log(10), abs=0.05)
    assert hist[-1]["train_loss"] < 0.5 * init_loss
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["test_acc"] > 0.90
    # one sgd_step per minibatch per epoch
    assert m.steps == 4 * int(np.ceil(1437 / 32))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("epoch 3/4  train loss ")
    assert "% " in lines[2] and "test loss" in lines[2] and lines[2].endswith("s)")
    # history numbers match what evaluate reports for the returned params
    tl, ta = tr.evaluate(m, params, digits[2], digits[3])
    assert tl == pytest.approx(hist[-1]["test_loss"], rel=1e-6)
    assert ta == pytest.approx(hist[-1]["test_acc"])


def test_training_is_deterministic_and_depends_on_seed(digits):
    small = tuple(a[:300] for a in digits)
    kw = dict(epochs=2, lr=0.3, batch_size=16, progress=False, out=io.StringIO())
    p1, h1 = tr.train(SoftmaxRegression(), small, seed=3, **kw)
    p2, h2 = tr.train(SoftmaxRegression(), small, seed=3, **kw)
    p3, _ = tr.train(SoftmaxRegression(), small, seed=4, **kw)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert [h["train_loss"] for h in h1] == [h["train_loss"] for h in h2]
    assert not np.array_equal(p1["linear1.W"], p3["linear1.W"])


def test_given_params_are_copied_and_batch_size_one(digits):
    small = tuple(a[:50] for a in digits)
    m = SoftmaxRegression()
    start = m.init_params(7)
    before = {k: v.copy() for k, v in start.items()}
    params, hist = tr.train(m, small, epochs=1, lr=0.1, batch_size=1, params=start,
                            progress=False, out=io.StringIO())
    assert m.steps == 50  # per-example SGD
    for k in start:
        np.testing.assert_array_equal(start[k], before[k])
    assert not np.array_equal(params["linear1.W"], start["linear1.W"])


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_a_live_bar_and_stays_off_stdout(digits):
    small = tuple(a[:64] for a in digits)
    out, err = io.StringIO(), Terminal()
    tr.train(SoftmaxRegression(), small, epochs=1, batch_size=16, progress=True, out=out,
             progress_stream=err)
    text = err.getvalue()
    assert "\r" in text and "epoch 1/1" in text and "scoring 1/1" in text
    assert "\r" not in out.getvalue() and "ex/s" not in out.getvalue()


def test_progress_in_a_log_is_plain_lines_with_rate_eta_and_loss(digits, monkeypatch):
    from bpcompile.training import progress
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)      # a line at every update
    small = tuple(a[:64] for a in digits)
    log = io.StringIO()
    tr.train(SoftmaxRegression(), small, epochs=1, batch_size=16, progress=True,
             out=io.StringIO(), progress_stream=log)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    epoch_lines = [line for line in lines if line.startswith("epoch 1/1")]
    assert len(epoch_lines) == 4                              # one per batch of 16
    assert "64/64" in epoch_lines[-1] and " ex/s" in epoch_lines[-1] and "loss " in epoch_lines[-1]
    assert "<" in epoch_lines[0]                              # elapsed<remaining: the ETA
    assert any(line.startswith("scoring 1/1") for line in lines)


def test_progress_in_a_log_is_silent_for_short_epochs_and_off_when_disabled(digits):
    small = tuple(a[:64] for a in digits)
    log = io.StringIO()
    tr.train(SoftmaxRegression(), small, epochs=2, batch_size=16, progress=True,
             out=io.StringIO(), progress_stream=log)
    assert log.getvalue() == ""                                # < LOG_INTERVAL seconds
    quiet = Terminal()
    tr.train(SoftmaxRegression(), small, epochs=1, progress=False, out=io.StringIO(),
             progress_stream=quiet)
    assert quiet.getvalue() == ""


def test_train_rejects_bad_arguments(digits):
    m = SoftmaxRegression()
    with pytest.raises(ValueError):
        tr.train(m, (digits[0], digits[1][:-1], digits[2], digits[3]), progress=False)
    with pytest.raises(ValueError):
        tr.train(m, digits, batch_size=0, progress=False)


def test_accuracy_rules():
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert tr.accuracy(probs, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert tr.accuracy(probs, np.array([[0, 1], [1, 0], [0, 1]], dtype=float)) == 1.0
    assert tr.accuracy(np.array([0.2, 0.6, 0.9]), np.array([0.0, 1.0, 0.0])) == pytest.approx(2 / 3)
    assert tr.accuracy(np.array([[0.2], [0.6]]), np.array([[0.0], [0.0]])) == 0.5


def test_save_load_round_trip(tmp_path):
    params = SoftmaxRegression().init_params(1)
    params["conv1.K"] = np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2)
    path = tmp_path / "model.npz"
    tr.save_params(path, params)
    back = tr.load_params(path)
    assert set(back) == set(params)
    for k in params:
        assert back[k].dtype == params[k].dtype
        np.testing.assert_array_equal(back[k], params[k])
    assert os.listdir(tmp_path) == ["model.npz"]


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    with pytest.raises(ValueError):
        tr.save_params(path, {"a": np.zeros(3), "b": np.array([object()], dtype=object)})
    assert os.listdir(tmp_path) == []

    class Boom:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        tr.save_params(path, {"a": Boom()})
    assert os.listdir(tmp_path) == []

    # a failure half-way through writing removes the partial temp file
    def half_write(fh, **arrays):
        fh.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        tr.save_params(path, {"a": np.zeros(3)})
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()

    # an existing file survives a failed overwrite untouched
    tr.save_params(path, {"a": np.ones(2)})
    with pytest.raises(ValueError):
        tr.save_params(path, {"a": np.array(["x"], dtype=object)})
    assert os.listdir(tmp_path) == ["model.npz"]
    np.testing.assert_array_equal(tr.load_params(path)["a"], np.ones(2))


def test_load_params_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        tr.load_params(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="bad.npz"):
        tr.load_params(bad)
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="single.npy"):
        tr.load_params(npy)


def test_load_params_into_a_modules_layout(tmp_path):
    from bpcompile.compiler import compile_file, load_module
    compiled = compile_file("examples/pos_tagger.yaml")
    module = load_module(compiled.source, compiled.name)
    params = module.init_params(3)
    path = tmp_path / "tagger.npz"
    tr.save_params(path, params)
    assert tr.load_params(path)["lstm1.fwd.W_hi"].base is None          # plain arrays
    back = tr.load_params(path, module)
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])
        assert back[key].dtype == params[key].dtype
    gates = [back[f"lstm1.fwd.W_h{g}"] for g in "ifoc"]
    assert module._stacked(gates) is gates[0].base                     # side by side again
    tr.save_params(path, {k: v for k, v in params.items() if k != "linear1.b"})
    with pytest.raises(ValueError, match="no parameter 'linear1.b'"):
        tr.load_params(path, module)
    tr.save_params(path, dict(params, **{"linear1.b": np.zeros(3)}))
    with pytest.raises(ValueError, match="linear1.b has shape"):
        tr.load_params(path, module)


# ---------------------------------------------------------------------------
# label forms (bpcompile.training.targets)

from bpcompile.training import metrics, targets  # noqa: E402


@pytest.mark.parametrize("y", [np.array([0, 1, 1, 0]), np.array([0.0, 1.0, 1.0, 0.0]),
                               np.array([[0], [1], [1], [0]]), np.array([False, True, True, False])])
def test_binary_labels_become_float_columns(y):
    t = targets.prepare_targets("sigmoid_binary_cross_entropy", 1, y, np.float32)
    assert t.shape == (4, 1) and t.dtype == np.float32
    np.testing.assert_array_equal(t[:, 0], [0, 1, 1, 0])


def test_regression_targets_keep_their_columns():
    y = np.arange(6.0).reshape(3, 2)
    t = targets.prepare_targets("mse", 2, y, np.float64)
    np.testing.assert_array_equal(t, y)
    one = targets.prepare_targets("mse", 1, np.array([0.5, -1.5]), np.float32)
    assert one.shape == (2, 1) and one.dtype == np.float32


def test_class_labels_from_ids_floats_and_one_hot_rows():
    ids = targets.prepare_targets("softmax_cross_entropy", 3, np.array([2.0, 0.0, 1.0]), np.float32)
    assert ids.dtype == np.int64 and list(ids) == [2, 0, 1]
    one_hot = np.eye(3)[[1, 2, 0]]
    assert list(targets.prepare_targets("softmax_cross_entropy", 3, one_hot, np.float32)) == [1, 2, 0]
    column = targets.prepare_targets("softmax_cross_entropy", 3, np.array([[1], [2]]), np.float32)
    assert list(column) == [1, 2]


@pytest.mark.parametrize("loss, outputs, y, message", [
    ("softmax_cross_entropy", 3, np.array([0, 3]), "label 3; labels must be class ids 0 to 2"),
    ("softmax_cross_entropy", 3, np.array([0.5, 1]), "label 0.5"),
    ("softmax_cross_entropy", 3, np.array([[1, 1, 0], [0, 0, 1]]), "row 0 is not one-hot"),
    ("softmax_cross_entropy", 3, np.zeros((2, 4)), r"shape \(2, 4\)"),
    ("sigmoid_binary_cross_entropy", 1, np.array([0, 2]), "target 2"),
    ("sigmoid_binary_cross_entropy", 2, np.array([0, 1]), r"takes \(2, 2\)"),
    ("mse", 2, np.zeros((3, 3)), r"mse with 2 outputs takes \(3, 2\)"),
    ("mse", 1, np.array([1.0, np.nan]), "not all finite"),
    ("mse", 1, np.array(["a", "b"]), "not numbers"),
])
def test_labels_that_cannot_fit_the_loss_are_refused(loss, outputs, y, message):
    with pytest.raises(ValueError, match=message):
        targets.prepare_targets(loss, outputs, y, np.float32, "training")


# ---------------------------------------------------------------------------
# scoring: one pass, loss and metric from the outputs (bpcompile.training.metrics)

def _compiled(text):
    from bpcompile.compiler import compile_spec, load_module, load_spec
    compiled = compile_spec(load_spec(text, "net.yaml"))
    return load_module(compiled.source, compiled.name)


def _net(loss, outputs, dtype="float64"):
    return _compiled(f"name: net\ndtype: {dtype}\ninput: [3]\nlayers:\n  - linear: 4\n  - tanh\n"
                     f"  - linear: {outputs}\nloss: {loss}\n")


@pytest.mark.parametrize("loss, outputs", [("softmax_cross_entropy", 3),
                                           ("sigmoid_binary_cross_entropy", 1),
                                           ("sigmoid_binary_cross_entropy", 2),
                                           ("mse", 1), ("mse", 2)])
def test_scored_loss_is_the_modules_loss(loss, outputs):
    module = _net(loss, outputs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = {"softmax_cross_entropy": rng.integers(0, 3, 50),
         "sigmoid_binary_cross_entropy": rng.integers(0, 2, (50, outputs)).astype(float),
         "mse": rng.normal(size=(50, outputs))}[loss]
    params = module.init_params(1)
    result = tr.score(module, params, x, y, chunk=16)
    assert result["loss"] == pytest.approx(float(module.forward(params, x, y)[0]), rel=1e-10)


def test_accuracy_rmse_and_r2_follow_their_formulas_across_chunks():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 2)) * 3 + 100            # a large mean: R^2 must not cancel
    y = a + rng.normal(size=(40, 2))
    scorer = metrics.Scorer("mse")
    for start in range(0, 40, 7):
        scorer.add(a[start:start + 7], y[start:start + 7], logits=False)
    result = scorer.result()
    assert result["loss"] == pytest.approx(np.sum((a - y) ** 2) / 2 / 40, rel=1e-12)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((a - y) ** 2)), rel=1e-12)
    r2 = 1 - np.sum((a - y) ** 2) / np.sum((y - y.mean(axis=0)) ** 2)
    assert result["r2"] == pytest.approx(r2, rel=1e-10)
    logits = rng.normal(size=(30, 3))
    labels = (rng.random((30, 3)) > 0.5).astype(float)
    sig = metrics.Scorer("sigmoid_binary_cross_entropy")
    sig.add(logits, labels, logits=True)
    assert sig.result()["acc"] == pytest.approx(np.mean((logits > 0) == (labels == 1)))
    soft = metrics.Scorer("softmax_cross_entropy")
    ids = rng.integers(0, 3, 30)
    soft.add(logits, ids, logits=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert soft.result()["loss"] == pytest.approx(-log_softmax[np.arange(30), ids].mean(), rel=1e-12)
    assert soft.result()["acc"] == pytest.approx(np.mean(logits.argmax(axis=1) == ids))


def test_scoring_makes_one_network_pass_per_chunk(digits):
    m = SoftmaxRegression()
    small = (digits[0][:300], digits[1][:300], digits[2][:100], digits[3][:100])
    tr.train(m, small, epochs=2, batch_size=50, progress=False, out=io.StringIO())
    forward_checks = 2                              # one example of each set, before training
    assert m.calls["forward"] == forward_checks + m.steps
    assert m.calls["predict"] == 2 * 2              # per epoch: one chunk of train, one of test


def test_scoring_uses_logits_when_predict_offers_them(digits):
    class WithLogits(SoftmaxRegression):
        def predict(self, params, x, logits=False):
            z = x @ params["linear1.W"] + params["linear1.b"]
            return z if logits else self._probs(params, x)
    m = WithLogits()
    params = m.init_params(0)
    params["linear1.W"] *= 3000                      # probabilities underflow to 0
    x, y = digits[0][:20], digits[1][:20]
    with_logits = tr.score(m, params, x, y)["loss"]
    from_probabilities = tr.score(SoftmaxRegression(), params, x, y)["loss"]
    z = (x @ params["linear1.W"] + params["linear1.b"]).astype(np.float64)
    exact = np.mean(np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(20), y])
    assert with_logits == pytest.approx(exact, rel=1e-6)
    assert abs(from_probabilities - exact) > 1         # p underflowed: -log p is capped


# ---------------------------------------------------------------------------
# every loss trains

def test_binary_classifier_trains_on_one_dimensional_int_labels():
    module = _net("sigmoid_binary_cross_entropy", 1, "float32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)              # 1-D ints, as users have them
    out = io.StringIO()
    _, history = tr.train(module, (x[:150], y[:150], x[150:], y[150:]), epochs=15, lr=0.5,
                          batch_size=10, progress=False, out=out)
    assert set(history[-1]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    assert history[-1]["test_acc"] > 0.9 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert "acc" in out.getvalue()


def test_regression_trains_on_two_dimensional_targets_and_reports_rmse_and_r2():
    module = _net("mse", 2, "float32")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = np.stack([x[:, 0] - x[:, 2], 0.5 * x[:, 1]], axis=1)
    out = io.StringIO()
    _, history = tr.train(module, (x[:150], y[:150], x[150:], y[150:]), epochs=20, lr=0.1,
                          batch_size=10, progress=False, out=out)
    last = history[-1]
    assert set(last) == {"epoch", "train_loss", "train_rmse", "train_r2", "test_loss", "test_rmse",
                         "test_r2", "seconds"}
    assert last["test_r2"] > 0.9 and last["test_rmse"] < history[0]["test_rmse"]
    line = out.getvalue().splitlines()[-1]
    assert "rmse" in line and "r2" in line and "acc" not in line


# ---------------------------------------------------------------------------
# the loop's hooks: step, start_epoch, on_epoch_end, validation, keep_best

def test_the_step_is_one_callable_and_resuming_repeats_a_full_run(digits):
    small = tuple(a[:200] for a in digits)
    m = SoftmaxRegression()
    seen = []

    def step(params, x, y):
        seen.append(len(x))
        return m.sgd_step(params, x, y, 0.3)

    saved = {}

    def remember(epoch, params, record):
        saved[epoch] = {k: v.copy() for k, v in params.items()}

    full, history = tr.train(m, small, epochs=4, batch_size=64, step=step, on_epoch_end=remember,
                             progress=False, out=io.StringIO())
    assert seen == [64, 64, 64, 8] * 4
    resumed, rest = tr.train(SoftmaxRegression(), small, epochs=4, batch_size=64, lr=0.3,
                             params=saved[2], start_epoch=3, progress=False, out=io.StringIO())
    assert [h["epoch"] for h in rest] == [3, 4]
    for key in full:
        np.testing.assert_array_equal(resumed[key], full[key])
    assert rest[-1]["test_loss"] == history[-1]["test_loss"]


def test_on_epoch_end_can_stop_training(digits):
    small = tuple(a[:100] for a in digits)
    _, history = tr.train(SoftmaxRegression(), small, epochs=5, progress=False, out=io.StringIO(),
                          on_epoch_end=lambda epoch, params, record: epoch == 2)
    assert [h["epoch"] for h in history] == [1, 2]


def test_validation_is_scored_and_keep_best_restores_the_best_epoch(digits):
    small = tuple(a[:300] for a in digits)
    m = SoftmaxRegression()
    rng = np.random.default_rng(0)

    def step(params, x, y):
        loss = m.sgd_step(params, x, y, 0.5)
        if m.steps > 10:                                  # after epoch 1: ruin the weights
            params["linear1.W"] += rng.normal(size=params["linear1.W"].shape).astype(np.float32)
        return loss

    saved = {}
    out = io.StringIO()
    params, history = tr.train(m, small, epochs=3, batch_size=30, step=step, keep_best=True,
                               validation=(digits[2][100:200], digits[3][100:200]), progress=False,
                               out=out, on_epoch_end=lambda e, p, r: saved.update({e: {
                                   k: v.copy() for k, v in p.items()}}))
    assert [k for k in history[0] if k.startswith("val_")] == ["val_loss", "val_acc"]
    best = max(history, key=lambda h: h["val_acc"])["epoch"]
    assert best == 1
    for key in params:
        np.testing.assert_array_equal(params[key], saved[best][key])
    assert f"kept the weights of epoch {best} (best val acc" in out.getvalue()
    assert "  val loss " in out.getvalue().splitlines()[0]


def test_best_weights_watch_the_right_number():
    assert tr.best_key("softmax_cross_entropy", True) == "val_acc"
    assert tr.best_key("mse", False) == "test_loss"
    keeper = tr.BestWeights("test_loss")
    params = {"w": np.zeros(2)}
    for epoch, loss in [(1, 3.0), (2, 1.0), (3, float("nan")), (4, 2.0)]:
        params["w"][:] = epoch
        keeper.consider({"epoch": epoch, "test_loss": loss}, params)
    view = params["w"]
    keeper.restore(params)
    assert keeper.epoch == 2 and params["w"] is view and list(view) == [2.0, 2.0]


# ---------------------------------------------------------------------------
# plots (matplotlib) and history files

from bpcompile.training import history as history_file, plot  # noqa: E402

HISTORY = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.5 + 0.09 * e, "val_loss": 2.1 / e,
            "val_acc": 0.5 + 0.08 * e, "test_loss": 2.2 / e, "test_acc": 0.48 + 0.08 * e,
            "seconds": 0.1} for e in range(1, 6)]


def test_curves_have_axes_legend_and_the_history_values():
    figure = plot.curves_figure(HISTORY)
    loss_axes, metric_axes = figure.axes
    assert loss_axes.get_xlabel() == "epoch" and loss_axes.get_ylabel() == "loss"
    assert metric_axes.get_ylabel() == "accuracy (%)"
    for axes in figure.axes:
        assert [t.get_text() for t in axes.get_legend().get_texts()] == ["train", "validation", "test"]
    np.testing.assert_allclose(loss_axes.lines[2].get_ydata(), [h["test_loss"] for h in HISTORY])
    np.testing.assert_allclose(metric_axes.lines[0].get_ydata(), [100 * h["train_acc"] for h in HISTORY])
    regression = [{"epoch": 1, "train_loss": 1.0, "train_rmse": 0.5, "train_r2": 0.1,
                   "test_loss": 1.2, "test_rmse": 0.6, "test_r2": 0.0}]
    assert plot.curves_figure(regression).axes[1].get_ylabel() == "RMSE"


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_plot_files_by_suffix_carry_bpcompiles_mark(tmp_path, suffix):
    from bpcompile.cli.output import generated_by_us
    path = tmp_path / f"curves{suffix}"
    plot.plot_curves(path, HISTORY)
    data = path.read_bytes()
    assert data.startswith({".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix])
    assert generated_by_us(path)
    if suffix == ".svg":
        import xml.etree.ElementTree as ET
        assert ET.fromstring(data).tag.endswith("svg")
    assert os.listdir(tmp_path) == [path.name]


def test_plot_refuses_unknown_suffixes_and_names_the_extra_when_matplotlib_is_missing(monkeypatch):
    with pytest.raises(plot.PlotError, match=r"\.png, \.svg or \.pdf"):
        plot.plot_format("c.gif")
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # import matplotlib fails
    with pytest.raises(plot.PlotError, match=r"pip install 'bpcompile\[plot\]'"):
        plot.require_matplotlib()


def test_history_as_csv_and_json(tmp_path):
    import csv
    import json
    records = [dict(h) for h in HISTORY[:2]]
    records[1]["test_loss"] = float("nan")
    history_file.write_history(tmp_path / "h.csv", records)
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].startswith("# @generated by bpcompile")
    rows = list(csv.DictReader(lines[1:]))
    assert [float(r["train_loss"]) for r in rows] == [h["train_loss"] for h in records]
    assert rows[1]["test_loss"] == "nan" and list(rows[0]) == list(records[0])
    history_file.write_history(tmp_path / "h.json", records)
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["generator"] == "bpcompile" and data["history"][1]["test_loss"] is None
    assert data["history"][0] == records[0]
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        history_file.write_history(tmp_path / "h.txt", records)


def test_only_our_plots_and_histories_are_recognised(tmp_path):
    from bpcompile.cli.output import generated_by_us
    history_file.write_history(tmp_path / "h.json", HISTORY)
    history_file.write_history(tmp_path / "h.csv", HISTORY)
    assert generated_by_us(tmp_path / "h.json") and generated_by_us(tmp_path / "h.csv")
    (tmp_path / "other.json").write_text('{"generator": "someone"}')
    (tmp_path / "other.svg").write_text('<?xml version="1.0"?>\n<svg/>')
    (tmp_path / "other.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * 5000 + b"/Creator (someone)\n%%EOF")
    (tmp_path / "far.pdf").write_bytes(b"%PDF-1.4\n/Creator (bpcompile)" + b"x" * 5000)
    os.mkfifo(tmp_path / "pipe")
    for name in ("other.json", "other.svg", "other.pdf", "pipe", "missing.pdf"):
        assert not generated_by_us(tmp_path / name)
    assert generated_by_us(tmp_path / "far.pdf")    # the Creator at the start counts too
