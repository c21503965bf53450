"""The numba target of expressions and programs (codegen/numba_points.py): one
compiled loop over the points.  Its modules against the NumPy target's (equal to
1e-12 in float64), against finite differences and formulas written here, and the
module's contract: broadcasting, numbers, out=, nan and inf, the inputs that run on
NumPy, the message without numba, numba's on-disk cache, the command line."""

import ast
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bpcompile

from conftest import EXAMPLES, PROGRAM_EXAMPLES, fd_gradient, rel_err, run_bpcompile
from test_property import _compile, expressions

pytest.importorskip("numba")

QUIZ = "exp(x*z) + x*z/log(x) + sin(log(x))/(x*z)"


def _both(obj, **options):
    return (bpcompile.compile(obj, target="numba", **options),
            bpcompile.compile(obj, target="numpy", **options))


def _results(result):
    value, grads = result
    return (value, *grads)


def _assert_equal_to_numpy(got, want):
    """Equal to 1e-12: relative to the array's norm, and entry by entry relative to the
    entry or, where terms cancel to nearly 0, to 1e-12 of the largest entry.  nan and
    inf in the same places."""
    for a, b in zip(_results(got), _results(want)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype == np.float64, (a.shape, b.shape, a.dtype)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isinf(a) * np.sign(a), np.isinf(b) * np.sign(b))
        finite = np.isfinite(b)
        a, b = a[finite], b[finite]
        if b.size:
            assert rel_err(a, b) <= 1e-12
            scale = float(np.max(np.abs(b)))
            assert np.all(np.abs(a - b) <= 1e-12 * np.maximum(np.abs(b), scale)), (a, b)


def _points(module, n, rng, low, high):
    return [rng.uniform(low, high, n) for _ in module.INPUTS]


# --- the generated text -----------------------------------------------------------

def test_the_loop_body_is_the_lectures_statements_on_scalars():
    module = bpcompile.compile(EXAMPLES / "quiz.yaml", target="numba")
    source = module.SOURCE
    lines = source.splitlines()
    assert "numba" in lines[2] and "pip install" in lines[2]
    body = "\n".join(lines[lines.index("def _value_and_grad_points(x_points, z_points, y_points, "
                                       "dy_dx_points, dy_dz_points):"):])
    assert "for i in numba.prange(x_points.size):" in body
    for line in ["x = x_points[i]", "y_2 = _exp(y_1)", "y_3_inv = 1/y_3",
                 "dy_dy_1 = y_2 + y_3_inv - y_1_inv*y_7", "# dy/dx += dy/dy_3 * dy_3/dx",
                 "dy_dx_points[i] = dy_dx"]:
        assert line in body, line
    kernel = body.split("def _evaluate_points")[0]
    code = [line.split("#")[0] for line in kernel.splitlines()]
    assert not any("np." in line for line in code), kernel     # math.*, on scalars
    assert bpcompile.compile(EXAMPLES / "quiz.yaml", target="numba").SOURCE == source


def test_the_module_imports_only_numpy_numba_and_the_standard_library():
    source = bpcompile.compile(QUIZ + " + sigmoid(z) + softplus(x) + abs(z)", target="numba").SOURCE
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported - {"numpy", "numba"} <= sys.stdlib_module_names, imported
    assert "numba" in imported


def test_the_numpy_target_is_unchanged_by_the_numba_one():
    numba_module, numpy_module = _both(EXAMPLES / "quiz.yaml")
    assert "numba" not in numpy_module.SOURCE
    assert hasattr(numpy_module, "_value_and_grad_block")
    assert not hasattr(numba_module, "_value_and_grad_block")


# --- equal to the NumPy target ----------------------------------------------------

@pytest.mark.parametrize("example", PROGRAM_EXAMPLES)
def test_every_example_equals_the_numpy_target(example):
    numba_module, numpy_module = _both(EXAMPLES / example)
    assert hasattr(numba_module, "_value_and_grad_points")
    rng = np.random.default_rng(1)
    for n in (7, 20000):                 # the serial loop, and the parallel one
        args = _points(numba_module, n, rng, 0.2, 0.9)
        _assert_equal_to_numpy(numba_module.value_and_grad(*args),
                               numpy_module.value_and_grad(*args))
        np.testing.assert_allclose(numba_module.evaluate(*args), numpy_module.evaluate(*args),
                                   rtol=1e-12)


def test_a_program_that_reads_whole_arrays_is_the_numpy_code():
    """sum and @: no point can be computed alone, so the module is the NumPy target's
    code, needs no numba, and says so; the results are the NumPy target's exactly."""
    text = "J = sum(log(1 + exp(-y * (X @ theta))))"
    numba_module, numpy_module = _both(text)
    assert "no compiled loop" in numba_module.SOURCE.splitlines()[2]
    assert "import numba" not in numba_module.SOURCE
    assert not hasattr(numba_module, "_value_and_grad_points")
    rng = np.random.default_rng(1)
    values = {"X": rng.uniform(-1, 1, (4, 3)), "y": rng.choice([-1.0, 1.0], 4),
              "theta": rng.uniform(-1, 1, 3)}
    args = [values[n] for n in numba_module.INPUTS]
    got, want = numba_module.value_and_grad(*args), numpy_module.value_and_grad(*args)
    for a, b in zip(_results(got), _results(want)):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=expressions, seed=st.integers(0, 2**32 - 1))
def test_random_programs_equal_the_numpy_target(text, seed):
    numba_module = _compile(text)
    assume(numba_module.INPUTS)
    numba_module = bpcompile.compile(text, target="numba")
    numpy_module = bpcompile.compile(text, target="numpy")
    rng = np.random.default_rng(seed)
    args = _points(numba_module, 50, rng, -2.0, 2.0)
    with np.errstate(all="ignore"):
        want = numpy_module.value_and_grad(*args)
        assume(all(np.all(np.isfinite(a)) for a in _results(want)))
        _assert_equal_to_numpy(numba_module.value_and_grad(*args), want)


SMALL = ["x", "x + 1", "-x", "max(x, z)", "min(x, z**2)", "relu(x) + z", "x**z", "x*x*x",
         "sigmoid(x)*z + softplus(z) + abs(x)",
         "log1p(x) + expm1(z) + arcsin(x/3) + arccos(z/3) + cosh(x) + sinh(z) + tan(x/2)"]


@pytest.mark.parametrize("text", SMALL)
def test_small_programs_and_every_function_equal_the_numpy_target(text):
    """Values that fold to a copy or a number (y = x, dy/dx = 1), and the functions
    whose scalar form differs from their NumPy form."""
    numba_module, numpy_module = _both(text)
    rng = np.random.default_rng(2)
    args = _points(numba_module, 40, rng, 0.5, 2.0)
    _assert_equal_to_numpy(numba_module.value_and_grad(*args), numpy_module.value_and_grad(*args))


# --- finite differences and formulas ----------------------------------------------

@pytest.mark.parametrize("point", [(2.0, 3.0), (1.7, 0.4), (2.9, -1.1)])
def test_quiz_gradient_against_finite_differences_and_the_formula(point):
    module = bpcompile.compile(QUIZ, target="numba")
    x, z = point
    value, (dx, dz) = module.value_and_grad(x, z)
    # the quiz's derivatives, written out by hand
    L = np.log(x)
    want_dx = z * np.exp(x * z) + z / L - z / L**2 + np.cos(L) / (x**2 * z) - np.sin(L) / (x**2 * z)
    want_dz = x * np.exp(x * z) + x / L - np.sin(L) / (x * z**2)
    assert abs(dx - want_dx) <= 1e-12 * abs(want_dx) and abs(dz - want_dz) <= 1e-12 * abs(want_dz)
    for i, grad in enumerate((dx, dz)):
        numeric = float(fd_gradient(module.evaluate, [x, z], i))
        assert abs(grad - numeric) <= 1e-7 * abs(numeric), (i, grad, numeric)
    assert module.evaluate(x, z) == value


def test_simple_against_the_lectures_backward_pass_and_finite_differences():
    module = bpcompile.compile(EXAMPLES / "simple.yaml", target="numba")
    x = np.linspace(-2.0, 2.0, 9)
    value, (dx,) = module.value_and_grad(x)
    t = x**2
    u = np.sin(t) + 3 * t
    np.testing.assert_allclose(value, np.cos(u), rtol=1e-13)
    np.testing.assert_allclose(dx, -np.sin(u) * (np.cos(t) + 3) * 2 * x, rtol=1e-12, atol=1e-14)
    numeric = fd_gradient(module.evaluate, [x], 0)
    np.testing.assert_allclose(dx, numeric, rtol=1e-7, atol=1e-9)


# --- inputs: broadcasting, numbers, out= ------------------------------------------

@pytest.mark.parametrize("shapes", [((3, 1), (4,)), ((), (5,)), ((2, 3), ()), ((), ()),
                                    ((2, 1, 3), (1, 4, 1)), ((0,), (1,))])
def test_broadcast_inputs_give_gradients_of_their_own_shapes(shapes):
    numba_module, numpy_module = _both("x*z + sin(x)*exp(z)")
    rng = np.random.default_rng(3)
    args = [rng.uniform(-1, 1, s) for s in shapes]
    got = numba_module.value_and_grad(*args)
    assert [np.shape(g) for g in got[1]] == [s for s in shapes]
    _assert_equal_to_numpy(got, numpy_module.value_and_grad(*args))
    # d/dz of sum(x*z + sin(x)*exp(z)), summed over the broadcast axes by hand
    x, z = np.broadcast_arrays(*args)
    full = x + np.sin(x) * np.exp(z)
    np.testing.assert_allclose(np.sum(got[1][1]), np.sum(full), rtol=1e-12, atol=1e-14)


def test_numbers_give_numbers():
    numba_module, numpy_module = _both(QUIZ)
    for x, z in [(2.0, 3.0), (2, 3), (np.float64(2.0), 3), (2.0, np.array(3.0))]:
        value, grads = numba_module.value_and_grad(x, z)
        assert np.shape(value) == () and all(np.shape(g) == () for g in grads)
        assert isinstance(value, float) and all(isinstance(g, float) for g in grads)
        _assert_equal_to_numpy((value, grads), numpy_module.value_and_grad(x, z))
        assert isinstance(numba_module.evaluate(x, z), float)


def test_other_inputs_run_on_numpy_with_its_results():
    """Complex numbers, float32 and integer arrays: the NumPy code, the same results exactly."""
    numba_module, numpy_module = _both(QUIZ)
    for args in ([np.array([2.0 + 1j]), 3.0], [np.array([2.0], np.float32), np.float32(3.0)],
                 [np.array([2, 3]), np.array([3, 4])], [2.0 + 0.5j, 3.0]):
        got, want = numba_module.value_and_grad(*args), numpy_module.value_and_grad(*args)
        for a, b in zip(_results(got), _results(want)):
            assert np.asarray(a).dtype == np.asarray(b).dtype
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(numba_module.evaluate(*args), numpy_module.evaluate(*args))


@pytest.mark.parametrize("n", [10, 20000])
def test_out_arrays_are_written_by_the_loop_and_returned(n):
    numba_module, numpy_module = _both(QUIZ)
    rng = np.random.default_rng(4)
    args = [rng.uniform(1.5, 3.0, n), rng.uniform(0.5, 1.0, n)]
    out = tuple(np.full(n, np.nan) for _ in range(3))
    value, grads = numba_module.value_and_grad(*args, out=out)
    assert value is out[0] and grads[0] is out[1] and grads[1] is out[2]
    _assert_equal_to_numpy((value, grads), numpy_module.value_and_grad(*args))


def test_out_that_the_loop_cannot_write_through_is_filled_after_it():
    numba_module, numpy_module = _both(QUIZ)
    rng = np.random.default_rng(5)
    n = 50
    x, z = rng.uniform(1.5, 3.0, n), rng.uniform(0.5, 1.0, n)
    want = numpy_module.value_and_grad(x.copy(), z.copy())
    wide = np.zeros((3, 2 * n))
    strided = tuple(wide[k, ::2] for k in range(3))
    _assert_equal_to_numpy(numba_module.value_and_grad(x, z, out=strided), want)
    assert not wide[:, 1::2].any()
    # a number z: dy/dz is summed to shape (), its out array too
    out = (np.empty(n), np.empty(n), np.empty(()))
    got = numba_module.value_and_grad(x, 0.7, out=out)
    _assert_equal_to_numpy((got[0], (got[1][0], got[1][1][()])),
                           numpy_module.value_and_grad(x, 0.7))
    # the value into x, dy/dz into z: computed before written
    value, (dx, dz) = numba_module.value_and_grad(x, z, out=(x, np.empty(n), z))
    assert value is x and dz is z
    _assert_equal_to_numpy((value, (dx, dz)), want)


@pytest.mark.parametrize("form", ["text", "one array", "overlap", "shape"])
def test_out_of_the_wrong_form_is_a_value_error(form):
    module = bpcompile.compile(QUIZ, target="numba")
    shared = np.empty(5)
    out = {"text": "abc", "one array": (np.empty(5),), "overlap": (np.empty(5), shared, shared),
           "shape": (np.empty(4), np.empty(4), np.empty(4))}[form]
    with pytest.raises(ValueError, match="out"):
        module.value_and_grad(np.full(5, 2.0), np.full(5, 0.7), out=out)


# --- nan and inf as in NumPy --------------------------------------------------------

@pytest.mark.parametrize("text, points", [
    (QUIZ, [(-1.0, 2.0), (1.0, 2.0), (2.0, 0.0), (800.0, 1.0), (np.nan, 1.0), (np.inf, 1.0),
            (0.0, 0.0)]),
    ("1/x + x**(-2) + 3/x**2", [(0.0,), (-0.0,), (np.inf,)]),
    ("sqrt(x) + log(x) + x**0.5", [(-1.0,), (0.0,)]),
    ("x/z", [(0.0, 0.0), (1.0, 0.0), (-1.0, 0.0), (np.inf, np.inf)]),
    ("exp(x)*z", [(1000.0, 0.0), (1000.0, 1.0), (-1000.0, np.inf)]),
    ("relu(x) + max(x, z) + abs(x) + sigmoid(x) + softplus(z)", [(np.nan, 1.0), (1.0, np.nan),
                                                                   (np.inf, -np.inf)]),
])
def test_nan_and_inf_are_numpys(text, points):
    numba_module, numpy_module = _both(text)
    columns = [np.array(c) for c in zip(*points)]
    with np.errstate(all="ignore"):
        want = numpy_module.value_and_grad(*columns)
        got = numba_module.value_and_grad(*columns)
        assert not all(np.all(np.isfinite(a)) for a in _results(want))    # the cases exist
        _assert_equal_to_numpy(got, want)
        for point in points:
            # one number at a time: NumPy's float64 (on Python floats the NumPy module's
            # 1/0 raises ZeroDivisionError, as Python does; the compiled loop gives inf)
            _assert_equal_to_numpy(numba_module.value_and_grad(*point),
                                   numpy_module.value_and_grad(*map(np.float64, point)))


# --- names ------------------------------------------------------------------------

def test_names_of_the_loop_are_minted_around_user_names():
    text = "x_points*i + abs*points + math_1*sin(abs) + y_points"
    numba_module, numpy_module = _both(text)
    assert "numba.prange(" in numba_module.SOURCE
    rng = np.random.default_rng(6)
    args = _points(numba_module, 30, rng, 0.5, 2.0)
    _assert_equal_to_numpy(numba_module.value_and_grad(*args), numpy_module.value_and_grad(*args))


# --- without numba, the disk cache, the command line --------------------------------

def _run_python(code, cwd, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=full_env)


def test_without_numba_the_module_says_how_to_install_it(tmp_path):
    source = bpcompile.compile(QUIZ, target="numba").SOURCE
    (tmp_path / "quiz_numba.py").write_text(source, encoding="utf-8")
    result = _run_python("import sys\nsys.modules['numba'] = None\nimport quiz_numba", tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and "pip install numba" in last, result.stderr
    assert "bpcompile[numba]" in last


def test_expr_command_writes_a_numba_module_whose_compilation_is_cached(tmp_path):
    target = tmp_path / "f.py"
    result = run_bpcompile("expr", "x**2*sin(y)", "--target", "numba", "-o", target)
    assert result.returncode == 0, result.stderr
    assert "import numba" in target.read_text(encoding="utf-8")
    code = ("import numpy as np, f\n"
            "x, y = np.linspace(0.5, 2, 5), np.linspace(-1, 1, 5)\n"
            "v, (dx, dy) = f.value_and_grad(x, y)\n"
            "assert f._CACHE\n"
            "assert np.allclose(dx, 2*x*np.sin(y), rtol=1e-13, atol=0)\n"
            "assert np.allclose(dy, x**2*np.cos(y), rtol=1e-13, atol=1e-15)\n"
            "print(repr(float(v.sum())))\n")
    env = {"NUMBA_CACHE_DIR": ""}
    first = _run_python(code, tmp_path, env)
    assert first.returncode == 0, first.stderr
    cached = sorted(p.name for p in (tmp_path / "__pycache__").iterdir())
    assert any(n.startswith("f._value_and_grad_points_serial") and n.endswith(".nbi")
               for n in cached), cached
    assert any(n.endswith(".nbc") for n in cached), cached
    again = _run_python(code + "print(f._value_and_grad_serial.stats.cache_hits)\n", tmp_path, env)
    assert again.returncode == 0, again.stderr
    value, hits = again.stdout.split("\n")[:2]
    assert value == first.stdout.strip() and hits != "Counter()", again.stdout


_LOAD_BY_PATH = ("import importlib.util, numpy as np\n"
                 "spec = importlib.util.spec_from_file_location('loaded', 'pkg/f.py')\n"
                 "f = importlib.util.module_from_spec(spec)\n"
                 "spec.loader.exec_module(f)\n")
_IMPORT_TOP_LEVEL = "import sys, numpy as np\nsys.path.insert(0, 'pkg')\nimport f\n"
_IMPORT_FROM_PACKAGE = "import numpy as np\nimport pkg.f as f\n"
_CALL = ("v, (dx, dy) = f.value_and_grad(np.linspace(0.5, 2, 5), np.linspace(-1, 1, 5))\n"
         "assert np.allclose(dx, 2*np.linspace(0.5, 2, 5)*np.sin(np.linspace(-1, 1, 5)), "
         "rtol=1e-13, atol=0)\n"
         "print(f._CACHE, repr(float(v.sum())))\n")


@pytest.mark.parametrize("first, second", [
    (_LOAD_BY_PATH, _LOAD_BY_PATH),
    (_IMPORT_TOP_LEVEL, _LOAD_BY_PATH),
    (_IMPORT_TOP_LEVEL, _IMPORT_FROM_PACKAGE),
    (_IMPORT_FROM_PACKAGE, _IMPORT_TOP_LEVEL),
], ids=["path-path", "import-path", "import-package", "package-import"])
def test_a_module_loaded_under_other_names_in_later_processes_still_runs(tmp_path, first, second):
    """numba's disk cache records the module's name, and a process that knows the file
    under another name (a module loaded from its path, a package member) could not read
    the cache back: ModuleNotFoundError '<dynamic>' or 'f' in the second process (found
    2026-12-01).  Only a module imported by its file's own name caches."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    result = run_bpcompile("expr", "x**2*sin(y)", "--target", "numba", "-o", tmp_path / "pkg" / "f.py")
    assert result.returncode == 0, result.stderr
    env = {"NUMBA_CACHE_DIR": ""}
    runs = [_run_python(code + _CALL, tmp_path, env) for code in (first, second, second)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    values = {run.stdout.split()[1] for run in runs}
    assert len(values) == 1, [run.stdout for run in runs]
    caching = [run.stdout.split()[0] == "True" for run in runs]
    assert caching == [code == _IMPORT_TOP_LEVEL for code in (first, second, second)]


def test_a_module_made_in_memory_uses_no_disk_cache():
    module = bpcompile.compile(QUIZ, target="numba")
    assert module._CACHE is False
    module.value_and_grad(2.0, 3.0)


def test_a_program_differentiated_with_respect_to_some_inputs():
    text = "t = x*z\nJ = sin(t) + z*t\n"
    numba_module, numpy_module = _both(text, wrt=["z"])
    assert numba_module.WRT == ("z",)
    x, z = np.linspace(0.5, 2.0, 6), np.linspace(-1.0, 1.0, 6)
    value, (dz,) = numba_module.value_and_grad(x, z)
    np.testing.assert_allclose(dz, np.cos(x * z) * x + 2 * x * z, rtol=1e-13, atol=1e-15)
    _assert_equal_to_numpy((value, (dz,)), numpy_module.value_and_grad(x, z))


def test_shapes_that_do_not_broadcast_are_a_value_error_as_in_numpy():
    numba_module, numpy_module = _both(QUIZ)
    for module in (numba_module, numpy_module):
        with pytest.raises(ValueError):
            module.value_and_grad(np.full(3, 2.0), np.full(4, 0.7))
        with pytest.raises(ValueError):
            module.evaluate(np.full(3, 2.0), np.full(4, 0.7))
