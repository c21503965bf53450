"""Train a compiled module with minibatch SGD, evaluate it, save its parameters, plot its curves.

This is the lecture's Algorithm 1 (stochastic gradient descent) written
against the generated-module contract: a module provides ``PARAMS``,
``init_params(seed)``, ``forward(params, x, y) -> (mean loss, cache)``,
``backward``, ``value_and_grad``, ``predict(params, x)`` and
``sgd_step(params, x, y, lr) -> loss`` (which updates ``params`` in place).

* :func:`train` -- epochs of shuffled minibatch SGD (``batch_size=1`` is the
  per-example SGD of the lecture), with a text progress bar on stderr and one
  summary line per epoch;
* :func:`evaluate` -- mean loss and accuracy over a dataset, in chunks;
* :func:`save_params` / :func:`load_params` -- parameters as an ``.npz``
  (keys like ``"linear1.W"``), written atomically;
* :func:`plot_curves` -- a PNG of loss and accuracy per epoch, drawn with
  numpy and encoded with zlib + struct only (no plotting library).
"""

from __future__ import annotations

import os
import struct
import sys
import time
import zipfile
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "train",
    "evaluate",
    "accuracy",
    "save_params",
    "load_params",
    "plot_curves",
]


# ---------------------------------------------------------------------------
# evaluation

def _correct(pred: np.ndarray, y: np.ndarray) -> Tuple[int, int]:
    """Number of correct predictions and number of predictions in a chunk.

    * (B, K) probabilities with K > 1 and integer ids y of shape (B,)
      (or one-hot y of shape (B, K)): argmax over the last axis;
    * (B,) or (B, 1) probabilities (binary sigmoid): threshold at 0.5,
      targets thresholded at 0.5 too;
    * (B, K) probabilities with multi-label 0/1 targets of the same shape:
      each of the B*K thresholded outputs counts.
    """
    pred = np.asarray(pred)
    y = np.asarray(y)
    b = len(pred)
    if pred.ndim == 1 or (pred.ndim == 2 and pred.shape[1] == 1):
        p = pred.reshape(b) > 0.5
        t = y.reshape(b) > 0.5
        return int(np.count_nonzero(p == t)), b
    if y.shape == pred.shape[:-1]:
        hit = np.argmax(pred, axis=-1) == y
        return int(np.count_nonzero(hit)), int(hit.size)
    if y.shape == pred.shape:
        yf = y.astype(np.float64)
        one_hot = np.all((yf == 0) | (yf == 1)) and np.all(yf.sum(axis=-1) == 1)
        if one_hot:
            hit = np.argmax(pred, axis=-1) == np.argmax(yf, axis=-1)
        else:
            hit = (pred > 0.5) == (yf > 0.5)
        return int(np.count_nonzero(hit)), int(hit.size)
    raise ValueError(
        f"cannot score predictions of shape {pred.shape} against targets of shape {y.shape}"
    )


def accuracy(pred, y) -> float:
    """Fraction of correct predictions (see :func:`evaluate` for the rules)."""
    c, n = _correct(pred, y)
    return c / n if n else float("nan")


def evaluate(module, params, x, y, chunk: int = 1024) -> Tuple[float, float]:
    """Mean loss and accuracy of ``params`` on ``(x, y)``, computed in chunks.

    The loss is ``module.forward(params, xb, yb)[0]`` (a batch mean) weighted
    by chunk size; accuracy uses ``module.predict``: argmax over the last axis
    for multi-class probabilities, a 0.5 threshold for a single output column
    or a 1-D output. Accuracy is a fraction in [0, 1].
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}")
    if n == 0:
        return float("nan"), float("nan")
    chunk = max(1, int(chunk))
    total_loss = 0.0
    correct = 0
    counted = 0
    for start in range(0, n, chunk):
        xb = x[start:start + chunk]
        yb = y[start:start + chunk]
        loss = module.forward(params, xb, yb)[0]
        total_loss += float(loss) * len(xb)
        c, k = _correct(module.predict(params, xb), yb)
        correct += c
        counted += k
    return total_loss / n, correct / counted


# ---------------------------------------------------------------------------
# training

class _Progress:
    """A one-line text progress bar redrawn with '\\r' on a stream."""

    def __init__(self, stream, label: str, total: int, width: int = 30):
        self.stream = stream
        self.label = label
        self.total = max(total, 1)
        self.width = width
        self.last = 0.0
        self.length = 0

    def update(self, done: int, loss: float, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        filled = int(self.width * done / self.total)
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        line = f"{self.label} [{bar[:self.width]}] {done}/{self.total} loss {loss:.4f}"
        self.length = max(self.length, len(line))
        self.stream.write("\r" + line)
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r" + " " * self.length + "\r")
        self.stream.flush()


def _check_data(data) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        x_train, y_train, x_test, y_test = data
    except (TypeError, ValueError):
        raise ValueError("data must be a tuple (x_train, y_train, x_test, y_test)") from None
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train has {len(x_train)} examples but y_train has {len(y_train)}")
    if len(x_test) != len(y_test):
        raise ValueError(f"x_test has {len(x_test)} examples but y_test has {len(y_test)}")
    if len(x_train) == 0:
        raise ValueError("the training set is empty")
    if len(x_test) == 0:
        raise ValueError("the test set is empty")
    return x_train, y_train, x_test, y_test


def check_examples(module, x, y, which, params=None):
    """Raise ValueError unless (x, y) can be fed to `module`: finite inputs and
    targets, class ids in range for softmax cross-entropy, and a first example
    the module's own shape and dtype checks accept.  Run on the training and the
    test set before the first step, so that bad data fails at once."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(f"the {which} set's inputs are not all finite numbers")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"the {which} set's targets are not all finite numbers")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"the {which} set's targets are not numbers (dtype {y.dtype})")
    outputs = getattr(module, "OUTPUTS", None)
    if getattr(module, "LOSS", None) == "softmax_cross_entropy" and y.ndim == 1 and outputs:
        if y.size and (np.any(y != np.floor(y)) or y.min() < 0 or y.max() >= outputs):
            bad = y[(y != np.floor(y)) | (y < 0) | (y >= outputs)][0]
            raise ValueError(f"the {which} set has the label {bad.item()!r}; labels must be class "
                             f"ids 0 to {outputs - 1}")
    if params is not None and len(x):
        try:
            module.forward(params, x[:1], y[:1])
        except (ValueError, TypeError, IndexError) as err:
            raise ValueError(f"the {which} set does not fit the module: {err}") from None


def _check_rate(lr):
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) or not (
            0 < float(lr) < float("inf")):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    return float(lr)


def train(
    module,
    data,
    epochs: int = 10,
    lr: float = 0.1,
    batch_size: int = 32,
    seed: int = 0,
    params: Optional[Dict[str, np.ndarray]] = None,
    progress: bool = True,
    out=None,
) -> Tuple[Dict[str, np.ndarray], List[dict]]:
    """Minibatch SGD (Algorithm 1) on ``data = (x_train, y_train, x_test, y_test)``.

    Parameters start from ``module.init_params(seed)`` unless ``params`` is
    given (a copy of it is trained; the caller's arrays are left alone). Epoch
    ``e`` (1-based) visits the training set in the order of
    ``np.random.default_rng(seed + e).permutation``, calling
    ``module.sgd_step(params, xb, yb, lr)`` on each minibatch, so a run is
    fully determined by its arguments. After each epoch the train and test
    sets are evaluated (:func:`evaluate`), a line such as
    ``epoch 3/10  train loss 0.1234 acc 96.52%  test loss 0.1500 acc 95.83%  (1.2s)``
    is printed to ``out`` (default ``sys.stdout``), and a dict with keys
    ``epoch, train_loss, train_acc, test_loss, test_acc, seconds`` (accuracies
    as fractions) is appended to the history. With ``progress=True`` a text
    progress bar is drawn on stderr during each epoch.

    Returns ``(params, history)``.
    """
    x_train, y_train, x_test, y_test = _check_data(data)
    lr = _check_rate(lr)
    epochs = int(epochs)
    batch_size = int(batch_size)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if out is None:
        out = sys.stdout
    if params is None:
        params = module.init_params(seed)
    else:
        params = {k: np.array(v, copy=True) for k, v in params.items()}
    check_examples(module, x_train, y_train, "training", params)
    check_examples(module, x_test, y_test, "test", params)

    n = len(x_train)
    n_batches = (n + batch_size - 1) // batch_size
    history: List[dict] = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = np.random.default_rng(seed + epoch).permutation(n)
        bar = _Progress(sys.stderr, f"epoch {epoch}/{epochs}", n_batches) if progress else None
        running = 0.0
        seen = 0
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss = module.sgd_step(params, x_train[idx], y_train[idx], lr)
            if not np.isfinite(loss):
                raise ValueError(f"the loss became {float(loss)} in epoch {epoch}, batch {b + 1}: "
                                 "training diverged (try a smaller lr)")
            running += float(loss) * len(idx)
            seen += len(idx)
            if bar is not None:
                bar.update(b + 1, running / seen, force=(b + 1 == n_batches))
        if bar is not None:
            bar.close()
        train_loss, train_acc = evaluate(module, params, x_train, y_train)
        test_loss, test_acc = evaluate(module, params, x_test, y_test)
        if not np.isfinite(train_loss):
            raise ValueError(f"the training loss became {train_loss} in epoch {epoch}: training "
                             "diverged (try a smaller lr)")
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "seconds": seconds,
        }
        history.append(record)
        out.write(
            f"epoch {epoch}/{epochs}  train loss {train_loss:.4f} acc {100 * train_acc:.2f}%"
            f"  test loss {test_loss:.4f} acc {100 * test_acc:.2f}%  ({seconds:.1f}s)\n"
        )
        out.flush()
    return params, history


# ---------------------------------------------------------------------------
# parameter files

from ..cli.output import atomic_write as _atomic_write  # noqa: E402  (one atomic writer for the package)
from ..cli.output import NPZ_MARKER as _NPZ_MARKER, PNG_MARKER as _PNG_MARKER  # noqa: E402


def save_params(path, params: Dict[str, np.ndarray]) -> None:
    """Write ``params`` to ``path`` as an .npz (see :func:`params_npz`), atomically."""
    data = params_npz(params)
    _atomic_write(path, lambda fh: fh.write(data))


def params_npz(params: Dict[str, np.ndarray]) -> bytes:
    """The .npz file of ``params`` (name -> array, e.g. ``"linear1.W"``).

    :func:`save_params` writes it to a temporary file in the same directory and
    renames it into place, so ``path`` is never left half-written. Raises
    ValueError for non-string names or non-numeric arrays (nothing is written then).
    """
    arrays = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
        a = np.asarray(value)
        if a.dtype.kind not in "biufc":
            raise ValueError(f"parameter {name!r} has non-numeric dtype {a.dtype}")
        arrays[name] = a
    return _npz_bytes(arrays)


def _npz_bytes(arrays) -> bytes:
    """The .npz archive of `arrays`, with bpcompile's marker as the zip comment (so that
    a later --save may replace it without --force; np.load ignores the comment)."""
    import io
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = _NPZ_MARKER
    return buffer.getvalue()


def load_params(path, module=None) -> Dict[str, np.ndarray]:
    """Read parameters written by :func:`save_params` into a dict of arrays.

    With a generated `module`, the values are copied into a fresh
    ``module.init_params()``: its layout (a recurrent layer's gate weights
    stored side by side) and dtype are kept, and a missing parameter or a
    shape that does not fit is a ValueError.
    """
    loaded = _read_params(path)
    if module is None:
        return loaded
    params = module.init_params()
    for key, value in params.items():
        if key not in loaded:
            raise ValueError(f"{os.fspath(path)}: no parameter {key!r}")
        if loaded[key].shape != value.shape:
            raise ValueError(f"{os.fspath(path)}: {key} has shape {loaded[key].shape}, "
                             f"the module expects {value.shape}")
        np.copyto(value, loaded[key], casting="same_kind")
    return params


def _read_params(path) -> Dict[str, np.ndarray]:
    name = os.fspath(path)
    try:
        loaded = np.load(name, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{name}: not a readable .npz parameter file ({e})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: not an .npz parameter file (it holds a single .npy array)")
    with loaded as z:
        try:
            return {k: np.array(z[k]) for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{name}: not a readable .npz parameter file ({e})") from None


# ---------------------------------------------------------------------------
# PNG plotting (numpy rasteriser + zlib/struct encoder)

# 5x7 bitmap font: each glyph is 7 rows of 5 bits, most significant bit left.
_FONT = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110),
    "1": (0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110),
    "2": (0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111),
    "3": (0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110),
    "4": (0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010),
    "5": (0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110),
    "6": (0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110),
    "7": (0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000),
    "8": (0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110),
    "9": (0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100),
    ".": (0, 0, 0, 0, 0, 0b01100, 0b01100),
    "-": (0, 0, 0, 0b11111, 0, 0, 0),
    "+": (0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0),
    "%": (0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011),
    "(": (0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010),
    ")": (0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000),
    "A": (0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001),
    "C": (0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110),
    "E": (0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111),
    "H": (0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001),
    "I": (0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110),
    "L": (0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111),
    "N": (0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001),
    "O": (0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110),
    "P": (0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000),
    "R": (0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001),
    "S": (0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110),
    "T": (0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100),
    "U": (0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110),
    "Y": (0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100),
}

_WHITE = (255, 255, 255)
_AXIS = (60, 60, 60)
_GRID = (225, 225, 225)
_TEXT = (40, 40, 40)
_TRAIN = (31, 119, 180)   # blue
_TEST = (230, 110, 20)    # orange


class _Canvas:
    """An RGB image with the few drawing operations the plot needs."""

    def __init__(self, width: int, height: int, background=_WHITE):
        self.w = width
        self.h = height
        self.px = np.empty((height, width, 3), dtype=np.uint8)
        self.px[:] = background

    def rect(self, x0, y0, x1, y1, color) -> None:
        """Fill the rectangle [x0, x1] x [y0, y1] (inclusive, clipped)."""
        x0, x1 = max(int(x0), 0), min(int(x1), self.w - 1)
        y0, y1 = max(int(y0), 0), min(int(y1), self.h - 1)
        if x0 <= x1 and y0 <= y1:
            self.px[y0:y1 + 1, x0:x1 + 1] = color

    def hline(self, x0, x1, y, color) -> None:
        self.rect(min(x0, x1), y, max(x0, x1), y, color)

    def vline(self, x, y0, y1, color) -> None:
        self.rect(x, min(y0, y1), x, max(y0, y1), color)

    def segment(self, x0, y0, x1, y1, color, radius=1, clip=None) -> None:
        """A thick line from (x0, y0) to (x1, y1): a square brush stamped along it."""
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        t = np.linspace(0.0, 1.0, steps + 1)
        xs = np.rint(x0 + (x1 - x0) * t).astype(np.int64)
        ys = np.rint(y0 + (y1 - y0) * t).astype(np.int64)
        cx0, cy0, cx1, cy1 = clip if clip is not None else (0, 0, self.w - 1, self.h - 1)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                px, py = xs + dx, ys + dy
                ok = (px >= cx0) & (px <= cx1) & (py >= cy0) & (py <= cy1)
                self.px[py[ok], px[ok]] = color

    def text(self, x, y, s: str, color=_TEXT, scale: int = 1) -> None:
        """Draw ``s`` with its top-left corner at (x, y); unknown characters are blank."""
        for i, ch in enumerate(s.upper()):
            glyph = _FONT.get(ch, _FONT[" "])
            gx = x + i * 6 * scale
            for row, bits in enumerate(glyph):
                for col in range(5):
                    if bits & (1 << (4 - col)):
                        self.rect(gx + col * scale, y + row * scale,
                                  gx + col * scale + scale - 1, y + row * scale + scale - 1, color)

    @staticmethod
    def text_width(s: str, scale: int = 1) -> int:
        return max(len(s) * 6 - 1, 0) * scale

    def png(self, marker: bool = False) -> bytes:
        return _encode_png(self.px, marker)


def _encode_png(rgb: np.ndarray, marker: bool = False) -> bytes:
    """Encode an (H, W, 3) uint8 array as a PNG (8-bit RGB, filter 0, zlib)."""
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    software = chunk(_PNG_MARKER[:4], _PNG_MARKER[4:]) if marker else b""   # tEXt Software=bpcompile
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + software
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b""))


def _nice_ticks(lo: float, hi: float, target: int = 5) -> List[float]:
    """Round tick values covering [lo, hi], steps of 1, 2 or 5 times a power of ten."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(target, 1)
    mag = 10.0 ** np.floor(np.log10(raw))
    step = mag * 10
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            step = m * mag
            break
    first = np.floor(lo / step + 1e-9) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-6:
        if v >= lo - step * 1e-6:
            ticks.append(float(round(v, 12)))
        v += step
    return ticks


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    if float(v).is_integer():
        return str(int(v))
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    return s


def _panel(canvas: _Canvas, box, title: str, epochs: Sequence[int], series, y_range=None) -> None:
    """Draw one chart in ``box = (x0, y0, x1, y1)``: gridlines, axes, labels, series.

    ``series`` is a list of (values, colour); non-finite values break the line.
    """
    bx0, by0, bx1, by1 = box
    # plot area inside the box, leaving room for tick labels and the title
    px0, py0, px1, py1 = bx0 + 44, by0 + 20, bx1 - 8, by1 - 28
    canvas.text(bx0 + (bx1 - bx0 - canvas.text_width(title)) // 2, by0 + 4, title)

    values = np.concatenate([np.asarray(v, dtype=np.float64) for v, _ in series]) if series else np.zeros(0)
    finite = values[np.isfinite(values)]
    if y_range is not None:
        lo, hi = y_range
    elif finite.size:
        lo, hi = min(0.0, float(finite.min())), float(finite.max())
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1.0
    yticks = _nice_ticks(lo, hi)
    if y_range is None and len(yticks) > 1 and yticks[-1] < hi:
        # round the top of an automatic range up to the next tick
        yticks.append(float(round(yticks[-1] + (yticks[1] - yticks[0]), 12)))
    lo, hi = min(lo, yticks[0]), max(hi, yticks[-1])

    n = len(epochs)
    ex_lo, ex_hi = (float(min(epochs)), float(max(epochs))) if n else (0.0, 1.0)
    if ex_hi <= ex_lo:
        ex_lo, ex_hi = ex_lo - 1.0, ex_hi + 1.0

    def sx(e):
        return px0 + (np.asarray(e, dtype=np.float64) - ex_lo) / (ex_hi - ex_lo) * (px1 - px0)

    def sy(v):
        return py1 - (np.asarray(v, dtype=np.float64) - lo) / (hi - lo) * (py1 - py0)

    # horizontal gridlines and y labels
    for t in yticks:
        y = int(round(float(sy(t))))
        canvas.hline(px0, px1, y, _GRID)
        label = _fmt_tick(t)
        canvas.text(px0 - 4 - canvas.text_width(label), y - 3, label)
    # vertical gridlines and x labels (integer epochs, thinned to ~10)
    xticks = [e for e in _nice_ticks(ex_lo, ex_hi, target=8) if float(e).is_integer()]
    for e in xticks:
        x = int(round(float(sx(e))))
        canvas.vline(x, py0, py1, _GRID)
        label = _fmt_tick(e)
        canvas.text(x - canvas.text_width(label) // 2, py1 + 5, label)
    canvas.text(px0 + (px1 - px0 - canvas.text_width("EPOCH")) // 2, py1 + 16, "EPOCH")
    # axes
    canvas.vline(px0, py0, py1, _AXIS)
    canvas.hline(px0, px1, py1, _AXIS)

    clip = (px0, py0, px1, py1)
    for vals, color in series:
        xs = sx(epochs)
        ys = sy(vals)
        ok = np.isfinite(np.asarray(vals, dtype=np.float64))
        for i in range(n):
            if not ok[i]:
                continue
            if i + 1 < n and ok[i + 1]:
                canvas.segment(xs[i], ys[i], xs[i + 1], ys[i + 1], color, radius=1, clip=clip)
            # point marker
            canvas.segment(xs[i], ys[i], xs[i], ys[i], color, radius=2, clip=clip)


def plot_curves(path, history: Sequence[dict], width: int = 720, height: int = 300) -> None:
    """Write the PNG of :func:`curves_png` to ``path``, atomically."""
    data = curves_png(history, width, height, marker=False)
    _atomic_write(path, lambda fh: fh.write(data))


def curves_png(history: Sequence[dict], width: int = 720, height: int = 300,
               marker: bool = True) -> bytes:
    """A PNG with two charts: loss per epoch and accuracy (%) per epoch.

    Train curves are blue, test curves orange (legend at the top). ``history``
    is the list returned by :func:`train`. The image is drawn with numpy and
    encoded with zlib + struct.  With marker=True it carries a text chunk
    Software=bpcompile after IHDR, by which `bpcompile train --plot` knows that
    it may replace the file.
    """
    width = max(int(width), 320)
    height = max(int(height), 160)
    epochs = [int(h["epoch"]) for h in history]

    def col(key, scale=1.0):
        return np.array([float(h[key]) * scale for h in history], dtype=np.float64)

    canvas = _Canvas(width, height)
    top = 18
    half = width // 2
    _panel(canvas, (0, top, half - 1, height - 1), "LOSS", epochs,
           [(col("train_loss"), _TRAIN), (col("test_loss"), _TEST)])
    acc = [(col("train_acc", 100.0), _TRAIN), (col("test_acc", 100.0), _TEST)]
    finite = np.concatenate([a for a, _ in acc])
    finite = finite[np.isfinite(finite)]
    lo = float(np.floor(finite.min() / 10.0) * 10.0) if finite.size else 0.0
    _panel(canvas, (half, top, width - 1, height - 1), "ACCURACY %", epochs, acc,
           y_range=(min(max(lo, 0.0), 90.0), 100.0))

    # legend: coloured squares with labels, centred at the top
    items = [("TRAIN", _TRAIN), ("TEST", _TEST)]
    total = sum(10 + 4 + canvas.text_width(s) + 16 for s, _ in items) - 16
    x = (width - total) // 2
    for label, color in items:
        canvas.rect(x, 5, x + 9, 14, color)
        canvas.text(x + 14, 6, label)
        x += 10 + 4 + canvas.text_width(label) + 16

    return canvas.png(marker)
