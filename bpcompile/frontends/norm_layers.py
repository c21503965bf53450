"""Layers with a train/eval mode: `dropout` and `batchnorm` (their ops: core/norm_ops.py).

A module with either takes `train=True` and `rng=None` keywords in forward,
value_and_grad and sgd_step (predict is always eval mode).  Batch norm's running
statistics are buffers: kept in the params dict beside the parameters, under
`<layer>.running_mean` and `<layer>.running_var`, listed in the module's BUFFERS
(not PARAMS: no gradient, no optimizer step), updated in place in train mode.
"""

import math

from ..core.ir import shape_text
from ..limits import shorten


def _number(compiler, layer, key, default):
    value = layer.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise compiler.error(layer, f"{key} must be a number, got {shorten(value)}", key)
    return float(value)


def _dropout(compiler, layer, prev):
    compiler._options(layer, {"p"})
    p = _number(compiler, layer, "p", 0.5)
    if not 0 <= p < 1:
        raise compiler.error(layer, f"p (the probability of dropping a unit) must lie in [0, 1), "
                             f"got {shorten(layer.options.get('p'))}", "p")
    compiler.modes = True
    return compiler.node(layer, "dropout", (prev.name,), prev.shape,
                         aux={"mask": compiler.namer.fresh(f"{layer.name}_mask")}, fmt={"p": repr(p)})


def _batchnorm(compiler, layer, prev):
    compiler._options(layer, {"momentum", "eps"})
    momentum = _number(compiler, layer, "momentum", 0.1)
    if not 0 <= momentum <= 1:
        raise compiler.error(layer, f"momentum must lie in [0, 1], got {shorten(momentum)}", "momentum")
    eps = _number(compiler, layer, "eps", 1e-5)
    if not eps > 0:
        raise compiler.error(layer, f"eps must be positive, got {shorten(eps)}", "eps")
    if len(prev.shape) not in (2, 4):
        raise compiler.error(layer, "batchnorm needs a (B, features) or (B, channels, height, "
                             f"width) input, got shape {shape_text(prev.shape)}")
    size = prev.shape[1]
    gamma = compiler.param(layer, "gamma", (size,), is_weight=False, init="ones")
    beta = compiler.param(layer, "beta", (size,), is_weight=False)
    compiler.buffer(layer, "running_mean", (size,), "zeros")
    compiler.buffer(layer, "running_var", (size,), "ones")
    compiler.modes = True
    return compiler.node(layer, "batchnorm", (prev.name, gamma.name, beta.name), prev.shape,
                         aux={"saved": compiler.namer.fresh(f"{layer.name}_saved")},
                         fmt={"momentum": repr(momentum), "eps": repr(eps), "layer": f'"{layer.name}"'})


LAYER_KINDS = {
    "dropout": _dropout,
    "batchnorm": _batchnorm,
}
SHORT_OPTION = {"dropout": "p"}
