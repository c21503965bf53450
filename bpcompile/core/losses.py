"""The table of losses: one record per loss, read by the layer front end, the code
generator and the templates.  A loss is fused with its link (softmax, sigmoid or
none) into one tensor op of tensor_ops.py, whose adjoint is the lecture's simple
form; adding a loss is one record here plus that op (and its kernel helper).
"""

from dataclasses import dataclass
from typing import Optional

from .op_records import RowRule, TensorOp


@dataclass(frozen=True)
class Loss:
    name: str
    op: str                      # the fused tensor op computing it from the logits
    link: str                    # what predict applies to the logits: an elementwise primitive
                                 # ("sigmoid"), a helper ("softmax" calls _softmax), or none
    predict_text: str            # what predict returns, for its docstring
    text: str                    # what the loss is, for the module docstring
    aux: tuple = ()              # extra values the op's forward returns, for its adjoint
    class_ids: bool = False      # targets are class ids (B,), not values (B, K)
    min_outputs: int = 1
    takes_logits: bool = True    # the last layer must be linear (the loss applies the link)
    sequence_op: Optional[str] = None   # the per-position form for sequence specs
    sequence_aux: tuple = ()
    sequence_text: str = ""
    options: tuple = ()          # the keys of `loss: {name: {...}}` it accepts
    options_op: str = ""         # the op computing it with options, from the logits
    sequence_options_op: str = ""   # ... at every position, with the mask
    ignore_index: Optional[int] = None  # the spec's ignore_index (a label that adds no loss), for
                                        # the class-id check of the generated module's _check


# what the ops with options return beside J: dJ/dloss of each term (`scale`) and the
# derivative of each term (`delta`); the gradient is their product times the seed
OPTIONS_AUX = ("scale", "delta")

LOSSES = {loss.name: loss for loss in [
    Loss("softmax_cross_entropy", "softmax_cross_entropy", "softmax", "Class probabilities",
         "softmax cross-entropy from the logits (log-sum-exp), mean over the batch; y holds class ids",
         aux=("p",), class_ids=True, min_outputs=2,
         sequence_op="softmax_cross_entropy_seq", sequence_aux=("e", "total", "n"),
         sequence_text="softmax cross-entropy from the logits (log-sum-exp) at every position, "
                       "mean over the unmasked positions; y holds class ids (B, T)",
         options=("class_weights", "ignore_index", "reduction"),
         options_op="softmax_cross_entropy_options",
         sequence_options_op="softmax_cross_entropy_options_seq"),
    Loss("sigmoid_binary_cross_entropy", "sigmoid_binary_cross_entropy", "sigmoid", "Probabilities",
         "binary cross-entropy of sigmoid(logits), computed from the logits, summed over outputs "
         "and averaged over the batch", aux=("s",),
         sequence_op="sigmoid_binary_cross_entropy_seq", sequence_aux=OPTIONS_AUX,
         sequence_text="binary cross-entropy of sigmoid(logits) at every position, computed from "
                       "the logits, summed over outputs and averaged over the unmasked positions; "
                       "y holds 0/1 targets (B, T, K)",
         options=("pos_weight", "reduction"), options_op="sigmoid_binary_cross_entropy_options",
         sequence_options_op="sigmoid_binary_cross_entropy_seq"),
    Loss("mse", "mse", "", "Outputs",
         "squared error / 2, summed over outputs and averaged over the batch", takes_logits=False,
         sequence_op="mse_seq", sequence_aux=OPTIONS_AUX,
         sequence_text="squared error / 2 at every position, summed over outputs and averaged over "
                       "the unmasked positions; y holds targets (B, T, K)",
         options=("reduction",), options_op="mse_options", sequence_options_op="mse_seq"),
]}


# The fused tensor ops of the losses: records of the one table TENSOR_OPS (tensor_ops.py)
LOSS_OPS = [
    # J = mean_b -log softmax(a)[b, y_b], computed with log-sum-exp
    TensorOp("softmax_cross_entropy", "_softmax_cross_entropy({0}, {1})",
             ("_softmax_cross_entropy_grad({p}, {1}, {g} / len({1}))", None),
             aux=("p",), helpers=("_softmax_cross_entropy", "_softmax_cross_entropy_grad"),
             forward_reuse="_softmax_cross_entropy({0}, {1}, overwrite=True)",
             consuming_vjps=("_softmax_cross_entropy_grad({p}, {1}, {g} / len({1}), overwrite={consume})", None),
             row=RowRule(("{out}, {p} = _softmax_cross_entropy_one({0}, {1})",),
                         (("{np.multiply}({p}, {g}, {adj})", "{adj}[{1}] -= {g}"), None),
                         helpers=("_softmax_cross_entropy_one",))),
    # J = mean_b sum_k softplus(a) - y*a  (= -y log s - (1-y) log(1-s), from the logit)
    TensorOp("sigmoid_binary_cross_entropy", "_sigmoid_binary_cross_entropy({0}, {1})",
             ("({s} - {1}) * ({g} / len({1}))", None),
             aux=("s",), helpers=("_sigmoid_binary_cross_entropy",),
             row=RowRule(("{out}, {delta} = _sigmoid_binary_cross_entropy_one({0}, {1})",),
                         ("{np.multiply}({delta}, {g}, {adj})", None), locals=("delta",),
                         helpers=("_sigmoid_binary_cross_entropy_one",),
                         scalar=RowRule(("{out}, {delta} = _sigmoid_binary_cross_entropy_scalar({0}, {1})",),
                                        ("{adj} = {delta} * {g}", None), locals=("delta",),
                                        helpers=("_sigmoid_binary_cross_entropy_scalar",)))),
    # J = mean_b sum_k (a - y)**2 / 2
    TensorOp("mse", "_mean_squared_error({0}, {1})",
             ("({0} - {1}) * ({g} / len({1}))", None),
             helpers=("_mean_squared_error",),
             row=RowRule(("{out} = _mean_squared_error_one({0}, {1})",),
                         (("{np.subtract}({0}, {1}, {adj})", "{np.multiply}({adj}, {g}, {adj})"), None),
                         helpers=("_mean_squared_error_one",),
                         scalar=RowRule(("{out} = 0.5 * ({0} - {1}) ** 2",), ("{adj} = ({0} - {1}) * {g}", None)))),
    # J = sum over unmasked positions of -log softmax(a)[y] / their number n; e = exp(a - max a)
    # and its row sums `total` (softmax(a) = e / total); the logits' buffer becomes e when
    # nothing else reads them, and sgd_step scales e into the gradient in place
    TensorOp("softmax_cross_entropy_seq", "_masked_softmax_cross_entropy({0}, {1}, {2})",
             ("_masked_softmax_cross_entropy_grad({e}, {total}, {1}, {2} * ({g} / {n}))", None, None),
             aux=("e", "total", "n"),
             helpers=("_masked_softmax_cross_entropy", "_masked_softmax_cross_entropy_grad"),
             forward_reuse="_masked_softmax_cross_entropy({0}, {1}, {2}, overwrite=True)",
             consuming_vjps=("_masked_softmax_cross_entropy_grad({e}, {total}, {1}, {2} * ({g} / {n}), "
                             "overwrite={consume})", None, None)),
]


def _options_op(name, call, rows):
    """The op of a loss with options (PyTorch's weight, ignore_index, pos_weight,
    reduction): `call` takes the logits, targets, mask (None without one) and the
    option arguments `{options}`; its gradient is delta * scale * g, where g has
    J's shape (a number, or the losses' shape for reduction none).  No one-example
    rule: sgd_step of one example takes the batch path."""
    mask = "{2}" if name.endswith("_seq") else "None"
    scaled = "({scale} * {g})[..., None]" if rows else "({scale} * {g})"
    return TensorOp(name, f"{call}({{0}}, {{1}}, {mask}, {{options}})",
                    (f"{{delta}} * {scaled}", None) + ((None,) if name.endswith("_seq") else ()),
                    aux=OPTIONS_AUX, helpers=(call, "_loss_scale"))


LOSS_OPS += [
    _options_op("softmax_cross_entropy_options", "_softmax_cross_entropy_options", rows=True),
    _options_op("softmax_cross_entropy_options_seq", "_softmax_cross_entropy_options", rows=True),
    _options_op("sigmoid_binary_cross_entropy_options", "_sigmoid_binary_cross_entropy_options", rows=False),
    _options_op("sigmoid_binary_cross_entropy_seq", "_sigmoid_binary_cross_entropy_options", rows=False),
    _options_op("mse_options", "_mean_squared_error_options", rows=False),
    _options_op("mse_seq", "_mean_squared_error_options", rows=False),
]
