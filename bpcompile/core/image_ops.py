"""The tensor ops of image layers (conv2d, pooling, flatten): records of the one
table TENSOR_OPS (tensor_ops.py), computed by the kernels in templates/kernels/."""

from .op_records import TensorOp

IMAGE_OPS = [
    # the lecture's convolution (cross-correlation) and max-pooling, as im2col kernels
    TensorOp("conv2d", "conv2d_forward({0}, {1}, {2}, {stride}, {padding})", (None, None, None),
             aux=("saved",), helpers=("kernels/conv.py",),
             joint="conv2d_backward({g}, {saved}, {1}, need_dx={need0})"),
    TensorOp("conv2d_nobias", "conv2d_forward({0}, {1}, np.zeros(len({1}), {1}.dtype), {stride}, {padding})", (None, None),
             aux=("saved",), helpers=("kernels/conv.py",),
             joint="conv2d_backward({g}, {saved}, {1}, need_dx={need0})[:2]"),
    TensorOp("maxpool2d", "maxpool2d_forward({0}, {kernel}, {stride})",
             ("maxpool2d_backward({g}, {saved})",), aux=("saved",), helpers=("kernels/conv.py",)),
    TensorOp("flatten", "{0}.reshape(len({0}), -1)", ("{g}.reshape({unflat})",)),
]
