"""The primitive table: every entry's partials against SymPy and against
finite differences, and the callable functions through compiled expressions.
"""

import zlib

import numpy as np
import pytest
import sympy as sp

import bpcompile
from bpcompile.core.primitives import CALLABLE, PRIMITIVES, relu, sigmoid, softplus, step

try:
    from bpcompile.core.primitives import select
except ImportError:          # older tables have no masking primitive
    select = None

from conftest import fd_elementwise, pointwise_rel_err

# every test runs with modules compiled for each target (conftest.py)
pytestmark = pytest.mark.both_targets

NAMES = sorted(PRIMITIVES)
KINKED = {"relu", "abs", "max", "min"}   # not differentiable where an argument is 0 / a tie
# Arguments that are 0/1 masks, not differentiable values: drawn from {0, 1}, their
# declared partial must be 0, and they are not differentiated by finite differences.
MASKS = {"select": {0}}


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def _points(name, n):
    """`n` random points (one array per argument) in the entry's domain, away from kinks."""
    prim = PRIMITIVES[name]
    rng = _rng(name)
    lo, hi = prim.domain
    cols = [rng.uniform(lo, hi, 4 * n) for _ in range(prim.arity)]
    for i in MASKS.get(name, ()):
        cols[i] = rng.integers(0, 2, 4 * n).astype(float)
    keep = np.ones(4 * n, dtype=bool)
    if name in ("relu", "abs"):
        keep &= np.abs(cols[0]) > 0.05
    if name in ("max", "min"):
        keep &= np.abs(cols[0] - cols[1]) > 0.05
    cols = [c[keep][:n] for c in cols]
    assert all(len(c) == n for c in cols)
    return cols


def _definition(expr):
    """Replace the package's own functions by their textbook definitions, so that
    SymPy differentiates them without using the package's fdiff."""
    if select is not None:
        expr = expr.replace(select, lambda m, a, b: sp.Piecewise((a, sp.Ne(m, 0)), (b, True)))
    return (expr.replace(sigmoid, lambda a: 1 / (1 + sp.exp(-a)))
                .replace(softplus, lambda a: sp.log(1 + sp.exp(a)))
                .replace(relu, lambda a: sp.Max(a, 0))
                .replace(step, lambda a: sp.Heaviside(a, 0)))


def _number(expr, values):
    value = complex(sp.N(expr.subs(values), 30))
    assert abs(value.imag) <= 1e-12 * max(1.0, abs(value.real)), (expr, value)
    return value.real


def test_table_covers_the_documented_functions():
    # The spec functions that the issue lists must all be callable.
    for fn in ["sin", "cos", "tan", "tanh", "exp", "log", "sqrt", "pow", "max", "min", "abs",
               "relu", "softplus", "sigmoid"]:
        assert fn in CALLABLE, fn
        assert CALLABLE[fn].name in PRIMITIVES
    for name, prim in PRIMITIVES.items():
        lo, hi = prim.domain
        assert lo < hi, name
        assert prim.arity in (1, 2, 3), name


@pytest.mark.parametrize("name", NAMES)
def test_local_partials_match_sympy_diff(name):
    prim = PRIMITIVES[name]
    probe = sp.symbols(f"p0:{prim.arity}", real=True)
    value = prim.build(*probe).doit()
    reference = _definition(value)
    partials = prim.local_partials(value, probe)
    assert len(partials) == prim.arity
    expected = [sp.diff(reference, p) for p in probe]
    for point in zip(*_points(name, 5)):
        values = dict(zip(probe, map(float, point)))
        for i in range(prim.arity):
            got = _number(_definition(sp.sympify(partials[i])), values)
            if i in MASKS.get(name, ()):
                assert got == 0, (name, i)
                continue
            want = _number(expected[i], values)
            assert got == pytest.approx(want, rel=1e-10, abs=1e-12), (name, i, point)


def _reference_function(name, probe):
    """A NumPy function of the entry's definition, via SymPy (independent of the printer)."""
    prim = PRIMITIVES[name]
    expr = _definition(prim.build(*probe).doit())
    return sp.lambdify(probe, expr, modules=[{"Heaviside": lambda a: np.heaviside(a, 0.0)}, "numpy"])


@pytest.mark.parametrize("name", NAMES)
def test_primitive_gradient_matches_finite_differences(name):
    prim = PRIMITIVES[name]
    probe = sp.symbols("a b c", real=True)[:prim.arity]
    names = [p.name for p in probe]
    wrt = [n for i, n in enumerate(names) if i not in MASKS.get(name, ())]
    module = bpcompile.compile(prim.build(*probe), inputs=names, wrt=wrt)
    # the expression really lowers to this table entry
    assert module.GRAPH[module.GRAPH.output].op == name
    assert module.INPUTS == tuple(names) and module.WRT == tuple(wrt)
    args = _points(name, 25)
    value, grads = module.value_and_grad(*args)
    np.testing.assert_allclose(value, _reference_function(name, probe)(*args), rtol=1e-12, atol=1e-14)
    assert len(grads) == len(wrt)
    for w, grad in zip(wrt, grads):
        i = names.index(w)
        assert np.shape(grad) == np.shape(args[i])
        numeric = fd_elementwise(module.evaluate, args, i)
        assert pointwise_rel_err(grad, numeric) < 1e-6, (name, i)


# --- the callable functions through compiled expression text -----------------------------

def _sig(x):
    return 1 / (1 + np.exp(-x))


# text, {input: (lo, hi)}, hand-written partial derivatives
CASES = [
    ("sin(x)", {"x": (-3, 3)}, lambda x: [np.cos(x)]),
    ("cos(x)", {"x": (-3, 3)}, lambda x: [-np.sin(x)]),
    ("exp(x)", {"x": (-3, 3)}, lambda x: [np.exp(x)]),
    ("log(x)", {"x": (0.1, 5)}, lambda x: [1 / x]),
    ("log(x, 3)", {"x": (0.1, 5)}, lambda x: [1 / (x * np.log(3))]),
    ("log(x, y)", {"x": (0.2, 5), "y": (1.5, 4)},
     lambda x, y: [1 / (x * np.log(y)), -np.log(x) / (y * np.log(y) ** 2)]),
    ("pow(x, y)", {"x": (0.3, 3), "y": (-2, 2)},
     lambda x, y: [y * x ** (y - 1), x ** y * np.log(x)]),
    ("x**y", {"x": (0.3, 3), "y": (-2, 2)},
     lambda x, y: [y * x ** (y - 1), x ** y * np.log(x)]),
    ("x**2.5", {"x": (0.1, 3)}, lambda x: [2.5 * x ** 1.5]),
    ("x**3", {"x": (-3, 3)}, lambda x: [3 * x ** 2]),
    ("2**x", {"x": (-3, 3)}, lambda x: [2 ** x * np.log(2)]),
    ("sqrt(x)", {"x": (0.05, 5)}, lambda x: [0.5 / np.sqrt(x)]),
    ("abs(x)", {"x": (-3, 3)}, lambda x: [np.sign(x)]),
    ("relu(x)", {"x": (-3, 3)}, lambda x: [(x > 0).astype(float)]),
    ("softplus(x)", {"x": (-5, 5)}, lambda x: [_sig(x)]),
    ("sigmoid(x)", {"x": (-5, 5)}, lambda x: [_sig(x) * (1 - _sig(x))]),
    ("tanh(x)", {"x": (-3, 3)}, lambda x: [1 - np.tanh(x) ** 2]),
    ("tan(x)", {"x": (-1.4, 1.4)}, lambda x: [1 / np.cos(x) ** 2]),
    ("sinh(x)", {"x": (-3, 3)}, lambda x: [np.cosh(x)]),
    ("cosh(x)", {"x": (-3, 3)}, lambda x: [np.sinh(x)]),
    ("arctan(x)", {"x": (-3, 3)}, lambda x: [1 / (1 + x ** 2)]),
    ("arcsinh(x)", {"x": (-3, 3)}, lambda x: [1 / np.sqrt(1 + x ** 2)]),
    ("max(x, y)", {"x": (-3, 3), "y": (-3, 3)},
     lambda x, y: [(x > y).astype(float), (x < y).astype(float)]),
    ("min(x, y)", {"x": (-3, 3), "y": (-3, 3)},
     lambda x, y: [(x < y).astype(float), (x > y).astype(float)]),
]


def _case_points(text, ranges, n=40):
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    cols = {k: rng.uniform(lo, hi, 4 * n) for k, (lo, hi) in ranges.items()}
    keep = np.ones(4 * n, dtype=bool)
    if text.startswith(("abs", "relu")):
        keep &= np.abs(cols["x"]) > 0.05
    if text.startswith(("max", "min")):
        keep &= np.abs(cols["x"] - cols["y"]) > 0.05
    return [cols[k][keep][:n] for k in ranges]


@pytest.mark.parametrize("text,ranges,derivative", CASES, ids=[c[0] for c in CASES])
def test_compiled_function_matches_hand_derivative_and_fd(text, ranges, derivative):
    module = bpcompile.compile(text)
    assert module.INPUTS == tuple(ranges)
    args = _case_points(text, ranges)
    value, grads = module.value_and_grad(*args)
    assert np.all(np.isfinite(value))
    expected = derivative(*args)
    for i, (grad, want) in enumerate(zip(grads, expected)):
        assert np.shape(grad) == np.shape(args[i])
        np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-14, err_msg=f"{text} d/d{module.INPUTS[i]}")
        assert pointwise_rel_err(grad, fd_elementwise(module.evaluate, args, i)) < 1e-6


@pytest.mark.parametrize("a,b", [(2.0, -1.0), (-1.0, 2.0), (0.5, 0.25), (-3.0, -2.5)])
def test_max_and_min_route_the_gradient_to_the_chosen_argument(a, b):
    mx = bpcompile.compile("max(x, y)")
    mn = bpcompile.compile("min(x, y)")
    value, (dx, dy) = mx.value_and_grad(a, b)
    assert value == max(a, b)
    assert (dx, dy) == ((1.0, 0.0) if a > b else (0.0, 1.0))
    value, (dx, dy) = mn.value_and_grad(a, b)
    assert value == min(a, b)
    assert (dx, dy) == ((1.0, 0.0) if a < b else (0.0, 1.0))


def test_max_and_min_split_no_gradient_at_a_tie():
    # Subgradient convention: exactly one argument receives the whole adjoint.
    for text in ("max(x, y)", "min(x, y)"):
        _, (dx, dy) = bpcompile.compile(text).value_and_grad(1.5, 1.5)
        assert dx + dy == 1.0 and {dx, dy} == {0.0, 1.0}, text


def test_relu_and_abs_at_zero_use_a_subgradient_in_range():
    _, (d,) = bpcompile.compile("relu(x)").value_and_grad(0.0)
    assert d == 0.0
    _, (d,) = bpcompile.compile("abs(x)").value_and_grad(0.0)
    assert -1.0 <= d <= 1.0


def test_softplus_and_sigmoid_are_stable_for_large_arguments():
    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(over="ignore"):
        value, (d,) = bpcompile.compile("softplus(x)").value_and_grad(x)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(d))
        np.testing.assert_allclose(value, np.logaddexp(0, x))
        np.testing.assert_allclose(d, [0.0, _sig(-40.0), 0.5, _sig(40.0), 1.0], atol=1e-300)
        value, (d,) = bpcompile.compile("sigmoid(x)").value_and_grad(x)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(d))
        np.testing.assert_allclose(value, [0.0, _sig(-40.0), 0.5, 1.0, 1.0], atol=1e-300)


# --- max/min with an argument that folds to a constant (issue 9, item 6) -------------------

# text, x values, z values, value as a function of (x, z), d/dx, d/dz
FOLDED = [
    pytest.param("max(x - x, z)", lambda x, z: np.maximum(0, z), lambda x, z: 0 * x,
                 lambda x, z: (z >= 0).astype(float)),
    pytest.param("max(z, x - x)", lambda x, z: np.maximum(z, 0), lambda x, z: 0 * x,
                 lambda x, z: (z > 0).astype(float)),
    pytest.param("max(0*x, z)", lambda x, z: np.maximum(0, z), lambda x, z: 0 * x,
                 lambda x, z: (z >= 0).astype(float)),
    pytest.param("min(x*0 + 1, z)", lambda x, z: np.minimum(1, z), lambda x, z: 0 * x,
                 lambda x, z: (z <= 1).astype(float)),
    pytest.param("min(x, 3) + 0*z", lambda x, z: np.minimum(x, 3) + 0 * z,
                 lambda x, z: (x < 3).astype(float), lambda x, z: 0 * z),
    pytest.param("max(2, x) + z", lambda x, z: np.maximum(2, x) + z,
                 lambda x, z: (x > 2).astype(float), lambda x, z: 1 + 0 * z),
]


@pytest.mark.parametrize("text,value,dx,dz", FOLDED)
def test_max_and_min_of_an_argument_that_folds_to_a_constant(text, value, dx, dz):
    module = bpcompile.compile(text)
    assert module.INPUTS == ("x", "z") or module.INPUTS == ("z", "x")
    at = {"x": np.array([-2.5, -0.5, 0.5, 1.5, 2.5, 3.5]),
          "z": np.array([-1.5, -0.3, 0.4, 0.7, 1.6, 2.2])}
    args = [at[name] for name in module.INPUTS]
    got, grads = module.value_and_grad(*args)
    grads = dict(zip(module.WRT, grads))
    np.testing.assert_array_equal(got, value(at["x"], at["z"]))
    np.testing.assert_array_equal(grads["x"], dx(at["x"], at["z"]))
    np.testing.assert_array_equal(grads["z"], dz(at["x"], at["z"]))
    for i, name in enumerate(module.INPUTS):
        assert pointwise_rel_err(grads[name], fd_elementwise(module.evaluate, args, i)) < 1e-6
    # broadcasting: a scalar z against an array x keeps z's gradient a scalar
    _, small = module.value_and_grad(*[at[n] if n == "x" else 0.25 for n in module.INPUTS])
    assert np.shape(dict(zip(module.WRT, small))["z"]) == ()
