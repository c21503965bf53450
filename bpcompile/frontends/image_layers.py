"""Image layers of layer specs: conv2d, maxpool2d and flatten, as tensor-op nodes
(core/image_ops.py) with their shapes inferred here."""

import textwrap

from ..core.ir import shape_text
from ..limits import shorten


def pool_before_relu(layers, notes):
    """The layers in the order they are computed: a relu directly followed by a
    max-pool is applied after it.  Max-pooling commutes with relu (the same values,
    and the same gradients: a window's largest input is its largest output, and
    where it is not positive both give no gradient), and relu then touches a
    quarter of the values (with a 2x2 window), forward and backward."""
    order = list(layers)
    for k in range(len(order) - 1):
        first, second = order[k], order[k + 1]
        if first.kind == "relu" and set(first.options) <= {"name"} and second.kind == "maxpool2d":
            order[k], order[k + 1] = second, first
            notes.append(textwrap.fill(
                f"{first.name} is applied after {second.name}: max-pooling commutes with relu "
                "(same values and gradients), and relu then touches fewer values.", 78))
    return order


def _pair(compiler, layer, key, default=None, minimum=1):
    """An int or [h, w] option as an (h, w) tuple of ints >= minimum."""
    value = layer.options.get(key, default)
    if value is None:
        raise compiler.error(layer, f"missing `{key}:`")
    pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, list) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair)):
        kind = "a positive integer" if minimum else "a non-negative integer"
        raise compiler.error(layer, f"{key} must be {kind} or a list [h, w] of them, got {shorten(value)}", key)
    return tuple(pair)


def _image_input(compiler, layer, prev):
    if len(prev.shape) != 4:
        raise compiler.error(layer, f"{layer.kind} needs a (B, channels, height, width) input, got "
                             f"shape {shape_text(prev.shape)}")
    return prev.shape[1:]


def _windows(compiler, layer, size, kernel, stride, padding, what):
    """Output (height, width) of a sliding window: floor((W + 2p - K)/s + 1)."""
    out = []
    for axis, n, k, st, p in zip(("height", "width"), size, kernel, stride, padding):
        if k > n + 2 * p:
            raise compiler.error(layer, f"the {what} {axis} {k} is larger than the padded input "
                                 f"{axis} {n + 2 * p} (input {n}, padding {p})")
        out.append((n + 2 * p - k) // st + 1)
    return tuple(out)


def _conv2d(compiler, layer, prev):
    compiler._options(layer, {"out_channels", "kernel", "stride", "padding", "bias", "in_channels"})
    channels, height, width = _image_input(compiler, layer, prev)
    if "out_channels" not in layer.options:
        raise compiler.error(layer, "missing `out_channels:`")
    out_channels = compiler.positive_int(layer, "out_channels")
    if "in_channels" in layer.options and layer.options["in_channels"] != channels:
        raise compiler.error(layer, f"in_channels is {shorten(layer.options['in_channels'])}, but the input "
                             f"has {channels} channels", "in_channels")
    kernel = _pair(compiler, layer, "kernel")
    stride = _pair(compiler, layer, "stride", 1)
    padding = _pair(compiler, layer, "padding", 0, minimum=0)
    bias = layer.options.get("bias", True)
    if not isinstance(bias, bool):
        raise compiler.error(layer, f"bias must be true or false, got {shorten(bias)}", "bias")
    out_hw = _windows(compiler, layer, (height, width), kernel, stride, padding, "kernel")
    area = kernel[0] * kernel[1]
    W = compiler.param(layer, "W", (out_channels, channels) + kernel,
                       fan_in=channels * area, fan_out=out_channels * area)
    operands = (prev.name, W.name)
    if bias:
        operands += (compiler.param(layer, "b", (out_channels,), is_weight=False).name,)
    return compiler.node(layer, "conv2d" if bias else "conv2d_nobias", operands,
                         ("B", out_channels) + out_hw,
                         aux={"saved": compiler.namer.fresh(f"{layer.name}_saved")},
                         fmt={"stride": repr(stride), "padding": repr(padding)})


def _maxpool2d(compiler, layer, prev):
    compiler._options(layer, {"kernel", "stride"})
    channels, height, width = _image_input(compiler, layer, prev)
    kernel = _pair(compiler, layer, "kernel")
    stride = _pair(compiler, layer, "stride", list(kernel))
    out_hw = _windows(compiler, layer, (height, width), kernel, stride, (0, 0), "window")
    return compiler.node(layer, "maxpool2d", (prev.name,), ("B", channels) + out_hw,
                         aux={"saved": compiler.namer.fresh(f"{layer.name}_saved")},
                         fmt={"kernel": repr(kernel), "stride": repr(stride)})


def _flatten(compiler, layer, prev):
    compiler._options(layer, set())
    features = 1
    for n in prev.shape[1:]:
        features *= n
    return compiler.node(layer, "flatten", (prev.name,), ("B", features),
                         fmt={"unflat": repr((-1,) + tuple(prev.shape[1:]))})


LAYER_KINDS = {
    "conv2d": _conv2d,
    "maxpool2d": _maxpool2d,
    "flatten": _flatten,
}
