"""Convolutional layer specs: gradients, shape errors, LeNet-5 and AlexNet, IDX data."""

import ast
import gzip
import struct
import sys
import textwrap

import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.compiler import compile_file, compile_spec, load_module, load_spec
from bpcompile.training.gradcheck import layer_gradient_errors, random_problem
from bpcompile.training.check import float64_module

pytestmark = pytest.mark.both_targets

TOL = 1e-6


def module_from(text):
    compiled = compile_spec(load_spec(textwrap.dedent(text), "spec.yaml"))
    return load_module(compiled.source, compiled.name)


def conv_spec(conv, input_shape, pool=None, classes=3):
    layers = [f"conv2d: {conv}", "tanh"] + ([f"maxpool2d: {pool}"] if pool else []) + \
             ["flatten", f"linear: {classes}"]
    body = "\n".join(f"  - {layer}" for layer in layers)
    return f"name: net\ndtype: float64\ninput: {input_shape}\nlayers:\n{body}\nloss: softmax_cross_entropy\n"


@pytest.mark.parametrize("conv,input_shape", [
    ("{out_channels: 2, kernel: 3}", [1, 5, 5]),
    ("{out_channels: 3, kernel: 3, stride: 2}", [2, 7, 7]),
    ("{out_channels: 2, kernel: 3, stride: 2, padding: 1}", [2, 8, 6]),      # last window does not fit
    ("{out_channels: 4, kernel: [2, 3], padding: [2, 1]}", [3, 5, 6]),       # non-square kernel
    ("{out_channels: 2, kernel: [3, 2], stride: [2, 1], padding: 2}", [1, 6, 5]),
    ("{out_channels: 3, kernel: 1, bias: false}", [2, 4, 4]),
    ("{out_channels: 4, kernel: 3, dilation: 2, stride: 2, padding: 1}", [2, 8, 7]),   # dilation with stride
    ("{out_channels: 4, kernel: [2, 3], groups: 2, dilation: [1, 2], bias: false}", [4, 5, 7]),
])
def test_conv2d_layer_gradients_match_finite_differences(conv, input_shape):
    module = module_from(conv_spec(conv, input_shape))
    params, x, y = random_problem(module, batch=3, seed=len(conv))
    errors = layer_gradient_errors(module, params, x, y)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("pool", ["{kernel: 2}", "{kernel: 2, stride: 1}", "{kernel: 3, stride: 2}",
                                  "{kernel: [2, 3], stride: [1, 2]}"])
def test_maxpool_layer_gradients_match_finite_differences(pool):
    module = module_from(conv_spec("{out_channels: 3, kernel: 2, padding: 1}", [2, 7, 7], pool))
    params, x, y = random_problem(module, batch=2, seed=5)
    errors = layer_gradient_errors(module, params, x, y)
    assert max(errors.values()) < TOL, errors


def test_input_gradient_of_a_stacked_conv_net_matches_finite_differences():
    """Two conv layers, so the first conv's input-side backward (dx) is exercised."""
    text = """
        name: net
        dtype: float64
        input: [2, 9, 9]
        layers:
          - conv2d: {out_channels: 3, kernel: 3, stride: 2, padding: 1}
          - relu
          - conv2d: {out_channels: 4, kernel: 2}
          - maxpool2d: {kernel: 2, stride: 1}
          - flatten
          - linear: 3
        loss: mse
    """
    module = module_from(text)
    params, x, y = random_problem(module, batch=2, seed=11)
    errors = layer_gradient_errors(module, params, x, y)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("path", ["examples/lenet5.yaml", "examples/alexnet_small.yaml"])
def test_whole_networks_at_float64(path):
    module = float64_module(compile_file(path).spec)
    params, x, y = random_problem(module, batch=2, seed=1)
    errors = layer_gradient_errors(module, params, x, y, max_entries=25, seed=2)
    assert max(errors.values()) < TOL, errors


def test_alexnet_compiles_with_the_papers_shapes():
    compiled = compile_file("examples/alexnet.yaml")
    module = load_module(compiled.source, compiled.name)
    assert module.PARAMS["conv2d1.W"] == (96, 3, 11, 11)
    assert module.PARAMS["linear1.W"] == (4096, 9216)          # 256 * 6 * 6
    assert module.PARAMS["linear3.W"] == (1000, 4096)
    shapes = {n.name: n.shape for n in compiled.graph}
    assert shapes["conv2d1"] == ("B", 96, 55, 55)
    assert shapes["maxpool2d3"] == ("B", 256, 6, 6)


@pytest.mark.parametrize("layers,message", [
    ("  - conv2d: {out_channels: 2, kernel: 7}\n", "the kernel height 7 is larger than the padded input height 5"),
    ("  - conv2d: {out_channels: 2, kernel: 3}\n  - linear: 3\n", "add a flatten layer before it"),
    ("  - conv2d: {out_channels: 2, kernel: 3, in_channels: 3}\n", "in_channels is 3, but the input has 1 channels"),
    ("  - maxpool2d: {kernel: 6}\n", "the window height 6 is larger than the padded input height 5"),
    ("  - maxpool2d: {kernel: 2, dilation: 5}\n", "the dilated window height 6 (window 2, dilation 5) is larger"),
    ("  - conv2d: {out_channels: 3, kernel: 3, groups: 2}\n", "groups 2 does not divide in_channels 1"),
    ("  - conv2d: {out_channels: 2, kernel: 0}\n", "kernel must be a positive integer"),
    ("  - conv2d: {out_channels: 2, kernel: 3, padding: -1}\n", "padding must be a non-negative integer"),
    ("  - flatten\n  - conv2d: {out_channels: 2, kernel: 3}\n", "conv2d needs a (B, channels, height, width) input"),
])
def test_shape_errors_name_the_layer(tmp_path, capsys, layers, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: net\ninput: [1, 5, 5]\nlayers:\n" + layers
                    + "  - flatten\n  - linear: 2\nloss: softmax_cross_entropy\n")
    assert main([str(spec), "-o", str(tmp_path / "out.py")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{spec}:") and " error: layer " in err and message in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "out.py").exists()


def test_generated_conv_code_has_no_add_at_and_no_python_loops_over_examples(code_target):
    source = compile_file("examples/lenet5.yaml").source
    assert "add.at" not in source
    assert "sliding_window_view" in source
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    allowed = {"numpy", "numpy.lib.stride_tricks"} | ({"numba"} if code_target == "numba" else set())
    standard = {name for name in imported if name.split(".")[0] in sys.stdlib_module_names}
    assert imported - standard <= allowed, imported


def test_lenet5_digits_reaches_97_percent():
    from bpcompile.training import datasets, train
    from bpcompile.cli.train_command import fit_to_module
    compiled = compile_file("examples/lenet5_digits.yaml")
    module = load_module(compiled.source, compiled.name)
    data = fit_to_module(module, datasets.load_digits("float32"))
    params, history = train.train(module, data, epochs=12, lr=0.05, batch_size=16, seed=0,
                                  progress=False)
    assert history[-1]["test_acc"] >= 0.97, history[-1]


def _write_idx(path, array):
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def test_train_lenet5_on_mnist_idx_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 32), ("t10k", 16)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                   rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    assert main(["train", "examples/lenet5.yaml", "--data", str(tmp_path), "--epochs", "1",
                 "--batch-size", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "32 train / 16 test" in out and "epoch 1/1" in out
