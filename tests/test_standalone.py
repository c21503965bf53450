"""Generated modules need only NumPy: import one in a fresh interpreter where
sympy, jinja2, yaml and bpcompile cannot be imported, and use it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bpcompile import compile_file
from bpcompile.cli.main import main

from conftest import EXAMPLES

RUNNER = r"""
import importlib.abc, importlib.util, json, sys

BLOCKED = {"sympy", "jinja2", "yaml", "bpcompile", "mpmath", "markupsafe"}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"{fullname} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    assert name not in sys.modules, name
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"could import {name}")

import numpy as np

path, args_json = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("generated_model", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

args = [np.asarray(a, dtype=np.float64) for a in json.loads(args_json)]
value, grads = module.value_and_grad(*args)
value2, cache = module.forward(*args)
seeded = module.backward(cache, 2.0)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({
    "inputs": list(module.INPUTS), "wrt": list(module.WRT),
    "value": np.asarray(value).tolist(), "evaluate": np.asarray(module.evaluate(*args)).tolist(),
    "grads": [np.asarray(g).tolist() for g in grads],
    "seeded": [np.asarray(g).tolist() for g in seeded],
    "leaked": leaked,
}))
"""


def _run(path, args, cwd):
    result = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(path), json.dumps(args)],
                            capture_output=True, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


@pytest.mark.parametrize("example,args", [
    ("quiz.yaml", [[2.0, 1.7, 2.9], [3.0, 1.2, 3.5]]),
    ("logistic_regression.yaml", [0.1, -0.5, 0.8, [1.5, 0.2], [-0.3, 1.1], [1.0, 0.0]]),
    ("simple.yaml", [[0.3, -1.1, 1.9]]),
])
def test_generated_module_runs_without_the_compiler(tmp_path, example, args):
    out = tmp_path / "model.py"
    assert main([str(EXAMPLES / example), "-o", str(out)]) == 0
    got = _run(out, args, tmp_path)
    assert got["leaked"] == []
    # the same numbers as the module loaded here, next to the compiler
    compiled = compile_file(EXAMPLES / example)
    from bpcompile import load_module
    here = load_module(compiled.source)
    np_args = [np.asarray(a, dtype=np.float64) for a in args]
    value, grads = here.value_and_grad(*np_args)
    assert got["inputs"] == list(here.INPUTS) and got["wrt"] == list(here.WRT)
    np.testing.assert_allclose(got["value"], value, rtol=1e-15)
    np.testing.assert_allclose(got["evaluate"], value, rtol=1e-15)
    assert len(got["grads"]) == len(grads)
    for a, b, s in zip(got["grads"], grads, got["seeded"]):
        np.testing.assert_allclose(a, b, rtol=1e-15)
        np.testing.assert_allclose(s, 2.0 * np.asarray(b), rtol=1e-15)


def test_standalone_quiz_gradient_is_the_lecture_answer(tmp_path):
    out = tmp_path / "quiz.py"
    assert main([str(EXAMPLES / "quiz.yaml"), "-o", str(out)]) == 0
    got = _run(out, [2.0, 3.0], tmp_path)
    dx, dz = got["grads"]
    assert round(dx, 2) == 1208.38 and round(dz, 2) == 809.71


def test_the_blocker_really_blocks(tmp_path):
    # guard against a runner that silently imports the compiler: a module that needs
    # sympy must fail under the same runner
    bad = tmp_path / "bad.py"
    bad.write_text("import sympy\nINPUTS = ('x',)\n")
    result = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(bad), "[1.0]"],
                            capture_output=True, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert b"blocked" in result.stderr


LAYER_RUNNER = RUNNER.split("path, args_json")[0] + r"""
path, state_path = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("generated_model", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

params = module.init_params(0)
rng = np.random.default_rng(0)
if module.SEQUENCE:
    x, y = [1, 2, 3], [0, 1, 2]                   # one sentence, as lists
else:
    x, y = rng.normal(size=module.INPUT_SHAPE).tolist(), 3    # one example, float64 list
losses = []
for update, options in ((module.sgd_update, {"lr": 0.01, "momentum": 0.9}),
                        (module.adam_update, {"lr": 1e-3}), (module.adamw_update, {"lr": 1e-3})):
    state = {}
    for _ in range(3):
        J, grads = module.value_and_grad(params, x, y)
        update(params, grads, state, **options)
        losses.append(float(J))
np.savez(state_path, **state)
logits = module.predict(params, x, logits=True)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"losses": losses, "logits_shape": list(logits.shape), "leaked": leaked,
                  "state": sorted(state)[:3]}))
"""


@pytest.mark.parametrize("example", ["mlp_digits.yaml", "pos_tagger.yaml"])
def test_a_layer_module_trains_with_its_optimizers_without_the_compiler(tmp_path, example):
    out = tmp_path / "model.py"
    assert main([str(EXAMPLES / example), "-o", str(out)]) == 0
    result = subprocess.run([sys.executable, "-I", "-c", LAYER_RUNNER, str(out), str(tmp_path / "s.npz")],
                            capture_output=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["leaked"] == []
    assert report["losses"][-1] < report["losses"][0]
    assert report["state"][0].startswith("exp_avg/")
    with np.load(tmp_path / "s.npz") as saved:
        assert int(saved["step"]) == 3 and saved["step"].dtype == np.int64
    expected = [3, 17] if example == "pos_tagger.yaml" else [10]
    assert report["logits_shape"][-1] == expected[-1] and len(report["logits_shape"]) == len(expected)


MODES_RUNNER = RUNNER.split("path, args_json")[0] + r"""
path, piece_path = sys.argv[1], sys.argv[2]

def load(name, file):
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

module, piece = load("generated_model", path), load("generated_piece", piece_path)
params = module.init_params(0)
rng = np.random.default_rng(0)
x, y = rng.normal(size=(8,) + module.INPUT_SHAPE), np.arange(8) % 3
losses = [float(module.sgd_step(params, x, y, 0.1, rng=np.random.default_rng(k))) for k in range(5)]
piece_params = piece.init_params(0)
out, grads, dx = piece.vjp(piece_params, x, np.ones((8,) + piece.OUTPUT_SHAPE), rng=np.random.default_rng(0))
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"losses": losses, "moved": float(np.abs(params["batchnorm1.running_mean"]).sum()),
                  "predict_shape": list(module.predict(params, x).shape), "out_shape": list(out.shape),
                  "dx_shape": list(dx.shape), "leaked": leaked}))
"""


def test_modules_with_dropout_batchnorm_and_no_loss_run_without_the_compiler(tmp_path):
    layers = "layers:\n  - linear: 6\n  - batchnorm\n  - relu\n  - dropout: 0.3\n"
    (tmp_path / "net.yaml").write_text(
        f"name: net\ninput: [4]\n{layers}  - linear: 3\nloss: softmax_cross_entropy\n")
    (tmp_path / "piece.yaml").write_text(f"name: piece\ninput: [4]\n{layers}loss: none\n")
    for stem in ("net", "piece"):
        assert main([str(tmp_path / f"{stem}.yaml"), "-o", str(tmp_path / f"{stem}.py")]) == 0
    result = subprocess.run([sys.executable, "-I", "-c", MODES_RUNNER, str(tmp_path / "net.py"),
                             str(tmp_path / "piece.py")], capture_output=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["leaked"] == []
    assert report["losses"][-1] < report["losses"][0]
    assert report["moved"] > 0              # sgd_step moved the running mean
    assert report["predict_shape"] == [8, 3]
    assert report["out_shape"] == [8, 6] and report["dx_shape"] == [8, 4]
