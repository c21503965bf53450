"""The elementwise records (primitives.py) drive the printer and the in-place emitter.

For every record: its SymPy head is what `build` makes, the printer's and the
emitter's tables are derived from the records (no second table), its partials
agree with sympy.diff of its SymPy form and with central finite differences of
the *generated* NumPy code of `name(x)` / `name(x, y)`, and its ufunc form
computes the same value as its printed form.  Sigmoid has one printed form,
stable and accurate in both tails for float32 and float64.
"""

import warnings
import zlib

import mpmath
import numpy as np
import pytest
import sympy as sp

from sympy.codegen.cfunctions import expm1, log1p

import bpcompile
from bpcompile.memory import inplace
from bpcompile.core import printer
from bpcompile.memory.inplace import ufunc_call, ufunc_statements
from bpcompile.core.primitives import (BY_HEAD, CALLABLE, IN_PARTIALS, PRIMITIVES, SYMPY_HEADS,
                                  relu, select, sigmoid, softplus, step)
from bpcompile.core.printer import NUMPY_FUNCTIONS, to_numpy

from conftest import fd_elementwise, pointwise_rel_err

pytestmark = pytest.mark.both_targets

FUNCTIONS = sorted(p.name for p in PRIMITIVES.values() if p.head is not None)
RECORDS = sorted(FUNCTIONS + list(IN_PARTIALS))
CALLED = sorted(name for name in CALLABLE if CALLABLE[name].head is not None)
KINKS = {"relu": lambda a: np.abs(a[0]), "abs": lambda a: np.abs(a[0]),
         "sign": lambda a: np.abs(a[0]), "step": lambda a: np.abs(a[0]),
         "max": lambda a: np.abs(a[0] - a[1]), "min": lambda a: np.abs(a[0] - a[1])}
MASKS = {"select": (0,)}


def _record(name):
    return PRIMITIVES.get(name) or IN_PARTIALS[name]


def _points(name, n=30):
    """`n` points (one array per argument) in the record's domain, away from kinks."""
    record = _record(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    lo, hi = record.domain
    cols = [rng.uniform(lo, hi, 4 * n) for _ in range(record.arity)]
    for i in MASKS.get(name, ()):
        cols[i] = rng.integers(0, 2, 4 * n).astype(float)
    keep = KINKS[name](cols) > 0.05 if name in KINKS else np.ones(4 * n, dtype=bool)
    return [c[keep][:n] for c in cols]


def _textbook(expr):
    """The package's own functions replaced by their definitions, so that SymPy
    differentiates them without the package's fdiff."""
    return (expr.replace(sigmoid, lambda a: 1 / (1 + sp.exp(-a)))
                .replace(softplus, lambda a: sp.log(1 + sp.exp(a)))
                .replace(relu, lambda a: sp.Max(a, 0))
                .replace(step, lambda a: sp.Heaviside(a, 0))
                .replace(select, lambda m, a, b: sp.Piecewise((a, sp.Ne(m, 0)), (b, True)))
                .replace(log1p, lambda a: sp.log(1 + a))
                .replace(expm1, lambda a: sp.exp(a) - 1))


def _run(lines, names):
    """Run generated statements (our own code, never spec text) with NumPy and `names`."""
    scope = {"np": np, **names}
    exec(compile("\n".join(lines), "<generated>", "exec"), scope)   # noqa: S102
    return scope


def _printed_value(expr, args):
    names = {f"a{i}": a for i, a in enumerate(args)}
    return _run([f"result = {to_numpy(expr)}"], names)["result"]


def _probe(arity):
    return sp.symbols(f"a0:{arity}", real=True)


# --- one table --------------------------------------------------------------------------------

def test_printer_and_emitter_tables_are_derived_from_the_records():
    assert NUMPY_FUNCTIONS == {head: r.numpy for head, r in BY_HEAD.items()}
    assert inplace.UFUNCS == {head: r.ufunc for head, r in BY_HEAD.items() if r.ufunc is not None}
    assert SYMPY_HEADS == {p.head: p.name for p in PRIMITIVES.values() if p.head is not None}
    assert not hasattr(inplace, "ZERO_SECOND") and not hasattr(inplace, "UNARY_UFUNCS")


@pytest.mark.parametrize("name", RECORDS)
def test_record_builds_its_head_and_prints_its_template(name):
    record = _record(name)
    probe = _probe(record.arity)
    expr = record.build(*probe)
    assert type(expr) is record.head
    assert BY_HEAD[record.head] is record
    text = to_numpy(expr)
    body = record.numpy.format(*(p.name for p in probe))
    assert text in (body, f"({body})"), (text, body)


def test_new_functions_are_one_record_each():
    # arcsin, arccos, log1p and expm1 are single records without hand-written partials:
    # callable from specs, turned into graph nodes, printed, and emitted as ufuncs.
    for name, head, ufunc in [("arcsin", sp.asin, "np.arcsin"), ("arccos", sp.acos, "np.arccos"),
                              ("log1p", None, "np.log1p"), ("expm1", None, "np.expm1")]:
        record = PRIMITIVES[name]
        assert record.partials is None and CALLABLE[name] is record
        assert head is None or record.head is head
        assert SYMPY_HEADS[record.head] == name
        a = sp.Symbol("a", real=True)
        assert to_numpy(record.build(a)) == f"np.{name}(a)"
        assert ufunc_call(record.build(a)) == (ufunc, [a])


# --- partials against SymPy and against finite differences of the generated code -------------

@pytest.mark.parametrize("name", FUNCTIONS)
def test_partials_match_sympy_diff_of_the_sympy_form(name):
    record = PRIMITIVES[name]
    probe = _probe(record.arity)
    value = record.build(*probe).doit()
    reference = _textbook(value)
    partials = record.local_partials(value, probe)
    assert len(partials) == record.arity
    for point in zip(*_points(name, 6)):
        at = dict(zip(probe, map(float, point)))
        for i, p in enumerate(probe):
            got = float(sp.N(_textbook(sp.sympify(partials[i])).subs(at), 30))
            if i in MASKS.get(name, ()):
                assert got == 0, (name, i)
                continue
            want = float(sp.N(sp.diff(reference, p).subs(at), 30))
            assert got == pytest.approx(want, rel=1e-10, abs=1e-12), (name, i, point)


@pytest.mark.parametrize("name", CALLED)
def test_compiled_call_matches_finite_differences_of_its_generated_code(name):
    record = CALLABLE[name]
    inputs = ["x", "y", "z"][:record.arity]
    module = bpcompile.compile(f"{name}({', '.join(inputs)})")
    assert module.GRAPH[module.GRAPH.output].op == record.name
    args = _points(record.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no RuntimeWarning on the domain
        value, grads = module.value_and_grad(*args)
    reference = sp.lambdify(_probe(record.arity), _textbook(record.build(*_probe(record.arity))),
                            modules=[{"Heaviside": lambda a: np.heaviside(a, 0.0)}, "numpy"])
    np.testing.assert_allclose(value, reference(*args), rtol=1e-13, atol=1e-15)
    for i, grad in enumerate(grads):
        assert np.shape(grad) == np.shape(args[i])
        numeric = fd_elementwise(module.evaluate, args, i)
        assert pointwise_rel_err(grad, numeric) < 1e-7, (name, i)


# --- the ufunc form computes the printed form -----------------------------------------------

@pytest.mark.parametrize("name", [n for n in RECORDS if _record(n).ufunc is not None])
def test_ufunc_form_gives_the_printed_value(name):
    record = _record(name)
    probe = _probe(record.arity)
    args = _points(name)
    for expr in (record.build(*probe), 2 * record.build(*(p / 2 for p in probe))):
        scratch = iter(f"s{k}" for k in range(20))
        lines = ufunc_statements(expr, "out", lambda avoid=None: next(scratch))
        assert lines is not None, (name, expr)
        buffers = {f"s{k}": np.full_like(args[0], np.nan) for k in range(20)}
        names = {f"a{i}": a for i, a in enumerate(args)}
        scope = _run(lines, {"out": np.full_like(args[0], np.nan), **buffers, **names})
        np.testing.assert_allclose(scope["out"], _printed_value(expr, args), rtol=1e-14, atol=0)


# --- sigmoid: one stable printed form --------------------------------------------------------

def _true_sigmoid(x):
    with mpmath.workdps(50):
        return np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in x])


TAILS = np.array([-1e4, -800.0, -700.0, -612.3456, -100.0, -87.0, -40.0, -33.77, -20.0, -17.3,
                  -3.0, -1e-3, 0.0, 1e-3,
                  3.0, 20.0, 40.0, 100.0, 700.0, 800.0, 1e4])


def _ulps(got, want, dtype):
    tiny = np.finfo(dtype).tiny
    want = want.astype(dtype).astype(np.float64)   # the correctly rounded value (modulo ties)
    normal = np.abs(want) >= tiny
    err = np.abs(got.astype(np.float64) - want)
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    return np.max(err[normal] / spacing[normal]), np.max(err[~normal], initial=0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_printed_form_is_stable_and_accurate_in_both_tails(dtype):
    x = TAILS.astype(dtype)
    expr = sigmoid(sp.Symbol("a0", real=True))
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"), \
            warnings.catch_warnings():
        warnings.filterwarnings("error")
        value = _printed_value(expr, [x])
    assert value.dtype == dtype
    ulps, subnormal_err = _ulps(value, _true_sigmoid(x), dtype)
    assert ulps <= 4, ulps
    assert subnormal_err <= 4 * np.finfo(dtype).smallest_subnormal
    if dtype == np.float64:
        assert value[list(TAILS).index(-40.0)] == pytest.approx(4.248354255291589e-18, rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_in_place_form_is_within_an_ulp_of_one_half_and_never_warns(dtype):
    """The in-place form (0.5 + 0.5*tanh(a/2), four ufunc calls) trades the far left
    tail's relative digits for speed: its error stays below one ulp of 0.5."""
    x = TAILS.astype(dtype)
    expr = sigmoid(sp.Symbol("a0", real=True))
    scratch = iter(["s0", "s1"])
    lines = ufunc_statements(expr, "out", lambda avoid=None: next(scratch))
    assert len(lines) == 4
    buffers = {"out": np.empty_like(x), "s0": np.empty_like(x), "s1": np.empty_like(x)}
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        scope = _run(lines, {"a0": x, **buffers})
    np.testing.assert_allclose(scope["out"], _true_sigmoid(x), rtol=0,
                               atol=float(np.spacing(dtype(0.5))))


def test_sigmoid_has_one_printed_form():
    a = sp.Symbol("a", real=True)
    assert to_numpy(sigmoid(a)) == "(" + PRIMITIVES["sigmoid"].numpy.format("a") + ")"
    # softplus differentiates to sigmoid: its adjoint is printed with the same form
    module = bpcompile.compile("softplus(x)")
    assert PRIMITIVES["sigmoid"].numpy.format("x") in module.SOURCE
    assert "1/(1 + np.exp(" not in module.SOURCE


def test_compiled_sigmoid_and_softplus_do_not_warn_far_in_the_tails():
    x = TAILS.copy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s, (ds,) = bpcompile.compile("sigmoid(x)").value_and_grad(x)
        p, (dp,) = bpcompile.compile("softplus(x)").value_and_grad(x)
    np.testing.assert_allclose(s, _true_sigmoid(x), rtol=4e-16, atol=0)
    np.testing.assert_allclose(dp, _true_sigmoid(x), rtol=4e-16, atol=0)
    assert ds[list(TAILS).index(-40.0)] == pytest.approx(4.248354255291589e-18, rel=1e-14)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(ds))
