"""Programs: the lecture's examples, broadcasting, and the generated module's contract
(ordering, cache, comments, aliasing, dead code, common subexpressions, graph)."""

import ast
import hashlib
import re

import numpy as np
import pytest
import sympy as sp
import yaml

import bpcompile
from bpcompile import compile_file, load_module

from conftest import (EXAMPLES, PROGRAM_EXAMPLES, assign_target, fd_gradient, function_body,
                      loaded_names, rel_err, write)

# every test runs with modules compiled for each target (conftest.py)
pytestmark = pytest.mark.both_targets

QUIZ = "exp(x*z) + x*z/log(x) + sin(log(x))/(x*z)"
DAG = "t = x*x\na = t*t\nb = sin(t)\nJ = a + b*t\n"


def load(path):
    compiled = compile_file(path)
    return load_module(compiled.source, compiled.name)


def cache_keys(cache):
    return {k for k in cache if not k.endswith(".shape")}


# --- the lecture's examples ---------------------------------------------------------------

def _quiz_sympy():
    x, z = sp.symbols("x z", positive=True)
    return x, z, sp.exp(x * z) + x * z / sp.log(x) + sp.sin(sp.log(x)) / (x * z)


def test_quiz_gradient_matches_sympy_diff_at_2_3():
    x, z, y = _quiz_sympy()
    at = {x: 2, z: 3}
    want_value = float(y.subs(at).evalf(30))
    want_dx = float(sp.diff(y, x).subs(at).evalf(30))
    want_dz = float(sp.diff(y, z).subs(at).evalf(30))
    # the lecture's rounded answers, and SymPy's agree
    assert round(want_dx, 2) == 1208.38 and round(want_dz, 2) == 809.71

    from_file = load(EXAMPLES / "quiz.yaml")
    from_text = bpcompile.compile(QUIZ)
    from_sympy = bpcompile.compile(y)
    for module in (from_file, from_text, from_sympy):
        assert module.INPUTS == ("x", "z") and module.WRT == ("x", "z")
        value, (dx, dz) = module.value_and_grad(2.0, 3.0)
        assert value == pytest.approx(want_value, rel=1e-13)
        assert dx == pytest.approx(want_dx, rel=1e-12)
        assert dz == pytest.approx(want_dz, rel=1e-12)
        assert round(float(dx), 2) == 1208.38 and round(float(dz), 2) == 809.71


def test_quiz_gradient_matches_sympy_on_arrays():
    x, z, y = _quiz_sympy()
    dx_f = sp.lambdify((x, z), sp.diff(y, x), "numpy")
    dz_f = sp.lambdify((x, z), sp.diff(y, z), "numpy")
    rng = np.random.default_rng(0)
    xs, zs = rng.uniform(1.5, 3.0, 200), rng.uniform(1.0, 4.0, 200)
    _, (dx, dz) = bpcompile.compile(QUIZ).value_and_grad(xs, zs)
    np.testing.assert_allclose(dx, dx_f(xs, zs), rtol=1e-11)
    np.testing.assert_allclose(dz, dz_f(xs, zs), rtol=1e-11)


def _lecture_simple(x):
    """The lecture's hand-written forward and backward pass for J = cos(sin(x**2) + 3x**2)."""
    t = x ** 2
    u1 = np.sin(t)
    u2 = 3 * t
    u = u1 + u2
    J = np.cos(u)
    dJ_du = -np.sin(u)
    dJ_dt = dJ_du * np.cos(t) + dJ_du * 3
    dJ_dx = dJ_dt * 2 * x
    return J, dJ_dx


def test_simple_matches_the_lecture_backward_pass():
    module = load(EXAMPLES / "simple.yaml")
    assert module.INPUTS == ("x",) and module.WRT == ("x",)
    xs = np.linspace(-2.0, 2.0, 41)
    value, (dx,) = module.value_and_grad(xs)
    want_value, want_dx = _lecture_simple(xs)
    np.testing.assert_allclose(value, want_value, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-12)
    for x0 in (0.3, 1.1, -1.7):
        v, (d,) = module.value_and_grad(x0)
        assert np.ndim(d) == 0
        assert d == pytest.approx(_lecture_simple(x0)[1], rel=1e-13)


def test_logistic_regression_matches_the_lecture_formula():
    module = load(EXAMPLES / "logistic_regression.yaml")
    assert module.INPUTS == ("theta0", "theta1", "theta2", "x1", "x2", "ystar")
    assert module.WRT == ("theta0", "theta1", "theta2", "x1", "x2")
    rng = np.random.default_rng(1)
    n = 50
    theta = rng.normal(size=(3, n))
    feats = np.vstack([np.ones(n), rng.normal(size=(2, n))])        # x_0 = 1
    ystar = np.concatenate([np.zeros(20), np.ones(20), rng.uniform(0, 1, 10)])
    value, grads = module.value_and_grad(*theta, feats[1], feats[2], ystar)
    # the lecture: y = sigmoid(theta . x), J = y* log y + (1 - y*) log(1 - y)
    y = 1 / (1 + np.exp(-(theta * feats).sum(axis=0)))
    np.testing.assert_allclose(value, ystar * np.log(y) + (1 - ystar) * np.log(1 - y), rtol=1e-12)
    # dJ/dtheta_j = (y*/y + (1 - y*)/(y - 1)) * y(1 - y) * x_j
    common = (ystar / y + (1 - ystar) / (y - 1)) * y * (1 - y)
    for j in range(3):
        np.testing.assert_allclose(grads[j], common * feats[j], rtol=1e-10, atol=1e-13)
    # and by the same chain, dJ/dx_j = (...) * y(1 - y) * theta_j
    for j in (1, 2):
        np.testing.assert_allclose(grads[2 + j], common * theta[j], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("example", PROGRAM_EXAMPLES)
def test_examples_compile_and_match_finite_differences(example):
    path = EXAMPLES / example
    spec = yaml.safe_load(path.read_text())
    module = load(path)
    at = spec.get("check_at") or {}
    args = [float(at.get(name, 0.8)) for name in module.INPUTS]
    _, grads = module.value_and_grad(*args)
    assert len(grads) == len(module.WRT)
    for name, grad in zip(module.WRT, grads):
        numeric = fd_gradient(module.evaluate, args, module.INPUTS.index(name))
        assert rel_err(grad, numeric) < 1e-8, (example, name)


# --- broadcasting ---------------------------------------------------------------------

BROADCAST = [
    QUIZ + " + c*x*z",
    "exp(x) + sin(z)*c",
    "x + z*c",
    "sigmoid(x*z)*c + tanh(c)",
]


def _broadcast_args():
    rng = np.random.default_rng(2)
    return {"x": rng.uniform(1.5, 3.0, (3, 1)), "z": rng.uniform(1.0, 2.0, (4,)), "c": 0.7}


@pytest.mark.parametrize("text", BROADCAST)
def test_broadcast_gradients_have_input_shapes_and_equal_fd_of_the_sum(text):
    module = bpcompile.compile(text, inputs=["x", "z", "c"])
    values = _broadcast_args()
    args = [values[n] for n in module.INPUTS]
    value, grads = module.value_and_grad(*args)
    assert np.shape(value) == (3, 4)
    for name, grad in zip(module.WRT, grads):
        i = module.INPUTS.index(name)
        assert np.shape(grad) == np.shape(args[i]), name
        numeric = fd_gradient(module.evaluate, args, i)
        assert rel_err(grad, numeric) < 1e-8, (text, name, grad, numeric)


@pytest.mark.parametrize("text", BROADCAST)
def test_value_and_grad_equals_backward_with_a_seed_of_ones(text):
    module = bpcompile.compile(text, inputs=["x", "z", "c"])
    values = _broadcast_args()
    args = [values[n] for n in module.INPUTS]
    value, grads = module.value_and_grad(*args)
    _, cache = module.forward(*args)
    explicit = module.backward(cache, np.ones(np.shape(value)))
    for name, a, b in zip(module.WRT, grads, explicit):
        np.testing.assert_allclose(a, b, rtol=1e-13, err_msg=f"{text} d/d{name}")


@pytest.mark.parametrize("text", BROADCAST)
def test_backward_with_an_array_seed_is_the_vector_jacobian_product(text):
    module = bpcompile.compile(text, inputs=["x", "z", "c"])
    values = _broadcast_args()
    args = [values[n] for n in module.INPUTS]
    seed = np.random.default_rng(3).normal(size=(3, 4))
    _, cache = module.forward(*args)
    vjp = module.backward(cache, seed)
    for name, grad in zip(module.WRT, vjp):
        i = module.INPUTS.index(name)
        assert np.shape(grad) == np.shape(args[i])
        numeric = fd_gradient(lambda *a: seed * module.evaluate(*a), args, i)
        assert rel_err(grad, numeric) < 1e-8, (text, name)
    # linear in the seed
    twice = module.backward(cache, 2.0 * seed)
    for a, b in zip(vjp, twice):
        np.testing.assert_allclose(2.0 * np.asarray(a), b, rtol=1e-14)


# --- the module contract ------------------------------------------------------------------

def test_contract_names_and_functions():
    module = load(EXAMPLES / "logistic_regression.yaml")
    assert isinstance(module.INPUTS, tuple) and isinstance(module.WRT, tuple)
    args = [0.1, -0.5, 0.8, 1.5, -0.3, 1.0]
    value, cache = module.forward(*args)
    assert value == module.evaluate(*args)
    grads = module.backward(cache)
    assert isinstance(grads, tuple) and len(grads) == len(module.WRT)
    v2, g2 = module.value_and_grad(*args)
    assert v2 == value and g2 == grads
    # the seed scales every gradient
    for a, b in zip(module.backward(cache, -3.0), grads):
        assert a == pytest.approx(-3.0 * b, rel=1e-15)


def test_cache_holds_only_what_backward_needs_for_simple():
    module = load(EXAMPLES / "simple.yaml")
    _, cache = module.forward(0.7)
    keys = cache_keys(cache)
    assert not keys & {"J", "u1", "u2"}
    assert keys <= {"x", "t", "u"}
    # everything backward reads comes from the cache and every cached value is read
    reads = set()
    for stmt in function_body(module.SOURCE, "backward"):
        reads |= loaded_names(stmt)
    assert keys <= reads


@pytest.mark.parametrize("example", PROGRAM_EXAMPLES)
def test_cache_is_exactly_the_forward_values_backward_reads(example):
    module = load(EXAMPLES / example)
    body = function_body(module.SOURCE, "backward")
    from_cache = set()
    reads_elsewhere = set()
    for stmt in body:
        if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Subscript)
                and isinstance(stmt.value.value, ast.Name) and stmt.value.value.id == "cache"):
            from_cache.add(assign_target(stmt))
        else:
            reads_elsewhere |= loaded_names(stmt) - {"cache"}
    args = [0.6 + 0.1 * i for i in range(len(module.INPUTS))]
    _, cache = module.forward(*args)
    assert cache_keys(cache) == from_cache
    assert from_cache <= reads_elsewhere, from_cache - reads_elsewhere
    forward_targets = {assign_target(s) for s in function_body(module.SOURCE, "forward")
                       if isinstance(s, ast.Assign)}
    needed_forward = (reads_elsewhere & forward_targets) | (reads_elsewhere & set(module.INPUTS))
    assert needed_forward <= from_cache


def test_backward_order_follows_wrt_not_inputs():
    module = bpcompile.compile(QUIZ, inputs=["x", "z"], wrt=["z", "x"])
    assert module.INPUTS == ("x", "z") and module.WRT == ("z", "x")
    _, (dz, dx) = module.value_and_grad(2.0, 3.0)
    x, z, y = _quiz_sympy()
    assert dz == pytest.approx(float(sp.diff(y, z).subs({x: 2, z: 3})), rel=1e-12)
    assert dx == pytest.approx(float(sp.diff(y, x).subs({x: 2, z: 3})), rel=1e-12)


def test_header_names_the_spec_file_and_its_sha256():
    path = EXAMPLES / "simple.yaml"
    source = compile_file(path).source
    first, second = source.splitlines()[:2]
    assert first.startswith("# @generated by bpcompile")
    assert "simple.yaml" in first
    assert hashlib.sha256(path.read_bytes()).hexdigest() in second


def test_header_sha256_is_the_hash_of_the_file_bytes_even_with_crlf(tmp_path):
    crlf = tmp_path / "simple_crlf.yaml"
    crlf.write_bytes((EXAMPLES / "simple.yaml").read_bytes().replace(b"\n", b"\r\n"))
    first, second = compile_file(crlf).source.splitlines()[:2]
    assert "simple_crlf.yaml" in first
    assert hashlib.sha256(crlf.read_bytes()).hexdigest() in second


def test_header_hash_changes_with_the_spec(tmp_path):
    text = (EXAMPLES / "simple.yaml").read_text()
    a = write(tmp_path / "a.yaml", text)
    b = write(tmp_path / "b.yaml", text + "# another comment\n")
    ha = re.search(r"sha256 of the spec: ([0-9a-f]{64})", compile_file(a).source).group(1)
    hb = re.search(r"sha256 of the spec: ([0-9a-f]{64})", compile_file(b).source).group(1)
    assert ha != hb


@pytest.mark.parametrize("example", PROGRAM_EXAMPLES)
def test_output_is_byte_identical_for_identical_input(example):
    first = compile_file(EXAMPLES / example).source
    second = compile_file(EXAMPLES / example).source
    assert first.encode() == second.encode()
    assert bpcompile.compile(QUIZ).SOURCE == bpcompile.compile(QUIZ).SOURCE


def _forward_statements(source):
    stmts = function_body(source, "forward")
    result = []
    for s in stmts:
        if isinstance(s, ast.Assign) and assign_target(s) == "cache":
            break
        if isinstance(s, ast.Assign):
            result.append(s)
    return result


def _backward_statements(source, seed):
    stmts = [s for s in function_body(source, "backward") if isinstance(s, ast.Assign)]
    targets = [assign_target(s) for s in stmts]
    return stmts[targets.index(seed) + 1:]


ORDER_PROGRAMS = {
    "quiz": QUIZ,
    "dag": DAG,
    "logistic": "a = theta0 + theta1*x1 + theta2*x2\ny = sigmoid(a)\n"
                "J = ystar*log(y) + (1 - ystar)*log(1 - y)\n",
    "wide": "p = x*y\nq = sin(p) + cos(p)*y\nr = q*p - exp(-x)\nJ = r*q + tanh(p)/(1 + y**2)\n",
}


@pytest.mark.parametrize("name", sorted(ORDER_PROGRAMS))
def test_forward_is_topological_and_backward_is_reverse_topological(name):
    module = bpcompile.compile(ORDER_PROGRAMS[name])
    source = module.SOURCE
    out = module.GRAPH.output
    # forward: single assignment, every name defined before use
    defined = set(module.INPUTS) | {"np"}
    order = {}
    for stmt in _forward_statements(source):
        target = assign_target(stmt)
        assert loaded_names(stmt.value) <= defined, (target, loaded_names(stmt.value) - defined)
        assert target not in order
        order[target] = len(order)
        defined.add(target)
    assert out in order
    # backward: each statement works on one node's adjoint; nodes in reverse forward order,
    # and an adjoint is complete (no later write) before it is read by another statement
    prefix = f"d{out}_d"
    seed = f"{prefix}{out}"
    stmts = _backward_statements(source, seed)
    assert stmts, "no adjoint statements"
    adjoint_of = {f"{prefix}{n}": n for n in list(order) + list(module.INPUTS)}
    written_after = {}
    for i, stmt in enumerate(stmts):
        written_after.setdefault(assign_target(stmt), []).append(i)
    last_node_index = len(order)
    for i, stmt in enumerate(stmts):
        target = assign_target(stmt)
        read = [n for n in loaded_names(stmt.value) if n in adjoint_of and n != target] + \
               ([seed] if seed in loaded_names(stmt.value) else [])
        read = sorted(set(read))
        assert len(read) == 1, (ast.unparse(stmt), read)
        node = adjoint_of.get(read[0], out)
        assert order[node] <= last_node_index, f"{ast.unparse(stmt)} out of reverse order"
        last_node_index = order[node]
        assert all(j < i for j in written_after.get(read[0], [])), \
            f"{read[0]} read at statement {i} before its last accumulation"


@pytest.mark.parametrize("name", sorted(ORDER_PROGRAMS))
def test_each_adjoint_line_has_a_comment(name):
    module = bpcompile.compile(ORDER_PROGRAMS[name])
    out = module.GRAPH.output
    lines = module.SOURCE.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("def backward"))
    seed_line = next(i for i in range(start, len(lines)) if re.match(rf"\s+d{out}_d{out} = ", lines[i]))
    adjoint_lines = []
    for line in lines[seed_line + 1:]:
        if line.strip().startswith("return"):
            break
        adjoint_lines.append(line)
    assert adjoint_lines
    statements, above = [], ""
    for line in adjoint_lines:       # a long statement has its comment on the lines above it
        if line.strip().startswith("#"):
            above += line.strip()[1:]
        elif line.startswith(" " * 8):
            continue                 # a continuation line
        else:
            code, _, comment = line.partition("#")
            statements.append((code, comment + above))
            above = ""
    for code, comment in statements:
        line = code + comment
        assert comment.strip(), line
        target = code.split("=")[0].strip()
        # the comment names the adjoint it updates, in the lecture's notation dJ/dv
        assert target.startswith(f"d{out}_d")
        assert f"d{out}/d{target[len(out) + 3:]}" in comment, line


def _dag_reference(x):
    t = x * x
    dJ_dt = 2 * t + np.cos(t) * t + np.sin(t)
    return t * t + np.sin(t) * t, dJ_dt * 2 * x


def test_shared_values_accumulate_adjoints_without_aliasing():
    module = bpcompile.compile(DAG)
    x = np.linspace(-1.2, 1.3, 7)
    x_before = x.copy()
    value, cache = module.forward(x)
    saved = {k: np.array(v, copy=True) for k, v in cache.items() if not k.endswith(".shape")}
    (g1,) = module.backward(cache)
    (g2,) = module.backward(cache)
    want_value, want_grad = _dag_reference(x_before)
    np.testing.assert_allclose(value, want_value, rtol=1e-14)
    np.testing.assert_allclose(g1, want_grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g2, g1, rtol=0, atol=0)
    assert rel_err(g1, fd_gradient(module.evaluate, [x_before], 0)) < 1e-9
    # nothing was modified in place
    np.testing.assert_array_equal(x, x_before)
    for k, v in saved.items():
        np.testing.assert_array_equal(cache[k], v, err_msg=k)
    # with an array seed as well
    seed = np.linspace(0.5, 2.0, 7)
    seed_before = seed.copy()
    (gs,) = module.backward(cache, seed)
    np.testing.assert_allclose(gs, seed_before * want_grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(seed, seed_before)


def test_several_inputs_sharing_values_with_arrays():
    text = "t = x*z\na = t*t + x\nb = sin(t)*z\nJ = a + b*t + a*b\n"
    module = bpcompile.compile(text)
    rng = np.random.default_rng(4)
    x, z = rng.normal(size=5), rng.normal(size=5)
    _, (gx, gz) = module.value_and_grad(x, z)
    assert rel_err(gx, fd_gradient(module.evaluate, [x, z], 0)) < 1e-9
    assert rel_err(gz, fd_gradient(module.evaluate, [x, z], 1)) < 1e-9


@pytest.mark.parametrize("text", ["x + z", "J = x + z\n", DAG.replace("J = a + b*t", "J = a + b*t + z"),
                                  "x*z + x"])
def test_returned_gradients_do_not_alias_each_other_or_the_seed(text):
    module = bpcompile.compile(text)
    args = [np.linspace(0.5, 1.5, 4) + i for i in range(len(module.INPUTS))]
    _, cache = module.forward(*args)
    seed = np.full(4, 2.0)
    grads = module.backward(cache, seed)
    buffers = [seed] + args + list(grads)
    for i, g in enumerate(grads):
        for j, other in enumerate(buffers):
            if other is not g:
                assert not np.shares_memory(g, other), (text, i, j)
    # so that updating one gradient in place leaves everything else alone
    expected = [np.array(g, copy=True) for g in grads]
    grads[0][...] = -1.0
    np.testing.assert_array_equal(seed, 2.0)
    for g, e in zip(grads[1:], expected[1:]):
        np.testing.assert_array_equal(g, e)


def test_dead_code_elimination_for_an_input_not_in_wrt(tmp_path):
    spec = write(tmp_path / "f.yaml", "name: f\ninputs: [x, z]\nprogram: |\n"
                 "  p = x*z\n  s = sin(z)\n  w = exp(s)*s\n  J = p + w\nwrt: [x]\n")
    compiled = compile_file(spec)
    module = load_module(compiled.source)
    assert module.INPUTS == ("x", "z") and module.WRT == ("x",)
    backward = "\n".join(ast.unparse(s) for s in function_body(module.SOURCE, "backward"))
    for name in ("dJ_dz", "dJ_ds", "dJ_dw"):
        assert name not in module.SOURCE, name
    adjoint_targets = {assign_target(s) for s in _backward_statements(module.SOURCE, "dJ_dJ")}
    assert adjoint_targets == {"dJ_dp", "dJ_dx"}
    assert "np.exp" not in backward and "np.sin" not in backward and "np.cos" not in backward
    value, (dx,) = module.value_and_grad(1.5, 0.4)
    assert dx == pytest.approx(0.4, rel=1e-15)
    assert value == pytest.approx(1.5 * 0.4 + np.exp(np.sin(0.4)) * np.sin(0.4), rel=1e-14)


def _is_product_of(node, a, b):
    return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
            and isinstance(node.left, ast.Name) and isinstance(node.right, ast.Name)
            and {node.left.id, node.right.id} == {a, b})


def test_common_subexpression_is_computed_once():
    module = bpcompile.compile("exp(x*z) + sin(x*z)")
    forward = _forward_statements(module.SOURCE)
    products = [s for s in forward if any(_is_product_of(n, "x", "z") for n in ast.walk(s.value))]
    assert len(products) == 1, [ast.unparse(s) for s in products]
    assert len(forward) == 4          # x*z, exp, sin, the sum
    _, (dx, dz) = module.value_and_grad(0.7, 1.3)
    p = 0.7 * 1.3
    assert dx == pytest.approx((np.exp(p) + np.cos(p)) * 1.3, rel=1e-14)
    assert dz == pytest.approx((np.exp(p) + np.cos(p)) * 0.7, rel=1e-14)


def _backward_text(module):
    return "\n".join(ast.unparse(s) for s in function_body(module.SOURCE, "backward"))


def test_sigmoid_derivative_uses_the_stored_output():
    module = bpcompile.compile("sigmoid(x)")
    backward = _backward_text(module)
    assert "np.exp" not in backward
    _, cache = module.forward(np.array([0.3, -2.0]))
    assert cache_keys(cache) == {"y"}
    assert re.search(r"y \* \(1 - y\)|\(1 - y\) \* y", backward), backward
    x = np.linspace(-4, 4, 9)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(module.value_and_grad(x)[1][0], s * (1 - s), rtol=1e-13)


def test_tanh_and_exp_derivatives_use_the_stored_output():
    tanh = bpcompile.compile("tanh(x)")
    backward = _backward_text(tanh)
    assert "np.tanh" not in backward and "np.cosh" not in backward
    assert re.search(r"1 - y \*\* 2", backward), backward
    _, cache = tanh.forward(0.4)
    assert cache_keys(cache) == {"y"}
    exp = bpcompile.compile("exp(x)")
    backward = _backward_text(exp)
    assert "np.exp" not in backward
    _, cache = exp.forward(0.4)
    assert cache_keys(cache) == {"y"}
    assert exp.value_and_grad(0.4)[1][0] == np.exp(0.4)


# --- the graph ------------------------------------------------------------------------------

def test_graph_is_inspectable():
    g = bpcompile.graph(str(EXAMPLES / "simple.yaml"))
    nodes = {n.name: n for n in g}
    assert set(nodes) == {"x", "t", "u1", "u2", "u", "J"}
    assert nodes["x"].op == "input"
    assert (nodes["t"].op, nodes["t"].operands) == ("pow", ("x", 2))
    assert nodes["u1"].op == "sin" and nodes["u1"].operands == ("t",)
    assert nodes["u2"].op == "mul" and set(nodes["u2"].operands) == {3, "t"}
    assert nodes["u"].op == "add" and set(nodes["u"].operands) == {"u1", "u2"}
    assert nodes["J"].op == "cos" and nodes["J"].operands == ("u",)
    for n in g:
        assert hasattr(n, "shape") and n.dtype == "float64"
    assert g.output == "J" and list(g.wrt) == ["x"] and list(g.inputs) == ["x"]
    # nodes come in a topological order
    seen = set()
    for n in g:
        assert all(o in seen for o in n.operands if isinstance(o, str))
        seen.add(n.name)


def test_graph_of_expression_text_shares_common_subexpressions():
    g = bpcompile.graph(QUIZ)
    products = [n for n in g if n.op == "mul" and set(n.operands) == {"x", "z"}]
    assert len(products) == 1
    logs = [n for n in g if n.op == "log"]
    assert len(logs) == 1 and logs[0].operands == ("x",)


def test_to_dot_is_a_digraph_with_one_edge_per_operand():
    g = bpcompile.graph(str(EXAMPLES / "simple.yaml"))
    dot = g.to_dot()
    assert dot.lstrip().startswith("digraph")
    assert dot.count("{") == dot.count("}") and dot.rstrip().endswith("}")
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dot)
    for n in g:
        for o in n.operands:
            if isinstance(o, str):
                assert (o, n.name) in edges, (o, n.name)
    assert ("t", "u1") in edges and ("u", "J") in edges
    declared = set(re.findall(r'^\s*"([^"]+)" \[', dot, flags=re.M))
    assert {"x", "t", "u1", "u2", "u", "J"} <= declared
    assert all(a in declared and b in declared for a, b in edges)


@pytest.mark.parametrize("a,b", [("forward", "backward"), ("evaluate", "value_and_grad"),
                                 ("INPUTS", "WRT"), ("value", "shape")])
def test_input_names_that_match_the_module_api_either_work_or_are_rejected(a, b):
    text = f"{a}*{b} + sin({a})"
    try:
        module = bpcompile.compile(text, inputs=[a, b])
    except bpcompile.SpecError as err:           # refusing the names is a fine answer
        assert a in err.message or b in err.message
        return
    value, (da, db) = module.value_and_grad(0.5, 2.0)
    assert value == pytest.approx(1.0 + np.sin(0.5), rel=1e-14)
    assert da == pytest.approx(2.0 + np.cos(0.5), rel=1e-14)
    assert db == pytest.approx(0.5, rel=1e-14)
    _, cache = module.forward(0.5, 2.0)
    assert module.backward(cache, 2.0)[1] == pytest.approx(1.0, rel=1e-14)
