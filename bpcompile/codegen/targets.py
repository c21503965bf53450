"""The code generation targets: what `--target` and `compile(..., target=)` accept."""

from ..errors import SpecError
from ..limits import clip

TARGETS = ("numpy", "numba")
DEFAULT_TARGET = "numpy"


def check_target(target):
    """`target` if it names a target, else a SpecError listing them."""
    if target is None:
        return DEFAULT_TARGET
    if not isinstance(target, str) or target not in TARGETS:
        shown = repr(clip(target)) if isinstance(target, str) else f"of type {type(target).__name__}"
        raise SpecError(f"unknown target {shown}: expected one of {', '.join(TARGETS)}")
    return target
