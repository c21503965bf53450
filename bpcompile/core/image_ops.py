"""The tensor ops of image layers (conv2d, pooling, flatten, LRN): records of the
one table TENSOR_OPS (tensor_ops.py), computed by the kernels in templates/kernels/.

The default options of conv2d and maxpool2d use conv.py's tuned kernels; the other
options (dilation, groups, pooling padding and ceil mode) use conv_options.py,
which builds on conv.py."""

from .op_records import TensorOp

OPTION_KERNELS = ("kernels/conv.py", "kernels/conv_options.py")

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
    # PyTorch's Conv2d with dilation or groups: one product per group
    TensorOp("conv2d_grouped",
             "grouped_conv2d_forward({0}, {1}, {2}, {stride}, {padding}, {dilation}, {groups})",
             (None, None, None), aux=("saved",), helpers=OPTION_KERNELS,
             joint="grouped_conv2d_backward({g}, {saved}, {1}, need_dx={need0})"),
    TensorOp("conv2d_grouped_nobias",
             "grouped_conv2d_forward({0}, {1}, None, {stride}, {padding}, {dilation}, {groups})",
             (None, None), aux=("saved",), helpers=OPTION_KERNELS,
             joint="grouped_conv2d_backward({g}, {saved}, {1}, need_dx={need0})[:2]"),
    # PyTorch's MaxPool2d with padding (-inf), dilation or a ceil-mode last window
    TensorOp("maxpool2d_padded",
             "maxpool2d_padded_forward({0}, {kernel}, {stride}, {padding}, {dilation}, {ceil_mode})",
             ("maxpool2d_padded_backward({g}, {saved})",), aux=("saved",), helpers=OPTION_KERNELS),
    # PyTorch's AvgPool2d: zero padding, ceil mode, count_include_pad divisors
    TensorOp("avgpool2d",
             "avgpool2d_forward({0}, {kernel}, {stride}, {padding}, {ceil_mode}, {count_include_pad})",
             ("avgpool2d_backward({g}, {saved})",), aux=("saved",), helpers=OPTION_KERNELS),
    # PyTorch's AdaptiveAvgPool2d(1): each channel's mean, (B, C, 1, 1)
    TensorOp("global_avgpool2d", "global_avgpool2d_forward({0})",
             ("global_avgpool2d_backward({g}, {saved})",), aux=("saved",), helpers=OPTION_KERNELS),
    # torch.nn.LocalResponseNorm across channels
    TensorOp("lrn", "lrn_forward({0}, {size}, {alpha}, {beta}, {k})",
             ("lrn_backward({g}, {saved})",), aux=("saved",), helpers=("kernels/lrn.py",)),
    TensorOp("flatten", "{0}.reshape(len({0}), -1)", ("{g}.reshape({unflat})",)),
]
