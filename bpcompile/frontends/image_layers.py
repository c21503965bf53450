"""Image layers of layer specs: conv2d, maxpool2d, avgpool2d, global_avgpool2d,
lrn and flatten, as tensor-op nodes (core/image_ops.py) with their shapes inferred
here, by PyTorch's rules (output sizes, ceil mode, padding at most half the window,
groups dividing both channel counts)."""

import textwrap

from ..core.ir import shape_text
from ..limits import shorten


def pool_before_relu(layers, notes):
    """The layers in the order they are computed: a relu directly followed by a
    max-pool is applied after it.  Max-pooling commutes with relu (the same values,
    and the same gradients: a window's largest input is its largest output, and
    where it is not positive both give no gradient), and relu then touches a
    quarter of the values (with a 2x2 window), forward and backward.

    This holds with every maxpool2d option too: padding is -inf, which neither
    order ever picks, because the builder rejects a window of only padding (and
    relu(-inf) = 0 would differ from the max of an all-padding window); dilation
    and ceil mode only choose which inputs a window holds."""
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


def _windows(compiler, layer, size, kernel, stride, padding, what, dilation=(1, 1)):
    """Output (height, width) of a sliding window: floor((W + 2p - d(K-1) - 1)/s + 1)."""
    out = []
    for axis, n, k, st, p, d in zip(("height", "width"), size, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if span > n + 2 * p:
            dilated = f"dilated {what} {axis} {span} ({what} {k}, dilation {d})" if d > 1 else f"{what} {axis} {k}"
            raise compiler.error(layer, f"the {dilated} is larger than the padded input "
                                 f"{axis} {n + 2 * p} (input {n}, padding {p})")
        out.append((n + 2 * p - span) // st + 1)
    return tuple(out)


def _positive(compiler, layer, key, default):
    value = layer.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise compiler.error(layer, f"{key} must be a positive integer, got {shorten(value)}", key)
    return value


def _groups(compiler, layer, channels, out_channels):
    """PyTorch's rule: in and out channels both split into `groups` equal parts."""
    groups = _positive(compiler, layer, "groups", 1)
    for what, n in (("in_channels", channels), ("out_channels", out_channels)):
        if n % groups:
            raise compiler.error(layer, f"groups {groups} does not divide {what} {n}", "groups")
    return groups


def _conv2d(compiler, layer, prev):
    compiler._options(layer, {"out_channels", "kernel", "stride", "padding", "bias", "in_channels",
                              "dilation", "groups"})
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
    dilation = _pair(compiler, layer, "dilation", 1)
    groups = _groups(compiler, layer, channels, out_channels)
    bias = layer.options.get("bias", True)
    if not isinstance(bias, bool):
        raise compiler.error(layer, f"bias must be true or false, got {shorten(bias)}", "bias")
    out_hw = _windows(compiler, layer, (height, width), kernel, stride, padding, "kernel", dilation)
    area = kernel[0] * kernel[1]
    # PyTorch's weight shape and fans: (out, in/groups, kh, kw)
    W = compiler.param(layer, "W", (out_channels, channels // groups) + kernel,
                       fan_in=channels // groups * area, fan_out=out_channels * area)
    operands = (prev.name, W.name)
    if bias:
        operands += (compiler.param(layer, "b", (out_channels,), is_weight=False).name,)
    op, fmt = "conv2d", {"stride": repr(stride), "padding": repr(padding)}
    if dilation != (1, 1) or groups != 1:       # the tuned kernels have neither
        op, fmt = "conv2d_grouped", {**fmt, "dilation": repr(dilation), "groups": repr(groups)}
    return compiler.node(layer, op if bias else op + "_nobias", operands,
                         ("B", out_channels) + out_hw,
                         aux={"saved": compiler.namer.fresh(f"{layer.name}_saved")}, fmt=fmt)


def _pool_padding(compiler, layer, kernel):
    """PyTorch's rule: padding at most half the kernel, so no window is mostly padding."""
    padding = _pair(compiler, layer, "padding", 0, minimum=0)
    for axis, k, p in zip(("height", "width"), kernel, padding):
        if 2 * p > k:
            raise compiler.error(layer, f"padding {p} is more than half the window {axis} {k} "
                                 "(PyTorch requires padding <= kernel/2)", "padding")
    return padding


def _pool_windows(compiler, layer, size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling output size: in ceil mode one more window when some input
    is left over, unless that window would start in the right padding."""
    out = list(_windows(compiler, layer, size, kernel, stride, padding, "window", dilation))
    if ceil_mode:
        for a, (n, k, s, p, d) in enumerate(zip(size, kernel, stride, padding, dilation)):
            if (n + 2 * p - d * (k - 1) - 1) % s and (out[a] * s < n + p):
                out[a] += 1
    return tuple(out)


def _only_padding(size, kernel, stride, padding, dilation, out_hw):
    """(axis, window) of the first window whose taps along one axis all fall in the
    padding (possible only when a dilation steps over the whole input), or None."""
    for axis, n, k, s, p, d, count in zip(("height", "width"), size, kernel, stride, padding,
                                          dilation, out_hw):
        for w in range(count):
            if not any(p <= w * s + i * d < p + n for i in range(k)):
                return axis, w
    return None


def _maxpool2d(compiler, layer, prev):
    compiler._options(layer, {"kernel", "stride", "padding", "dilation", "ceil_mode"})
    channels, height, width = _image_input(compiler, layer, prev)
    kernel = _pair(compiler, layer, "kernel")
    stride = _pair(compiler, layer, "stride", list(kernel))
    padding = _pool_padding(compiler, layer, kernel)
    dilation = _pair(compiler, layer, "dilation", 1)
    ceil_mode = compiler.flag(layer, "ceil_mode")
    size = (height, width)
    out_hw = _pool_windows(compiler, layer, size, kernel, stride, padding, dilation, ceil_mode)
    empty = _only_padding(size, kernel, stride, padding, dilation, out_hw)
    if empty:
        raise compiler.error(layer, f"window {empty[1] + 1} along the {empty[0]} covers only padding "
                             "(the dilation steps over the whole input); PyTorch would output -inf there")
    aux = {"saved": compiler.namer.fresh(f"{layer.name}_saved")}
    if padding == (0, 0) and dilation == (1, 1) and out_hw == _windows(
            compiler, layer, size, kernel, stride, padding, "window"):
        # the tuned kernel: no padding, no dilation, and ceil mode adds no window
        return compiler.node(layer, "maxpool2d", (prev.name,), ("B", channels) + out_hw, aux=aux,
                             fmt={"kernel": repr(kernel), "stride": repr(stride)})
    return compiler.node(layer, "maxpool2d_padded", (prev.name,), ("B", channels) + out_hw, aux=aux,
                         fmt={"kernel": repr(kernel), "stride": repr(stride), "padding": repr(padding),
                              "dilation": repr(dilation), "ceil_mode": repr(ceil_mode)})


def _avgpool2d(compiler, layer, prev):
    compiler._options(layer, {"kernel", "stride", "padding", "ceil_mode", "count_include_pad"})
    channels, height, width = _image_input(compiler, layer, prev)
    kernel = _pair(compiler, layer, "kernel")
    stride = _pair(compiler, layer, "stride", list(kernel))
    padding = _pool_padding(compiler, layer, kernel)
    ceil_mode = compiler.flag(layer, "ceil_mode")
    count_include_pad = compiler.flag(layer, "count_include_pad", True)
    out_hw = _pool_windows(compiler, layer, (height, width), kernel, stride, padding, (1, 1), ceil_mode)
    return compiler.node(layer, "avgpool2d", (prev.name,), ("B", channels) + out_hw,
                         aux={"saved": compiler.namer.fresh(f"{layer.name}_saved")},
                         fmt={"kernel": repr(kernel), "stride": repr(stride), "padding": repr(padding),
                              "ceil_mode": repr(ceil_mode), "count_include_pad": repr(count_include_pad)})


def _global_avgpool2d(compiler, layer, prev):
    """PyTorch's AdaptiveAvgPool2d(1): (B, C, H, W) -> (B, C, 1, 1); flatten gives (B, C)."""
    compiler._options(layer, set())
    channels = _image_input(compiler, layer, prev)[0]
    return compiler.node(layer, "global_avgpool2d", (prev.name,), ("B", channels, 1, 1),
                         aux={"saved": compiler.namer.fresh(f"{layer.name}_saved")})


def _number(compiler, layer, key, default, positive=True):
    value = layer.options.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or abs(value) == float("inf") or (positive and value <= 0) or value < 0):
        kind = "a positive number" if positive else "a non-negative number"
        raise compiler.error(layer, f"{key} must be {kind}, got {shorten(value)}", key)
    return float(value)


def _lrn(compiler, layer, prev):
    """torch.nn.LocalResponseNorm(size, alpha, beta, k) across the channels."""
    compiler._options(layer, {"size", "alpha", "beta", "k"})
    _image_input(compiler, layer, prev)
    if "size" not in layer.options:
        raise compiler.error(layer, "missing `size:` (the number of neighbouring channels, e.g. 5)")
    size = _positive(compiler, layer, "size", None)
    alpha = _number(compiler, layer, "alpha", 1e-4, positive=False)
    beta = _number(compiler, layer, "beta", 0.75, positive=False)
    k = _number(compiler, layer, "k", 1.0)
    return compiler.node(layer, "lrn", (prev.name,), prev.shape,
                         aux={"saved": compiler.namer.fresh(f"{layer.name}_saved")},
                         fmt={"size": repr(size), "alpha": repr(alpha), "beta": repr(beta), "k": repr(k)})


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
    "avgpool2d": _avgpool2d,
    "global_avgpool2d": _global_avgpool2d,
    "lrn": _lrn,
    "flatten": _flatten,
}
