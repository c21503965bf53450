"""The table of tensor primitives, like PyTorch's derivatives.yaml.

Each entry gives the NumPy forward expression and, per operand, the
vector-Jacobian product as a one-line formula in terms of the operands
(`{0}`, `{1}`, ...), the node's value (`{out}`), extra values the forward
statement also returns (`{p}`, `{s}`), and the incoming adjoint (`{g}`).
Formulas that need more than one line call a helper function that the module
template defines (`_softmax_cross_entropy`, `_matmul_steps`, ...).  `None` marks an
operand that is not differentiable (class ids, targets).
"""

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
    """
    forward: tuple
    vjps: tuple
    locals: tuple = ()
    helpers: tuple = ()
    scalar: "RowRule" = None


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
    forward_reuse: str = ""      # the forward when operand 0 is read by nothing else: it
                                 # may overwrite operand 0's buffer
    consuming_vjps: tuple = ()   # vjps that may overwrite the aux values, where the cache is
                                 # not kept (sgd_step, value_and_grad); `{consume}` is the
                                 # code of the flag
    row: RowRule = None          # the one-example form, if the op has one
    forward_lines: tuple = ()    # statements printed instead of `{out} = forward`, when
                                 # that saves work (the bias added in place)

    def fields(self, formula):
        """Placeholders a formula reads: operand indices, 'out', aux names, 'g'."""
        return {f for _, f, _, _ in string.Formatter().parse(formula) if f is not None}


# sgd_step's W -= dJ/dW = g.T @ h, one block of W's rows at a time: each block of the
# product is subtracted while it is still in cache, and the whole product never exists
SUBTRACT_PRODUCT_2D = "_subtract_product({1}, {g}, {0})  # {1} -= {g}.T @ {0}, block by block"
SUBTRACT_PRODUCT_STEPS = ("_subtract_product({1}, {g}.reshape(-1, {g}.shape[-1]), {0}.reshape(-1, {0}.shape[-1]))"
                          "  # {1} -= dJ/d{1}, block by block")

TENSOR_OPS = {op.name: op for op in [
    # a = h @ W.T + b, the lecture's a_j = sum_i alpha_ji x_i, for a batch of rows
    # (np.dot: on small 2-D operands it has less call overhead than @; but for
    # dJ/dW = g.T @ h, with a transposed left operand, matmul's BLAS call is faster)
    # (one example: dJ/dW is an outer product, which np.dot of a column and a row
    # hands to BLAS; broadcasting g[:, None] * h is several times slower)
    TensorOp("linear", "np.dot({0}, {1}.T) + {2}",
             ("np.dot({g}, {1})", "{g}.T @ {0}", "{g}.sum(axis=0)"),
             forward_lines=("{out} = np.dot({0}, {1}.T)", "{out} += {2}  # the bias, in place"),
             sparse_update=SUBTRACT_PRODUCT_2D, helpers=("_subtract_product",),
             row=RowRule(("{np.dot}({1}, {0}, {out})", "{np.add}({out}, {2}, {out})"),
                         ("{np.dot}({g}, {1}, {adj})", "{np.dot}({g.col}, {0.row}, {adj})", "="),
                         scalar=RowRule(("{out} = float({np.vdot}({1}, {0})) + {2}.item()",),
                                        ("{np.multiply}({1}, {g.box}, {adj.row})", "{np.multiply}({0.row}, {g.box}, {adj})",
                                         "=")))),
    TensorOp("linear_nobias", "np.dot({0}, {1}.T)",
             ("np.dot({g}, {1})", "{g}.T @ {0}"),
             sparse_update=SUBTRACT_PRODUCT_2D, helpers=("_subtract_product",),
             row=RowRule(("{np.dot}({1}, {0}, {out})",),
                         ("{np.dot}({g}, {1}, {adj})", "{np.dot}({g.col}, {0.row}, {adj})"),
                         scalar=RowRule(("{out} = float({np.vdot}({1}, {0}))",),
                                        ("{np.multiply}({1}, {g.box}, {adj.row})", "{np.multiply}({0.row}, {g.box}, {adj})")))),
    # J = mean_b -log softmax(a)[b, y_b], computed with log-sum-exp
    TensorOp("softmax_cross_entropy", "_softmax_cross_entropy({0}, {1})",
             ("_softmax_cross_entropy_grad({p}, {1}, {g} / len({1}))", None),
             aux=("p",), helpers=("_softmax_cross_entropy", "_softmax_cross_entropy_grad"),
             forward_reuse="_softmax_cross_entropy({0}, {1}, overwrite=True)",
             consuming_vjps=("_softmax_cross_entropy_grad({p}, {1}, {g} / len({1}), overwrite={consume})", None),
             row=RowRule(("{out}, {p} = _softmax_cross_entropy_one({0}, {1})",),
                         (("{np.multiply}({p}, {g}, {adj})", "{adj}[{1}] -= {g}"), None),
                         helpers=("_softmax_cross_entropy_one",))),
    # J = mean_b sum_k softplus(a) - y*a  (= -y log s - (1-y) log(1-s), from the logit)
    TensorOp("sigmoid_binary_cross_entropy", "_sigmoid_binary_cross_entropy({0}, {1})",
             ("({s} - {1}) * ({g} / len({1}))", None),
             aux=("s",), helpers=("_sigmoid_binary_cross_entropy",),
             row=RowRule(("{out}, {delta} = _sigmoid_binary_cross_entropy_one({0}, {1})",),
                         ("{np.multiply}({delta}, {g}, {adj})", None), locals=("delta",),
                         helpers=("_sigmoid_binary_cross_entropy_one",),
                         scalar=RowRule(("{out}, {delta} = _sigmoid_binary_cross_entropy_scalar({0}, {1})",),
                                        ("{adj} = {delta} * {g}", None), locals=("delta",),
                                        helpers=("_sigmoid_binary_cross_entropy_scalar",)))),
    # J = mean_b sum_k (a - y)**2 / 2
    TensorOp("mse", "_mean_squared_error({0}, {1})",
             ("({0} - {1}) * ({g} / len({1}))", None),
             helpers=("_mean_squared_error",),
             row=RowRule(("{out} = _mean_squared_error_one({0}, {1})",),
                         (("{np.subtract}({0}, {1}, {adj})", "{np.multiply}({adj}, {g}, {adj})"), None),
                         helpers=("_mean_squared_error_one",),
                         scalar=RowRule(("{out} = 0.5 * ({0} - {1}) ** 2",), ("{adj} = ({0} - {1}) * {g}", None)))),
    # s = sum of squares, for the l2 penalty
    TensorOp("sum_squares", "np.vdot({0}, {0})", ("(2 * {g}) * {0}",),
             row=RowRule(("{out} = float({np.vdot}({0}, {0}))",), ("{np.multiply}({0}, 2.0 * {g}, {adj})",))),
    # the lecture's convolution (cross-correlation) and max-pooling, as im2col kernels
    TensorOp("conv2d", "conv2d_forward({0}, {1}, {2}, {stride}, {padding})", (None, None, None),
             aux=("saved",), helpers=("kernels/conv.py",),
             joint="conv2d_backward({g}, {saved}, {1}, need_dx={need0})"),
    TensorOp("conv2d_nobias", "conv2d_forward({0}, {1}, np.zeros(len({1}), {1}.dtype), {stride}, {padding})", (None, None),
             aux=("saved",), helpers=("kernels/conv.py",),
             joint="conv2d_backward({g}, {saved}, {1}, need_dx={need0})[:2]"),
    TensorOp("maxpool2d", "maxpool2d_forward({0}, {kernel}, {stride})",
             ("maxpool2d_backward({g}, {saved})",), aux=("saved",), helpers=("kernels/conv.py",)),
    # sequences: per-step linear maps, embeddings, [forward, backward] concatenation
    # (B, T, n) @ (n, m) as one 2-D product: a 3-D matmul would run one product per sequence
    TensorOp("linear_seq", "_linear_steps({0}, {1}, {2})",
             ("_matmul_steps({g}, {1})", "{g}.reshape(-1, {g}.shape[-1]).T @ {0}.reshape(-1, {0}.shape[-1])",
              "_sum_steps({g})"), helpers=("_linear_steps", "_matmul_steps", "_sum_steps", "_subtract_product"),
             sparse_update=SUBTRACT_PRODUCT_STEPS),
    TensorOp("linear_seq_nobias", "_matmul_steps({0}, {1}.T)",
             ("_matmul_steps({g}, {1})", "{g}.reshape(-1, {g}.shape[-1]).T @ {0}.reshape(-1, {0}.shape[-1])"),
             helpers=("_matmul_steps", "_subtract_product"), sparse_update=SUBTRACT_PRODUCT_STEPS),
    # sgd_step updates only the rows of E that the batch read, instead of all of dJ/dE
    TensorOp("embedding", "{1}[{0}]", (None, "_embedding_grad({0}, {g}, {1}.shape[0])"),
             helpers=("_embedding_grad",),
             sparse_update="np.subtract.at({1}, {0}.ravel(), {g}.reshape(-1, {1}.shape[-1]))"
                           "  # only the rows the batch read"),
    TensorOp("concat_last", "np.concatenate([{0}, {1}], axis=-1)", ("{g}[..., :{n0}]", "{g}[..., {n0}:]")),
    # J = sum over unmasked positions of -log softmax(a)[y] / their number n; e = exp(a - max a)
    # and its row sums `total` (softmax(a) = e / total); the logits' buffer becomes e when
    # nothing else reads them, and sgd_step scales e into the gradient in place
    TensorOp("softmax_cross_entropy_seq", "_masked_softmax_cross_entropy({0}, {1}, {2})",
             ("_masked_softmax_cross_entropy_grad({e}, {total}, {1}, {2} * ({g} / {n}))", None, None),
             aux=("e", "total", "n"),
             helpers=("_masked_softmax_cross_entropy", "_masked_softmax_cross_entropy_grad"),
             forward_reuse="_masked_softmax_cross_entropy({0}, {1}, {2}, overwrite=True)",
             consuming_vjps=("_masked_softmax_cross_entropy_grad({e}, {total}, {1}, {2} * ({g} / {n}), "
                             "overwrite={consume})", None, None)),
    TensorOp("flatten", "{0}.reshape(len({0}), -1)", ("{g}.reshape({unflat})",)),
    # programs: s = sum(v), the sum of all elements; ds/dv is 1 for every element, so
    # dJ/dv is dJ/ds broadcast to v's shape (np.sum: dJ/ds may have gained axes by
    # broadcasting later in the program, which belong summed into the scalar s)
    TensorOp("sum", "np.sum({0})", ("np.broadcast_to(np.sum({g}), np.shape({0}))",)),
    # programs: q = a @ b, the dot product over the last axis (_dot refuses the shapes
    # where that differs from matmul); dq/da = b and dq/db = a along that axis.  The
    # inner _sum_to gives dJ/dq q's shape first (broadcasting later in the program may
    # have added axes: without it, x @ y + sin(x) would form an n-by-n array); the outer
    # one sums what broadcasting added to the operand (a batch of rows, for dJ/db)
    TensorOp("dot", "_dot({0}, {1})",
             ("_sum_to(_sum_to({g}, np.shape({out}))[..., None] * {1}, np.shape({0}))",
              "_sum_to(_sum_to({g}, np.shape({out}))[..., None] * {0}, np.shape({1}))")),
]}

# Tensor operations of programs (sum, @): the program template defines their helpers.
PROGRAM_TENSOR_OPS = frozenset({"sum", "dot"})
