"""Issue 10, item by item: what a careless or hostile user meets, and what must
still work (the refusals themselves are in test_hostile_corpus.py)."""

import os
import re
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import bpcompile
from bpcompile import SpecError, limits
from bpcompile.cli.main import main
from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.cli.output import check_output, generated_by_us

from conftest import EXAMPLES, REPO

ERROR = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+\n\Z")
MLP = "name: net\ninput: [64]\nlayers:\n  - linear: 10\nloss: softmax_cross_entropy\n"


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")


def _cli(*argv, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "bpcompile.cli", *map(str, argv)], cwd=cwd,
                          env=_env(), capture_output=True, timeout=120, **kwargs)


# --- --help and --version -------------------------------------------------------------------

def test_help_and_version_import_neither_sympy_nor_numpy(tmp_path):
    probe = ("import sys, runpy; sys.argv = ['bpcompile', '--version']\n"
             "try:\n    runpy.run_module('bpcompile.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('sympy' in sys.modules, 'numpy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[-1] == "False False"


def test_cli_module_itself_imports_no_sympy_or_numpy_at_the_top():
    text = (REPO / "bpcompile" / "cli" / "main.py").read_text()
    top = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top if "numpy" in line or "sympy" in line or "compiler" in line]


# --- constant folding ---------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("relu(2)*x", 2.0), ("relu(-1)*x", 0.0),
                                         ("softplus(1)*x", np.log1p(np.e)),
                                         ("sigmoid(-800)*x", 0.0), ("2**-2000*x", 0.0),
                                         ("pow(2, 10)*x", 1024.0), ("10**300*x", 1e300)])
def test_valid_constants_fold(text, value):
    module = bpcompile.compile(text)
    y, (dx,) = module.value_and_grad(1.0)
    assert float(dx) == pytest.approx(value, rel=1e-12, abs=0)


@pytest.mark.parametrize("text", ["pow(10, 10**10)*x", "pow(10, 10**7)*x", "10**10**10*x"])
def test_huge_powers_are_refused_at_once(text):
    start = time.perf_counter()
    with pytest.raises(SpecError, match=r"too large.*1e\+300"):
        bpcompile.compile(text)
    assert time.perf_counter() - start < 1


# --- YAML and the API --------------------------------------------------------------------

def test_alias_bomb_is_refused_without_expanding_it():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    start = time.perf_counter()
    with pytest.raises(SpecError, match=f"more than {limits.MAX_YAML_NODES} values"):
        load_spec("\n".join(lines) + "\ninputs: *a9\nexpr: x\n")
    assert time.perf_counter() - start < 1


def test_small_aliases_still_work():
    text = "inputs: &d [x, y]\nexpr: x*y\nwrt: *d\n"
    compiled = compile_spec(
        load_spec(text))
    assert list(compiled.graph.inputs) == ["x", "y"]


def test_echoed_values_are_short():
    with pytest.raises(SpecError) as err:
        bpcompile.compile({"expr": "x", "inputs": ["a" * 100_000, 5]})
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("call, message", [
    (lambda: bpcompile.compile({"expr": np.float64(1)}), "float64"),
    (lambda: bpcompile.compile("x", inputs=5), "inputs"),
    (lambda: bpcompile.compile("x", wrt=[1]), "wrt"),
    (lambda: bpcompile.compile("x", name=3), "name"),
    (lambda: bpcompile.compile(3), "cannot compile"),
    (lambda: bpcompile.graph(5), "graph"),
    (lambda: bpcompile.compile_file(5), "file name")])
def test_api_misuse_is_a_spec_error(call, message):
    with pytest.raises(SpecError, match=message):
        call()


def test_api_accepts_a_tuple_or_a_comma_string_of_inputs():
    assert bpcompile.compile("x*y", inputs=("y", "x")).INPUTS == ("y", "x")
    assert bpcompile.compile("x*y", inputs="y, x").INPUTS == ("y", "x")


def test_spec_bytes_limit(tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_bytes(b"expr: x\n" + b"#" * limits.MAX_SPEC_BYTES)
    with pytest.raises(SpecError, match=f"more than {limits.MAX_SPEC_BYTES} bytes"):
        bpcompile.compile_file(spec)


# --- expressions that start with "-" -------------------------------------------------------

@pytest.mark.parametrize("argv", [["expr", "-x"], ["expr", "--", "-x"], ["expr", "--name", "m", "-x"],
                                  ["expr", "-x", "--name", "m"], ["expr", "-o", "-", "-x"],
                                  ["expr", "--x"], ["expr", "-(x)"]])
def test_expression_starting_with_minus(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    module = bpcompile.load_module(out)
    y, (dx,) = module.value_and_grad(2.0)
    assert float(dx) == (1.0 if argv[-1] == "--x" else -1.0)


def test_options_after_the_expression_are_still_options(tmp_path, capsys):
    out = tmp_path / "m.py"
    assert main(["expr", "-x", "-o", str(out), "--inputs", "x"]) == 0
    assert out.read_text().startswith("# @generated by bpcompile")
    assert capsys.readouterr().out == ""


# --- output files ---------------------------------------------------------------------------

def test_dash_is_standard_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(EXAMPLES / "simple.yaml"), "-o", "-"]) == 0
    assert capsys.readouterr().out.startswith("# @generated by bpcompile")
    assert list(tmp_path.iterdir()) == []


def test_dev_stdout_into_a_pipe_is_refused_at_once(tmp_path):
    """The overwrite check never opens a pipe (it used to read its own output and hang)."""
    result = subprocess.run(f"{sys.executable} -m bpcompile.cli {EXAMPLES / 'simple.yaml'} "
                            "-o /dev/stdout | cat", shell=True, cwd=tmp_path, env=_env(),
                            capture_output=True, timeout=60)
    err = result.stderr.decode()
    assert ERROR.match(err) and "use -o - for standard output" in err
    assert result.stdout == b""


def test_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for force in (False, True):
        with pytest.raises(SpecError, match="pipe"):
            check_output(fifo, force=force)
    assert not generated_by_us(fifo)          # returns at once: opened non-blocking, fstat first


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_devices_and_sockets_are_refused_even_with_force(tmp_path, monkeypatch, kind):
    target = tmp_path / "dev"
    target.write_text("")
    real = os.stat(target)
    fake = os.stat_result((kind | 0o666,) + tuple(real)[1:])
    monkeypatch.setattr("bpcompile.cli.output.os.lstat", lambda path: fake)
    monkeypatch.setattr("bpcompile.cli.output.os.stat", lambda path: fake)
    with pytest.raises(SpecError, match="device|socket"):
        check_output(target, force=True)


def test_dev_null_is_refused_without_being_touched():
    before = os.stat("/dev/null")
    with pytest.raises(SpecError, match="character device"):
        check_output("/dev/null")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and before.st_ino == after.st_ino


def test_dangling_symlink_needs_force_and_then_only_the_link_is_replaced(tmp_path, capsys):
    link = tmp_path / "link.py"
    link.symlink_to(tmp_path / "target.py")
    assert main([str(EXAMPLES / "simple.yaml"), "-o", str(link)]) == 1
    assert "dangling" in capsys.readouterr().err and link.is_symlink()
    assert main([str(EXAMPLES / "simple.yaml"), "-o", str(link), "--force"]) == 0
    assert not link.is_symlink() and link.read_text().startswith("# @generated")
    assert not (tmp_path / "target.py").exists()


def test_an_over_long_file_name_is_one_error_line(tmp_path, capsys):
    assert main([str(EXAMPLES / "simple.yaml"), "-o", str(tmp_path / ("m" * 300 + ".py"))]) == 1
    err = capsys.readouterr().err
    assert ERROR.match(err) and "too long" in err
    assert list(tmp_path.iterdir()) == []


def test_written_files_are_world_readable_and_no_temporary_files_remain(tmp_path):
    out = tmp_path / "m.py"
    assert main([str(EXAMPLES / "simple.yaml"), "-o", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["m.py"]


# --- train: outputs and arguments ------------------------------------------------------------

def test_train_save_and_plot_can_be_repeated_and_need_force_over_other_files(tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    save, plot = tmp_path / "p.npz", tmp_path / "c.png"
    argv = ["train", str(spec), "--epochs", "1", "--quiet", "--save", str(save), "--plot", str(plot)]
    assert main(argv) == 0
    assert main(argv) == 0                     # bpcompile's own files: replaced without --force
    from bpcompile.training.train import load_params
    assert sorted(load_params(save)) == ["linear1.W", "linear1.b"]   # a checkpoint: params and more
    assert {"linear1.W", "linear1.b"} <= set(np.load(save).files)   # each param under its own key
    assert plot.read_bytes().startswith(b"\x89PNG")
    mine = tmp_path / "mine.npz"
    np.savez(mine, a=np.zeros(3))
    capsys.readouterr()
    assert main(["train", str(spec), "--epochs", "1", "--quiet", "--save", str(mine)]) == 1
    assert "--force" in capsys.readouterr().err
    assert sorted(np.load(mine).files) == ["a"]
    assert main(["train", str(spec), "--epochs", "1", "--quiet", "--save", str(mine), "--force"]) == 0
    assert "linear1.W" in np.load(mine).files


def test_train_refuses_to_save_over_its_spec(tmp_path, capsys):
    spec = tmp_path / "victim.yaml"
    spec.write_text(MLP)
    assert main(["train", str(spec), "--epochs", "1", "--quiet", "--save", str(spec)]) == 1
    assert spec.read_text() == MLP
    assert capsys.readouterr().out == ""         # refused before training started


def test_train_checks_the_save_directory_before_training(tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    assert main(["train", str(spec), "--epochs", "1", "--quiet", "--save", str(tmp_path / "no" / "p.npz")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and ERROR.match(err) and "no" in err


@pytest.mark.parametrize("argv, spec_extra, message", [
    (["--lr", "nan"], "", "--lr"), (["--lr", "inf"], "", "--lr"),
    ([], "train: {lr: .nan}\n", "train.lr"), ([], "train: {lr: .inf}\n", "train.lr")])
def test_train_validates_the_learning_rate_up_front(tmp_path, capsys, argv, spec_extra, message):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP + spec_extra)
    assert main(["train", str(spec), "--quiet", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == "" and ERROR.match(err) and message in err


def test_train_into_a_closed_pipe_ends_quietly(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(MLP)
    result = subprocess.run(f"{sys.executable} -m bpcompile.cli train {spec} --epochs 3 | head -1",
                            shell=True, cwd=tmp_path, env=_env(), capture_output=True, timeout=120)
    assert result.stdout.decode().startswith("training net")
    assert b"BrokenPipe" not in result.stderr and b"Traceback" not in result.stderr
    assert result.stderr == b""


def test_train_api_refuses_a_nan_learning_rate():
    from bpcompile.training import train
    module = load_module(
        compile_spec(
            load_spec(MLP)).source)
    x = np.zeros((4, 64), np.float32)
    y = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="lr"):
        train.train(module, (x, y, x, y), lr=float("nan"), progress=False)
    with pytest.raises(ValueError, match="label 10"):
        train.train(module, (x, y, x, np.array([0, 1, 2, 10])), epochs=1, progress=False)


# --- check --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("expr: relu(x)\ncheck_at: {x: 0}\n", "not differentiable at x=0"),
    ("expr: max(x, y)\ncheck_at: {x: 1, y: 1}\n", "not differentiable at x=1, y=1"),
    ("expr: sqrt(x)\ncheck_at: {x: 0}\n", "outside the domain"),
    ("expr: log(x)\ncheck_at: {x: 0}\n", "outside the domain")])
def test_check_says_why_it_cannot_check(tmp_path, spec, message):
    path = tmp_path / "s.yaml"
    path.write_text(spec)
    result = _cli("check", path, cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1 and ERROR.match(err) and message in err, err
    assert "FAILED" not in result.stdout.decode() and "nan" not in err


def test_check_still_passes_smooth_functions_and_fails_wrong_tolerances(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("expr: relu(x)\ncheck_at: {x: 0.5}\n")
    assert main(["check", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_check_of_a_layer_spec_without_parameters_is_one_line(tmp_path, capsys):
    """check once took max() of no errors (found by test_hostile_fuzz)."""
    path = tmp_path / "s.yaml"
    path.write_text("input: [4]\nlayers: [tanh]\nloss: mse\n")
    status = main(["check", str(path)])
    captured = capsys.readouterr()
    assert status == 0 and captured.err == ""
    assert "no parameters" in captured.out


def test_program_size_limit():
    text = "\n".join(f"a{i}=x*x*x*x" for i in range(1400))
    assert len(text) < limits.MAX_TEXT
    with pytest.raises(SpecError, match=f"more than {limits.MAX_NODES} operations"):
        bpcompile.compile(text)


def test_the_readme_lists_every_limit():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Bad input"):]
    section = section[:section.index("\n## ", 5)]
    for name in ("MAX_SPEC_BYTES", "MAX_YAML_NODES", "MAX_TEXT", "MAX_NODES", "MAX_LAYERS",
                 "MAX_PARAMETERS"):
        assert f"{getattr(limits, name):,}" in section, name
    assert f"nested {limits.MAX_DEPTH} deep" in section
    assert f"| {limits.MAX_LAYER_DEPTH} |" in section
    assert f"magnitude {limits.MAX_CONSTANT:.0e}".replace("e+", "e") in section
