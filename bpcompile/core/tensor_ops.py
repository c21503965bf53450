"""The table of tensor primitives, like PyTorch's derivatives.yaml.

Each entry gives the NumPy forward expression and, per operand, the
vector-Jacobian product as a one-line formula in terms of the operands
(`{0}`, `{1}`, ...), the node's value (`{out}`), extra values the forward
statement also returns (`{p}`, `{s}`), and the incoming adjoint (`{g}`).
Formulas that need more than one line call a helper function that the module
template defines (`_softmax_cross_entropy`, `_matmul_steps`, ...).  `None` marks an
operand that is not differentiable (class ids, targets).
"""

from .op_records import RowRule, TensorOp
from .image_ops import IMAGE_OPS
from .norm_ops import NORM_OPS
from .losses import LOSS_OPS

__all__ = ["RowRule", "TensorOp", "TENSOR_OPS", "PROGRAM_TENSOR_OPS"]

# sgd_step's W -= dJ/dW = g.T @ h, one block of W's rows at a time: each block of the
# product is subtracted while it is still in cache, and the whole product never exists
SUBTRACT_PRODUCT_2D = "_subtract_product({1}, {g}, {0})  # {1} -= {g}.T @ {0}, block by block"
SUBTRACT_PRODUCT_STEPS = ("_subtract_product({1}, {g}.reshape(-1, {g}.shape[-1]), {0}.reshape(-1, {0}.shape[-1]))"
                          "  # {1} -= dJ/d{1}, block by block")
SUBTRACT_PRODUCT_2D_LATER = "_subtract_product_later({1}, {g}, {0})"
SUBTRACT_PRODUCT_STEPS_LATER = ("_subtract_product_later({1}, {g}.reshape(-1, {g}.shape[-1]), "
                                "{0}.reshape(-1, {0}.shape[-1]))")

TENSOR_OPS = {op.name: op for op in [*IMAGE_OPS, *LOSS_OPS, *NORM_OPS,
    # a = h @ W.T + b, the lecture's a_j = sum_i alpha_ji x_i, for a batch of rows
    # (np.dot: on small 2-D operands it has less call overhead than @; but for
    # dJ/dW = g.T @ h, with a transposed left operand, matmul's BLAS call is faster)
    # (one example: dJ/dW is an outer product, which np.dot of a column and a row
    # hands to BLAS; broadcasting g[:, None] * h is several times slower)
    TensorOp("linear", "np.dot({0}, {1}.T) + {2}",
             ("np.dot({g}, {1})", "{g}.T @ {0}", "{g}.sum(axis=0)"),
             forward_lines=("{out} = np.dot({0}, {1}.T)", "{out} += {2}  # the bias, in place"),
             forward_split=("{out} = _dot_split({0}, {1}.T)", "{out} += {2}  # the bias, in place"),
             helpers=("_subtract_product",),
             sparse_update=SUBTRACT_PRODUCT_2D, sparse_update_later=SUBTRACT_PRODUCT_2D_LATER,
             row=RowRule(("{np.dot}({1}, {0}, {out})", "{np.add}({out}, {2}, {out})"),
                         ("{np.dot}({g}, {1}, {adj})", "{np.dot}({g.col}, {0.row}, {adj})", "="),
                         outer=(None, ("{g}", "{0}"), None),
                         scalar=RowRule(("{out} = float({np.vdot}({1}, {0})) + {2}.item()",),
                                        ("{np.multiply}({1}, {g.box}, {adj.row})", "{np.multiply}({0.row}, {g.box}, {adj})",
                                         "=")))),
    TensorOp("linear_nobias", "np.dot({0}, {1}.T)",
             ("np.dot({g}, {1})", "{g}.T @ {0}"),
             forward_split=("{out} = _dot_split({0}, {1}.T)",),
             helpers=("_subtract_product",),
             sparse_update=SUBTRACT_PRODUCT_2D, sparse_update_later=SUBTRACT_PRODUCT_2D_LATER,
             row=RowRule(("{np.dot}({1}, {0}, {out})",),
                         ("{np.dot}({g}, {1}, {adj})", "{np.dot}({g.col}, {0.row}, {adj})"),
                         outer=(None, ("{g}", "{0}")),
                         scalar=RowRule(("{out} = float({np.vdot}({1}, {0}))",),
                                        ("{np.multiply}({1}, {g.box}, {adj.row})", "{np.multiply}({0.row}, {g.box}, {adj})")))),
    # s = sum of squares, for the l2 penalty
    TensorOp("sum_squares", "np.vdot({0}, {0})", ("(2 * {g}) * {0}",),
             row=RowRule(("{out} = float({np.vdot}({0}, {0}))",), ("{np.multiply}({0}, 2.0 * {g}, {adj})",))),
    # sequences: per-step linear maps, embeddings, [forward, backward] concatenation
    # (B, T, n) @ (n, m) as one 2-D product: a 3-D matmul would run one product per sequence
    TensorOp("linear_seq", "_linear_steps({0}, {1}, {2})",
             ("_matmul_steps({g}, {1})", "{g}.reshape(-1, {g}.shape[-1]).T @ {0}.reshape(-1, {0}.shape[-1])",
              "_sum_steps({g})"),
             helpers=("_linear_steps", "_workspace", "_matmul_steps", "_sum_steps", "_subtract_product"),
             sparse_update=SUBTRACT_PRODUCT_STEPS, sparse_update_later=SUBTRACT_PRODUCT_STEPS_LATER,
             forward_workspace="_linear_steps({0}, {1}, {2}, workspace={key})"),
    TensorOp("linear_seq_nobias", "_matmul_steps({0}, {1}.T)",
             ("_matmul_steps({g}, {1})", "{g}.reshape(-1, {g}.shape[-1]).T @ {0}.reshape(-1, {0}.shape[-1])"),
             helpers=("_matmul_steps", "_subtract_product"),
             sparse_update=SUBTRACT_PRODUCT_STEPS, sparse_update_later=SUBTRACT_PRODUCT_STEPS_LATER),
    # sgd_step updates only the rows of E that the batch read, instead of all of dJ/dE
    TensorOp("embedding", "{1}[{0}]", (None, "_embedding_grad({0}, {g}, {1}.shape[0])"),
             helpers=("_embedding_grad",),
             sparse_update="np.subtract.at({1}, {0}.ravel(), {g}.reshape(-1, {1}.shape[-1]))"
                           "  # only the rows the batch read"),
    TensorOp("concat_last", "np.concatenate([{0}, {1}], axis=-1)", ("{g}[..., :{n0}]", "{g}[..., {n0}:]")),
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
