"""bpcompile-generated modules under the expert-baseline harness's interface.

    python ../shared/baselines/run_baselines.py --extra bpc=benchmarks/adapter.py

`/work/shared/baselines/run_baselines.py` (see its README) times every
implementation of a workload in one process, in interleaved rounds, after
checking its gradients and one SGD step against the hand-written NumPy
reference. This module implements that interface (setup_/step_/grad_/
params_/reset_/fwd_/fwdbwd_<W>) for the five workloads, each with a module
that bpcompile compiles in setup_<W> (untimed) from the spec dicts below:

  A   the quiz expression; step = value_and_grad(x, z) over 10^6 float64 points
  B1  64(+bias)-32 sigmoid-1 sigmoid, binary cross-entropy, float64; step = one
      epoch of 2,000 per-example sgd_step calls, lr 0.1
  B2  784-256 ReLU-10, softmax cross-entropy, float32; step = one sgd_step, batch 64
  C   LeNet-5 (examples/lenet5.yaml), float32; step = one sgd_step, batch 64
  D   embedding 128 -> LSTM 256 -> linear 10,000, softmax cross-entropy over
      all T*MB tokens, float32; step = one sgd_step on a (MB, T) batch

Parameter layout. The harness's problems are in PyTorch's layout; setup_<W>
copies them into the generated module's own params dict (made by its
init_params, so that recurrent layers keep their side-by-side gate blocks),
and grad_<W>/params_<W> convert back:

  B1  W1 (32, 65) = [linear1.W | linear1.b]   (X_aug's last column is the
      constant 1); w2 (33,) = [linear2.W[0] | linear2.b]
  B2  W1, b1, W2, b2 = linear1.W, linear1.b, linear2.W, linear2.b
  C   c1w, c1b, c2w, c2b = conv2d1.W/b, conv2d2.W/b; f1w..f3b = linear1..3 W/b
  D   E = embedding1.E; W_ih rows [i; f; g; o] = lstm1.W_xi, W_xf, W_xc, W_xo
      (likewise W_hh -> W_h*, b -> b_*); W_out, b_out = linear1.W, linear1.b

The canonical tokens (T+1, MB) become x = tokens[:-1].T, y = tokens[1:].T.

Which bpcompile is benchmarked: by default the one `import bpcompile` finds.
A wrapper that sets the global BPCOMPILE_ROOT before executing this file
compiles the modules in a subprocess whose sys.path starts with that
checkout, so two versions of bpcompile can be columns of one harness run:

    # /tmp/bpc_before.py
    BPCOMPILE_ROOT = "/tmp/before"
    exec(open("/work/main/benchmarks/adapter.py").read())

The generated modules import only NumPy, so the timed code never touches
bpcompile itself. Only API that exists in every version since 540066f is used
(compile(spec_dict), init_params, PARAMS, forward, value_and_grad, sgd_step);
a "state" entry in the gradients of a sequence module (older versions) is
dropped.
"""
import inspect
import json
import os
import subprocess
import sys
import types

import numpy as np

BPCOMPILE_ROOT = globals().get("BPCOMPILE_ROOT") or os.environ.get("BPCOMPILE_ROOT") or None

A_SPEC = {"name": "quiz", "inputs": ["x", "z"],
          "expr": "exp(x*z) + x*z/log(x) + sin(log(x))/(x*z)"}

B1_SPEC = {"name": "bench_b1", "dtype": "float64", "input": [64],
           "layers": [{"linear": 32}, "sigmoid", {"linear": 1}],
           "loss": "sigmoid_binary_cross_entropy"}

B2_SPEC = {"name": "bench_b2", "dtype": "float32", "input": [784],
           "layers": [{"linear": 256}, "relu", {"linear": 10}],
           "loss": "softmax_cross_entropy"}

C_SPEC = {"name": "bench_c", "dtype": "float32", "input": [1, 28, 28],
          "layers": [{"conv2d": {"out_channels": 6, "kernel": 5, "padding": 2}}, "relu",
                     {"maxpool2d": {"kernel": 2}},
                     {"conv2d": {"out_channels": 16, "kernel": 5}}, "relu",
                     {"maxpool2d": {"kernel": 2, "stride": 2}},
                     "flatten",
                     {"linear": 120}, "relu", {"linear": 84}, "relu", {"linear": 10}],
          "loss": "softmax_cross_entropy"}


def D_spec(vocab, embed, hidden):
    return {"name": "bench_d", "dtype": "float32", "input": {"vocab": int(vocab)},
            "layers": [{"embedding": int(embed)}, {"lstm": {"hidden": int(hidden)}},
                       {"linear": int(vocab)}],
            "loss": "softmax_cross_entropy"}


# --------------------------------------------------------------------------
# compiling

_COMPILE_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import bpcompile
spec = json.loads(sys.stdin.read())
m = bpcompile.compile(spec, **({"target": sys.argv[2]} if sys.argv[2] != "numpy" else {}))
sys.stdout.write(json.dumps({"file": bpcompile.__file__, "source": m.SOURCE}))
"""

COMPILED_WITH = {}   # spec name -> bpcompile/__init__.py that compiled it


def _load_source(source, name):
    module = types.ModuleType(f"bpc_generated_{name}")
    exec(compile(source, f"<bpcompile {name}>", "exec"), module.__dict__)
    module.SOURCE = source
    return module


SOURCES = {}         # spec (as JSON) -> generated source, so a second setup only loads it


def compile_spec(spec, target="numpy"):
    """The generated module of a spec dict for `target` (by the bpcompile of
    BPCOMPILE_ROOT if set).  A spec compiled before is not compiled again: its source
    is loaded afresh (for numba, its kernels then compile again on first call)."""
    key = json.dumps([spec, target], sort_keys=True)
    if key in SOURCES:
        return _load_source(SOURCES[key], spec["name"])
    if BPCOMPILE_ROOT is None:
        import bpcompile
        COMPILED_WITH[spec["name"]] = bpcompile.__file__
        module = bpcompile.compile(spec, **({"target": target} if target != "numpy" else {}))
        SOURCES[key] = module.SOURCE
        return module
    root = os.path.abspath(BPCOMPILE_ROOT)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", _COMPILE_CHILD, root, target], input=json.dumps(spec),
                         capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"compiling {spec['name']} with {root} failed:\n{res.stderr}")
    out = json.loads(res.stdout)
    if not os.path.abspath(out["file"]).startswith(root + os.sep):
        raise RuntimeError(f"expected bpcompile from {root}, got {out['file']}")
    COMPILED_WITH[spec["name"]] = out["file"]
    SOURCES[key] = out["source"]
    return _load_source(out["source"], spec["name"])


# --------------------------------------------------------------------------
# shared helpers for the training workloads

def _own_params(m, canon):
    """The module's params dict (from init_params, keeping its memory layout),
    overwritten with the converted canonical values."""
    params = m.init_params(0)
    if set(params) != set(canon):
        raise RuntimeError(f"parameter names differ: {sorted(params)} vs {sorted(canon)}")
    for k, v in canon.items():
        if params[k].shape != v.shape:
            raise RuntimeError(f"{k}: shape {params[k].shape} vs {v.shape}")
        np.copyto(params[k], v)
    return params


def _state(m, canon, **data):
    params = _own_params(m, canon)
    return dict(m=m, params=params, init={k: v.copy() for k, v in params.items()}, **data)


def _reset(st):
    for k, v in st["init"].items():
        np.copyto(st["params"][k], v)


def _grads(st, *args):
    J, g = st["m"].value_and_grad(st["params"], *args)
    return float(J), {k: v for k, v in g.items() if k != "state"}


def _by_suffix(names, prefix, suffix):
    hits = [k for k in names if k.startswith(prefix) and k.endswith(suffix)]
    if len(hits) != 1:
        raise RuntimeError(f"no unique parameter {prefix}*{suffix} in {list(names)}")
    return hits[0]


def _layer_keys(m, prefix):
    """(W, b) names of the layers whose names start with prefix, in PARAMS order."""
    names = list(m.PARAMS)
    layers = []
    for k in names:
        if k.startswith(prefix) and k.endswith(".W"):
            layers.append((k, k[:-2] + ".b"))
    return layers


# --------------------------------------------------------------------------
# A: the quiz expression over 10^6 points

def setup_A(prob, target="numpy"):
    m = compile_spec(A_SPEC, target)
    if list(m.WRT) != ["x", "z"]:
        raise RuntimeError(f"unexpected WRT {m.WRT}")
    # like the expert code, write into arrays allocated once, where the module can
    # (value_and_grad's `out`, since 2026-11-30): fresh 8 MB results cost page faults
    takes_out = "out" in inspect.signature(m.value_and_grad).parameters
    out = tuple(np.empty_like(prob["x"]) for _ in range(3)) if takes_out else None
    return dict(m=m, x=prob["x"], z=prob["z"], out=out, result=None)


def step_A(st):
    if st["out"] is None:
        st["result"] = st["m"].value_and_grad(st["x"], st["z"])
    else:
        st["result"] = st["m"].value_and_grad(st["x"], st["z"], out=st["out"])


fwdbwd_A = step_A


def fwd_A(st):
    st["result"] = st["m"].forward(st["x"], st["z"])


def grad_A(st):
    y, (dx, dz) = st["m"].value_and_grad(st["x"], st["z"])
    return np.asarray(y), {"x": np.asarray(dx), "z": np.asarray(dz)}


# --------------------------------------------------------------------------
# B1: the lecture's network, per-example SGD, float64

def _b1_keys(m):
    (w1, b1), (w2, b2) = _layer_keys(m, "linear")
    return w1, b1, w2, b2


def setup_B1(prob, target="numpy"):
    m = compile_spec(B1_SPEC, target)
    w1, b1, w2, b2 = _b1_keys(m)
    W1, v2 = prob["W1"], prob["w2"]
    canon = {w1: W1[:, :-1].copy(), b1: W1[:, -1].copy(),
             w2: v2[None, :-1].copy(), b2: v2[-1:].copy()}
    X = np.ascontiguousarray(prob["X_aug"][:, :-1])
    if not np.all(prob["X_aug"][:, -1] == 1.0):
        raise RuntimeError("B1: X_aug's last column is not the constant 1")
    Y = np.ascontiguousarray(prob["y"], dtype=np.float64).reshape(-1, 1)
    st = _state(m, canon, keys=(w1, b1, w2, b2), lr=float(prob["lr"]), X=X, Y=Y,
                xs=[X[i:i + 1] for i in range(X.shape[0])],       # (1, 64) views, made once
                ys=[Y[i:i + 1] for i in range(Y.shape[0])])       # (1, 1)
    return st


def step_B1(st):
    sgd, p, lr = st["m"].sgd_step, st["params"], st["lr"]
    for x, y in zip(st["xs"], st["ys"]):
        sgd(p, x, y, lr)


def fwd_B1(st):
    fwd, p = st["m"].forward, st["params"]
    for x, y in zip(st["xs"], st["ys"]):
        fwd(p, x, y)


def fwdbwd_B1(st):
    vg, p = st["m"].value_and_grad, st["params"]
    for x, y in zip(st["xs"], st["ys"]):
        vg(p, x, y)


def _b1_export(st, d):
    w1, b1, w2, b2 = st["keys"]
    return {"W1": np.concatenate([d[w1], d[b1][:, None]], axis=1),
            "w2": np.concatenate([d[w2].reshape(-1), d[b2].reshape(-1)])}


def grad_B1(st):
    J, g = _grads(st, st["xs"][0], st["ys"][0])
    return J, _b1_export(st, g)


def params_B1(st):
    return _b1_export(st, {k: v.copy() for k, v in st["params"].items()})


reset_B1 = _reset


# --------------------------------------------------------------------------
# B2 (784-256-10) and C (LeNet-5): minibatch SGD, float32

def _batch_setup(prob, spec, names, target="numpy"):
    m = compile_spec(spec, target)
    keys = [k for wb in _layer_keys(m, "conv2d") + _layer_keys(m, "linear") for k in wb]
    if len(keys) != len(names):
        raise RuntimeError(f"{spec['name']}: parameters {keys} vs {names}")
    canon = {k: prob[n].copy() for k, n in zip(keys, names)}
    return _state(m, canon, names=dict(zip(keys, names)), lr=float(prob["lr"]),
                  x=np.ascontiguousarray(prob["X"]), y=np.ascontiguousarray(prob["y"]))


def _batch_step(st):
    st["m"].sgd_step(st["params"], st["x"], st["y"], st["lr"])


def _batch_fwd(st):
    st["m"].forward(st["params"], st["x"], st["y"])


def _batch_fwdbwd(st):
    st["m"].value_and_grad(st["params"], st["x"], st["y"])


def _batch_grad(st):
    J, g = _grads(st, st["x"], st["y"])
    return J, {st["names"][k]: v for k, v in g.items()}


def _batch_params(st):
    return {st["names"][k]: v.copy() for k, v in st["params"].items()}


def setup_B2(prob, target="numpy"):
    return _batch_setup(prob, B2_SPEC, ["W1", "b1", "W2", "b2"], target)


def setup_C(prob, target="numpy"):
    return _batch_setup(prob, C_SPEC, ["c1w", "c1b", "c2w", "c2b", "f1w", "f1b",
                                       "f2w", "f2b", "f3w", "f3b"], target)


step_B2 = step_C = _batch_step
fwd_B2 = fwd_C = _batch_fwd
fwdbwd_B2 = fwdbwd_C = _batch_fwdbwd
grad_B2 = grad_C = _batch_grad
params_B2 = params_C = _batch_params
reset_B2 = reset_C = _reset


# --------------------------------------------------------------------------
# D: LSTM language model, truncated to one (T, MB) batch, float32

_GATES = ("i", "f", "c", "o")     # canonical row blocks i, f, g, o


def setup_D(prob, target="numpy"):
    V, Ein = prob["E"].shape
    H = prob["W_hh"].shape[1]
    m = compile_spec(D_spec(V, Ein, H), target)
    names = list(m.PARAMS)
    k = dict(E=_by_suffix(names, "embedding", ".E"),
             W_out=_by_suffix(names, "linear", ".W"), b_out=_by_suffix(names, "linear", ".b"))
    for g in _GATES:
        for part in ("W_x", "W_h", "b_"):
            k[part + g] = _by_suffix(names, "lstm", "." + part + g)
    canon = {k["E"]: prob["E"], k["W_out"]: prob["W_out"], k["b_out"]: prob["b_out"]}
    for j, g in enumerate(_GATES):
        rows = slice(j * H, (j + 1) * H)
        canon[k["W_x" + g]] = prob["W_ih"][rows]
        canon[k["W_h" + g]] = prob["W_hh"][rows]
        canon[k["b_" + g]] = prob["b"][rows]
    tok = prob["tokens"]
    return _state(m, canon, k=k, H=H, lr=float(prob["lr"]),
                  x=np.ascontiguousarray(tok[:-1].T), y=np.ascontiguousarray(tok[1:].T))


step_D = _batch_step
fwd_D = _batch_fwd
fwdbwd_D = _batch_fwdbwd


def _d_export(st, d):
    k = st["k"]
    cat = lambda part: np.concatenate([d[k[part + g]] for g in _GATES])  # noqa: E731
    return {"E": d[k["E"]].copy(), "W_ih": cat("W_x"), "W_hh": cat("W_h"), "b": cat("b_"),
            "W_out": d[k["W_out"]].copy(), "b_out": d[k["b_out"]].copy()}


def grad_D(st):
    J, g = _grads(st, st["x"], st["y"])
    return J, _d_export(st, g)


def params_D(st):
    return _d_export(st, st["params"])


reset_D = _reset


# --------------------------------------------------------------------------
# the numba target: the column "bpcompile/numba" (the harness's variants).  setup
# compiles the module and runs every timed function once, so that numba's
# compilation on first call (printed as `first call`) is not timed.

def _first_call(st, *steps):
    import time
    start = time.perf_counter()
    for step in steps:
        step(st)
    reset = st.get("init")
    if reset is not None:
        _reset(st)
    print(f"  bpcompile/numba: first call (numba compiles) {time.perf_counter() - start:.2f} s",
          file=sys.stderr)
    return st


def setup_A__numba(prob):
    return _first_call(setup_A(prob, "numba"), step_A)


def setup_B1__numba(prob):
    return _first_call(setup_B1(prob, "numba"), step_B1__numba)


def step_B1__numba(st):
    """One epoch as one call: sgd_epoch with batch_size 1 (X and Y made once in setup)."""
    st["m"].sgd_epoch(st["params"], st["X"], st["Y"], st["lr"])


def setup_B2__numba(prob):
    return _first_call(setup_B2(prob, "numba"), _batch_step)


def setup_C__numba(prob):
    return _first_call(setup_C(prob, "numba"), _batch_step)


def setup_D__numba(prob):
    return _first_call(setup_D(prob, "numba"), _batch_step)
