"""value_and_grad of elementwise programs over large arrays: the blocked kernel
(memory/blocks.py) against the plain forward/backward and finite differences.
With the numba target the fused kernel is the compiled loop over the points
(codegen/numba_points.py), which runs the same steps on scalars."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import bpcompile

from conftest import fd_gradient
from test_property import _compile, expressions, target_settings

# every test runs with modules compiled for each target (conftest.py)
pytestmark = pytest.mark.both_targets

QUIZ = "exp(x*z) + x*z/log(x) + sin(log(x))/(x*z)"
BLOCK = 32768       # the NumPy target's block of points (its modules' _BLOCK)


def _kernel(module):
    """The fused kernel of the module's target: value_and_grad runs it on large float64 arrays."""
    return "_value_and_grad_points" if "import numba" in module.SOURCE else "_value_and_grad_block"


def _assert_same(module, got, want):
    """The NumPy target's plain path is `want` exactly; the numba target's loop
    rounds differently (shared reciprocals, one sum per adjoint, math.*)."""
    if _kernel(module) == "_value_and_grad_points":
        _assert_close(got, want)
        return
    for a, b in zip((got[0], *got[1]), (want[0], *want[1])):
        np.testing.assert_array_equal(a, b)


def _points(module, n, rng, low=-2.0, high=2.0):
    return [rng.uniform(low, high, n) for _ in module.INPUTS]


def _plain(module, args):
    value, cache = module.forward(*args)
    return value, module.backward(cache)


def _assert_close(blocked, plain):
    """Equal up to rounding: the kernel shares reciprocals and adds an adjoint's
    terms in one sum, so it may round differently from the plain path."""
    value, grads = blocked
    for got, want in zip((value, *grads), (plain[0], *plain[1])):
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-9, atol=1e-9 * scale)


def _check_at_points(module, args, blocked, points):
    """The blocked gradient at a few points against central differences."""
    value, grads = blocked
    for k in points:
        at = [float(a[k]) for a in args]
        for i, name in enumerate(module.WRT):
            numeric = float(fd_gradient(module.evaluate, at, module.INPUTS.index(name)))
            if not np.isfinite(numeric):
                continue        # no reliable reference at this point (see fd_gradient)
            got = float(grads[i][k])
            scale = max(abs(got), abs(numeric))
            assert abs(got - numeric) <= 1e-6 * scale + 1e-9 * (1 + abs(float(value[k]))), \
                (name, at, got, numeric)


def test_quiz_blocked_matches_plain_path_and_finite_differences():
    module = bpcompile.compile(QUIZ)
    assert hasattr(module, _kernel(module)) and getattr(module, "_BLOCK", BLOCK) == BLOCK
    rng = np.random.default_rng(0)
    n = 2 * BLOCK + 123                  # two whole blocks and a short one
    args = [rng.uniform(1.5, 3.0, n), rng.uniform(0.5, 1.0, n)]
    blocked = module.value_and_grad(*args)
    _assert_close(blocked, _plain(module, args))
    _check_at_points(module, args, blocked, [0, BLOCK - 1, n - 1])
    assert blocked[0].shape == (n,) and all(g.shape == (n,) for g in blocked[1])


def test_random_expression_blocked_equals_plain_path():
    target_settings(numpy=40, numba=12)(given(text=expressions, seed=st.integers(0, 2**32 - 1))(
        _random_expression_blocked_equals_plain_path))()


def _random_expression_blocked_equals_plain_path(text, seed):
    module = _compile(text)
    assume(module.INPUTS)
    rng = np.random.default_rng(seed)
    n = BLOCK + 77
    args = _points(module, n, rng)
    with np.errstate(all="ignore"):
        plain = _plain(module, args)
        assume(all(np.all(np.isfinite(a)) and np.max(np.abs(a)) < 1e6
                   for a in (plain[0], *plain[1])))
        blocked = module.value_and_grad(*args)
    # every function of this grammar has a ufunc form: the blocked path is taken
    assert hasattr(module, _kernel(module)), text
    _assert_close(blocked, plain)
    _check_at_points(module, args, blocked, [0, n - 1])


@pytest.mark.parametrize("text", ["x*z", "x", "x + 1", "-x", "x + z", "max(x, z)", "min(x, z**2)",
                                  "relu(x) + z", "x**z", "sqrt(x) + z", "x*x*x", "exp(x) + exp(x)"])
def test_small_programs_blocked(text):
    """Values that are copies or numbers (y = x, dy/dx = 1), no buffers at all."""
    module = bpcompile.compile(text)
    assert hasattr(module, _kernel(module)), text
    rng = np.random.default_rng(1)
    n = BLOCK + 5
    args = _points(module, n, rng, 0.5, 2.0)
    blocked = module.value_and_grad(*args)
    _assert_close(blocked, _plain(module, args))
    _check_at_points(module, args, blocked, [3, n - 2])


def test_a_gradient_that_is_a_value_of_the_kernel_is_copied_before_its_buffer_is_reused():
    """dy/dz = log(sigmoid(a)) is the value y_2, copied into the output at the end: its
    buffer must not be lent to a later value (softplus) first.  (It was: dy/dz came out
    as softplus(a).)"""
    module = bpcompile.compile("log(sigmoid(a))*z + softplus(a)")
    assert hasattr(module, _kernel(module))
    a = np.linspace(-60.0, 60.0, BLOCK + 1001)
    z = np.ones_like(a)
    value, (da, dz) = module.value_and_grad(a, z)
    plain = _plain(module, [a, z])
    np.testing.assert_allclose(dz, plain[1][1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dz, -np.logaddexp(0.0, -a), rtol=1e-12, atol=1e-15)
    _assert_close((value, (da, dz)), plain)


def test_sigmoid_keeps_its_relative_accuracy_in_the_tail():
    """The kernel computes sigmoid as printed, not as 0.5 + 0.5*tanh(a/2), whose
    absolute error of 5.6e-17 would make log(sigmoid(-40)) = log(0)."""
    module = bpcompile.compile("log(sigmoid(a))*z")
    a = np.linspace(-700.0, -1.0, BLOCK + 3)
    z = np.ones_like(a)
    value, _ = module.value_and_grad(a, z)
    np.testing.assert_allclose(value, -np.logaddexp(0.0, -a), rtol=1e-13)


def test_names_of_the_kernel_are_minted_around_user_names():
    text = "t0*buffers + exp(out)/t1 + sin(t0)/t1 + x_inv/t1"
    module = bpcompile.compile(text)
    assert hasattr(module, _kernel(module))
    rng = np.random.default_rng(2)
    n = BLOCK + 9
    args = _points(module, n, rng, 0.5, 2.0)
    _assert_close(module.value_and_grad(*args), _plain(module, args))
    out_name = [p for p in module.value_and_grad.__code__.co_varnames
                if p.startswith("out") and p not in module.INPUTS][0]
    assert out_name == "out_1"


def test_out_arrays_are_written_and_returned():
    module = bpcompile.compile(QUIZ)
    rng = np.random.default_rng(3)
    n = BLOCK * 2
    args = [rng.uniform(1.5, 3.0, n), rng.uniform(0.5, 1.0, n)]
    out = tuple(np.full(n, np.nan) for _ in range(3))
    value, grads = module.value_and_grad(*args, out=out)
    assert value is out[0] and grads[0] is out[1] and grads[1] is out[2]
    _assert_close((value, grads), _plain(module, args))


def test_out_that_the_kernel_cannot_write_through_is_filled_by_the_plain_path():
    module = bpcompile.compile(QUIZ)
    rng = np.random.default_rng(4)
    n = BLOCK * 2
    args = [rng.uniform(1.5, 3.0, n), rng.uniform(0.5, 1.0, n)]
    wide = np.zeros((3, 2 * n))
    out = tuple(wide[k, ::2] for k in range(3))       # strided views
    value, grads = module.value_and_grad(*args, out=out)
    _assert_same(module, (wide[0, ::2], tuple(wide[1:, ::2])), _plain(module, args))
    assert not wide[:, 1::2].any()
    # small inputs take the plain path and copy into out too
    small = [a[:10] for a in args]
    out = tuple(np.empty(10) for _ in range(3))
    module.value_and_grad(*small, out=out)
    _assert_same(module, (out[0], ()), (module.evaluate(*small), ()))


def test_out_that_overlaps_an_input_is_computed_before_it_is_written():
    """out = (x, ...): the kernel would write the value into x before reading x for the
    gradient; the module computes first, then copies."""
    module = bpcompile.compile(QUIZ)
    rng = np.random.default_rng(6)
    n = BLOCK * 2 + 7
    x, z = rng.uniform(1.5, 3.0, n), rng.uniform(0.5, 1.0, n)
    plain = _plain(module, [x.copy(), z.copy()])
    out = (x, np.empty(n), z)                  # the value into x, dy/dz into z
    value, (dx, dz) = module.value_and_grad(x, z, out=out)
    assert value is x and dz is z
    _assert_same(module, (value, (dx, dz)), plain)


def test_out_arrays_that_overlap_each_other_are_refused():
    module = bpcompile.compile(QUIZ)
    n = BLOCK * 2
    x, z = np.full(n, 2.0), np.full(n, 0.7)
    shared = np.empty(n)
    for size in (n, 5):
        with pytest.raises(ValueError, match="overlaps"):
            module.value_and_grad(x[:size], z[:size],
                                  out=(np.empty(size), shared[:size], shared[:size]))


@pytest.mark.parametrize("out", [None.__class__, (np.empty(5),), "abc"])
def test_out_of_the_wrong_form_is_a_value_error(out):
    module = bpcompile.compile(QUIZ)
    if out is None.__class__:
        out = (np.empty(4), np.empty(4), np.empty(4))
    with pytest.raises(ValueError, match="out"):
        module.value_and_grad(np.full(5, 2.0), np.full(5, 0.7), out=out)


def test_inputs_of_other_types_take_the_plain_path():
    module = bpcompile.compile(QUIZ)
    n = BLOCK + 1
    x, z = np.linspace(1.5, 3.0, n), np.linspace(0.5, 1.0, n)
    reference = _plain(module, [x, z])
    for args in ([x.astype(np.float32), z], [x, 0.7], [x.reshape(1, n), z]):
        value, grads = module.value_and_grad(*args)
        _assert_same(module, (value, grads), _plain(module, args))
    # strided inputs are blocked from a copy
    wide = np.stack([x, x]).T.copy()
    _assert_close(module.value_and_grad(wide[:, 0], z), reference)


def test_shapes_of_more_than_one_axis_keep_their_shape():
    module = bpcompile.compile(QUIZ)
    rng = np.random.default_rng(5)
    shape = (3, BLOCK // 2 + 1)
    x, z = rng.uniform(1.5, 3.0, shape), rng.uniform(0.5, 1.0, shape)
    blocked = module.value_and_grad(x, z)
    assert blocked[0].shape == shape and blocked[1][0].shape == shape
    _assert_close(blocked, _plain(module, [x, z]))


def test_a_formula_without_a_ufunc_form_keeps_the_plain_path_only(monkeypatch):
    """When the in-place emitter cannot write a formula (it returns None), the
    module has no blocked kernel and still computes the gradient on large arrays."""
    from bpcompile.memory import blocks
    monkeypatch.setattr(blocks, "ufunc_statements", lambda *args, **kwargs: None)
    module = bpcompile.compile("abs(x)*z + x*z")
    assert not hasattr(module, "_value_and_grad_block")
    n = 20000
    x, z = np.linspace(-1.0, 1.0, n), np.full(n, 2.0)
    value, (dx, dz) = module.value_and_grad(x, z)
    np.testing.assert_array_equal(dx, np.sign(x) * 2.0 + 2.0)
    np.testing.assert_array_equal(dz, np.abs(x) + x)
