"""Shared helpers for the compiler tests: an independent finite-difference
oracle, spec-file writing, and running the `bpcompile` command.

Besides helpers, one fixture: a test file marked `pytestmark =
pytest.mark.both_targets` runs every test twice, once with the modules that
`bpcompile.compile` makes for the NumPy target and once for the numba target
(skipped where numba is not installed).  Unmarked files are unaffected.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bpcompile.codegen import targets

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PROGRAM_EXAMPLES = ("quiz.yaml", "simple.yaml", "logistic_regression.yaml")


def pytest_terminal_summary(terminalreporter):
    """The random-spec test's counts of what it drew (issue 9 asks for them in every run)."""
    random_specs = sys.modules.get("test_random_specs") or sys.modules.get("tests.test_random_specs")
    for line in (random_specs.summary_lines() if random_specs else []):
        terminalreporter.write_line(line)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "wheel: builds the wheel and installs it into a fresh venv (slow, needs pip)")
    config.addinivalue_line(
        "markers", "both_targets: run every test with modules compiled for each target")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_targets"):
        metafunc.parametrize("code_target", targets.TARGETS, indirect=True, scope="session")


@pytest.fixture(scope="session", autouse=True)
def code_target(request):
    """The target `bpcompile.compile` uses when none is given: the parameter of a
    `both_targets` test, else numpy.  (Session-scoped, so that hypothesis's tests can
    use it, and so that pytest runs each target's tests together.)"""
    target = getattr(request, "param", targets.DEFAULT_TARGET)
    if target == "numba":
        pytest.importorskip("numba")
    saved = targets.DEFAULT_TARGET
    targets.DEFAULT_TARGET = target
    yield target
    targets.DEFAULT_TARGET = saved


# --- finite differences (deliberately not bpcompile.training.gradcheck) ---------------------

def fd_gradient(f, args, index, h=1e-3):
    """d sum(f(*args)) / d args[index], entry by entry: fourth-order central differences
    at steps s and s/2, combined by Richardson extrapolation (sixth order).  The step
    s starts at h and shrinks fourfold until two successive estimates agree to 1e-8
    (relative), so that fast oscillations such as sin(x**3) are still measured
    accurately; an entry where they never agree is NaN: no reliable reference there.
    Estimates also agree when they differ by less than the differences' own rounding
    noise (a small entry of the gradient of a large sum is measured to that noise)."""
    args = [np.array(a, dtype=np.float64) for a in args]
    x = args[index]
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)

    def total():
        return float(np.sum(f(*args)))

    # a difference of two sums is rounded by about eps * |sum|; the sixth-order
    # combination weighs those by less than 3 / step
    size = abs(total())

    def fourth_order(i, step):
        original = flat[i]
        values = []
        for k in (2, 1, -1, -2):
            flat[i] = original + k * step
            values.append(total())
        flat[i] = original
        f2, f1, m1, m2 = values
        # differences first: exactly 0 for a function that does not change
        return (8 * (f1 - m1) - (f2 - m2)) / (12 * step)

    def richardson(i, step):
        return (16 * fourth_order(i, step / 2) - fourth_order(i, step)) / 15

    for i in range(flat.size):
        step = h * max(1.0, abs(flat[i]))
        previous = richardson(i, step)
        gflat[i] = np.nan
        for _ in range(5):
            step /= 4
            estimate = richardson(i, step)
            noise = 3 * np.finfo(np.float64).eps * size / step
            if abs(estimate - previous) <= max(1e-8 * max(abs(estimate), 1e-6), 2 * noise):
                gflat[i] = estimate
                break
            previous = estimate
    return grad


def fd_elementwise(f, args, index, h=1e-3):
    """Entry-wise derivative of an elementwise f with respect to args[index] (vectorized)."""
    args = [np.array(a, dtype=np.float64) for a in args]
    x = args[index]
    step = h * np.maximum(1.0, np.abs(x))

    def at(k):
        shifted = list(args)
        shifted[index] = x + k * step
        return np.asarray(f(*shifted), dtype=np.float64)

    return (-at(2) + 8 * at(1) - 8 * at(-1) + at(-2)) / (12 * step)


def rel_err(analytic, numeric, floor=1e-12):
    """Norm-wise relative error ||a - n|| / max(||a||, ||n||)."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    assert a.shape == n.shape, (a.shape, n.shape)
    scale = max(np.linalg.norm(a), np.linalg.norm(n), floor)
    return float(np.linalg.norm(a - n) / scale)


def pointwise_rel_err(analytic, numeric, floor=1e-6):
    """Largest entry-wise relative error |a - n| / max(|a|, |n|, floor)."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    assert a.shape == n.shape, (a.shape, n.shape)
    return float(np.max(np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)))


# --- spec files and the command line -------------------------------------------------

def write(path, text):
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def bpcompile_command():
    """The installed console script next to this interpreter, else `python -m bpcompile.cli`."""
    script = Path(sys.executable).parent / "bpcompile"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bpcompile.cli"]


def run_bpcompile(*args, cwd=None, env=None, timeout=120):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(bpcompile_command() + [str(a) for a in args], cwd=cwd, env=full_env,
                          capture_output=True, timeout=timeout)


# --- reading generated source --------------------------------------------------------

def function_body(source, name):
    """The ast statements of top-level function `name` in generated source."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node.body
    raise AssertionError(f"no function {name!r} in the generated source")


def loaded_names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def assign_target(stmt):
    assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
    target = stmt.targets[0]
    assert isinstance(target, ast.Name), ast.dump(stmt)
    return target.id


_STEP_FAULTS = """
import resource, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import stepped
rows, steps = int(sys.argv[2]), int(sys.argv[3])
params = stepped.init_params(0)
rng = np.random.default_rng(0)
x, y = rng.integers(0, stepped.VOCAB, (rows, steps)), rng.integers(0, stepped.OUTPUTS, (rows, steps))
for _ in range(10):
    stepped.sgd_step(params, x, y, 1e-3)
faults = []
for _ in range(21):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    stepped.sgd_step(params, x, y, 1e-3)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[10])
"""


def step_page_faults(module, folder, rows, steps):
    """The median page faults of a sequence module's sgd_step on a (rows, steps) batch, in
    a fresh process (whose allocator has seen nothing else) after ten steps; the median,
    since a thread's first turn at some work may allocate its buffers once."""
    (folder / "stepped.py").write_text(module.SOURCE, encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", _STEP_FAULTS, str(folder), str(rows),
                             str(steps)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return float(result.stdout)
