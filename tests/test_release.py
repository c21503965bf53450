"""sgd_step lets go of the forward values its backward pass does not read
(planner.released): the `del` comes after their last read and before any later one
could need them, and the step's results are those of value_and_grad."""

import ast
from pathlib import Path

import numpy as np
import pytest

from bpcompile.compiler import compile_file
from bpcompile.result import load_module
from bpcompile.training.gradcheck import random_problem

pytestmark = pytest.mark.both_targets

REPO = Path(__file__).resolve().parent.parent
LAYER_EXAMPLES = ["lenet5.yaml", "lenet5_digits.yaml", "lenet5_1998.yaml", "alexnet_small.yaml",
                  "mlp_digits.yaml"]


def _sgd_step(source):
    tree = ast.parse(source)
    return next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "sgd_step")


@pytest.mark.parametrize("example", LAYER_EXAMPLES)
def test_released_names_are_never_read_again(example):
    step = _sgd_step(compile_file(REPO / "examples" / example).source)
    body = list(ast.walk(step))
    deletes = [n for n in body if isinstance(n, ast.Delete)]
    if example.startswith(("lenet5", "alexnet")):
        assert deletes, "a conv net's sgd_step lets go of its dead forward values"
    for d in deletes:
        released = {t.id for t in d.targets}
        later_loads = [n for n in body if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                       and n.id in released and n.lineno > d.lineno]
        assert not later_loads, [n.id for n in later_loads]


@pytest.mark.parametrize("example", ["lenet5_digits.yaml", "alexnet_small.yaml"])
def test_sgd_step_with_releases_equals_value_and_grad(example):
    compiled = compile_file(REPO / "examples" / example)
    from bpcompile.training.check import float64_module
    module = float64_module(compiled.spec)
    params, x, y = random_problem(module, batch=3, seed=4)
    expected = {k: v.copy() for k, v in params.items()}
    rng = {"rng": np.random.default_rng(1)} if "alexnet" in example else {}
    _, grads = module.value_and_grad(expected, x, y, **rng)
    for k in module.PARAMS:
        expected[k] -= 0.1 * grads[k]
    rng = {"rng": np.random.default_rng(1)} if "alexnet" in example else {}
    module.sgd_step(params, x, y, 0.1, **rng)
    for k in module.PARAMS:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)
