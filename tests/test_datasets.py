"""Tests for bpcompile.training.datasets: bundled digits, .npz files, IDX/MNIST files, dispatch."""

import gzip
import importlib.resources
import io
import struct

import numpy as np
import pytest

from bpcompile.training import datasets

FIRST_TRAIN_LABELS = [4, 9, 5, 8, 5, 3, 3, 9, 7, 1]


# ---------------------------------------------------------------------------
# bundled digits

def test_digits_shapes_dtypes_and_range():
    x_train, y_train, x_test, y_test = datasets.load_digits()
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert len(x_train) + len(x_test) == 1797
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        # pixels were 0..16, so every value is a multiple of 1/16
        np.testing.assert_array_equal(x * 16, np.round(x * 16))
    assert set(np.unique(y_train)) == set(range(10))
    assert set(np.unique(y_test)) == set(range(10))
    # the UCI set has between 174 and 183 examples of each digit
    counts = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    assert counts.sum() == 1797 and counts.min() >= 174 and counts.max() <= 183


def test_digits_dtype_and_fixed_split():
    a = datasets.load_digits("float64")
    b = datasets.load_digits()
    assert a[0].dtype == np.float64
    np.testing.assert_array_equal(a[0].astype(np.float32), b[0])
    np.testing.assert_array_equal(a[3], b[3])
    # the split is fixed: these are the first labels of the stored split
    assert b[0][0].sum() > 5  # a real (non-blank) image
    np.testing.assert_array_equal(b[1][:10], FIRST_TRAIN_LABELS)
    with pytest.raises(ValueError):
        datasets.load_digits("int32")


def test_digits_file_is_small_and_documents_provenance():
    res = importlib.resources.files("bpcompile") / "data" / "digits.npz"
    with res.open("rb") as fh:
        raw = fh.read()
    assert len(raw) < 100_000
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        assert set(z.files) == {"x_train", "y_train", "x_test", "y_test", "source"}
        assert z["x_train"].dtype == np.uint8 and int(z["x_train"].max()) == 16
        text = " ".join(str(s) for s in z["source"])
    assert "UCI" in text and "CC BY 4.0" in text


# ---------------------------------------------------------------------------
# user .npz files

def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_npz_ok(tmp_path):
    rng = np.random.default_rng(0)
    p = _write_npz(tmp_path / "d.npz",
                   x_train=rng.random((5, 3, 4)), y_train=np.array([0, 1, 2, 1, 0], dtype=np.int32),
                   x_test=rng.random((2, 3, 4)), y_test=np.array([0.5, 1.0]))
    x_train, y_train, x_test, y_test = datasets.load_npz(p)
    assert x_train.shape == (5, 3, 4) and x_train.dtype == np.float32
    assert y_train.dtype == np.int64 and list(y_train) == [0, 1, 2, 1, 0]
    assert y_test.dtype == np.float32  # float targets stay floats
    assert datasets.load_npz(p, dtype="float64")[2].dtype == np.float64


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x_train=np.zeros((3, 2)), y_train=np.zeros(3), x_test=np.zeros((1, 2))), "y_test"),
        (dict(x_train=np.zeros((3, 2)), y_train=np.zeros(2), x_test=np.zeros((1, 2)),
              y_test=np.zeros(1)), "x_train has 3 examples but y_train has 2"),
        (dict(x_train=np.zeros((3, 2)), y_train=np.zeros(3), x_test=np.zeros((1, 5)),
              y_test=np.zeros(1)), "x_test"),
        (dict(x_train=np.zeros((3, 2)), y_train=np.zeros((3, 2)), x_test=np.zeros((1, 2)),
              y_test=np.zeros(1)), r"y_train has rows of shape \(2,\) but y_test"),
        (dict(x_train=np.zeros((3, 2)), y_train=np.zeros((3, 2, 1)), x_test=np.zeros((1, 2)),
              y_test=np.zeros(1)), r"y_train must be 1-D \(N,\) or 2-D"),
        (dict(x_train=np.array(["a", "b"]), y_train=np.zeros(2), x_test=np.zeros((1, 2)),
              y_test=np.zeros(1)), "x_train has non-numeric"),
        (dict(x_train=np.array([None, 1], dtype=object), y_train=np.zeros(2),
              x_test=np.zeros((1, 2)), y_test=np.zeros(1)), "x_train"),
    ],
)
def test_load_npz_bad_arrays(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match=message) as info:
        datasets.load_npz(p)
    assert "bad.npz" in str(info.value)
    assert "\n" not in str(info.value)


def test_load_npz_bad_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        datasets.load_npz(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello, this is not an archive")
    with pytest.raises(ValueError, match="junk.npz"):
        datasets.load_npz(junk)
    broken_zip = tmp_path / "broken.npz"
    broken_zip.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ValueError, match="broken.npz"):
        datasets.load_npz(broken_zip)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single.npy"):
        datasets.load_npz(single)
    with pytest.raises(ValueError, match="directory"):
        datasets.load_npz(tmp_path)


# ---------------------------------------------------------------------------
# IDX / MNIST

def _idx_bytes(arr, type_byte=0x08):
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_byte]
    head = bytes([0, 0, type_byte, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.asarray(arr, dtype=dt).tobytes()


def test_load_idx_plain_and_gz(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    plain = tmp_path / "imgs-idx3-ubyte"
    plain.write_bytes(_idx_bytes(imgs))
    out = datasets.load_idx(plain)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, imgs)

    vals = np.array([[1.5, -2.0], [3.25, 1e6]], dtype=np.float32)
    gz = tmp_path / "vals.idx.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(vals, 0x0D)))
    out = datasets.load_idx(gz)
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, vals)

    ints = np.array([-70000, 5, 70000], dtype=np.int32)
    p = tmp_path / "ints.idx"
    p.write_bytes(_idx_bytes(ints, 0x0C))
    np.testing.assert_array_equal(datasets.load_idx(p), ints)


def test_load_idx_errors(tmp_path):
    good = _idx_bytes(np.zeros((2, 2), dtype=np.uint8))
    cases = {
        "magic.idx": (b"\x01\x02" + good[2:], "magic"),
        "type.idx": (good[:2] + b"\x07" + good[3:], "type"),
        "short.idx": (good[:-1], "truncated"),
        "header.idx": (good[:6], "truncated"),
        "tiny.idx": (b"\x00\x00", "truncated"),
        "long.idx": (good + b"\x00", "unexpected"),
        "badgz.idx.gz": (b"\x1f\x8b" + b"garbage", "gzip"),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ValueError, match=msg) as info:
            datasets.load_idx(p)
        assert name in str(info.value)
    with pytest.raises(ValueError):
        datasets.load_idx(tmp_path / "missing.idx")


def _write_mnist(directory, n_train=6, n_test=3, gz=False):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 255
    for name, a in arrays.items():
        data = _idx_bytes(a)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_dir(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz=gz)
    x_train, y_train, x_test, y_test = datasets.load_mnist_dir(tmp_path)
    assert x_train.shape == (6, 1, 28, 28) and x_test.shape == (3, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    np.testing.assert_allclose(x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    # load_dataset dispatches a directory here
    again = datasets.load_dataset(str(tmp_path))
    np.testing.assert_array_equal(again[1], y_train)


def test_load_mnist_dir_errors(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        datasets.load_mnist_dir(tmp_path)
    # label count that does not match the image count
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2, dtype=np.uint8)))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        datasets.load_mnist_dir(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        datasets.load_mnist_dir(tmp_path / "nowhere")


# ---------------------------------------------------------------------------
# dispatch

def test_load_dataset_dispatch(tmp_path):
    d = datasets.load_dataset("digits")
    assert d[0].shape == (1437, 64)
    p = _write_npz(tmp_path / "mine.npz", x_train=np.ones((2, 2)), y_train=np.array([0, 1]),
                   x_test=np.ones((1, 2)), y_test=np.array([1]))
    assert datasets.load_dataset(p)[0].shape == (2, 2)
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load_dataset("cifar10")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load_dataset(tmp_path / "file.csv")


def test_load_npz_keeps_two_dimensional_targets(tmp_path):
    p = tmp_path / "reg.npz"
    np.savez(p, x_train=np.zeros((4, 3)), y_train=np.arange(8.0).reshape(4, 2),
             x_test=np.zeros((2, 3)), y_test=np.ones((2, 2)))
    _, y_train, _, y_test = datasets.load_npz(p)
    assert y_train.shape == (4, 2) and y_train.dtype == np.float32
    np.testing.assert_array_equal(y_train, np.arange(8.0).reshape(4, 2))
    assert y_test.shape == (2, 2)


def test_split_validation_is_seeded_disjoint_and_complete():
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    x_train, y_train, x_val, y_val = datasets.split_validation(x, y, 0.3, seed=4)
    assert len(y_val) == 3 and len(y_train) == 7
    assert sorted(np.concatenate([y_train, y_val]).tolist()) == list(range(10))
    np.testing.assert_array_equal(x_val[:, 0], 2 * y_val)            # rows stay paired
    assert list(y_train) == sorted(y_train)                          # training order kept
    again = datasets.split_validation(x, y, 0.3, seed=4)
    np.testing.assert_array_equal(again[3], y_val)
    other = [set(datasets.split_validation(x, y, 0.3, seed=s)[3].tolist()) for s in range(6)]
    assert len({frozenset(o) for o in other}) > 1                    # the seed matters
    assert len(datasets.split_validation(x, y, 0.01)[3]) == 1         # at least one example


@pytest.mark.parametrize("fraction, message", [(0, "between 0 and 1"), (1.0, "between 0 and 1"),
                                               (-0.2, "between 0 and 1"), (0.96, "no training")])
def test_split_validation_refuses_bad_fractions(fraction, message):
    with pytest.raises(ValueError, match=message):
        datasets.split_validation(np.zeros((10, 2)), np.zeros(10), fraction)
