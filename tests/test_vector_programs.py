"""`sum(v)` and `a @ b` in programs (issue 14): values and gradients against NumPy
formulas written here and against finite differences in float64, the shapes `@`
refuses, the blocked path they must not take, and `bpcompile check` at vector points."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpcompile
from bpcompile.cli.main import main
from bpcompile.errors import SpecError

from conftest import fd_gradient, write

# every test runs with modules compiled for each target (conftest.py)
pytestmark = pytest.mark.both_targets

LECTURE = "J = sum(log(1 + exp(-y * (X @ theta))))"


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _assert_gradients_match_differences(module, args, tol=1e-7):
    """Every gradient of value_and_grad has its input's shape and equals the finite
    differences of sum(evaluate) (value_and_grad's seed is 1 for every output entry)."""
    args = [np.asarray(a, dtype=np.float64) for a in args]
    _, grads = module.value_and_grad(*args)
    assert len(grads) == len(module.WRT)
    for name, grad in zip(module.WRT, grads):
        index = module.INPUTS.index(name)
        numeric = fd_gradient(module.evaluate, args, index)
        assert np.shape(grad) == args[index].shape, name
        np.testing.assert_allclose(grad, numeric, rtol=tol, atol=tol, err_msg=name)


# --- sum ----------------------------------------------------------------------------------

def test_sum_is_the_sum_of_all_elements_and_its_adjoint_the_seed_broadcast():
    m = bpcompile.compile("J = sum(sin(x) * y)")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    J, (dx, dy) = m.value_and_grad(x, y)
    assert np.ndim(J) == 0
    np.testing.assert_allclose(J, np.sum(np.sin(x) * y), rtol=1e-14)
    np.testing.assert_allclose(dx, np.cos(x) * y, rtol=1e-14)
    np.testing.assert_allclose(dy, np.sin(x), rtol=1e-14)
    _assert_gradients_match_differences(m, (x, y))
    # backward with a seed: the seed times the gradient
    _, cache = m.forward(x, y)
    np.testing.assert_allclose(m.backward(cache, 2.5)[0], 2.5 * np.cos(x) * y, rtol=1e-14)


def test_sum_whose_adjoint_gains_axes_later_in_the_program():
    # s = sum(x) is a number; s * w is a vector, so ds's adjoint has w's shape and
    # must be summed into the scalar before it is spread over x
    m = bpcompile.compile("s = sum(x)\nJ = exp(s) * w")
    x, w = np.array([0.1, -0.3, 0.2]), np.array([1.0, 2.0, -0.5, 3.0])
    J, (dx, dw) = m.value_and_grad(x, w)
    np.testing.assert_allclose(J, np.exp(x.sum()) * w, rtol=1e-14)
    np.testing.assert_allclose(dx, np.full(3, np.exp(x.sum()) * w.sum()), rtol=1e-14)
    np.testing.assert_allclose(dw, np.full(4, np.exp(x.sum())), rtol=1e-14)
    _assert_gradients_match_differences(m, (x, w))


def test_sum_of_a_scalar_and_of_a_constant():
    m = bpcompile.compile("J = sum(x**2) + sum(3)")
    J, (dx,) = m.value_and_grad(1.5)
    assert J == pytest.approx(1.5**2 + 3) and dx == pytest.approx(3.0)


# --- @ ------------------------------------------------------------------------------------

def test_dot_of_two_vectors_is_the_lectures_theta_dot_x():
    m = bpcompile.compile("J = theta @ x")
    theta, x = np.array([0.5, -1.0, 2.0]), np.array([1.0, 3.0, -2.0])
    J, (dtheta, dx) = m.value_and_grad(theta, x)
    assert J == pytest.approx(np.dot(theta, x), rel=1e-15) and np.ndim(J) == 0
    np.testing.assert_array_equal(dtheta, x)
    np.testing.assert_array_equal(dx, theta)


def test_dot_inside_elementwise_functions_against_differences():
    m = bpcompile.compile("J = exp(tanh(theta @ x) * theta @ x)")
    rng = np.random.default_rng(1)
    _assert_gradients_match_differences(m, (rng.normal(size=5) * 0.4, rng.normal(size=5) * 0.4))


def test_matrix_vector_is_a_dot_product_per_row():
    m = bpcompile.compile("q = A @ x\nJ = sum(tanh(q) * w)")
    rng = np.random.default_rng(2)
    A, x, w = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=3)
    J, (dA, dx, dw) = m.value_and_grad(A, x, w)
    q = A @ x
    np.testing.assert_allclose(J, np.sum(np.tanh(q) * w), rtol=1e-14)
    g = (1 - np.tanh(q) ** 2) * w
    np.testing.assert_allclose(dA, np.outer(g, x), rtol=1e-13)
    np.testing.assert_allclose(dx, A.T @ g, rtol=1e-13)
    _assert_gradients_match_differences(m, (A, x, w))


def test_a_batch_of_matrices_times_a_vector():
    m = bpcompile.compile("J = sum(sin(A @ x))")
    rng = np.random.default_rng(3)
    A, x = rng.normal(size=(2, 3, 4)), rng.normal(size=4)
    J, (dA, dx) = m.value_and_grad(A, x)
    np.testing.assert_allclose(J, np.sum(np.sin(np.matmul(A, x))), rtol=1e-14)
    assert dA.shape == (2, 3, 4) and dx.shape == (4,)
    _assert_gradients_match_differences(m, (A, x))


@pytest.mark.parametrize("b_shape, c_shape", [((2,), ()), ((4, 1), (4, 2)), ((), (2,)),
                                              ((5, 2), (1,)), ((3, 1), ())])
def test_elementwise_broadcasting_around_dot(b_shape, c_shape):
    # A @ x has shape (2,) and x @ x none; b and c broadcast them to larger shapes, so
    # the adjoints of the dot products arrive with axes that must be summed away
    m = bpcompile.compile("J = (A @ x) * b + c * (x @ x)", inputs=["A", "x", "b", "c"])
    rng = np.random.default_rng(4)
    A, x = rng.normal(size=(2, 3)), rng.normal(size=3)
    b, c = rng.normal(size=b_shape), rng.normal(size=c_shape)
    value = m.evaluate(A, x, b, c)
    np.testing.assert_allclose(value, (A @ x) * b + c * np.dot(x, x), rtol=1e-13)
    _assert_gradients_match_differences(m, (A, x, b, c))


def test_numbers_on_either_side_of_dot():
    m = bpcompile.compile("J = theta @ x")
    x = np.array([1.0, 2.0, 4.0])
    J, (dtheta, dx) = m.value_and_grad(2.0, x)       # a number: the same in every entry
    assert J == pytest.approx(2.0 * 7.0) and dtheta == pytest.approx(7.0)
    np.testing.assert_array_equal(dx, [2.0, 2.0, 2.0])
    J, (dtheta, dx) = m.value_and_grad(x, 3.0)
    assert J == pytest.approx(21.0) and dx == pytest.approx(7.0)
    J, grads = m.value_and_grad(2.0, 3.0)
    assert J == 6.0 and grads == (3.0, 2.0)
    assert bpcompile.compile("J = 3 @ 4 + x").evaluate(1.0) == 13.0


@pytest.mark.parametrize("a_shape, b_shape", [((3,), (3,)), ((2, 3), (3,)), ((4, 2, 3), (3,))])
def test_allowed_shapes_equal_numpys_matmul(a_shape, b_shape):
    m = bpcompile.compile("J = a @ b")
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    np.testing.assert_allclose(m.evaluate(a, b), np.matmul(a, b), rtol=1e-14)


@pytest.mark.parametrize("a_shape, b_shape, message", [
    ((3,), (3, 2), "@ takes a vector on the right"),         # matmul: a vector times a matrix
    ((2, 3), (3, 2), "@ takes a vector on the right"),       # matmul: matrix product
    ((2, 3), (2, 3), "@ takes a vector on the right"),
    ((2, 3), (), "@ takes a vector on the right"),           # matmul refuses a number
    ((5, 2, 3), (4, 3, 2), "@ takes a vector on the right"),
    ((2, 3), (4,), "last axes differ"),
    ((3,), (4,), "last axes differ"),
])
def test_shapes_where_the_last_axis_dot_differs_from_matmul_are_refused(a_shape, b_shape, message):
    m = bpcompile.compile("J = sum(a @ b)")
    a, b = np.ones(a_shape), np.ones(b_shape)
    for call in (m.evaluate, m.forward, m.value_and_grad):
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            call(a, b)
        assert f"{a_shape} @ {b_shape}" in str(info.value)


# --- the lecture's logistic regression ----------------------------------------------------

def test_the_lectures_logistic_regression_against_its_formula():
    m = bpcompile.compile(LECTURE)
    assert m.INPUTS == ("y", "X", "theta")
    rng = np.random.default_rng(6)
    rows, n = 40, 3
    X, theta = rng.normal(size=(rows, n)), rng.normal(size=n)
    y = rng.choice([-1.0, 1.0], rows)
    J, (dy, dX, dtheta) = m.value_and_grad(y, X, theta)
    margins = y * (X @ theta)
    np.testing.assert_allclose(J, np.sum(np.log(1 + np.exp(-margins))), rtol=1e-14)
    np.testing.assert_allclose(dtheta, -X.T @ (y * _sigmoid(-margins)), rtol=1e-12)
    np.testing.assert_allclose(dX, -np.outer(y * _sigmoid(-margins), theta), rtol=1e-12)
    np.testing.assert_allclose(dy, -(X @ theta) * _sigmoid(-margins), rtol=1e-12)
    assert (dtheta.shape, dX.shape, dy.shape) == ((n,), (rows, n), (rows,))
    small = (y[:6], X[:6], theta)
    _assert_gradients_match_differences(m, small)


def test_the_lectures_program_reads_like_the_lecture():
    source = bpcompile.compile(LECTURE).SOURCE
    assert "J_2 = _dot(X, theta)" in source and "J = np.sum(J_6)" in source
    # the adjoints of the dot product, with the chain-rule comment
    assert ("dJ_dtheta = _sum_to(_sum_to(dJ_dJ_2, np.shape(J_2))[..., None] * X, np.shape(theta))"
            in source)
    assert "dJ_dX = _sum_to(_sum_to(dJ_dJ_2, np.shape(J_2))[..., None] * theta, np.shape(X))" in source
    assert "# dJ/dtheta += dJ/dJ_2 * dJ_2/dtheta   (J_2 = _dot(X, theta))" in source
    assert "np.broadcast_to(np.sum(dJ_dJ), np.shape(J_6))" in source
    assert "import" not in source.replace("import numpy as np", "")
    graph = str(bpcompile.graph(LECTURE))
    assert "J_2:f64[] = dot X theta" in graph and "J:f64[] = sum J_6" in graph


def test_programs_without_sum_or_dot_define_no_dot_helper():
    assert "def _dot(" not in bpcompile.compile("J = x*y").SOURCE
    assert "def _dot(" in bpcompile.compile("J = x @ y").SOURCE


def test_program_spec_and_expr_command(tmp_path, capsys):
    spec = write(tmp_path / "lr.yaml", f"name: lr\ninputs: [X, y, theta]\nprogram: |\n  {LECTURE}\n"
                                       "wrt: [theta]\n")
    m = bpcompile.compile(spec)
    assert m.WRT == ("theta",)
    X, y, theta = np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([1.0, -1.0]), np.array([0.3, 0.2])
    (dtheta,) = m.value_and_grad(X, y, theta)[1]
    np.testing.assert_allclose(dtheta, -X.T @ (y * _sigmoid(-y * (X @ theta))), rtol=1e-13)
    out = tmp_path / "dot.py"
    assert main(["expr", "sum(w * (A @ v))", "-o", str(out)]) == 0
    module = bpcompile.load_module(out.read_text())
    A, v, w = np.arange(6.0).reshape(2, 3), np.array([1.0, 0.0, -1.0]), np.array([2.0, 3.0])
    assert module.INPUTS == ("w", "A", "v")         # in order of first appearance
    assert module.evaluate(w, A, v) == pytest.approx(np.sum(w * (A @ v)))


# --- names and refusals --------------------------------------------------------------------

@pytest.mark.parametrize("text, line, col", [
    ("sum = x + 1\nJ = sum*2", 1, 1),
    ("t = x\nJ = sum + t", 2, 5),
    ("J = exp(sum)", 1, 9),
])
def test_sum_is_a_function_name_not_a_variable(text, line, col):
    with pytest.raises(SpecError) as info:
        bpcompile.compile(text)
    assert (info.value.line, info.value.col) == (line, col)
    assert "'sum' is a function" in info.value.message


def test_sum_as_an_input_name_is_refused():
    with pytest.raises(SpecError, match="input 'sum' is a function"):
        bpcompile.compile("J = x + 1", inputs=["x", "sum"])


@pytest.mark.parametrize("text, message", [
    ("J = sum(x, y)", "sum() takes 1 argument, got 2"),
    ("J = sum()", "sum() takes 1 argument, got 0"),
    ("J = sum(x, axis=0)", "takes no keyword arguments"),
    ("J = x.sum()", "only calls of known functions"),
    ("J = sum([x])", "unsupported syntax"),
])
def test_bad_uses_of_sum(text, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        bpcompile.compile(text)


def test_an_unknown_function_lists_sum_among_the_known_ones():
    with pytest.raises(SpecError, match=r"known functions: .*, sum, "):
        bpcompile.compile("J = mean(x)")


def test_layer_activations_stay_elementwise():
    spec = {"name": "net", "input": [4], "loss": "mse",
            "layers": [{"linear": 3}, {"activation": "sum(x)"}, {"linear": 1}]}
    with pytest.raises(SpecError, match="unknown function 'sum'"):
        bpcompile.compile(spec)
    spec["layers"][1] = {"activation": "x @ x"}
    with pytest.raises(SpecError, match="unsupported operator '@'"):
        bpcompile.compile(spec)


def test_a_dot_product_whose_adjoint_was_broadcast_costs_no_square_array():
    # x @ y is a number that sin(x) broadcasts to x's shape: its adjoint has n entries,
    # and multiplying that by y without first summing it would make an n-by-n array
    import tracemalloc
    n = 4000
    m = bpcompile.compile("J = x @ y + sin(x)")
    x, y = np.linspace(0, 1, n), np.linspace(1, 2, n)
    tracemalloc.start()
    try:
        _, (dx, dy) = m.value_and_grad(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * n * 8, peak          # a few dozen vectors; n*n*8 is 128 MB
    # value_and_grad's seed is 1 for each of the n entries of J: d sum(J)/dx = n*y + cos(x)
    np.testing.assert_allclose(dx, n * y + np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(dy, n * x, rtol=1e-12)


# --- the blocked fast path ----------------------------------------------------------------

def test_sum_and_dot_never_take_the_blocked_path_on_large_arrays():
    points = 40_000                 # more than _BLOCK: an elementwise program takes blocks
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0.5, 1.5, points), rng.uniform(0.5, 1.5, points)
    elementwise = bpcompile.compile("J = x*y + sin(x)")
    # the control: the target's fused kernel applies here (blocks, or numba's loop)
    fused = "_value_and_grad_points" if "import numba" in elementwise.SOURCE else "_value_and_grad_block"
    assert fused in elementwise.SOURCE
    for text, value, dx, dy in [
        ("J = sum(x*y + sin(x))", np.sum(x * y + np.sin(x)), y + np.cos(x), x),
        ("J = x @ y + sin(x)", np.dot(x, y) + np.sin(x), points * y + np.cos(x), points * x),
    ]:
        m = bpcompile.compile(text)
        assert fused not in m.SOURCE and "_fits_blocks" not in m.SOURCE
        J, (gx, gy) = m.value_and_grad(x, y)
        np.testing.assert_allclose(J, value, rtol=1e-12)
        np.testing.assert_allclose(gx, dx, rtol=1e-12)
        np.testing.assert_allclose(gy, dy, rtol=1e-12)
        out = (np.empty(np.shape(J)), np.empty(points), np.empty(points))
        J2, grads = m.value_and_grad(x, y, out=out)
        np.testing.assert_allclose(J2, value, rtol=1e-12)
        np.testing.assert_allclose(grads[0], dx, rtol=1e-12)


# --- bpcompile check at vector points -----------------------------------------------------

def _rows(out):
    """{label: (analytic, numeric)} of check's table."""
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^(\w+(?:\[[\d,]+\])?)\s+(\S+)\s+(\S+)\s+\S+$", line)
        if match and match.group(1) != "input":
            rows[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return rows


def test_check_with_vectors_and_a_matrix_on_the_command_line(capsys):
    assert main(["check", "theta @ x", "--at", "theta=0.5,-1.0", "--at", "x=2,3"]) == 0
    out = capsys.readouterr().out
    assert "theta=[0.5, -1], x=[2, 3]" in out and ": ok" in out
    rows = _rows(out)
    assert rows["theta[0]"][0] == 2 and rows["theta[1]"][0] == 3 and rows["x[1]"][0] == -1
    assert main(["check", "sum(sin(A @ x))", "--at", "A=1,2;3,4;0.5,-1", "--at", "x=0.2,0.1"]) == 0
    out = capsys.readouterr().out
    assert "A=[[1, 2], [3, 4], [0.5, -1]]" in out
    rows = _rows(out)
    A, x = np.array([[1, 2], [3, 4], [0.5, -1]]), np.array([0.2, 0.1])
    assert rows["A[0,1]"][0] == pytest.approx(np.cos(A @ x)[0] * x[1], rel=1e-13)
    assert rows["A[0,1]"][1] == pytest.approx(rows["A[0,1]"][0], rel=1e-7)


def test_check_one_entry_vector_with_a_trailing_comma(capsys):
    assert main(["check", "sum(x*x)", "--at", "x=2,"]) == 0
    out = capsys.readouterr().out
    assert "x=[2]" in out and re.search(r"^x\[0\]\s+4\s", out, re.M)


def test_check_at_in_a_spec_with_vectors(tmp_path, capsys):
    spec = write(tmp_path / "lr.yaml", f"name: lr\ninputs: [X, y, theta]\nprogram: |\n  {LECTURE}\n"
                 "check_at: {X: [[1, 2], [3, -4], [0.5, 1]], y: [1, -1, 1], theta: [0.5, -1.0]}\n")
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    X, y, theta = np.array([[1, 2], [3, -4], [0.5, 1]]), np.array([1.0, -1, 1]), np.array([0.5, -1])
    dtheta = -X.T @ (y * _sigmoid(-y * (X @ theta)))
    rows = _rows(out)
    assert rows["theta[0]"][0] == pytest.approx(dtheta[0], rel=1e-13)
    assert rows["theta[1]"][0] == pytest.approx(dtheta[1], rel=1e-13)
    assert rows["theta[1]"][1] == pytest.approx(dtheta[1], rel=1e-7)
    assert "X[0,1]" in rows and ": ok" in out


@pytest.mark.parametrize("check_at, message", [
    ("{x: [[1, 2], [3]]}", "not rectangular"),
    ("{x: [1, [2]]}", "not rectangular"),
    ("{x: []}", "empty list"),
    ("{x: [1, .nan]}", "finite numbers"),
    ("{x: [1, true]}", "must be a number"),
    ("{x: ['1']}", "must be a number"),
    ("{x: [" + ", ".join(["1"] * 1001) + "]}", "more than 1000 entries"),
    ("{x: " + "[" * 9 + "1" + "]" * 9 + "}", "nested more than 8 levels"),
    ("{w: [1, 2]}", "'w' is not an input"),
])
def test_bad_check_at_values_are_located_errors(tmp_path, capsys, check_at, message):
    spec = write(tmp_path / "s.yaml", f"expr: sum(x*x)\ncheck_at: {check_at}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.match(rf"^{re.escape(str(spec))}:2:\d+: error: ", err)
    assert message in err


@pytest.mark.parametrize("at, message", [
    ("x=1,,2", "empty entry"), ("x=1,2;3", "not rectangular"), ("x=1,abc", "'abc' is not a number"),
    ("x=1,inf", "finite numbers"),
])
def test_bad_at_values_are_errors(capsys, at, message):
    assert main(["check", "sum(x*x)", "--at", at]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and "error:" in err


def test_check_at_shapes_that_do_not_fit_is_an_error_not_a_traceback(capsys):
    assert main(["check", "sum(A @ x)", "--at", "A=1,2;3,4", "--at", "x=1,2,3"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "cannot evaluate" in err and "last axes differ" in err
    assert main(["check", "sum(x @ A)", "--at", "A=1,2;3,4", "--at", "x=1,2"]) == 1
    assert "@ takes a vector on the right" in capsys.readouterr().err


# --- random programs ----------------------------------------------------------------------

N = 3      # length of the vectors a, b; M is (2, N)
UNARY = {"sin": np.sin, "tanh": np.tanh, "exp": np.exp, "sigmoid": _sigmoid}
BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply}


def _vector(draw, depth):
    """(text, NumPy function of (a, b, M)) of an expression of shape (N,) or (2,)."""
    choice = draw(st.sampled_from(["leaf", "unary", "binary", "scale"] if depth else ["leaf"]))
    if choice == "leaf":
        name = draw(st.sampled_from(["a", "b"]))
        return name, (lambda a, b, M: a) if name == "a" else (lambda a, b, M: b)
    if choice == "unary":
        f = draw(st.sampled_from(sorted(UNARY)))
        text, g = _vector(draw, depth - 1)
        return f"{f}({text})", lambda a, b, M: UNARY[f](g(a, b, M))
    if choice == "binary":
        op = draw(st.sampled_from(sorted(BINARY)))
        (t1, g1), (t2, g2) = _vector(draw, depth - 1), _vector(draw, depth - 1)
        return f"({t1} {op} {t2})", lambda a, b, M: BINARY[op](g1(a, b, M), g2(a, b, M))
    text, g = _scalar(draw, depth - 1)
    t2, g2 = _vector(draw, depth - 1)
    return f"({text}) * {t2}", lambda a, b, M: g(a, b, M) * g2(a, b, M)


def _scalar(draw, depth):
    """(text, NumPy function) of a scalar expression: sum, a dot product, or a row sum
    of M @ v."""
    choice = draw(st.sampled_from(["sum", "dot", "matvec"]))
    text, g = _vector(draw, depth)
    if choice == "sum":
        return f"sum({text})", lambda a, b, M: np.sum(g(a, b, M))
    if choice == "dot":
        t2, g2 = _vector(draw, depth)
        return f"({text}) @ ({t2})", lambda a, b, M: np.dot(g(a, b, M), g2(a, b, M))
    f = draw(st.sampled_from(sorted(UNARY)))
    return f"sum({f}(M @ ({text})))", lambda a, b, M: np.sum(UNARY[f](M @ g(a, b, M)))


@st.composite
def vector_programs(draw):
    return _scalar(draw, 2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vector_programs(), st.integers(0, 2**31 - 1))
def test_random_programs_with_sum_and_dot_match_numpy_and_differences(program, seed):
    text, reference = program
    rng = np.random.default_rng(seed)
    values = {"a": rng.uniform(-0.5, 0.5, N), "b": rng.uniform(-0.5, 0.5, N),
              "M": rng.uniform(-0.5, 0.5, (2, N))}
    used = [name for name in values if re.search(rf"\b{name}\b", text)]
    m = bpcompile.compile(text, inputs=used)
    args = [values[name] for name in used]
    np.testing.assert_allclose(m.evaluate(*args), reference(**values), rtol=1e-12, atol=1e-14)
    assert "_value_and_grad_block" not in m.SOURCE
    _assert_gradients_match_differences(m, args, tol=1e-6)


def test_differences_measure_a_small_gradient_entry_of_a_large_sum():
    """Found by the random programs above: d/dM[0, 0] is 1.4e-4 while the sum is about
    2, so the differences' rounding noise (about 1e-12) never met an agreement test of
    1e-8 relative to 1.4e-4, and fd_gradient gave NaN (no reference) for that entry."""
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.5, 0.5, N)
    rng.uniform(-0.5, 0.5, N)                  # (b, drawn as the test above draws it)
    M = rng.uniform(-0.5, 0.5, (2, N))
    m = bpcompile.compile("sum(exp(M @ ((sin(a) * a))))", inputs=["a", "M"])
    numeric = fd_gradient(m.evaluate, (a, M), 1)
    assert not np.any(np.isnan(numeric))
    _assert_gradients_match_differences(m, (a, M), tol=1e-6)
