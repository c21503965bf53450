"""Tests for bpcompile.training.train: SGD loop, evaluation, parameter files, PNG curves.

The module under training is a hand-written softmax regression that follows
the generated-module contract, so these tests do not depend on the compiler.
"""

import io
import os
import struct
import zlib

import numpy as np
import pytest

from bpcompile.training import datasets, train as tr


class SoftmaxRegression:
    """Softmax regression (64 -> 10) with hand-written gradients, per the module contract."""

    def __init__(self, n_in=64, n_out=10):
        self.PARAMS = {"linear1.W": (n_in, n_out), "linear1.b": (n_out,)}
        self.steps = 0

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


def test_progress_bar_goes_to_stderr(digits, capsys):
    small = tuple(a[:64] for a in digits)
    out = io.StringIO()
    tr.train(SoftmaxRegression(), small, epochs=1, batch_size=16, progress=True, out=out)
    err = capsys.readouterr().err
    assert "\r" in err and "4/4" in err
    assert "\r" not in out.getvalue()


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


def _png_chunks(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


def test_plot_curves_writes_valid_png(tmp_path):
    hist = [
        {"epoch": e, "train_loss": 2.0 / e, "test_loss": 2.2 / e,
         "train_acc": 0.5 + 0.09 * e, "test_acc": 0.48 + 0.08 * e, "seconds": 0.1}
        for e in range(1, 6)
    ]
    path = tmp_path / "curves.png"
    tr.plot_curves(path, hist)
    data = path.read_bytes()
    chunks = _png_chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h, depth, ctype, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (w, h, depth, ctype) == (720, 300, 8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(raw[:, 0] == 0)
    img = raw[:, 1:].reshape(h, w, 3)
    colors = {tuple(c) for c in img.reshape(-1, 3)}
    assert tr._TRAIN in colors and tr._TEST in colors and tr._GRID in colors
    # the train curve appears in both panels
    blue = np.all(img == np.array(tr._TRAIN, dtype=np.uint8), axis=2)
    assert blue[:, 40:w // 2].sum() > 100 and blue[:, w // 2:].sum() > 100
    assert os.listdir(tmp_path) == ["curves.png"]


def test_plot_curves_edge_cases(tmp_path):
    # a single epoch, a non-finite loss, and an empty history all still draw
    one = [{"epoch": 1, "train_loss": float("nan"), "test_loss": 1.0,
            "train_acc": 0.1, "test_acc": 0.1, "seconds": 0.0}]
    for i, hist in enumerate([one, []]):
        p = tmp_path / f"c{i}.png"
        tr.plot_curves(p, hist, width=400, height=200)
        kinds = [k for k, _ in _png_chunks(p.read_bytes())]
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"


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
