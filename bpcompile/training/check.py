"""`bpcompile check`: for layer specs, the module compiled at float64 and its gradients
against central finite differences; for programs, the values of the point to check at
(numbers, vectors and matrices from `check_at:` or `--at`).  Returns figures; the CLI
prints them."""

import math

import numpy as np

from ..compiler import compile_layers
from ..limits import MAX_CONSTANT
from .gradcheck import layer_gradient_checks, random_problem
from ..result import load_module

BATCH = 3
ENTRIES = 30        # random entries checked per parameter
MAX_POINT_ENTRIES = 1000   # entries of one input's value at a check point (each costs two
                           # evaluations of the program)
MAX_POINT_DIMS = 8


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


# --- the point of a program's check ---------------------------------------------------------

def point_value(value):
    """One input's value at a check point, from YAML (`check_at:`): a number (a float), or a
    list of numbers, a list of such lists, ... (an array).  ValueError, with the reason, for
    anything else: a ragged list, an empty one, a value that is not a finite number of
    magnitude at most MAX_CONSTANT, more than MAX_POINT_ENTRIES entries."""
    if not isinstance(value, list):
        return _point_number(value, text=False)
    return _array(value, text=False)


def _array(value, text):
    shape = _nested_shape(value, 0)
    if math.prod(shape) > MAX_POINT_ENTRIES:
        raise ValueError(f"has {math.prod(shape)} entries; at most {MAX_POINT_ENTRIES}")
    return np.array(_numbers(value, text), dtype=np.float64).reshape(shape)


def parse_point_value(text):
    """One input's value at a check point, from the command line (`--at NAME=VALUE`):
    `0.5` is a number; `0.5,-1` a vector (`2,` a vector of one entry, as a Python tuple
    is written); `1,2;3,4` a matrix, rows separated by `;`."""
    if ";" in text:
        rows = [_vector_text(row) for row in text.split(";")]
        return _array(rows, text=True)
    if "," in text:
        return _array(_vector_text(text), text=True)
    return _point_number(text.strip(), text=True)


def _vector_text(text):
    items = text.split(",")
    if len(items) > 1 and not items[-1].strip():
        items = items[:-1]              # `2,`: a one-entry vector
    if any(not item.strip() for item in items):
        raise ValueError("has an empty entry")
    return [item.strip() for item in items]


def _point_number(value, text):
    """A finite float of magnitude at most MAX_CONSTANT from a YAML number, or from a
    string where `text` (the command line)."""
    kinds = (int, float, str) if text else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError("must be a number or a list of numbers")
    try:
        number = float(value)
    except (OverflowError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if not abs(number) <= MAX_CONSTANT:             # also refuses nan
        raise ValueError(f"must be finite numbers of magnitude at most {MAX_CONSTANT:g}")
    return number


def _nested_shape(value, depth):
    """The shape of a rectangular nested list; ValueError where it is not one."""
    if not isinstance(value, list):
        return ()
    if depth >= MAX_POINT_DIMS:
        raise ValueError(f"is nested more than {MAX_POINT_DIMS} levels deep")
    if not value:
        raise ValueError("has an empty list")
    if len(value) > MAX_POINT_ENTRIES:
        raise ValueError(f"has more than {MAX_POINT_ENTRIES} entries")
    shapes = {_nested_shape(item, depth + 1) for item in value}
    kinds = {isinstance(item, list) for item in value}
    if len(shapes) != 1 or len(kinds) != 1:
        raise ValueError("is not rectangular (its rows differ in length or depth)")
    return (len(value),) + shapes.pop()


def _numbers(value, text):
    if isinstance(value, list):
        return [_numbers(item, text) for item in value]
    return _point_number(value, text)


def point_text(value):
    """How the check's messages show one input's value: `0.5`, `[0.5, -1]`,
    `[[1, 2], [3, 4]]`, or its shape where that is long."""
    if np.ndim(value) == 0:
        return f"{float(value):g}"
    if np.size(value) > 8:
        return f"<array of shape {'x'.join(map(str, np.shape(value)))}>"
    def nested(item):
        if isinstance(item, list):
            return "[" + ", ".join(nested(i) for i in item) + "]"
        return f"{item:g}"
    return nested(np.asarray(value).tolist())
