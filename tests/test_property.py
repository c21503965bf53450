"""Property-based tests: random expression text from the whitelist grammar,
compiled, and the gradient compared with finite differences."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import bpcompile
from bpcompile.codegen import targets

from conftest import fd_gradient

# every test runs with modules compiled for each target (conftest.py)
pytestmark = pytest.mark.both_targets

NAMES = ("x", "y", "z")

numbers = st.one_of(
    st.integers(min_value=0, max_value=5).map(str),
    st.floats(min_value=0.1, max_value=3.0, allow_nan=False).map(lambda v: f"{v:.3g}"),
)
leaves = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), numbers)

# functions that are smooth and defined everywhere on the reals
SAFE = ("sin", "cos", "tanh", "sigmoid", "softplus", "arctan", "arcsinh")


def _grow(children):
    pair = st.tuples(children, children)
    return st.one_of(
        pair.map(lambda ab: f"({ab[0]} + {ab[1]})"),
        pair.map(lambda ab: f"({ab[0]} - {ab[1]})"),
        pair.map(lambda ab: f"({ab[0]} * {ab[1]})"),
        pair.map(lambda ab: f"({ab[0]} / (1 + {ab[1]}**2))"),
        children.map(lambda a: f"(-{a})"),
        st.tuples(children, st.sampled_from(["2", "3"])).map(lambda ab: f"({ab[0]})**{ab[1]}"),
        st.tuples(children, st.sampled_from(["0.5", "-1.5", "2.5", "-1"])).map(
            lambda ab: f"(1 + ({ab[0]})**2)**{ab[1]}"),
        pair.map(lambda ab: f"pow(1 + ({ab[0]})**2, tanh({ab[1]}))"),
        st.tuples(st.sampled_from(SAFE), children).map(lambda fa: f"{fa[0]}({fa[1]})"),
        children.map(lambda a: f"exp(sin({a}))"),
        children.map(lambda a: f"exp(tanh({a}))"),
        children.map(lambda a: f"log(1 + ({a})**2)"),
        children.map(lambda a: f"log(exp(tanh({a})))"),
        children.map(lambda a: f"log(1 + ({a})**2, 2)"),
        children.map(lambda a: f"sqrt(1 + ({a})**2)"),
        children.map(lambda a: f"sqrt(exp({a}/(1 + ({a})**2)))"),
        children.map(lambda a: f"tan(tanh({a}))"),
        children.map(lambda a: f"sinh(tanh({a}))"),
        children.map(lambda a: f"cosh(sin({a}))"),
    )


expressions = st.recursive(leaves, _grow, max_leaves=10)
points = st.floats(min_value=-2.0, max_value=2.0, allow_nan=False, allow_infinity=False)


def _compile(text):
    try:
        return bpcompile.compile(text)
    except bpcompile.SpecError as err:
        # acceptable refusals of grammar text: a constant that folds to something too large,
        # a text whose names all fold away, or text beyond the size and nesting limits
        assert re.search(r"constant|no inputs|too long|nested too deeply", err.message), (text, str(err))
        assume(False)


def target_settings(numpy, numba):
    """Hypothesis settings with the example count for the target under test: `numba`
    examples with the numba target, where each random program costs a compilation
    of its loops (about a second), else `numpy`."""
    count = numba if targets.DEFAULT_TARGET == "numba" else numpy
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_random_expression_gradient_matches_finite_differences():
    target_settings(numpy=60, numba=20)(given(text=expressions, values=st.tuples(points, points, points))(
        _random_expression_gradient_matches_finite_differences))()


def _random_expression_gradient_matches_finite_differences(text, values):
    assume(re.search(r"\b[xyz]\b", text))
    module = _compile(text)
    assume(module.INPUTS)
    point = dict(zip(NAMES, values))
    args = [point[n] for n in module.INPUTS]
    with np.errstate(all="ignore"):
        value, grads = module.value_and_grad(*args)
        assume(np.isfinite(value) and abs(value) < 1e8)
        assume(all(np.isfinite(g) for g in grads))
        assert module.evaluate(*args) == value
        for name, grad in zip(module.WRT, grads):
            numeric = fd_gradient(module.evaluate, args, module.INPUTS.index(name))
            assume(np.all(np.isfinite(numeric)))
            scale = max(abs(float(grad)), abs(float(numeric)))
            assert abs(float(grad) - float(numeric)) <= 1e-6 * scale + 1e-9 * (1 + abs(value)), \
                (text, name, args, grad, numeric)


def test_random_expression_on_broadcast_arrays():
    check = given(text=expressions, seed=st.integers(0, 2**32 - 1))(_random_expression_on_broadcast_arrays)
    for text, seed in [("(x * y) * z", 0), ("(x + y)", 1), ("exp(sin(x)) + tanh(y) * z", 2)]:
        check = example(text=text, seed=seed)(check)
    target_settings(numpy=25, numba=12)(check)()


def _random_expression_on_broadcast_arrays(text, seed):
    assume(re.search(r"\b[xyz]\b", text))
    module = _compile(text)
    assume(module.INPUTS)
    rng = np.random.default_rng(seed)
    shapes = {"x": (2, 1), "y": (3,), "z": ()}
    point = {n: rng.uniform(-1.5, 1.5, shapes[n]) for n in NAMES}
    args = [point[n] for n in module.INPUTS]
    with np.errstate(all="ignore"):
        value, grads = module.value_and_grad(*args)
        assume(np.all(np.isfinite(value)) and np.max(np.abs(value)) < 1e8)
        for name, grad in zip(module.WRT, grads):
            i = module.INPUTS.index(name)
            assert np.shape(grad) == np.shape(args[i]), (text, name)
            numeric = fd_gradient(module.evaluate, args, i)
            assume(np.all(np.isfinite(numeric)))
            error = np.linalg.norm(np.ravel(grad) - np.ravel(numeric))
            scale = max(np.linalg.norm(grad), np.linalg.norm(numeric))
            allowed = 1e-6 * scale + 1e-9 * (1 + np.max(np.abs(value))) * np.size(value)
            assert error <= allowed, (text, name, grad, numeric)


@settings(max_examples=30, deadline=None)
@given(text=expressions)
def test_compiling_is_deterministic(text):
    assume(re.search(r"\b[xyz]\b", text))
    first = _compile(text)
    assume(first.INPUTS)
    assert bpcompile.compile(text).SOURCE == first.SOURCE
