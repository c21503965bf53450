"""Random YAML documents and random command lines, run through `bpcompile.cli.main.main`
in a temporary folder: never a traceback or an internal error; exit status 0 or
1 (2 only for a usage error from argparse, which prints `usage:`)."""

import contextlib
import io
import os

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from bpcompile.cli.main import main

KEYS = ["name", "inputs", "expr", "program", "output", "wrt", "check_at", "description", "input",
        "layers", "loss", "l2", "dtype", "train", "linear", "lstm", "hidden", "epochs", "lr",
        "activation", "conv2d", "kernel", "x", "y"]
EXPRESSION = st.text(alphabet="xyz0123456789+-*/()., e**sincoelgqrtmaxpwu_", max_size=30)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), EXPRESSION,
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(KEYS))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)
LAYER_DOCUMENTS = st.fixed_dictionaries(
    {"input": st.one_of(st.just([4]), VALUES), "layers": st.lists(st.one_of(
        st.sampled_from(["tanh", "relu", "flatten", "sigmoid"]),
        st.dictionaries(st.sampled_from(["linear", "activation", "lstm", "conv2d", "rnn", "embedding"]),
                        VALUES, min_size=1, max_size=1)), max_size=3),
     "loss": st.one_of(st.sampled_from(["mse", "softmax_cross_entropy"]), VALUES)},
    optional={"l2": VALUES, "dtype": VALUES, "name": VALUES})
RAW = st.text(alphabet="abexpr: -[]{}&*!|>'\"\n\t#,.0123456789", max_size=80)

TOKENS = ["compile", "expr", "check", "graph", "train", "spec.yaml", "layers.yaml", "nope.yaml",
          "-o", "out.py", "-", "--force", "--at", "x=1", "x=nan", "y=0", "--tol", "nan", "1e-3",
          "--lr", "inf", "0.1", "--epochs", "0", "1", "--batch-size", "--seed", "--save",
          "p.npz", "--plot", "c.png", "--data", "digits", "d.npz", "--inputs", "x,y", "--wrt",
          "--name", "m", "--", "-x", "x*y", "pow(10, 10**10)", "--text", "--quiet", "--test",
          "--seq-len", "spec.yaml/x", "", "-o-", "--output=out.py"]
LAYERS = "name: net\ninput: [4]\nlayers:\n  - linear: 2\nloss: softmax_cross_entropy\ntrain: {epochs: 1}\n"

# BPCOMPILE_FUZZ_EXAMPLES=2000 for a longer, randomised search
EXAMPLES = int(os.environ.get("BPCOMPILE_FUZZ_EXAMPLES", "0")) or None
SETTINGS = settings(max_examples=EXAMPLES or 120, deadline=None, derandomize=EXAMPLES is None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _run(argv, folder):
    err, out = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                status = main(argv)
            except SystemExit as exit_:
                status = exit_.code
    finally:
        os.chdir(here)
    return status, err.getvalue(), out.getvalue()


def _assert_clean(status, err, out):
    assert "Traceback" not in err and "internal error" not in err, err
    if status == 2:
        assert "usage:" in err, err
    else:
        assert status in (0, 1), (status, err)
        if status == 1 and not err:        # no command at all: the help, on standard output
            assert out.startswith("usage:"), out
        elif status == 1:
            assert len(err.splitlines()) == 1, err


def _spec(folder, text, name="spec.yaml"):
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _dump(document):
    return yaml.safe_dump(document, allow_unicode=False, sort_keys=False)


def _run_document(tmp_path_factory, document, command):
    folder = tmp_path_factory.mktemp("doc")
    _spec(folder, _dump(document))
    _assert_clean(*_run([command, "spec.yaml"], folder))


@SETTINGS
@given(document=DOCUMENTS, command=st.sampled_from(["compile", "check", "graph"]))
def test_random_program_documents(tmp_path_factory, document, command):
    _run_document(tmp_path_factory, document, command)


@SETTINGS
@given(document=LAYER_DOCUMENTS, command=st.sampled_from(["compile", "graph", "check"]))
def test_random_layer_documents(tmp_path_factory, document, command):
    _run_document(tmp_path_factory, document, command)


@SETTINGS
@given(text=RAW)
def test_random_yaml_text(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("raw")
    _spec(folder, text)
    _assert_clean(*_run(["compile", "spec.yaml"], folder))


@SETTINGS
@given(argv=st.lists(st.sampled_from(TOKENS), max_size=8))
def test_random_command_lines(tmp_path_factory, argv):
    folder = tmp_path_factory.mktemp("argv")
    _spec(folder, "expr: x*y\n")
    _spec(folder, LAYERS, "layers.yaml")
    if "train" in argv:                    # bounded work: one epoch, whatever else was asked
        argv = [a for a in argv if a not in ("--epochs", "--data", "--test", "--seq-len")] + ["--epochs", "1"]
    _assert_clean(*_run(argv, folder))
