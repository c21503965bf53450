"""The table of losses: one record per loss, read by the layer front end, the code
generator and the templates.  A loss is fused with its link (softmax, sigmoid or
none) into one tensor op of tensor_ops.py, whose adjoint is the lecture's simple
form; adding a loss is one record here plus that op (and its kernel helper).
"""

from dataclasses import dataclass
from typing import Optional


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
