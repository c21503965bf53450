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


LOSSES = {loss.name: loss for loss in [
    Loss("softmax_cross_entropy", "softmax_cross_entropy", "softmax", "Class probabilities",
         "softmax cross-entropy from the logits (log-sum-exp), mean over the batch; y holds class ids",
         aux=("p",), class_ids=True, min_outputs=2,
         sequence_op="softmax_cross_entropy_seq", sequence_aux=("e", "total", "n"),
         sequence_text="softmax cross-entropy from the logits (log-sum-exp) at every position, "
                       "mean over the unmasked positions; y holds class ids (B, T)"),
    Loss("sigmoid_binary_cross_entropy", "sigmoid_binary_cross_entropy", "sigmoid", "Probabilities",
         "binary cross-entropy of sigmoid(logits), computed from the logits, summed over outputs "
         "and averaged over the batch", aux=("s",)),
    Loss("mse", "mse", "", "Outputs",
         "squared error / 2, summed over outputs and averaged over the batch", takes_logits=False),
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
