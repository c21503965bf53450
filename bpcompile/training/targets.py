"""Labels as users have them, converted once into the form a module's loss takes.

The loss of a layer spec decides what a target is:

* ``softmax_cross_entropy``: class ids ``0..K-1`` as a 1-D array (ints, or
  floats holding whole numbers), or one-hot rows of shape (N, K); the result is
  int64 ids of shape (N,);
* ``sigmoid_binary_cross_entropy``: 0/1 labels (bools, ints or floats in
  [0, 1]) of shape (N, K), or (N,) when K == 1; the result is (N, K) floats;
* ``mse``: regression targets of shape (N, K), or (N,) when K == 1; the result
  is (N, K) floats.

The conversion happens here, before training, so the training loop feeds the
module exactly what it expects and does not depend on the module's own casting.
"""

from __future__ import annotations

import numpy as np

__all__ = ["prepare_targets", "CLASS_IDS", "FLOAT_TARGETS"]

CLASS_IDS = ("softmax_cross_entropy",)
FLOAT_TARGETS = ("sigmoid_binary_cross_entropy", "mse")


def prepare_targets(loss: str, outputs: int, y, dtype, which: str = "training",
                    ignore_index=None) -> np.ndarray:
    """``y`` converted for ``loss`` with ``outputs`` units (see the module docstring).
    Class ids equal to ``ignore_index`` (the loss option) pass although they name no
    class.

    Raises ValueError naming the ``which`` set ("training", "test", ...) when the
    labels cannot mean what the loss needs.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"the {which} set's targets are not numbers (dtype {y.dtype})")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"the {which} set's targets are not all finite numbers")
    if y.ndim == 0:
        raise ValueError(f"the {which} set's targets are a single number, expected one per example")
    if loss in CLASS_IDS:
        return _class_ids(y, int(outputs), which, ignore_index)
    if loss in FLOAT_TARGETS:
        targets = _float_rows(y, int(outputs), which, loss)
        if loss == "sigmoid_binary_cross_entropy":
            _check_probabilities(targets, which)
        return targets.astype(dtype, copy=False)
    return y


def _class_ids(y: np.ndarray, outputs: int, which: str, ignore_index=None) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == outputs and outputs > 1:
        return _one_hot_to_ids(y, which)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"the {which} set's labels have shape {y.shape}: softmax cross-entropy "
                         f"takes class ids (N,) or one-hot rows (N, {outputs})")
    bad = (y != np.floor(y)) | (y < 0) | (y >= outputs)
    if ignore_index is not None:
        bad &= y != ignore_index
    if np.any(bad):
        label = y[bad][0].item()
        raise ValueError(f"the {which} set has the label {label!r}; labels must be class "
                         f"ids 0 to {outputs - 1}")
    return y.astype(np.int64)


def _one_hot_to_ids(y: np.ndarray, which: str) -> np.ndarray:
    rows_ok = np.all((y == 0) | (y == 1), axis=1) & (y.sum(axis=1) == 1)
    if not np.all(rows_ok):
        row = int(np.flatnonzero(~rows_ok)[0])
        raise ValueError(f"the {which} set's label row {row} is not one-hot (one 1, the rest 0)")
    return np.argmax(y, axis=1).astype(np.int64)


def _float_rows(y: np.ndarray, outputs: int, which: str, loss: str) -> np.ndarray:
    if y.ndim == 1 and outputs == 1:
        return y.reshape(len(y), 1)
    if y.ndim == 2 and y.shape[1] == outputs:
        return y
    one = f" or ({len(y)},)" if outputs == 1 else ""
    raise ValueError(f"the {which} set's targets have shape {y.shape}: {loss} with {outputs} "
                     f"output{'s' if outputs != 1 else ''} takes ({len(y)}, {outputs}){one}")


def _check_probabilities(targets: np.ndarray, which: str) -> None:
    bad = (targets < 0) | (targets > 1)
    if np.any(bad):
        value = targets[bad][0].item()
        raise ValueError(f"the {which} set has the target {value!r}; binary cross-entropy "
                         "takes targets between 0 and 1")
