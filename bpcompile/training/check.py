"""`bpcompile check` for layer specs: the module compiled at float64, its gradients
against central finite differences.  Returns figures; the CLI prints them."""

from ..compiler import compile_layers
from .gradcheck import layer_gradient_checks, random_problem
from ..result import load_module

BATCH = 3
ENTRIES = 30        # random entries checked per parameter


def float64_module(spec):
    """The spec's module compiled at float64, for finite-difference checks."""
    compiled = compile_layers(spec, dtype="float64")
    return load_module(compiled.source, compiled.name)


def layer_errors(spec, seed=0):
    """{parameter key: relative error of its gradient} on a random float64 problem."""
    return {key: c.error for key, c in layer_checks(spec, seed).items()}


def layer_checks(spec, seed=0):
    """{parameter key: GradientCheck} on a random float64 problem."""
    module = float64_module(spec)
    params, x, y = random_problem(module, batch=BATCH, seed=seed)
    # sequence losses are means over many positions of a large softmax, so their gradient
    # entries are tiny: a larger step keeps rounding noise small, and Richardson
    # extrapolation keeps the truncation error small
    step = 1e-3 if module.SEQUENCE else 1e-6
    return layer_gradient_checks(module, params, x, y, max_entries=ENTRIES, seed=seed, h=step,
                                 richardson=module.SEQUENCE)
