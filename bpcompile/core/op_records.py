"""The record types of the tensor primitive tables (tensor_ops.py, image_ops.py,
losses.py): what a tensor op's forward and vector-Jacobian products are, as
format strings over its operands."""

import string
from dataclasses import dataclass


@dataclass(frozen=True)
class RowRule:
    """The op for one example at a time (rowstep.py): statements that write into
    preallocated buffers instead of returning fresh arrays.

    `{out}` is the node's buffer (or a local name when the node is a scalar),
    `{np.dot}` the name the step calls a NumPy function by,
    `{adj}` the buffer of the operand's adjoint, `{g}` the node's adjoint;
    `{0.row}` / `{0.col}` are 1-row / 1-column views of a vector operand.  A
    vjp of "=" says the operand's adjoint is `{g}` itself (a bias).  `locals`
    names extra values the forward statements define for the vjps.

    With one example, a value with one element (one output unit, its logit)
    is a Python float, cheaper than a 1-element array: `scalar` is the rule
    used when the node's value, or its first operand's, is such a float; then
    `{g}`, and `{adj}` of that operand, are floats too, and `{g.box}` is a 0-d
    array holding `{g}` for ufunc calls.

    `outer` says, per operand, where that operand's adjoint is an outer product:
    (column, row), the two vectors whose product it is, in the same fields
    (else None).  The numba epoch then subtracts it from a weight in one pass.
    """
    forward: tuple
    vjps: tuple
    locals: tuple = ()
    helpers: tuple = ()
    scalar: "RowRule" = None
    outer: tuple = ()


@dataclass(frozen=True)
class TensorOp:
    name: str
    forward: str                 # NumPy expression of the node's value(s)
    vjps: tuple                  # one formula (or None) per operand
    aux: tuple = ()              # names of extra values the forward also returns
    helpers: tuple = ()          # template helper functions the code calls
    joint: str = ""              # one call returning every operand's adjoint (a tuple),
                                 # for kernels that share work between them; `{needK}`
                                 # says whether operand K's adjoint is wanted
    joint_keys: tuple = ()       # if given, the call returns a dict: operand K's adjoint is
                                 # under joint_keys[K]
    part_of: bool = False        # the node is columns [a, b) of its operand: the operand's
                                 # adjoint is the concatenation of its parts' adjoints
    sparse_update: str = ""      # how sgd_step updates operand 1 (a table, a weight) from {g}
                                 # (which already includes lr) without forming its whole
                                 # gradient; the text may end with a comment
    sparse_update_later: str = ""  # the same update started on the worker threads (numba
                                 # target): returns the function that finishes it
    forward_reuse: str = ""      # the forward when operand 0 is read by nothing else: it
                                 # may overwrite operand 0's buffer
    forward_workspace: str = ""  # the forward into a buffer sgd_step keeps between calls
                                 # (`{key}`: the node's name), for a result that does not
                                 # outlive the call
    consuming_vjps: tuple = ()   # vjps that may overwrite the aux values, where the cache is
                                 # not kept (sgd_step, value_and_grad); `{consume}` is the
                                 # code of the flag
    row: RowRule = None          # the one-example form, if the op has one
    forward_lines: tuple = ()    # statements printed instead of `{out} = forward`, when
                                 # that saves work (the bias added in place)
    forward_split: tuple = ()    # the numba target's forward_lines: its product split
                                 # between numba's threads (_dot_split)

    def fields(self, formula):
        """Placeholders a formula reads: operand indices, 'out', aux names, 'g'."""
        return {f for _, f, _, _ in string.Formatter().parse(formula) if f is not None}
