"""Train a compiled module with minibatch SGD, score it, save its parameters.

This is the lecture's Algorithm 1 (stochastic gradient descent) written
against the generated-module contract: a module provides ``PARAMS``,
``LOSS``, ``OUTPUTS``, ``DTYPE``, ``init_params(seed)``,
``forward(params, x, y) -> (mean loss, cache)``, ``backward``,
``value_and_grad``, ``predict(params, x)`` and
``sgd_step(params, x, y, lr) -> loss`` (which updates ``params`` in place).

* :func:`train` -- epochs of shuffled minibatches (``batch_size=1`` is the
  per-example SGD of the lecture). The per-batch update is one callable
  (``step``, default :func:`sgd`), and ``start_epoch`` / ``on_epoch_end`` let
  an optimizer, checkpoints or a resumed run plug in without a new loop.
  A tqdm bar shows each epoch's progress (:mod:`.progress`); one summary line
  per epoch goes to ``out``;
* :func:`score` / :func:`evaluate` -- the loss and its metric over a data set,
  one network pass per chunk (:mod:`.metrics`);
* :func:`save_params` / :func:`load_params` -- parameters as an ``.npz``
  (keys like ``"linear1.W"``), written atomically.

Labels are converted once, before the first step, into the form the loss
takes (:mod:`.targets`). A spec's loss options (``loss_options``: class
weights, ignore_index, pos_weight, reduction) are scored as the module's J
(:class:`.metrics.Scorer`). A module with dropout or batch norm trains in train
mode with masks from one generator per run (``rng``, default
``np.random.default_rng(seed)``) and is scored in eval mode (``predict``). Plots are in :mod:`.plot` (matplotlib), history files
in :mod:`.history`.
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .metrics import (Scorer, gives_logits, has_modes, higher_is_better, metric_names,
                      network_outputs)
from .progress import progress_bar
from .targets import prepare_targets

__all__ = [
    "train",
    "sgd",
    "score",
    "evaluate",
    "accuracy",
    "prepare_split",
    "BestWeights",
    "epoch_line",
    "save_params",
    "load_params",
]

Step = Callable[[Dict[str, np.ndarray], np.ndarray, np.ndarray], float]
SCORE_CHUNK = 1024


# ---------------------------------------------------------------------------
# scoring

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
    """Fraction of correct predictions of probabilities `pred` (see :func:`_correct`)."""
    c, n = _correct(pred, y)
    return c / n if n else float("nan")


def score(module, params, x, y, chunk: int = SCORE_CHUNK, bar=None,
          loss_options=None) -> Dict[str, float]:
    """{"loss": ..., and the loss's metrics} of ``params`` on ``(x, y)``.

    ``y`` must already be in the loss's form (:func:`prepare_split`). Each chunk
    goes through the network once, in eval mode (``predict``); ``bar`` (a
    progress bar) advances by the chunk's size. ``loss_options`` are the spec's
    loss options: the loss is then the module's J over the whole set.
    """
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    scorer = Scorer(module.LOSS, loss_options)
    logits = gives_logits(module)
    chunk = max(1, int(chunk))
    for start in range(0, len(x), chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        scorer.add(network_outputs(module, params, xb, logits), yb, logits)
        if bar is not None:
            bar.update(len(xb))
    return scorer.result()


def evaluate(module, params, x, y, chunk: int = SCORE_CHUNK,
             loss_options=None) -> Tuple[float, float]:
    """(mean loss, first metric) of ``params`` on ``(x, y)`` in any label form the
    loss accepts: accuracy for the cross-entropies, RMSE for mse."""
    y = prepare_targets(module.LOSS, module.OUTPUTS, y, module.DTYPE, "evaluation",
                        _ignore_index(loss_options))
    if len(x) == 0:
        return float("nan"), float("nan")
    result = score(module, params, x, y, chunk, loss_options=loss_options)
    return result["loss"], result[metric_names(module.LOSS)[0]]


# ---------------------------------------------------------------------------
# data

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


def _ignore_index(loss_options):
    return (loss_options or {}).get("ignore_index")


def prepare_split(module, x, y, which, params=None, loss_options=None):
    """(x, y) with y converted to the loss's form (:mod:`.targets`), after checking
    that the inputs are finite and that a first example fits the module."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(f"the {which} set's inputs are not all finite numbers")
    ignore_index = _ignore_index(loss_options)
    y = prepare_targets(module.LOSS, module.OUTPUTS, y, module.DTYPE, which, ignore_index)
    if params is not None and len(x):
        try:
            _check_fit(module, params, x, y, ignore_index)
        except (ValueError, TypeError, IndexError) as err:
            raise ValueError(f"the {which} set does not fit the module: {err}") from None
    return x, y


def _check_fit(module, params, x, y, ignore_index):
    """One example through forward, in eval mode where the module has one (no mask
    drawn, no running statistic moved). The example is the first whose label is not
    ignored (a mean over no label raises); with every label ignored, predict checks x."""
    first = 0
    if ignore_index is not None:
        kept = np.flatnonzero(np.asarray(y) != ignore_index)
        if len(kept) == 0:
            module.predict(params, x[:1])
            return
        first = int(kept[0])
    part = slice(first, first + 1)
    if has_modes(module):
        module.forward(params, x[part], y[part], train=False)
    else:
        module.forward(params, x[part], y[part])


def _check_rate(lr):
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) or not (
            0 < float(lr) < float("inf")):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    return float(lr)


# ---------------------------------------------------------------------------
# training

def sgd(module, lr: float, rng=None) -> Step:
    """The default step: ``module.sgd_step(params, x, y, lr)``, which updates in place
    and returns the batch's loss before the update; a module with a train mode
    draws its dropout masks from ``rng`` (:func:`mode_keywords`)."""
    lr = _check_rate(lr)
    keywords = mode_keywords(module, rng)

    def step(params, x, y):
        return module.sgd_step(params, x, y, lr, **keywords)
    if hasattr(module, "sgd_epoch"):
        step.epoch = lambda params, x, y, batch_size: module.sgd_epoch(
            params, x, y, lr, batch_size, **({"rng": rng} if keywords else {}))
    return step


def mode_keywords(module, rng):
    """The keywords of a training step: {"train": True, "rng": rng} for a module with
    dropout or batch norm, {} for one without (its functions take no such keyword)."""
    return {"train": True, "rng": rng} if has_modes(module) else {}


def _distributed_sgd(module, lr, ranks, rng=None):
    """Plain SGD on the global batch under MPI: the module's sgd_update of the summed
    gradient (the fused sgd_step cannot take a gradient from elsewhere)."""
    from .distributed import example_step
    lr, state = _check_rate(lr), {}
    return example_step(module, lambda params, grads: module.sgd_update(params, grads, state, lr),
                        ranks, rng=rng)


class BestWeights:
    """Keeps a copy of the parameters of the best epoch so far, by `key` of the
    epoch's record (e.g. "val_acc", higher is better; "test_loss", lower)."""

    def __init__(self, key: str):
        self.key = key
        self.higher = higher_is_better(key.split("_", 1)[1])
        self.epoch = None
        self.value = None
        self.params = None

    def consider(self, record: dict, params: Dict[str, np.ndarray]) -> None:
        value = float(record[self.key])
        if not np.isfinite(value):
            return
        if self.value is None or (value > self.value if self.higher else value < self.value):
            self.epoch, self.value = record["epoch"], value
            self.params = {k: np.array(v, copy=True) for k, v in params.items()}

    def restore(self, params: Dict[str, np.ndarray]) -> None:
        """Copy the best weights back into `params` in place (its layout is kept)."""
        if self.params is not None:
            for key, value in self.params.items():
                np.copyto(params[key], value)


def best_key(loss: str, has_validation: bool) -> str:
    """The record key --keep-best watches: validation (else test) accuracy, or loss for mse."""
    split = "val" if has_validation else "test"
    metric = "acc" if "acc" in metric_names(loss) else "loss"
    return f"{split}_{metric}"


_SPLIT_NAMES = (("train", "train"), ("val", "val"), ("test", "test"))


def _format_metric(name: str, value: float) -> str:
    if name == "acc":
        return f"acc {100 * value:.2f}%"
    if name == "ppl":
        return f"perplexity {value:.2f}"
    return f"{name} {value:.4f}"


def epoch_line(record: dict, epochs: int, metrics) -> str:
    """``epoch 3/10  train loss 0.1234 acc 96.52%  test loss 0.1500 acc 95.83%  (1.2s)``."""
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for split, label in _SPLIT_NAMES:
        if f"{split}_loss" not in record and f"{split}_{metrics[0]}" not in record:
            continue
        words = [label]
        if f"{split}_loss" in record:
            words.append(f"loss {record[f'{split}_loss']:.4f}")
        words += [_format_metric(m, record[f"{split}_{m}"]) for m in metrics
                  if f"{split}_{m}" in record]
        parts.append(" ".join(words))
    return "  ".join(parts) + f"  ({record['seconds']:.1f}s)"


# With a step that can take many batches in one call (step.epoch: the module's
# sgd_epoch, one compiled call in a numba module), an epoch is run this many
# examples at a time (whole batches), so that the progress bar still moves.
EPOCH_CHUNK = 4096


def _run_epoch(step, params, x, y, order, batch_size, bar, epoch) -> None:
    many = getattr(step, "epoch", None)
    if many is not None:
        chunk = batch_size * max(1, EPOCH_CHUNK // batch_size)
        for start in range(0, len(order), chunk):
            idx = order[start:start + chunk]
            loss = many(params, x[idx], y[idx], batch_size)
            if loss is None:        # the step cannot take many batches after all
                break
            _check_finite(float(loss), epoch, f"batches {start // batch_size + 1}.."
                          f"{(start + len(idx) - 1) // batch_size + 1}")
            bar.add_loss(float(loss), len(idx))
        else:
            return
        order = order[start:]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        loss = float(step(params, x[idx], y[idx]))
        _check_finite(loss, epoch, f"batch {start // batch_size + 1}")
        bar.add_loss(loss, len(idx))


def _check_finite(loss, epoch, where):
    if not np.isfinite(loss):
        raise ValueError(f"the loss became {loss} in epoch {epoch}, {where}: training "
                         "diverged (try a smaller lr)")


def _score_sets(module, params, sets, bar, loss_options=None) -> dict:
    record = {}
    for split, x, y in sets:
        for name, value in score(module, params, x, y, bar=bar, loss_options=loss_options).items():
            record[f"{split}_{name}"] = value
    return record


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
    *,
    step: Optional[Step] = None,
    start_epoch: int = 1,
    on_epoch_end: Optional[Callable[[int, dict, dict], Optional[bool]]] = None,
    validation=None,
    keep_best: bool = False,
    progress_stream=None,
    ranks=None,
    loss_options=None,
    rng=None,
) -> Tuple[Dict[str, np.ndarray], List[dict]]:
    """Minibatch training on ``data = (x_train, y_train, x_test, y_test)``.

    Parameters start from ``module.init_params(seed)`` unless ``params`` is
    given (a copy of it is trained; the caller's arrays are left alone).
    Labels may take any form the loss accepts (:mod:`.targets`); they are
    converted once. Epoch ``e`` (1-based) visits the training set in the order
    of ``np.random.default_rng(seed + e).permutation`` and calls
    ``step(params, xb, yb) -> loss`` on each minibatch (default
    :func:`sgd` with ``lr``), so a run is fully determined by its arguments and
    epochs ``start_epoch..epochs`` of a resumed run are those of a full run.

    After each epoch the train, validation (``validation=(x_val, y_val)``,
    optional) and test sets are scored (:func:`score`), a line such as
    ``epoch 3/10  train loss 0.1234 acc 96.52%  test loss 0.1500 acc 95.83%  (1.2s)``
    goes to ``out`` (default ``sys.stdout``), and a record ``{"epoch",
    "train_loss", "train_acc", ["val_loss", "val_acc",] "test_loss",
    "test_acc", "seconds"}`` (``rmse`` and ``r2`` instead of ``acc`` for mse;
    accuracies as fractions) is appended to the history. Then
    ``on_epoch_end(epoch, params, record)`` is called; a true result stops
    training. With ``keep_best`` the weights of the best epoch (by validation,
    else test, accuracy; loss for mse) are copied back into ``params`` at the
    end. ``progress`` shows tqdm bars on ``progress_stream`` (default stderr).

    Data-parallel under MPI: give ``ranks=distributed.group()`` on every rank
    (each with the whole data set). Every batch of ``batch_size`` examples is
    then the global batch: each rank computes the gradient of its part and
    ``step`` (default: plain SGD through ``module.sgd_update``) updates every
    rank the same way; write your own with :mod:`.distributed`'s
    ``example_step``. Rank 0 alone scores, prints, keeps the best and calls
    ``on_epoch_end``; every rank gets the same history.

    ``loss_options`` (the spec's loss options) make the scores the module's J
    (:func:`score`). A module with dropout or batch norm: the default step trains
    in train mode with its masks drawn from ``rng`` (default
    ``np.random.default_rng(seed)``, made once for the run; pass the generator of
    a resumed run to continue its stream); a ``step`` of your own draws from the
    generator you give it. Scoring is always eval mode.

    Returns ``(params, history)``.
    """
    x_train, y_train, x_test, y_test = _check_data(data)
    epochs, batch_size, start_epoch = int(epochs), int(batch_size), int(start_epoch)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if start_epoch < 1:
        raise ValueError(f"start_epoch must be >= 1, got {start_epoch}")
    if rng is None and has_modes(module):
        rng = np.random.default_rng(seed)
    if step is None:
        step = sgd(module, lr, rng) if ranks is None else _distributed_sgd(module, lr, ranks, rng)
    out = sys.stdout if out is None else out
    shown = progress and (ranks is None or ranks.is_root)
    if params is None:
        params = module.init_params(seed)
    else:
        params = {k: np.array(v, copy=True) for k, v in params.items()}
    sets = [("train", *prepare_split(module, x_train, y_train, "training", params, loss_options))]
    if validation is not None:
        sets.append(("val", *prepare_split(module, *validation, "validation", params,
                                           loss_options)))
    sets.append(("test", *prepare_split(module, x_test, y_test, "test", params, loss_options)))
    metrics = metric_names(module.LOSS)
    best = BestWeights(best_key(module.LOSS, validation is not None)) if keep_best else None
    x_train, y_train = sets[0][1], sets[0][2]
    scored = sum(len(x) for _, x, _ in sets)
    history: List[dict] = []
    if ranks is not None:                       # every rank starts from rank 0's weights
        ranks.bcast_params(params)
    for epoch in range(start_epoch, epochs + 1):
        t0 = time.perf_counter()
        order = np.random.default_rng(seed + epoch).permutation(len(x_train))
        with progress_bar(len(order), f"epoch {epoch}/{epochs}", shown, progress_stream) as bar:
            _run_epoch(step, params, x_train, y_train, order, batch_size, bar, epoch)

        def end_epoch():
            """Score, print, keep the best, call on_epoch_end: (record, stop)."""
            with progress_bar(scored, f"scoring {epoch}/{epochs}", shown, progress_stream) as bar:
                record = {"epoch": epoch, **_score_sets(module, params, sets, bar, loss_options)}
            if not np.isfinite(record["train_loss"]):
                raise ValueError(f"the training loss became {record['train_loss']} in epoch "
                                 f"{epoch}: training diverged (try a smaller lr)")
            record["seconds"] = time.perf_counter() - t0
            out.write(epoch_line(record, epochs, metrics) + "\n")
            out.flush()
            if best is not None:
                best.consider(record, params)
            return record, bool(on_epoch_end is not None and on_epoch_end(epoch, params, record))
        record, stop = root_only(ranks, end_epoch, params)
        history.append(record)
        if stop:
            break
    if best is not None and best.epoch is not None:
        best.restore(params)
        out.write(f"kept the weights of epoch {best.epoch} (best {best.key.replace('_', ' ')} "
                  f"{_best_value(best)})\n")
        out.flush()
    if ranks is not None and keep_best:
        ranks.bcast_params(params)
    return params, history


def root_only(ranks, work, params):
    """`work()` here without MPI; with MPI (`ranks`, a distributed.Group) on rank 0
    alone, its result sent to every rank, after checking that every rank holds the
    same parameters (which the identical updates guarantee)."""
    if ranks is None:
        return work()
    if not ranks.same_params(params):
        raise RuntimeError("the ranks' parameters differ: the data-parallel updates "
                           "diverged (a bug; please report it)")
    return ranks.on_root(work)


def _best_value(best: BestWeights) -> str:
    if best.key.endswith("_acc"):
        return f"{100 * best.value:.2f}%"
    return f"{best.value:.4f}"


# ---------------------------------------------------------------------------
# parameter files

from ..cli.output import atomic_write as _atomic_write  # noqa: E402  (one atomic writer for the package)
from ..cli.output import NPZ_MARKER as _NPZ_MARKER  # noqa: E402


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
    """Read parameters written by :func:`save_params`, or the parameters of a
    checkpoint (what ``bpcompile train --save`` writes), into a dict of arrays.

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
    from .checkpoint import checkpoint_params, is_checkpoint
    with loaded as z:
        try:
            arrays = {k: np.array(z[k]) for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{name}: not a readable .npz parameter file ({e})") from None
    return checkpoint_params(arrays) if is_checkpoint(arrays) else arrays


