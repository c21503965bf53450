"""The loss and the metric that fits it, from one network pass per chunk.

After each epoch the data are scored in chunks. Each chunk goes through the
network once (``predict``, asking for logits when the module offers
``predict(..., logits=True)``), and both the loss and the metric are computed
from those outputs in NumPy:

* softmax cross-entropy: loss and accuracy (argmax);
* sigmoid binary cross-entropy: loss and accuracy (logit > 0, i.e. p > 0.5;
  with K outputs, the fraction of the N*K labels that are right);
* mse: loss (the batch mean of sum (a - y)^2 / 2, as the module defines it),
  RMSE over all N*K entries, and R^2 (1 - residual / total sum of squares,
  summed over the K outputs).

The loss is the data loss: a spec's ``l2`` term is not part of it. With
probabilities instead of logits, a probability that underflowed to 0 counts
as the smallest positive float (the module's own loss uses log-sum-exp).

A spec's loss options (``Scorer(loss, options)``, the mapping under the loss's
name in ``loss:``) are applied as the module applies them, and the result is
the module's J over the whole set, not a mean of chunk means: each chunk adds
the sum of its weighted terms and the mean's divisor (its examples; its
unignored labels' class weights for cross-entropy; its N*K entries for
``reduction: mean`` of mse and binary cross-entropy), and the loss is their
ratio (the plain sum for ``reduction: sum``). Labels equal to
``ignore_index`` count neither in the loss nor in the accuracy.
``reduction: none`` gives no single number and is refused.
"""

from __future__ import annotations

import inspect
from typing import Dict, Tuple

import numpy as np

__all__ = ["METRICS", "metric_names", "Scorer", "network_outputs", "higher_is_better", "has_modes"]

# loss -> the metric names reported beside the loss, in order
METRICS = {
    "softmax_cross_entropy": ("acc",),
    "sigmoid_binary_cross_entropy": ("acc",),
    "mse": ("rmse", "r2"),
}
_TINY = np.finfo(np.float64).tiny


def metric_names(loss: str) -> Tuple[str, ...]:
    """The metrics reported for `loss` (accuracy, or RMSE and R^2)."""
    return METRICS.get(loss, ())


def higher_is_better(metric: str) -> bool:
    return metric in ("acc", "r2")


def gives_logits(module) -> bool:
    """Whether ``module.predict`` takes ``logits=True``."""
    try:
        return "logits" in inspect.signature(module.predict).parameters
    except (TypeError, ValueError):
        return False


def has_modes(module) -> bool:
    """Whether the module has a train and an eval mode (dropout or batch norm):
    its forward takes train= and rng=."""
    try:
        return "rng" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def network_outputs(module, params, x, logits: bool):
    """One pass of the network over `x`: logits if `logits`, else predict's probabilities."""
    if logits:
        return module.predict(params, x, logits=True)
    return module.predict(params, x)


class Scorer:
    """Sums a loss and its metric over chunks; :meth:`result` gives the means.

    ``add(outputs, y, logits)`` takes the network's outputs for a chunk (logits,
    or predict's probabilities/values) and the prepared targets
    (:func:`bpcompile.training.targets.prepare_targets`).
    """

    def __init__(self, loss: str, options=None):
        if loss not in METRICS:
            raise ValueError(f"no scoring rule for the loss {loss!r}")
        options = dict(options or {})
        self.reduction = options.get("reduction")
        if self.reduction not in (None, "mean", "sum"):
            raise ValueError(f"cannot score reduction {self.reduction!r}: the loss is one number "
                             "per example (use reduction: mean or sum)")
        weights = options.get("class_weights")
        self.class_weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.ignore_index = options.get("ignore_index")
        self.pos_weight = options.get("pos_weight")
        self.loss = loss
        self.examples = 0
        self.loss_sum = 0.0
        self.divisor = 0.0          # what the module's mean divides loss_sum by
        self.correct = 0
        self.labels = 0
        self.squared_error = 0.0
        self.target_mean = None
        self.target_spread = None

    def add(self, outputs, y, logits: bool) -> None:
        a = np.asarray(outputs, dtype=np.float64)
        y = np.asarray(y)
        if self.loss == "softmax_cross_entropy":
            self._add_softmax(a, y, logits)
        elif self.loss == "sigmoid_binary_cross_entropy":
            self._add_sigmoid(a.reshape(len(a), -1), y.reshape(len(y), -1).astype(np.float64), logits)
        else:
            self._add_squared(a.reshape(len(a), -1), y.reshape(len(y), -1).astype(np.float64))
        self.examples += len(a)

    def _add_softmax(self, a, y, logits):
        if self.ignore_index is not None:           # ignored labels: no loss, no accuracy
            kept = y != self.ignore_index
            a, y = a[kept], y[kept]
        rows = np.arange(len(y))
        if logits:
            shifted = a - a.max(axis=1, keepdims=True)
            log_p = shifted[rows, y] - np.log(np.exp(shifted).sum(axis=1))
        else:
            log_p = np.log(np.maximum(a[rows, y], _TINY))
        weight = np.ones(len(y)) if self.class_weights is None else self.class_weights[y]
        self.loss_sum -= float((weight * log_p).sum())
        self.divisor += float(weight.sum())
        self.correct += int(np.count_nonzero(np.argmax(a, axis=1) == y))
        self.labels += len(y)

    def _add_sigmoid(self, a, y, logits):
        if logits:
            # pos_weight * y * softplus(-a) + (1 - y) * softplus(a), as the module
            pos = 1.0 if self.pos_weight is None else np.asarray(self.pos_weight, np.float64)
            per_label = pos * y * np.logaddexp(0.0, -a) + (1.0 - y) * np.logaddexp(0.0, a)
            predicted = a > 0
        else:
            if self.pos_weight is not None:
                raise ValueError("pos_weight needs the logits (predict(..., logits=True))")
            s = np.clip(a, _TINY, 1.0 - np.finfo(np.float64).epsneg)
            per_label = -(y * np.log(s) + (1.0 - y) * np.log1p(-s))
            predicted = a > 0.5
        self.loss_sum += float(per_label.sum())
        self.divisor += float(y.size if self.reduction == "mean" else len(y))
        self.correct += int(np.count_nonzero(predicted == (y > 0.5)))
        self.labels += y.size

    def _add_squared(self, a, y):
        residual = float(np.square(a - y).sum())
        # the default mse is sum (a - y)^2 / 2 per example; with a reduction option,
        # torch's mse_loss: no 1/2, a mean over the N*K entries or a sum
        self.loss_sum += residual / 2 if self.reduction is None else residual
        self.divisor += float(len(y) if self.reduction is None else y.size)
        self.squared_error += residual
        self.labels += y.size
        self._add_spread(y)

    def _add_spread(self, y):
        # the targets' sum of squares around their mean, merged chunk by chunk
        # (Chan et al.), so a large mean does not cancel the digits away
        n, chunk_mean = self.examples, y.mean(axis=0)
        chunk_spread = np.square(y - chunk_mean).sum(axis=0)
        if self.target_mean is None:
            self.target_mean, self.target_spread = chunk_mean, chunk_spread
            return
        k = len(y)
        delta = chunk_mean - self.target_mean
        self.target_mean = self.target_mean + delta * k / (n + k)
        self.target_spread = self.target_spread + chunk_spread + np.square(delta) * n * k / (n + k)

    def result(self) -> Dict[str, float]:
        """{"loss": mean loss per example, and the metrics of :data:`METRICS`}."""
        if self.examples == 0:
            return {"loss": float("nan"), **{m: float("nan") for m in metric_names(self.loss)}}
        result = {"loss": self._loss()}
        if self.loss == "mse":
            result["rmse"] = float(np.sqrt(self.squared_error / self.labels))
            result["r2"] = self._r2()
        else:
            result["acc"] = self.correct / self.labels if self.labels else float("nan")
        return result

    def _loss(self) -> float:
        if self.reduction == "sum":
            return self.loss_sum
        # every label ignored: the module's mean would raise; nothing to average
        return self.loss_sum / self.divisor if self.divisor > 0 else float("nan")

    def _r2(self) -> float:
        total = float(self.target_spread.sum())
        return 1.0 - self.squared_error / total if total > 0 else float("nan")
