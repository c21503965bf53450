"""templates/numba/vector_math.py: the exp, log, sin, cos and tanh that the numba
target's loops call.  Each against the C library's (math's, compiled by numba with the
generated kernels' error model) to within one ulp (tanh: two) on wide random samples,
with the same inf, nan and signed zeros at the edges; sin and cos also right next to
multiples of pi/2, where the argument reduction cancels.  Their constants against exact
arithmetic.  The kernels' count of points beyond _TRIG_RANGE: the module then runs
math's.  And the numba epoch kernel's tanh of a vector (_tanh_into)."""

import importlib.util
import math
import re
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy

import bpcompile
from bpcompile.codegen.render import templates_dir
from bpcompile.core import printer
from bpcompile.core.primitives import PRIMITIVES

numba = pytest.importorskip("numba")

SPEC = importlib.util.spec_from_file_location(
    "vector_math", templates_dir() / "numba" / "vector_math.py")
VECTOR_MATH = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(VECTOR_MATH)

NAMES = ("exp", "log", "sin", "cos", "tanh")
ULPS = {"exp": 1.0, "log": 1.0, "sin": 1.0, "cos": 1.0, "tanh": 2.0}


def _over_array(function):
    @numba.njit(error_model="numpy")
    def apply(points, out):
        for i in range(points.size):
            out[i] = function(points[i])
    return apply


OURS = {name: _over_array(getattr(VECTOR_MATH, f"_{name}")) for name in NAMES}
LIBRARY = {name: _over_array(getattr(math, name)) for name in NAMES}


def _both(name, points):
    points = np.asarray(points, dtype=np.float64)
    ours, library = np.empty_like(points), np.empty_like(points)
    OURS[name](points, ours)
    LIBRARY[name](points, library)
    return ours, library


def _ulps(name, points):
    """The largest difference from math's, in units of the last place of math's result,
    after checking that both agree exactly wherever math's is not a finite number."""
    ours, library = _both(name, points)
    finite = np.isfinite(library)
    np.testing.assert_array_equal(ours[~finite], library[~finite])    # inf, -inf, nan
    ours, library = ours[finite], library[finite]
    assert np.all(np.isfinite(ours))
    return float(np.max(np.abs(ours - library) / np.spacing(np.abs(library)), initial=0.0))


RNG = np.random.default_rng(20261201)
N = 200_000

SAMPLES = {
    "exp": {"whole range": RNG.uniform(-745.2, 709.78, N), "near 0": RNG.uniform(-1, 1, N),
            "subnormal results": RNG.uniform(-746, -708, N)},
    "log": {"0 to 3": RNG.uniform(0, 3, N), "whole range": np.exp(RNG.uniform(-744, 709, N)),
            "near 1": RNG.uniform(1 - 1e-6, 1 + 1e-6, N),
            "subnormal": RNG.uniform(0, 2.3e-308, N)},
    "sin": {"-10 to 10": RNG.uniform(-10, 10, N), "whole range": RNG.uniform(-1e5, 1e5, N),
            "tiny": np.exp(RNG.uniform(-744, 0, N)) * RNG.choice([-1, 1], N)},
}
SAMPLES["cos"] = SAMPLES["sin"]
SAMPLES["tanh"] = {"-1 to 1": RNG.uniform(-1, 1, N), "-25 to 25": RNG.uniform(-25, 25, N),
                   "tiny": SAMPLES["sin"]["tiny"],
                   "near the series' end": RNG.uniform(0.5, 0.6, N) * RNG.choice([-1, 1], N)}


@pytest.mark.parametrize("name, sample", [(name, sample) for name in NAMES
                                          for sample in SAMPLES[name]])
def test_within_an_ulp_of_the_c_library(name, sample):
    assert _ulps(name, SAMPLES[name][sample]) <= ULPS[name]


# the doubles nearest to and next to k pi/2, |k| up to the range: r = x - k pi/2 is a
# tiny difference of large numbers there, and math's result is tiny for sin or cos
_MULTIPLES = np.arange(-63_600, 63_601) * (np.pi / 2)
NEAR_MULTIPLES = np.concatenate([_MULTIPLES, np.nextafter(_MULTIPLES, np.inf),
                                 np.nextafter(_MULTIPLES, -np.inf)])


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_and_cos_next_to_multiples_of_half_pi(name):
    assert np.max(np.abs(NEAR_MULTIPLES)) <= VECTOR_MATH._TRIG_RANGE
    assert _ulps(name, NEAR_MULTIPLES) <= 1.0


EDGES = {
    "exp": [0.0, -0.0, 1e-300, -1e-300, 709.782712893384, np.nextafter(709.782712893384, 800),
            709.79, -745.1332191019411, -745.1332191019412, -745.14, -746.0, -1e300, 1e300,
            np.inf, -np.inf, np.nan],
    "log": [1.0, np.nextafter(1, 0), np.nextafter(1, 2), 0.0, -0.0, -1.0, -np.inf, np.inf,
            np.nan, 5e-324, 2.2250738585072014e-308, np.nextafter(2.2250738585072014e-308, 0),
            1.7976931348623157e308, np.sqrt(2), np.nextafter(np.sqrt(2), 2)],
    "sin": [0.0, -0.0, 5e-324, -5e-324, 1e-310, -1e-310, np.pi, -np.pi, np.pi / 2, 1e5, -1e5,
            np.nan],
}
EDGES["cos"] = EDGES["sin"]
EDGES["tanh"] = [0.0, -0.0, 5e-324, -5e-324, 0.55, np.nextafter(0.55, 0), -0.55, 19.1, -19.1,
                 22.0, np.nextafter(22.0, 23), 1e300, -1e300, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("name", NAMES)
def test_edges_as_the_c_library(name):
    """The same numbers bit for bit where the result is 0, inf or nan (signed zeros
    included); within an ulp elsewhere."""
    ours, library = _both(name, EDGES[name])
    exact = ~np.isfinite(library) | (library == 0)
    np.testing.assert_array_equal(ours[exact], library[exact])
    np.testing.assert_array_equal(np.signbit(ours[exact]), np.signbit(library[exact]))
    assert _ulps(name, EDGES[name]) <= ULPS[name]


def _pi_fraction(bits=400):
    """pi to `bits` bits, by Machin's formula in integers."""
    def arctan_inverse(m):
        total, term, k, sign = 0, (1 << bits) // m, 1, 1
        while term:
            total += sign * (term // k)
            term, k, sign = term // (m * m), k + 2, -sign
        return total
    return Fraction(4 * (4 * arctan_inverse(5) - arctan_inverse(239)), 1 << bits)


def _ln2_fraction(bits=400):
    """ln 2 = sum over k of 1/(k 2**k), to `bits` bits."""
    total, k = 0, 1
    while (term := (1 << bits) // (k << k)):
        total, k = total + term, k + 1
    return Fraction(total, 1 << bits)


def _significant_bits(value):
    mantissa = Fraction(value) / Fraction(2) ** (math.frexp(value)[1] - 53)
    assert mantissa.denominator == 1
    return 53 - (int(mantissa) & -int(mantissa)).bit_length() + 1


def test_the_constants():
    vm = VECTOR_MATH
    half_pi = _pi_fraction() / 2
    parts = [vm._PIO2_1, vm._PIO2_2, vm._PIO2_3, vm._PIO2_4]
    assert abs(half_pi - sum(Fraction(p) for p in parts)) < Fraction(1, 2 ** 150)
    # 33 bits each: n * part is exact for |n| < 2**20, which covers _TRIG_RANGE
    assert all(_significant_bits(p) <= 33 for p in parts[:3])
    assert vm._TRIG_RANGE * vm._TWO_OVER_PI < 2 ** 20
    ln2 = _ln2_fraction()
    assert _significant_bits(vm._LN2_HI) <= 32
    assert abs(ln2 - Fraction(vm._LN2_HI) - Fraction(vm._LN2_LO)) < Fraction(1, 2 ** 85)
    assert vm._INV_LN2 == float(1 / ln2) and vm._TWO_OVER_PI == float(1 / half_pi)
    assert vm._ROUND == 1.5 * 2 ** 52
    assert np.float64(vm._ROUND).view(np.int64) == vm._ROUND_BITS
    assert vm._EXP_MAX == math.log(np.finfo(np.float64).max)
    x = sympy.Symbol("x")
    series = sympy.series(sympy.tanh(x), x, 0, 2 * len(vm._TANH_SERIES) + 1).removeO()
    assert vm._TANH_SERIES == tuple(float(series.coeff(x, 2 * k + 1))
                                    for k in range(len(vm._TANH_SERIES)))
    assert math.tanh(vm._TANH_ONE) == 1.0


# --- the kernels' count of points beyond _TRIG_RANGE ------------------------------

def test_points_beyond_the_range_of_sin_and_cos_run_on_math():
    """sin and cos of 1e6 and 1e20 are wrong from _sin's reduction: the kernel counts
    them and the module runs math's loop, so the results still equal the NumPy target's
    and math's (the C library's) at every point, in value_and_grad and in evaluate."""
    spec = {"name": "waves", "inputs": ["x", "a"], "expr": "sin(a*x) + cos(x)*a"}
    fast, reference = (bpcompile.compile(spec, target=t) for t in ("numba", "numpy"))
    x = np.array([0.5, 2.0, 1e6, -3e5, 1e20, np.inf, np.nan] + [0.25] * 5000)
    a = np.ones_like(x)
    a[3] = 0.5
    for label, points in (("beyond", x), ("within", x[:2])):
        value, (d_x, d_a) = fast.value_and_grad(points, a[:points.size])
        want_value, (want_x, want_a) = reference.value_and_grad(points, a[:points.size])
        np.testing.assert_allclose(value, want_value, rtol=1e-15, atol=0, err_msg=label)
        np.testing.assert_allclose(d_x, want_x, rtol=1e-15, atol=0, err_msg=label)
        np.testing.assert_allclose(d_a, want_a, rtol=1e-15, atol=0, err_msg=label)
        np.testing.assert_allclose(fast.evaluate(points, a[:points.size]), want_value,
                                   rtol=1e-15, atol=0, err_msg=label)
        if label == "beyond":
            assert value[4] == math.sin(1e20) + math.cos(1e20)


def test_the_kernel_counts_the_points_beyond():
    """The count is what the module's choice rests on: the number of points with an
    argument of sin or cos beyond _TRIG_RANGE (either of them, each point once)."""
    spec = {"name": "waves", "inputs": ["x", "a"], "expr": "sin(a*x) + cos(x)*a"}
    module = bpcompile.compile(spec, target="numba")
    x = np.array([1.0, 2e5, -2e5, 3.0, np.inf])
    a = np.array([1.0, 1.0, 1e-6, 1e6, 1.0])
    results = [np.empty(5) for _ in range(3)]
    assert module._value_and_grad_serial(x, a, *results) == 4
    assert module._evaluate_parallel(x, a, results[0]) == 4
    assert module._evaluate_serial(x[:1], a[:1], results[0]) == 0


def test_a_program_without_sin_or_cos_counts_nothing():
    module = bpcompile.compile({"name": "e", "inputs": ["x"], "expr": "exp(x)*log(x)"},
                               target="numba")
    assert "_exp(x)" in module.SOURCE and "_log(x)" in module.SOURCE
    assert "_TRIG_RANGE =" not in module.SOURCE and "_sin(" not in module.SOURCE
    assert "math_trig" not in module.SOURCE
    assert "def _exp" in module.SOURCE and "def _quadrant" not in module.SOURCE


def test_the_epoch_kernels_tanh_of_an_array():
    """_tanh_into(a, out) is np.tanh(a, out) for vectors, rows and in place (the numba
    epoch kernel calls it for the sigmoid and tanh of its one-example statements)."""
    points = RNG.uniform(-4, 4, (3, 5))
    for a in (points[0], points, points[:1]):
        out = np.empty_like(a)
        VECTOR_MATH._tanh_into(a, out)
        np.testing.assert_allclose(out, np.tanh(a), rtol=5e-16, atol=0)
    inplace = points.copy()
    VECTOR_MATH._tanh_into(inplace, inplace)
    np.testing.assert_allclose(inplace, np.tanh(points), rtol=5e-16, atol=0)


def test_a_one_example_epoch_with_tanh_calls_the_vector_tanh():
    spec = {"name": "lecture", "dtype": "float64", "input": [6],
            "layers": [{"linear": 5}, "sigmoid", {"linear": 4}, "tanh", {"linear": 1}],
            "loss": "sigmoid_binary_cross_entropy"}
    fast, reference = (bpcompile.compile(spec, target=t) for t in ("numba", "numpy"))
    kernel = fast.SOURCE.split("def _sgd_epoch_one(")[1]
    assert "    tanh = _tanh_into\n" in kernel and "= np.tanh\n" not in kernel
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((40, 6)), (rng.random(40) > 0.5).astype(np.float64)
    params = fast.init_params(0)
    want = {k: v.copy() for k, v in params.items()}
    loss = fast.sgd_epoch(params, x, y, 0.3)
    want_loss = reference.sgd_epoch(want, x, y, 0.3)
    assert abs(loss - want_loss) <= 1e-13 * abs(want_loss)
    for key in params:
        np.testing.assert_allclose(params[key], want[key], rtol=1e-12, atol=1e-14, err_msg=key)


# sigmoid far in both tails (as tests/test_primitive_table.py probes NumPy's form)
SIGMOID_TAILS = np.array([-1e4, -800.0, -745.0, -720.0, -700.0, -612.3456, -100.0, -95.0,
                          -87.0, -40.0, -33.77, -20.0, -17.3, -3.0, -1e-3, -0.0, 0.0, 1e-3,
                          3.0, 20.0, 40.0, 100.0, 700.0, 800.0, 1e4, -np.inf, np.inf])


def _compiled_sigmoid(vector):
    """The numba target's printed sigmoid of one float, as a kernel over an array."""
    a = sympy.Symbol("a", real=True)
    text = printer.to_scalar(PRIMITIVES["sigmoid"].head(a), vector=vector)
    scope = {"math": math, "np": np, "_exp": VECTOR_MATH._exp}
    exec(f"def sigmoid_of(a):\n    return {text}\n", scope)
    return numba.njit(error_model="numpy")(scope["sigmoid_of"]), _over_array(
        numba.njit(error_model="numpy")(scope["sigmoid_of"]))


@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_sigmoid_is_accurate_in_both_tails(vector, dtype):
    """Within 4 ulps of the exact sigmoid wherever it is a normal number, and right to
    a few of the smallest subnormals below: e = exp(-|a|) never overflows."""
    _, over_array = _compiled_sigmoid(vector)
    x = SIGMOID_TAILS.astype(dtype)
    got = np.empty_like(x)
    over_array(x, got)
    with mpmath.workdps(50):
        want = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in x])
    rounded = want.astype(dtype).astype(np.float64)
    normal = np.abs(rounded) >= np.finfo(dtype).tiny
    spacing = np.spacing(np.abs(rounded).astype(dtype)).astype(np.float64)
    error = np.abs(got.astype(np.float64) - rounded)
    assert np.max(error[normal] / spacing[normal]) <= 4
    assert np.max(error[~normal], initial=0.0) <= 4 * np.finfo(dtype).smallest_subnormal
    nan = np.array([np.nan], dtype)
    over_array(nan, nan)
    assert np.isnan(nan[0])


@pytest.mark.parametrize("signature", ["float64(float64)", "float32(float32)"])
def test_compiled_sigmoid_calls_exp_once(signature):
    """The printed form names exp(-|a|) twice (numerator and denominator); LLVM
    computes it once, in the argument's precision."""
    kernel, _ = _compiled_sigmoid(vector=False)
    kernel.compile(signature)
    ir = kernel.inspect_llvm(kernel.signatures[-1])
    body = ir.split("define ")[1]           # the kernel, not its Python wrapper
    width = signature[5:7]
    assert re.findall(r"call [^(]*@llvm\.exp\.f(\d+)\(", body) == [width]
