"""Property: every layer spec is refused with a located SpecError, or compiles into a
module that imports and runs, whose parameter keys are unique and whose float64
gradients equal central finite differences (issue 9, "Proof").

The specs (tests/spec_strategies.py) are random stacks of every layer kind, random
recurrent cells (repeated subexpressions and products, products of products, cells
without parameters, 1 or 2 states) and random names drawn from a pool that holds the
generated modules' own names, Python builtins and NumPy names.

    python3 -m pytest tests/test_random_specs.py                 # 300 examples, deterministic
    BPCOMPILE_NIGHTLY=1 python3 -m pytest tests/test_random_specs.py   # 3000 examples
    ... --hypothesis-show-statistics                               # what was drawn, per kind

A summary of the kinds drawn is printed at the end of the session (conftest.py).
"""

import collections
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings

from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.errors import SpecError

from spec_strategies import pool_kind, specs

pytestmark = pytest.mark.both_targets

settings.register_profile(
    "default", max_examples=300, deadline=None, derandomize=True, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much])
settings.register_profile(
    "nightly", max_examples=3000, deadline=None, derandomize=False, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much])
PROFILE = "nightly" if os.environ.get("BPCOMPILE_NIGHTLY") else "default"

FILE = "spec.yaml"
TOL = 1e-5                 # norm-wise relative error of a directional derivative
B, T = 2, 3

COUNTS = collections.Counter()


def summary_lines():
    """How many specs of each kind were drawn: conftest.py prints them after the run."""
    if not COUNTS:
        return []
    lines = [f"test_random_specs: what was drawn ({PROFILE} profile)"]
    lines += [f"  {key:40s} {count}" for key, count in sorted(COUNTS.items())]
    return lines


def _count(label):
    COUNTS[label] += 1
    event(label)


# --- the checks ---------------------------------------------------------------------

LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$", re.S)


def check_refusal(err, drawn):
    """A SpecError must be located in the spec: our file, a real line and column, and
    an error about layer N must point into layer N's lines."""
    text = str(err)
    m = LOCATED.match(text)
    assert m, f"SpecError not of the form FILE:LINE:COL: error: ...: {text!r}"
    assert m["file"] == FILE, f"SpecError not located in the spec file: {text!r}"
    lines = drawn.text.splitlines()
    line, col = int(m["line"]), int(m["col"])
    assert 1 <= line <= len(lines), f"line {line} outside the spec ({len(lines)} lines): {text!r}"
    assert 1 <= col <= len(lines[line - 1]) + 1, f"column {col} outside line {line}: {text!r}"
    layer = re.match(r"layer (\d+)\b", m["msg"])
    if layer:
        k = int(layer[1])
        assert 1 <= k <= len(drawn.layer_lines), text
        first, last = drawn.layer_lines[k - 1]
        assert first <= line <= last, (f"error about layer {k} located at line {line}, "
                                       f"but the layer is lines {first}-{last}: {text!r}")


def inputs(module, rng, batch):
    if module.SEQUENCE:
        if getattr(module, "VOCAB", None):
            x = rng.integers(0, module.VOCAB, (batch, T))
        else:
            x = rng.normal(size=(batch, T) + tuple(module.INPUT_SHAPE))
        if module.LOSS == "softmax_cross_entropy":
            y = rng.integers(0, module.OUTPUTS, (batch, T))
        elif module.LOSS == "mse":
            y = rng.normal(size=(batch, T, module.OUTPUTS))
        else:
            y = rng.integers(0, 2, (batch, T, module.OUTPUTS)).astype(np.float64)
        return x, y
    x = rng.normal(size=(batch,) + tuple(module.INPUT_SHAPE))
    if module.LOSS == "softmax_cross_entropy":
        y = rng.integers(0, module.OUTPUTS, batch)
    elif module.LOSS == "mse":
        y = rng.normal(size=(batch, module.OUTPUTS))
    else:
        y = rng.integers(0, 2, (batch, module.OUTPUTS)).astype(np.float64)
    return x, y


def directional_check(loss, analytic, array, rng, what, J0):
    """Compare analytic . v with central differences of loss() along a random unit
    direction v in `array` (changed in place and restored).  Returns the relative
    error, or None at a kink (the estimates at steps h and h/2 disagree)."""
    v = rng.normal(size=array.shape)
    v /= np.linalg.norm(v) or 1.0
    original = array.copy()
    h = 1e-5 * max(1.0, float(np.max(np.abs(array))) if array.size else 1.0)

    def central(step):
        array[...] = original + step * v
        plus = loss()
        array[...] = original - step * v
        minus = loss()
        array[...] = original
        return (plus - minus) / (2 * step)

    d1, d2 = central(h), central(h / 2)
    numeric = (4 * d2 - d1) / 3                    # Richardson: truncation O(h^4)
    exact = float(np.sum(analytic * v))
    floor = 1e-5 * max(1.0, abs(J0))
    scale = max(abs(exact), abs(numeric), np.linalg.norm(analytic) / np.sqrt(array.size), floor)
    if abs(d1 - d2) > 1e-6 * scale:               # a kink (relu, max, abs) within h: skip
        return None
    return abs(exact - numeric) / scale


def check_module(module, drawn, seed):
    rng = np.random.default_rng(seed)
    keys = list(module.PARAMS)
    assert len(set(keys)) == len(keys)
    assert len(keys) == drawn.expected_params, (
        f"{len(keys)} parameter arrays, expected {drawn.expected_params} (keys collide?): {keys}")
    init = module.init_params(0)
    assert list(init) == keys, (list(init), keys)
    params = {k: rng.normal(0.0, 0.6, np.shape(init[k])) for k in keys}
    for k in keys:
        assert params[k].shape == tuple(module.PARAMS[k]), (k, params[k].shape, module.PARAMS[k])
    x, y = inputs(module, rng, B)
    extra = ()
    if module.SEQUENCE:
        mask = np.ones((B, T))
        if rng.random() < 0.7:
            for b in range(B):
                mask[b, rng.integers(1, T + 1):] = 0
        _, cache = module.forward(params, x, y, mask)
        state = None
        if rng.random() < 0.6:
            state = {k: rng.normal(size=np.shape(v)) for k, v in cache["state"].items()}
        extra = (mask, state)
    J, cache = module.forward(params, x, y, *extra)
    assert np.isfinite(J), J
    if module.SEQUENCE:
        J2, grads, state_grads = module.value_and_grad(params, x, y, *extra, state_grad=True)
    else:
        (J2, grads), state_grads = module.value_and_grad(params, x, y), None
    assert abs(J2 - J) <= 1e-12 * max(1.0, abs(J)), (J, J2)
    assert sorted(grads) == sorted(keys), (sorted(grads), sorted(keys))

    def loss():
        return module.forward(params, x, y, *extra)[0]

    errors, kinks = {}, 0
    targets = [(k, grads[k], params[k]) for k in keys]
    if module.SEQUENCE and extra[1] is not None:
        assert sorted(state_grads) == sorted(extra[1])
        targets += [(f"state:{k}", state_grads[k], extra[1][k]) for k in extra[1]]
    for key, analytic, array in targets:
        assert np.shape(analytic) == array.shape, (key, np.shape(analytic), array.shape)
        assert np.all(np.isfinite(analytic)), key
        err = directional_check(loss, np.asarray(analytic), array, rng, key, J)
        if err is None:
            kinks += 1
            continue
        errors[key] = err
    if kinks:
        _count("gradient-check: skipped a direction at a kink")
    note(f"relative errors: {errors}")
    bad = {k: e for k, e in errors.items() if not e <= TOL}
    assert not bad, f"gradients differ from finite differences: {bad}"

    # sgd_step: params - lr * gradient, for the batch and for one example (its own path)
    lr = 0.1
    for batch in (B, 1):
        xb, yb = (x[:batch], y[:batch])
        more = ()
        if module.SEQUENCE:
            more = (extra[0][:batch], None)
        _, g = module.value_and_grad(params, xb, yb, *more)
        stepped = {k: v.copy() for k, v in params.items()}
        module.sgd_step(stepped, xb, yb, lr, *more)
        for k in keys:
            expected = params[k] - lr * g[k]
            scale = max(1.0, float(np.max(np.abs(expected))))
            assert np.max(np.abs(stepped[k] - expected)) <= 1e-9 * scale, (
                f"sgd_step (batch {batch}) is not params - lr * grad for {k}")
    module.predict(params, x, *extra)


@settings.get_profile(PROFILE)
@given(specs(), __import__("hypothesis").strategies.integers(0, 2**32 - 1))
def test_random_spec_is_refused_with_a_location_or_correct(drawn, seed):
    note(drawn.text)
    for label in drawn.labels:
        _count(label)
    for name in drawn.names_used:
        _count(f"pool:{pool_kind(name)}")
    try:
        compiled = compile_spec(load_spec(drawn.text, FILE))
    except SpecError as err:
        _count("outcome:refused")
        _count("refused: " + err.message.split(":")[-1].strip()[:40])
        note(f"refused: {err}")
        check_refusal(err, drawn)
        return
    _count("outcome:compiled")
    module = load_module(compiled.source, compiled.name)
    check_module(module, drawn, seed)
    _count("outcome:checked")
