"""The tensor ops of the layers with a train/eval mode (dropout, batch norm):
records of the one table TENSOR_OPS (tensor_ops.py), computed by the helpers in
templates/helpers/modes.py.

Their forward statements read two locals that every function of a module with
modes defines: `train` (a bool; predict sets it False), `rng` (the NumPy
Generator dropout draws its masks from) and, with batch norm, `update_buffers`
(whether train mode moves the running statistics: the training steps do).  Their adjoints read only what the
forward stored (the mask; the normalized input and 1/std), so backward needs
neither.  They have no one-example form: rowstep.py leaves such modules alone.
"""

from .op_records import TensorOp

MODE_OPS = frozenset({"dropout", "batchnorm"})

NORM_OPS = [
    # inverted dropout: out = x * mask, mask = keep / (1 - p) drawn in train mode,
    # None (the identity) in eval mode; dJ/dx = dJ/dout * mask
    TensorOp("dropout", "_dropout({0}, {p}, rng, train)", ("_dropout_grad({g}, {mask})",),
             aux=("mask",), helpers=("_dropout", "_dropout_grad")),
    # out = gamma * (x - mean) / sqrt(var + eps) + beta per feature (B, F) or channel
    # (B, C, H, W): batch statistics in train mode (which also updates the running
    # ones in params, in place, where update_buffers says so), running statistics in eval mode
    TensorOp("batchnorm",
             "_batchnorm({0}, {1}, {2}, params, {layer}, {momentum}, {eps}, train, update_buffers)",
             (None, None, None), aux=("saved",), helpers=("_batchnorm", "_batchnorm_grad"),
             joint="_batchnorm_grad({g}, {saved}, {1}, need_dx={need0})"),
]
