"""A corpus of hostile and careless inputs, run through the CLI under a time and a
memory limit.

Every case must end with exit status 1 and exactly one `FILE:LINE:COL: error:`
line on stderr, must write nothing, and must leave every other file of its
folder as it was.  The cases run in a few worker processes (this file run as a
script), each under RLIMIT_AS = MEMORY_LIMIT and with SIGALRM after TIME_LIMIT
seconds per case; a handful also run as real `bpcompile` processes, one each.
"""

import hashlib
import io
import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TIME_LIMIT = 10                      # seconds per case
MEMORY_LIMIT = 1 << 30               # bytes of address space per process
WORKERS = 2
ERROR_LINE = re.compile(r"^[^\n]+:\d+:\d+: error: [^\n]+\n\Z")

# --- files the cases refer to ------------------------------------------------------

MLP = b"name: net\ninput: [4]\nlayers:\n  - linear: 3\nloss: softmax_cross_entropy\n"
TAGGER = (b"name: tagger\ninput: {vocab: 50}\nlayers:\n  - embedding: 4\n  - lstm: {hidden: 4}\n"
          b"  - linear: 17\nloss: softmax_cross_entropy\ntrain: {epochs: 1}\n")
CONLLU = b"1\tThe\t_\tDET\n2\tdog\t_\tNOUN\n\n1\tA\t_\tDET\n2\tcat\t_\tNOUN\n\n"


def _npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _data(y_test=None, x_train=None, y_train=None, x_test=None):
    rng = np.random.default_rng(0)
    return _npz(x_train=rng.normal(size=(20, 4)).astype(np.float32) if x_train is None else x_train,
                y_train=rng.integers(0, 3, 20) if y_train is None else y_train,
                x_test=rng.normal(size=(6, 4)).astype(np.float32) if x_test is None else x_test,
                y_test=rng.integers(0, 3, 6) if y_test is None else y_test)


def _gzip_truncated(data):
    import gzip
    packed = gzip.compress(data * 20)
    return packed[:len(packed) // 2]


def _bomb(levels=9, key="inputs"):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return ("\n".join(lines) + f"\n{key}: *a{levels - 1}\nexpr: x\n").encode()


DEEP = "(x + " * 150 + "x" + ")" * 150
LONG_SUM = "+".join(["x"] * 6000)

# --- the corpus --------------------------------------------------------------------
# (id, argv, files): argv runs in a fresh folder holding `files`
# (bytes: a regular file; "dir"; "fifo"; ("link", target): a symbolic link).

EXPRESSIONS = [
    # time and memory
    "pow(10, 10**10)*x", "pow(10, 10**7)*x", "9**9**9**9 + x", "10**10**10*x", "(10**300)**2*x",
    "2**2**2**2**2*x", "exp(1e300) + x", "exp(exp(exp(10)))*x", "x*" + "9" * 400, "10**400*x",
    "1e309*x", "x**1e400", "0.5**-5000*x", "pow(2, 1e300)*x", "sinh(1e10)*x", "cosh(800)*x",
    DEEP, LONG_SUM, "-" * 5000 + "x", "x" + "**x" * 200, "sin(" * 120 + "x" + ")" * 120,
    # evaluation attempts and unsupported syntax
    "__import__('os').system('true')", "eval('1')", "open('f')", "x.real", "x[0]", "lambda: x",
    "x if y else z", "[x]", "{x}", "{x: 1}", "(x, y)", "x; y", "x and y", "x < y", "not x", "~x",
    "x // y", "x % y", "x << 1", "x & y", "x | y", "x ^ y", "'a' + x", "b'x' + x", "1j*x",
    "True*x", "None", "...", "x @ 'a'", "f'{x}'", "*x", "x := 1", "await x", "yield x",
    "print(x)", "sum(x, axis=0)", "getattr(x, 'y')", "x.__class__", "__builtins__", "globals()",
    # bad calls and constants
    "sin(x, y)", "sin()", "sin(x=1)", "log(x, 1, 2)", "max(x)", "pow(x)", "unknown(x)",
    "sqrt(-1) + x", "log(0) + x", "log(-1) + x", "1/0 + x", "0**-1 + x", "(-8)**(1/3) + x",
    "log(1, 1)*x", "arcsinh(1e300)**400*x",
    # syntax
    "", "   ", "x +", "x = = 1", "x**", "((((x", "x))", "é + x", "x\u00b2", "x\tor y",
    "import os", "x = 1\ny = ", "del x", "x += 1", "if x: y", "def f(): pass", "class A: pass",
    "raise x", "x = 1; y = 2", "1 = x", "x.y = 1", "for_ = 1\nfor = 2",
]

SPECS = [
    # YAML
    ("alias_bomb", _bomb()), ("alias_bomb_program", _bomb(8, "wrt")),
    ("alias_bomb_check_at", _bomb(9, "z")),
    ("alias_recursive", b"a: &a [*a]\nexpr: x\n"),
    ("alias_recursive_map", b"a: &a {b: *a}\nexpr: x\n"),
    ("yaml_deep", b"expr: x\nz: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
    ("yaml_deep_map", b"expr: x\nz: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n"),
    ("yaml_long_int", b"expr: x\nz: " + b"1" * 5000 + b"\n"),
    ("spec_too_large", b"expr: x\n" + b"# padding\n" * 110_000),
    ("spec_long_string", b"expr: '" + b"x+" * 600_000 + b"x'\n"),
    ("binary", bytes(range(256)) * 4), ("not_utf8", b"expr: \xff\xfe\n"),
    ("empty", b""), ("list", b"[1, 2]\n"), ("number", b"42\n"), ("null", b"null\n"),
    ("tabs", b"expr:\tx\n\tinputs: [x]\n"), ("unclosed", b"expr: [x\n"),
    ("bad_tag", b"expr: !!python/object/apply:os.system ['true']\n"),
    ("bad_tag2", b"expr: !!python/name:os.system\n"),
    ("int_key", b"1: x\nexpr: x\n"),
    # program specs
    ("unknown_key", b"expr: x\nevil: 1\n"), ("name_dotted", b"name: os.system\nexpr: x\n"),
    ("name_number", b"name: 123\nexpr: x\n"), ("name_keyword", b"name: def\nexpr: x\n"),
    ("inputs_number", b"inputs: 5\nexpr: x\n"), ("inputs_nested", b"inputs: [[x]]\nexpr: x\n"),
    ("inputs_missing", b"inputs: [y]\nexpr: x\n"), ("inputs_long", b"inputs: [" + b"x, " * 3000 + b"]\nexpr: x\n"),
    ("expr_list", b"expr: [1]\n"), ("expr_map", b"expr: {a: 1}\n"), ("expr_null", b"expr:\n"),
    ("expr_bool", b"expr: true\n"), ("expr_and_program", b"expr: x\nprogram: y = x\n"),
    ("neither", b"name: m\n"), ("program_bad", b"program: 'x = '\n"),
    ("program_redefine", b"program: |\n  y = x\n  y = 2*x\n"),
    ("program_cycle", b"program: |\n  y = z\n  z = y\n"),
    ("output_number", b"expr: x\noutput: 5\n"), ("wrt_missing", b"expr: x\nwrt: [nope]\n"),
    ("wrt_map", b"expr: x\nwrt: {a: 1}\n"), ("expr_deep", f"expr: {DEEP}\n".encode()),
    ("expr_hang", b"expr: pow(10, 10**10)*x\n"),
    ("program_too_large", b"program: |\n" + "".join(f"  a{i}=x*x*x*x\n" for i in range(1400)).encode()),
    ("expr_import", b"expr: __import__('os')\n"),
    # layer specs
    ("loss_list", MLP.replace(b"loss: softmax_cross_entropy", b"loss: [mse]")),
    ("loss_map", MLP.replace(b"loss: softmax_cross_entropy", b"loss: {a: 1}")),
    ("loss_unknown", MLP.replace(b"loss: softmax_cross_entropy", b"loss: hinge")),
    ("l2_nan", MLP + b"l2: .nan\n"), ("l2_negative", MLP + b"l2: -1\n"), ("l2_text", MLP + b"l2: x\n"),
    ("layers_number", b"name: n\ninput: [4]\nlayers: 5\nloss: mse\n"),
    ("layers_empty", b"name: n\ninput: [4]\nlayers: []\nloss: mse\n"),
    ("linear_negative", MLP.replace(b"linear: 3", b"linear: -1")),
    ("linear_huge", MLP.replace(b"linear: 3", b"linear: 1000000000000")),
    ("linear_float", MLP.replace(b"linear: 3", b"linear: 2.5")),
    ("linear_text", MLP.replace(b"linear: 3", b"linear: many")),
    ("input_negative", MLP.replace(b"input: [4]", b"input: [-1]")),
    ("input_huge", MLP.replace(b"input: [4]", b"input: [1000000000000]")),
    ("input_text", MLP.replace(b"input: [4]", b"input: x")),
    ("dtype_bad", MLP + b"dtype: float16\n"),
    ("activation_import", MLP.replace(b"  - linear: 3\n", b"  - activation: \"__import__('os')\"\n  - linear: 3\n")),
    ("activation_y", MLP.replace(b"  - linear: 3\n", b"  - activation: \"y*2\"\n  - linear: 3\n")),
    ("activation_hang", MLP.replace(b"  - linear: 3\n", b"  - activation: \"pow(10, 10**10)*x\"\n  - linear: 3\n")),
    ("layer_unknown", MLP.replace(b"linear: 3", b"dense: 3")),
    ("lstm_deep", b"name: n\ninput: [4]\nlayers:\n  - lstm: {hidden: 8, layers: 1000000}\n"
                  b"  - linear: 2\nloss: softmax_cross_entropy\n"),
    ("many_layers", b"name: n\ninput: [4]\nlayers:\n" + b"  - tanh\n" * 10_000
                    + b"  - linear: 2\nloss: mse\n"),
    ("conv_kernel_zero", b"name: n\ninput: [1, 8, 8]\nlayers:\n  - conv2d: {out_channels: 2, kernel: 0}\n"
                         b"  - flatten\n  - linear: 2\nloss: mse\n"),
    ("conv_kernel_big", b"name: n\ninput: [1, 8, 8]\nlayers:\n  - conv2d: {out_channels: 2, kernel: 99}\n"
                        b"  - flatten\n  - linear: 2\nloss: mse\n"),
    ("cell_bad", b"name: n\ninput: [4]\nlayers:\n  - recurrent:\n      hidden: 4\n      state: [h]\n"
                 b"      equations: |\n        h = tanh(W @ h_prev + __import__('os'))\n"
                 b"  - linear: 2\nloss: softmax_cross_entropy\n"),
]

CHECKS = [  # (id, spec text, extra argv) for `bpcompile check`
    ("relu_kink", b"expr: relu(x)\ncheck_at: {x: 0}\n", []),
    ("max_kink", b"expr: max(x, y)\ncheck_at: {x: 1, y: 1}\n", []),
    ("check_at_text", b"expr: x\ncheck_at: x\n", []),
    ("sqrt_zero", b"expr: sqrt(x)\ncheck_at: {x: 0}\n", []),
    ("log_zero", b"expr: log(x)\ncheck_at: {x: 0}\n", []),
    ("log_negative", b"expr: log(x)\n", ["--at", "x=-1"]),
    ("log_edge", b"expr: log(x)\ncheck_at: {x: 1.0e-9}\n", []),
    ("check_at_300_digits", b"expr: x**2\ncheck_at: {x: " + b"9" * 300 + b"}\n", []),
    ("check_at_310_digits", b"expr: x\ncheck_at: {x: " + b"9" * 310 + b"}\n", []),
    ("check_at_inf", b"expr: x\ncheck_at: {x: .inf}\n", []),
    ("check_at_nan", b"expr: x\ncheck_at: {x: .nan}\n", []),
    ("check_at_unknown", b"expr: x\ncheck_at: {y: 1}\n", []),
    ("check_at_bool", b"expr: x\ncheck_at: {x: true}\n", []),
    ("at_unknown", b"expr: x\n", ["--at", "y=1"]),
    ("at_text", b"expr: x\n", ["--at", "x=abc"]),
    ("at_nan", b"expr: x\n", ["--at", "x=nan"]),
    ("at_inf", b"expr: x\n", ["--at", "x=-inf"]),
    ("at_huge", b"expr: x\n", ["--at", "x=1e400"]),
    ("at_no_equals", b"expr: x\n", ["--at", "x"]),
    ("tol_nan", b"expr: x\n", ["--tol", "nan"]),
    ("tol_negative", b"expr: x\n", ["--tol", "-1"]),
    ("exp_overflow", b"expr: exp(x)\ncheck_at: {x: 1000}\n", []),
]

TRAINING = [  # (id, argv after `train spec.yaml`, extra files, spec)
    ("lr_nan", ["--lr", "nan"], {}, MLP), ("lr_inf", ["--lr", "inf"], {}, MLP),
    ("lr_negative", ["--lr", "-1"], {}, MLP), ("lr_zero", ["--lr", "0"], {}, MLP),
    ("lr_huge_diverges", ["--lr", "1e10", "--epochs", "30", "--data", "d.npz"],
     {"d.npz": _data(y_train=np.ones(20, np.float32), y_test=np.ones(6, np.float32))},
     b"name: net\ninput: [4]\nlayers:\n  - linear: 1\nloss: mse\n"),
    ("epochs_zero", ["--epochs", "0"], {}, MLP), ("batch_zero", ["--batch-size", "0"], {}, MLP),
    ("spec_lr_nan", [], {}, MLP + b"train: {lr: .nan}\n"),
    ("spec_lr_inf", [], {}, MLP + b"train: {lr: .inf}\n"),
    ("spec_epochs_float", [], {}, MLP + b"train: {epochs: 1.5}\n"),
    ("spec_train_list", [], {}, MLP + b"train: [1]\n"),
    ("spec_train_unknown", [], {}, MLP + b"train: {momentum: 0.9}\n"),
    ("data_missing", ["--data", "nope.npz"], {}, MLP),
    ("data_garbage", ["--data", "d.npz"], {"d.npz": b"PK\x03\x04garbage"}, MLP),
    ("data_text", ["--data", "d.npz"], {"d.npz": b"hello"}, MLP),
    ("data_unknown_kind", ["--data", "d.csv"], {"d.csv": b"1,2\n"}, MLP),
    ("data_empty_dir", ["--data", "dd"], {"dd": "dir"}, MLP),
    ("data_bad_test_labels", ["--data", "d.npz"], {"d.npz": _data(y_test=np.array([0, 1, 99, 2, 1, 0]))}, MLP),
    ("data_negative_labels", ["--data", "d.npz"], {"d.npz": _data(y_train=-np.ones(20, dtype=np.int64))}, MLP),
    ("data_nan_inputs", ["--data", "d.npz"],
     {"d.npz": _data(x_train=np.full((20, 4), np.nan, dtype=np.float32))}, MLP),
    ("data_wrong_width", ["--data", "d.npz"],
     {"d.npz": _data(x_train=np.zeros((20, 5), np.float32), x_test=np.zeros((6, 5), np.float32))}, MLP),
    ("data_empty_test", ["--data", "d.npz"],
     {"d.npz": _data(x_test=np.zeros((0, 4), np.float32), y_test=np.zeros(0, np.int64))}, MLP),
    ("data_length_mismatch", ["--data", "d.npz"], {"d.npz": _data(y_train=np.zeros(3, np.int64))}, MLP),
    ("save_no_dir", ["--save", "nodir/p.npz"], {}, MLP),
    ("save_over_spec", ["--save", "spec.yaml"], {}, MLP),
    ("save_over_victim", ["--save", "victim.npz"], {"victim.npz": _npz(a=np.zeros(2))}, MLP),
    ("save_dir", ["--save", "dd"], {"dd": "dir"}, MLP),
    ("save_fifo", ["--save", "pipe"], {"pipe": "fifo"}, MLP),
    ("save_fifo_force", ["--save", "pipe", "--force"], {"pipe": "fifo"}, MLP),
    ("save_dangling", ["--save", "link"], {"link": ("link", "nowhere.npz")}, MLP),
    ("save_stdout", ["--save", "-"], {}, MLP),
    ("save_long_name", ["--save", "p" * 300 + ".npz"], {}, MLP),
    ("plot_no_dir", ["--plot", "nodir/c.png"], {}, MLP),
    ("plot_over_victim", ["--plot", "victim.png"], {"victim.png": b"\x89PNG\r\n\x1a\nnot ours"}, MLP),
    ("plot_fifo", ["--plot", "pipe"], {"pipe": "fifo"}, MLP),
    ("save_is_plot", ["--save", "o.bin", "--plot", "o.bin"], {}, MLP),
    ("conllu_empty", ["--data", "e.conllu"], {"e.conllu": b""}, TAGGER),
    ("conllu_one_sentence", ["--data", "e.conllu"], {"e.conllu": b"1\tThe\t_\tDET\n\n"}, TAGGER),
    ("conllu_truncated_gz", ["--data", "t.conllu.gz"], {"t.conllu.gz": _gzip_truncated(CONLLU)}, TAGGER),
    ("conllu_not_gz", ["--data", "t.conllu.gz"], {"t.conllu.gz": CONLLU}, TAGGER),
    ("conllu_malformed", ["--data", "m.conllu"], {"m.conllu": b"1 The DET\n\n"}, TAGGER),
    ("conllu_binary", ["--data", "m.conllu"], {"m.conllu": b"\xff\xfe\x00\x01" * 50}, TAGGER),
    ("conllu_test_empty", ["--data", "c.conllu", "--test", "e.conllu"],
     {"c.conllu": CONLLU, "e.conllu": b""}, TAGGER),
    ("conllu_test_missing", ["--data", "c.conllu", "--test", "nope.conllu"], {"c.conllu": CONLLU}, TAGGER),
    ("tagger_digits", [], {}, TAGGER),
    ("train_program_spec", [], {}, b"expr: x\n"),
]

OUTPUTS = [  # (id, argv after `compile spec.yaml`, extra files)
    ("o_fifo", ["-o", "pipe"], {"pipe": "fifo"}),
    ("o_fifo_force", ["-o", "pipe", "--force"], {"pipe": "fifo"}),
    ("o_link_to_fifo_force", ["-o", "link", "--force"], {"pipe": "fifo", "link": ("link", "pipe")}),
    ("o_dir", ["-o", "dd"], {"dd": "dir"}), ("o_dir_force", ["-o", "dd", "--force"], {"dd": "dir"}),
    ("o_link_to_dir_force", ["-o", "link", "--force"], {"dd": "dir", "link": ("link", "dd")}),
    ("o_dangling", ["-o", "link"], {"link": ("link", "nowhere.py")}),
    ("o_link_loop", ["-o", "loop", "--force"], {"loop": ("link", "loop")}),
    ("o_victim", ["-o", "victim.py"], {"victim.py": b"print('mine')\n"}),
    ("o_link_to_victim", ["-o", "link"], {"victim.py": b"print('mine')\n", "link": ("link", "victim.py")}),
    ("o_spec", ["-o", "spec.yaml"], {}),
    ("o_no_dir", ["-o", "nodir/m.py"], {}), ("o_file_as_dir", ["-o", "victim.py/m.py"], {"victim.py": b"x"}),
    ("o_long_name", ["-o", "m" * 300 + ".py"], {}),
    ("o_long_path", ["-o", "/".join(["d"] * 3000) + "/m.py"], {}),
    ("o_empty_name", ["-o", ""], {}),
]


def _cases():
    cases = []
    for i, text in enumerate(EXPRESSIONS):
        cases.append((f"expr{i:03d}", ["expr", text], {}))
    for i, text in enumerate(EXPRESSIONS[:40]):
        cases.append((f"expr-o{i:03d}", ["expr", text, "-o", "out.py"], {"keep.py": b"# mine\n"}))
    for name, text in SPECS:
        cases.append((f"spec-{name}", ["compile", "spec.yaml", "-o", "out.py"], {"spec.yaml": text}))
    for name, text in SPECS[:12]:
        cases.append((f"graph-{name}", ["graph", "spec.yaml"], {"spec.yaml": text}))
    for name, text, argv in CHECKS:
        cases.append((f"check-{name}", ["check", "spec.yaml", *argv], {"spec.yaml": text}))
    for name, argv, files, spec in TRAINING:
        cases.append((f"train-{name}", ["train", "spec.yaml", "--quiet", "--epochs", "1", *argv],
                      {"spec.yaml": spec, **files}))
    for name, argv, files in OUTPUTS:
        cases.append((f"out-{name}", ["compile", "spec.yaml", *argv], {"spec.yaml": b"expr: x\n", **files}))
    cases.append(("missing_spec", ["compile", "nope.yaml"], {}))
    cases.append(("spec_is_dir", ["compile", "dd"], {"dd": "dir"}))
    cases.append(("spec_is_fifo_in_graph", ["graph", "spec.yaml", "-o", "pipe"],
                  {"spec.yaml": b"expr: x\n", "pipe": "fifo"}))
    return cases


CASES = _cases()
# run one by one as real `bpcompile` processes too: the slow, the large, the special files
SUBPROCESS_CASES = ["expr000", "expr001", "expr002", "expr016", "spec-alias_bomb", "spec-yaml_deep",
                    "spec-spec_too_large", "spec-lstm_deep", "spec-many_layers", "train-lr_nan",
                    "train-save_no_dir", "out-o_fifo_force", "train-conllu_truncated_gz"]


# --- running a case ----------------------------------------------------------------

def _make(folder, files):
    folder.mkdir()
    for name, content in files.items():
        path = folder / name
        if content == "dir":
            path.mkdir()
        elif content == "fifo":
            os.mkfifo(path)
        elif isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            path.write_bytes(content)


def _snapshot(folder):
    """path -> what it is, without opening anything but regular files."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                state[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    state[path] = ("file", hashlib.sha256(f.read()).hexdigest(), stat.S_IMODE(st.st_mode))
            else:
                state[path] = (stat.S_IFMT(st.st_mode),)
    return state


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_in_process(folder, argv):
    """(status, stderr, seconds, changed) of bpcompile.cli.main.main(argv) run in `folder`."""
    from bpcompile.cli.main import main
    before = _snapshot(folder)
    here = os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT)
    try:
        os.chdir(folder)
        sys.stdout, sys.stderr = out, err
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
        except _Timeout:
            status = "timeout"
        except MemoryError:
            status = "MemoryError"
    finally:
        signal.alarm(0)
        sys.stdout, sys.stderr = saved
        os.chdir(here)
    seconds = time.perf_counter() - start
    after = _snapshot(folder)
    changed = sorted(set(before.items()) ^ set(after.items()))
    return status, err.getvalue(), seconds, [str(c) for c in changed]


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _environment():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    env.pop("BPCOMPILE_DEBUG", None)
    return env


def _worker(folder, names):
    """Run the named cases (in `folder`/<name>) in this process: one JSON line each."""
    by_name = {name: (argv, files) for name, argv, files in CASES}
    for name in names:
        argv, files = by_name[name]
        status, err, seconds, changed = run_in_process(Path(folder) / name, argv)
        print(json.dumps({"name": name, "status": status, "err": err[:2000], "seconds": seconds,
                          "changed": changed}), flush=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, argv, files in CASES:
        _make(root / name, files)
    names = [name for name, _, _ in CASES]
    shares = [names[i::WORKERS] for i in range(WORKERS)]
    procs = [subprocess.Popen([sys.executable, __file__, str(root), *share], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=root, env=_environment(),
                              preexec_fn=_limits) for share in shares]
    found = {}
    for proc in procs:
        out, err = proc.communicate(timeout=TIME_LIMIT * len(names))
        for line in out.decode().splitlines():
            record = json.loads(line)
            found[record["name"]] = record
        assert proc.returncode == 0, err.decode()[-3000:]
    return found


def test_the_corpus_is_large():
    assert len(CASES) >= 150
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name", [name for name, _, _ in CASES])
def test_hostile_input_gives_one_located_error_line(results, name):
    record = results[name]
    assert record["status"] == 1, record
    assert ERROR_LINE.match(record["err"]), record
    assert "internal error" not in record["err"] and "Traceback" not in record["err"]
    assert record["changed"] == [], record
    assert record["seconds"] < TIME_LIMIT


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_hostile_input_in_its_own_process(tmp_path, name):
    argv, files = next((argv, files) for n, argv, files in CASES if n == name)
    folder = tmp_path / "case"
    _make(folder, files)
    before = _snapshot(folder)
    result = subprocess.run([sys.executable, "-m", "bpcompile.cli", *argv], cwd=folder, env=_environment(),
                            capture_output=True, timeout=TIME_LIMIT * 3, preexec_fn=_limits)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert ERROR_LINE.match(err), err
    assert _snapshot(folder) == before


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _worker(sys.argv[1], sys.argv[2:])
