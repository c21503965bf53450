"""The numba target's sgd_step starts its largest weight update early, on the worker
threads, and lets the rest of the backward pass run meanwhile.

sgd_step updates every parameter after the backward pass.  But a weight's update
`W -= g.T @ h` can begin as soon as its operands g and h exist and no later
statement reads W: the language model's output weights (10,000 x 256) are updated
while the LSTM's backward, which runs on one core, goes on (measured in one harness
run, paired ratio to expert NumPy: 0.64 -> 0.60 at minibatch 1, 0.64 -> 0.56 at 4).
The decision is made on the statements as data: what each reads, assigns, and
writes into.
"""

from dataclasses import dataclass

from ..core.autodiff import Statement

# Below this size a weight's update is over before waking a thread pays: four of the
# megabyte blocks that _subtract_product_later hands out
EARLY_BYTES = 1 << 22


@dataclass(frozen=True)
class Update:
    """A weight update that can start early: `code` starts it and returns the function
    that finishes it; `reads` are the names it reads, the weight among them."""
    grad: str        # the gradient variable the update stands for
    weight: str
    code: str
    reads: frozenset
    nbytes: int


@dataclass(frozen=True)
class Overlap:
    before: list     # the backward statements up to and including the start
    during: list     # the statements that run while the workers update the weight
    finish: str      # the call that completes the update
    update: Update


def start_early(statements, updates, names):
    """An Overlap for the largest of `updates` that has statements to overlap with, or
    None.  The start goes right after the last statement that assigns what the update
    reads or reads the weight; none of the statements after it may write into what the
    update reads (the memory planner was told the updates read them, this checks it)."""
    for update in sorted(updates, key=lambda u: -u.nbytes):
        if update.nbytes < EARLY_BYTES:
            break
        last = max((k for k, s in enumerate(statements)
                    if update.reads & _writes(s) or update.weight in s.reads), default=-1)
        during = statements[last + 1:]
        if not during or any(_writes(s) & update.reads for s in during):
            continue
        handle = names.fresh(f"finish_{update.weight}")
        start = Statement((handle,), update.code, update.reads,
                          comment=f"{update.weight} -= dJ/d{update.weight} begins on the "
                                  "worker threads while the backward below runs")
        return Overlap(statements[:last + 1] + [start], during, f"{handle}()", update)
    return None


def _writes(s):
    """The names a statement may write: what it assigns, the buffer it writes into, and
    the aux values its consuming form may overwrite."""
    written = {t for t in s.targets if t} | ({s.buffer} if s.buffer else set())
    if s.consume and s.node is not None:
        written |= set(s.node.attrs.get("aux", {}).values())
    return written
