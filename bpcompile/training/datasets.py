"""Datasets for training compiled modules: the bundled digits, user .npz files, MNIST IDX files.

Every loader returns the same 4-tuple ``(x_train, y_train, x_test, y_test)``
that :func:`bpcompile.training.train.train` consumes:

* ``x_*`` is a floating-point array (``dtype``, float32 by default) whose first
  axis is the example axis;
* ``y_*`` has one entry or one row per example, shape (N,) or (N, K):
  ``int64`` when the stored labels are integers or booleans (class ids, 0/1
  labels), otherwise floating-point targets in ``dtype`` (regression targets,
  one-hot or soft labels). Which forms a loss accepts, and how they are
  converted for it, is decided by :mod:`bpcompile.training.targets`.

Sources:

* :func:`load_digits` -- the UCI "Optical Recognition of Handwritten Digits"
  8x8 images (1,797 examples, the set scikit-learn calls ``load_digits``),
  shipped inside the package as ``bpcompile/data/digits.npz`` (CC BY 4.0);
* :func:`load_npz` -- a user's ``.npz`` file holding the four arrays;
* :func:`load_idx` / :func:`load_mnist_dir` -- the IDX format of MNIST and
  Fashion-MNIST, plain or gzip-compressed;
* :func:`load_dataset` -- picks one of the above from a name or a path.

Nothing here downloads anything: data comes from the package or from files the
user already has. Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import struct
import zipfile
import zlib
from typing import Tuple

import numpy as np

__all__ = [
    "load_digits",
    "load_npz",
    "load_idx",
    "load_mnist_dir",
    "load_dataset",
    "split_validation",
    "DIGITS_SOURCE",
]

Dataset = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")

DIGITS_SOURCE = (
    "UCI Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak, 1998), "
    "CC BY 4.0, https://archive.ics.uci.edu/dataset/80"
)


# ---------------------------------------------------------------------------
# helpers

def _float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"invalid dtype {dtype!r}: {e}") from None
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, got {dt}")
    return dt


def _labels(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer/boolean labels -> int64 class ids; anything else -> float targets."""
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    return y.astype(dtype)


# ---------------------------------------------------------------------------
# bundled digits

def load_digits(dtype="float32") -> Dataset:
    """The bundled 8x8 handwritten digits, split 1,437 train / 360 test.

    Returns ``(x_train, y_train, x_test, y_test)``: ``x`` of shape (N, 64) in
    ``dtype`` with pixels scaled from 0..16 to [0, 1], ``y`` int64 digits 0..9.
    The split is fixed (see the ``source`` array inside the file).
    """
    dt = _float_dtype(dtype)
    resource = importlib.resources.files("bpcompile") / "data" / "digits.npz"
    with resource.open("rb") as fh:
        with np.load(fh, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in _SPLIT_KEYS}
    x_train = arrays["x_train"].reshape(-1, 64).astype(dt) / dt.type(16)
    x_test = arrays["x_test"].reshape(-1, 64).astype(dt) / dt.type(16)
    return (
        x_train,
        arrays["y_train"].astype(np.int64),
        x_test,
        arrays["y_test"].astype(np.int64),
    )


# ---------------------------------------------------------------------------
# user .npz files

def load_npz(path, dtype="float32") -> Dataset:
    """Load ``x_train, y_train, x_test, y_test`` from a user's ``.npz`` file.

    ``x`` arrays are cast to ``dtype`` as they are (no rescaling: store them
    already scaled); ``y`` arrays are 1-D or 2-D (one row per example),
    integer labels become int64 and other labels become ``dtype`` targets. Raises ValueError
    naming the file and the offending array when the file is missing, is not
    an .npz archive, lacks an array, or holds arrays of the wrong kind or of
    mismatched lengths.
    """
    dt = _float_dtype(dtype)
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ValueError(f"{name}: no such file")
    if os.path.isdir(name):
        raise ValueError(f"{name}: is a directory, expected an .npz file")
    try:
        loaded = np.load(name, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{name}: not a readable .npz archive ({e})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: not an .npz archive (it holds a single .npy array)")
    arrays = {}
    with loaded as z:
        missing = [k for k in _SPLIT_KEYS if k not in z.files]
        if missing:
            raise ValueError(
                f"{name}: missing array(s) {', '.join(missing)} "
                f"(found: {', '.join(z.files) or 'none'})"
            )
        for k in _SPLIT_KEYS:
            try:
                arrays[k] = np.asarray(z[k])
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"{name}: array {k} cannot be read ({e})") from None
    for k in _SPLIT_KEYS:
        a = arrays[k]
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name}: array {k} has non-numeric dtype {a.dtype}")
        if a.ndim == 0:
            raise ValueError(f"{name}: array {k} is a scalar, expected one row per example")
    for part in ("train", "test"):
        x, y = arrays["x_" + part], arrays["y_" + part]
        if y.ndim not in (1, 2):
            raise ValueError(f"{name}: array y_{part} must be 1-D (N,) or 2-D (N, K), "
                             f"got shape {y.shape}")
        if len(x) != len(y):
            raise ValueError(
                f"{name}: x_{part} has {len(x)} examples but y_{part} has {len(y)}"
            )
    if arrays["y_train"].shape[1:] != arrays["y_test"].shape[1:]:
        raise ValueError(f"{name}: y_train has rows of shape {arrays['y_train'].shape[1:]} "
                         f"but y_test has rows of shape {arrays['y_test'].shape[1:]}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"{name}: x_train examples have shape {arrays['x_train'].shape[1:]} "
            f"but x_test examples have shape {arrays['x_test'].shape[1:]}"
        )
    return (
        arrays["x_train"].astype(dt),
        _labels(arrays["y_train"], dt),
        arrays["x_test"].astype(dt),
        _labels(arrays["y_test"], dt),
    )


# ---------------------------------------------------------------------------
# IDX (MNIST) files

# IDX type byte -> big-endian numpy dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_maybe_gzip(name: str) -> bytes:
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ValueError(f"{name}: cannot read ({e.strerror or e})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{name}: corrupt gzip data ({e})") from None
    return data


def load_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), plain or gzip-compressed.

    The header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B
    int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte giving the number
    of dimensions, then one big-endian uint32 per dimension. Returns the data
    as a numpy array of that shape in native byte order. Raises ValueError on a
    bad magic number, unknown type, or truncated/oversized data.
    """
    name = os.fspath(path)
    data = _read_maybe_gzip(name)
    if len(data) < 4:
        raise ValueError(f"{name}: truncated IDX file ({len(data)} bytes, no header)")
    zero0, zero1, type_byte, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} (must start with 00 00)"
        )
    if type_byte not in _IDX_TYPES:
        raise ValueError(f"{name}: unknown IDX data type byte 0x{type_byte:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({ndim} dimensions declared)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dt = _IDX_TYPES[type_byte]
    count = 1
    for d in dims:
        count *= d
    expected = count * dt.itemsize
    body = len(data) - header
    if body < expected:
        raise ValueError(
            f"{name}: truncated IDX file: shape {dims} needs {expected} data bytes, found {body}"
        )
    if body > expected:
        raise ValueError(
            f"{name}: {body - expected} unexpected bytes after the IDX data of shape {dims}"
        )
    arr = np.frombuffer(data, dtype=dt, count=count, offset=header).reshape(dims)
    return arr.astype(dt.newbyteorder("="))


_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find_idx(directory: str, stem: str) -> str:
    # Accept the canonical names, the common "train-images.idx3-ubyte"
    # variant, and either with a .gz suffix.
    dotted = stem.replace("-idx", ".idx")
    for cand in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = os.path.join(directory, cand)
        if os.path.isfile(p):
            return p
    raise ValueError(f"{directory}: missing MNIST file {stem} (or {stem}.gz)")


def load_mnist_dir(path, dtype="float32") -> Dataset:
    """Load MNIST or Fashion-MNIST from a directory of the four standard IDX files.

    Looks for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each possibly
    ``.gz``). Images come back as (N, 1, H, W) -- (N, 1, 28, 28) for MNIST --
    in ``dtype`` scaled to [0, 1]; labels as int64.
    """
    dt = _float_dtype(dtype)
    directory = os.fspath(path)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory")
    out = {}
    for key, stem in _MNIST_FILES.items():
        fname = _find_idx(directory, stem)
        arr = load_idx(fname)
        if key.startswith("x"):
            if arr.ndim != 3:
                raise ValueError(f"{fname}: expected images of shape (N, H, W), got {arr.shape}")
            if arr.dtype != np.uint8:
                raise ValueError(f"{fname}: expected uint8 pixels, got {arr.dtype}")
            out[key] = (arr.astype(dt) / dt.type(255))[:, None, :, :]
        else:
            if arr.ndim != 1:
                raise ValueError(f"{fname}: expected 1-D labels, got shape {arr.shape}")
            if arr.dtype.kind not in "iu":
                raise ValueError(f"{fname}: expected integer labels, got {arr.dtype}")
            out[key] = arr.astype(np.int64)
    for part in ("train", "test"):
        nx, ny = len(out["x_" + part]), len(out["y_" + part])
        if nx != ny:
            raise ValueError(f"{directory}: {part} set has {nx} images but {ny} labels")
    return out["x_train"], out["y_train"], out["x_test"], out["y_test"]


# ---------------------------------------------------------------------------
# dispatch

def load_dataset(name_or_path, dtype="float32") -> Dataset:
    """Load a dataset by name or path.

    ``"digits"`` -> :func:`load_digits`; a path ending in ``.npz`` ->
    :func:`load_npz`; a directory -> :func:`load_mnist_dir`. Anything else
    raises ValueError.
    """
    spec = os.fspath(name_or_path)
    if spec == "digits":
        return load_digits(dtype)
    if spec.lower().endswith(".npz"):
        return load_npz(spec, dtype)
    if os.path.isdir(spec):
        return load_mnist_dir(spec, dtype)
    raise ValueError(
        f"unknown dataset {spec!r}: expected 'digits', a path to an .npz file, "
        "or a directory of MNIST IDX files"
    )


# ---------------------------------------------------------------------------
# validation split

def split_validation(x, y, fraction, seed=0):
    """``(x_train, y_train, x_val, y_val)``: a random ``fraction`` of the examples
    (drawn with ``np.random.default_rng(seed)``, at least one) held out for
    validation, the rest kept for training in their original order."""
    fraction = float(fraction)
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be between 0 and 1, got {fraction:g}")
    n = len(x)
    held = max(1, int(round(fraction * n)))
    if held >= n:
        raise ValueError(f"a validation fraction of {fraction:g} leaves no training examples "
                         f"out of {n}")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).choice(n, size=held, replace=False)] = True
    return x[~chosen], y[~chosen], x[chosen], y[chosen]
