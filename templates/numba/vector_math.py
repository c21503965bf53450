# exp, log, sin, cos and tanh for the numba target's loops, written so that LLVM
# can vectorize the loop.  math.exp and its kin are calls into the C library, one point
# per call, which LLVM cannot turn into vector instructions: in the quiz's loop they took
# three quarters of the time.  Here each is arithmetic and bit operations only (a
# conditional expression is a vector select), 8 points per instruction with AVX-512.
# Each is within an ulp (tanh: two) of the C library's result (tests/test_vector_math.py
# measures it) and gives the same inf, nan and signed zeros.
import math

import numba
import numpy as np

_ROUND = 6755399441055744.0         # 1.5 * 2**52: (t + _ROUND) - _ROUND is t rounded to
_ROUND_BITS = 4843621399236968448   # an integer, which the bits of t + _ROUND hold, less these
_LN2_HI = 0.6931471803691238        # ln 2 in 32 bits: k * _LN2_HI is exact for |k| < 2**21
_LN2_LO = 1.9082149292705877e-10    # ln 2 - _LN2_HI
_INV_LN2 = 1.4426950408889634       # 1 / ln 2
_EXP_MAX = 709.782712893384         # exp(x) overflows above (the log of the largest double)
_EXP_MIN = -746.0                   # and rounds to 0 below
_MANTISSA = (1 << 52) - 1           # a double's fraction bits
_EXPONENT_ONE = 1023 << 52          # the exponent bits of 1.0
_SQRT2 = 1.4142135623730951
_SMALLEST_NORMAL = 2.2250738585072014e-308
_TWO_OVER_PI = 0.6366197723675814
_PIO2_1 = 1.5707963267341256        # pi/2 = _PIO2_1 + _PIO2_2 + _PIO2_3 + _PIO2_4 to 150
_PIO2_2 = 6.077100506303966e-11     # bits; the first three have 33 bits each, so n times
_PIO2_3 = 2.0222662487111665e-21    # each is exact for |n| < 2**20
_PIO2_4 = 8.4784276603689e-32
_TRIG_RANGE = 1e5                   # |x| up to which _sin and _cos reduce x exactly enough:
                                    # a loop counts the points beyond, and its caller then
                                    # runs math.sin and math.cos instead
_TANH_SERIES_END = 0.55             # below, tanh(x) by its series; above, from exp(2|x|)
_TANH_ONE = 22.0                    # above, tanh(x) rounds to 1
_TANH_SERIES = (                    # tanh x = sum of _TANH_SERIES[k] x**(2k+1), to x**37
    1.0, -0.3333333333333333, 0.13333333333333333, -0.05396825396825397,
    0.021869488536155203, -0.008863235529902197, 0.003592128036572481, -0.0014558343870513183,
    0.000590027440945586, -0.00023912911424355248, 9.691537956929451e-05, -3.927832388331683e-05,
    1.5918905069328964e-05, -6.451689215655431e-06, 2.6147711512907546e-06, -1.0597268320104654e-06,
    4.294911078273806e-07, -1.7406618963571648e-07, 7.054636946400968e-08)


@numba.njit
def _power_of_two(k):
    """2.0**k for an integer -1022 <= k <= 1023, from its exponent bits."""
    return np.int64((k + 1023) << 52).view(np.float64)


@numba.njit
def _exp(x):
    """exp(x): x = k ln2 + r with |r| <= ln2/2, so exp(x) = 2**k exp(r), and exp(r) is
    its Taylor series to r**13 (the next term is below 2**-60)."""
    t = x * _INV_LN2 + _ROUND
    k = np.float64(t).view(np.int64) - _ROUND_BITS
    kf = t - _ROUND
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    p = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (
        1 / 720 + r * (1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (
            1 / 39916800 + r * (1 / 479001600 + r * (1 / 6227020800)))))))))))))
    # 2**k in two factors that stay normal numbers (k runs from -1076 to 1024); the
    # second product is the only rounding, also where the result is subnormal
    half = k >> 1
    y = p * _power_of_two(half) * _power_of_two(k - half)
    y = np.inf if x > _EXP_MAX else y
    return 0.0 if x < _EXP_MIN else y         # nan stays nan: every step carries it


@numba.njit
def _log(x):
    """log(x): x = 2**e m with sqrt(1/2) <= m < sqrt(2), so log(x) = e ln2 + log(m), and
    log(m) = 2 atanh(s) with s = (m - 1)/(m + 1), |s| < 0.172: its series to s**23."""
    small = x < _SMALLEST_NORMAL
    bits = np.float64(x * 18014398509481984.0 if small else x).view(np.int64)   # * 2**54
    e = (bits >> 52) - (1023 + 54 if small else 1023)
    m = np.int64((bits & _MANTISSA) | _EXPONENT_ONE).view(np.float64)   # 1 <= m < 2
    big = m > _SQRT2
    m = 0.5 * m if big else m
    ef = np.float64(e + 1 if big else e)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    tail = z * (2 / 3 + z * (2 / 5 + z * (2 / 7 + z * (2 / 9 + z * (2 / 11 + z * (2 / 13 + z * (
        2 / 15 + z * (2 / 17 + z * (2 / 19 + z * (2 / 21 + z * (2 / 23)))))))))))
    # log(m) = f - s (f - tail), summed so that f, the largest part, is added last
    half_f2 = 0.5 * f * f
    y = ef * _LN2_HI - ((half_f2 - (s * (half_f2 + tail) + ef * _LN2_LO)) - f)
    if 0.0 < x < np.inf:
        return y
    return -np.inf if x == 0.0 else (x if x > 0.0 else np.nan)   # inf, nan, negatives


@numba.njit
def _quadrant(x):
    """(n, r) with x = n pi/2 + r, |r| <= pi/4, for |x| <= _TRIG_RANGE: the products
    n * _PIO2_k are exact and each subtraction keeps its rounding error (Knuth's two-sum),
    so r keeps its digits even where x is close to a multiple of pi/2."""
    t = x * _TWO_OVER_PI + _ROUND
    n = np.float64(t).view(np.int64) - _ROUND_BITS
    nf = t - _ROUND
    a = x - nf * _PIO2_1                      # exact: x and n _PIO2_1 are close
    b = -nf * _PIO2_2
    ab = a + b
    ab_error = (a - (ab - (ab - a))) + (b - (ab - a))
    c = -nf * _PIO2_3
    abc = ab + c
    abc_error = (ab - (abc - (abc - ab))) + (c - (abc - ab))
    return n, abc + ((ab_error + abc_error) - nf * _PIO2_4)


@numba.njit
def _sin_cos_reduced(r):
    """(sin r, cos r) for |r| <= pi/4 (a little more): Taylor series to r**19 and r**18
    (the next terms are below 2**-60 of the result)."""
    z = r * r
    sin_r = r + r * z * (-1 / 6 + z * (1 / 120 + z * (-1 / 5040 + z * (1 / 362880 + z * (
        -1 / 39916800 + z * (1 / 6227020800 + z * (-1 / 1307674368000 + z * (
            1 / 355687428096000 + z * (-1 / 121645100408832000)))))))))
    # cos r = 1 - z/2 + ..., with the rounding error of 1 - z/2 added back
    half_z = 0.5 * z
    w = 1.0 - half_z
    cos_r = w + (((1.0 - w) - half_z) + z * z * (1 / 24 + z * (-1 / 720 + z * (1 / 40320 + z * (
        -1 / 3628800 + z * (1 / 479001600 + z * (-1 / 87178291200 + z * (
            1 / 20922789888000 + z * (-1 / 6402373705728000)))))))))
    return sin_r, cos_r


@numba.njit
def _sin(x):
    """sin(x) for |x| <= _TRIG_RANGE: sin(n pi/2 + r) is sin r, cos r, -sin r or -cos r."""
    n, r = _quadrant(x)
    sin_r, cos_r = _sin_cos_reduced(r)
    y = cos_r if n & 1 else sin_r
    y = -y if n & 2 else y
    return x if x == 0.0 else y               # sin(-0.0) is -0.0


@numba.njit
def _cos(x):
    """cos(x) for |x| <= _TRIG_RANGE: cos(n pi/2 + r) is cos r, -sin r, -cos r or sin r."""
    n, r = _quadrant(x)
    sin_r, cos_r = _sin_cos_reduced(r)
    y = sin_r if n & 1 else cos_r
    return -y if (n + 1) & 2 else y


@numba.njit
def _tanh(x):
    """tanh(x): for |x| < _TANH_SERIES_END its series (the next term is below 2**-56 of
    it), else (e - 1)/(e + 1) with e = exp(2|x|) and x's sign; both are computed and one
    is chosen, so that the loop stays one vector path."""
    z = x * x
    c = _TANH_SERIES        # (indexed by constants: a loop over it would not vectorize)
    series = c[1] + z * (c[2] + z * (c[3] + z * (c[4] + z * (c[5] + z * (c[6] + z * (c[7] + z * (
        c[8] + z * (c[9] + z * (c[10] + z * (c[11] + z * (c[12] + z * (c[13] + z * (c[14] + z * (
            c[15] + z * (c[16] + z * (c[17] + z * c[18]))))))))))))))))
    small = x + x * (z * series)
    a = math.fabs(x)
    t = _exp(2.0 * a) - 1.0                   # exact subtraction: exp(2|x|) >= 3 here
    large = 1.0 if a > _TANH_ONE else t / (t + 2.0)
    large = -large if x < 0.0 else large
    y = small if a < _TANH_SERIES_END else large
    return x if x == 0.0 else y               # tanh(-0.0) is -0.0


@numba.njit
def _tanh_into(a, out):
    """np.tanh(a, out) by _tanh, element by element: a loop that LLVM vectorizes."""
    for k in range(a.size):
        out.flat[k] = _tanh(a.flat[k])
