"""bpcompile: a symbolic-to-code backpropagation compiler.

    m = bpcompile.compile("exp(x*z) + x*z/log(x) + sin(log(x))/(x*z)")
    y, (dx, dz) = m.value_and_grad(2.0, 3.0)
    print(m.SOURCE)
"""

__version__ = "0.1.0"

from .errors import SpecError  # noqa: E402
from .compiler import compile, compile_file, graph, load_module  # noqa: E402
from .primitives import sigmoid, softplus, relu  # noqa: E402

__all__ = ["compile", "compile_file", "graph", "load_module", "SpecError",
           "sigmoid", "softplus", "relu", "__version__"]
