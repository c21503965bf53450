"""bpcompile: a symbolic-to-code backpropagation compiler.

    m = bpcompile.compile("exp(x*z) + x*z/log(x) + sin(log(x))/(x*z)")
    y, (dx, dz) = m.value_and_grad(2.0, 3.0)
    print(m.SOURCE)
    net = bpcompile.compile("examples/mlp_digits.yaml")   # a str or Path ending in .yaml/.yml

The names below are imported on first use, so that `bpcompile --help` does not
wait for SymPy.
"""

import importlib

from .errors import SpecError
from .version import __version__

_LAZY = {"compile": "compiler", "compile_file": "compiler", "graph": "compiler",
         "load_module": "result", "sigmoid": "core.primitives", "softplus": "core.primitives",
         "relu": "core.primitives", "torch_names": "interop", "from_torch": "interop",
         "to_torch": "interop"}

__all__ = ["compile", "compile_file", "graph", "load_module", "SpecError",
           "sigmoid", "softplus", "relu", "torch_names", "from_torch", "to_torch", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bpcompile' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
