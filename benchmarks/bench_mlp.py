"""Time SGD of two MLPs compiled by bpcompile against hand-written NumPy and PyTorch.

(a) The lecture's per-example SGD (benchmarks/specs/case2_sgd.yaml): 64 inputs,
    32 sigmoid hidden units, 1 sigmoid output trained with binary cross-entropy
    on the logit, float64 (the lecture's plain NumPy uses float64), 2,000 random
    examples (fixed seed), batch size 1, one epoch of SGD steps per sample.
    Reports examples/second.
(b) A 784-256-10 ReLU network with softmax cross-entropy
    (benchmarks/specs/mlp784.yaml), float32, batch 64.  Reports the time of one
    SGD step (forward + backward + update).

Contenders, timed in the same run and interleaved round by round (the machine
is shared and noisy; the starting contender rotates every round):

* generated:   the compiled module's sgd_step(params, x, y, lr); with one
               example (a) it takes the module's in-place one-example path;
* handwritten: an expert plain-NumPy implementation of the same network (below);
* hand+blas:   (a) only: the same hand-written step, but with the outer product
               of the weight gradient computed through BLAS (np.dot of a column
               and a row), as the generated module computes it.  It is the
               stronger baseline; the summary judges the target against the
               slower of the two ratios;
* torch:       PyTorch on CPU (nn.Linear layers, BCEWithLogitsLoss /
               CrossEntropyLoss, gradients by autograd, in-place SGD update),
               only if `import torch` works; skipped otherwise.

Also timed: the generated module's forward and value_and_grad, for the ratio
time(forward + backward) / time(forward).

Inputs are split into per-example (a) or per-batch (b) views once, outside the
timing, in each contender's preferred form: (1, 64) rows and (1, 1) targets for
the generated module (so _check need not reshape y), 1-D rows and Python
floats for the hand-written (a), tensors for PyTorch.

Every figure is the median (and the minimum) over the rounds; ratios are
medians of the per-round ratios (and, in brackets, ratios of the minima), so a
slow patch of the machine affects both sides of a ratio alike.  Before timing,
the contenders are checked to compute the same losses and parameters.

Usage: python benchmarks/bench_mlp.py [--case a|b|both] [--rounds-a 31]
           [--rounds-b 51] [--steps-b 10] [--threads N] [--no-torch]

By default the BLAS and PyTorch thread counts are left as they are.  On a
shared 2-core machine a busy neighbour can make multi-threaded BLAS calls
(case b) several times slower; `--threads 1` sets OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS and MKL_NUM_THREADS before NumPy is imported and calls
torch.set_num_threads(1), which gives steadier numbers for every contender.
"""
import argparse
import gc
import math
import os
import pathlib
import platform
import sys
import time


def _threads_from_argv(argv):
    """The value of --threads, read before NumPy is imported (BLAS reads it at import)."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return None


if __name__ == "__main__" and _threads_from_argv(sys.argv[1:]):
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402

from bpcompile.compiler import compile_file, load_module  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SPECS = HERE / "specs"
TARGET = 1.05          # generated time / hand-written time should be at most this
BASELINES = ("handwritten", "hand+blas")   # hand-written contenders (hand+blas: case a only)


def load_generated(spec):
    compiled = compile_file(str(spec))
    return load_module(compiled.source, compiled.name)


def load_torch(disabled, threads=None):
    if disabled:
        return None
    try:
        import torch
    except Exception:     # ImportError, or a broken installation
        return None
    if threads:
        torch.set_num_threads(threads)
    return torch


def print_times(times, count, rate):
    """One row per contender: median and minimum time per item (a round holds `count`), and rates."""
    print(f"    {'':20s} {'median':>12s} {'min':>12s} {rate + ' (median)':>17s} {rate + ' (min)':>14s} {'median/min':>10s}")
    for name, ts in times.items():
        med, lo = float(np.median(ts)) / count, min(ts) / count
        print(f"    {name:20s} {fmt_time(med)} {fmt_time(lo)} {1 / med:17,.0f} {1 / lo:14,.0f} {spread(ts):10.2f}")


def print_ratios(times):
    """Print generated/handwritten (each hand-written baseline), torch/generated and
    fwd+bwd/fwd; return the ratio to the fastest baseline, and the last."""
    worst = None
    for base in BASELINES:
        if base not in times:
            continue
        r_gh = ratio(times, "generated", base)
        verdict = "met" if r_gh[0] <= TARGET else "NOT met"
        print(f"    time generated / {base:11s} = {r_gh[0]:.3f}  [minima: {r_gh[1]:.3f}]   "
              f"(target <= {TARGET}: {verdict})")
        if worst is None or r_gh[0] > worst[0]:
            worst = r_gh
    r_gh = worst
    if "torch" in times:
        r_tg = ratio(times, "torch", "generated")
        print(f"    time torch / generated       = {r_tg[0]:.3f}  [minima: {r_tg[1]:.3f}]")
    r_fb = ratio(times, "gen value_and_grad", "gen forward")
    print(f"    generated time(forward+backward) / time(forward) = {r_fb[0]:.2f}  [minima: {r_fb[1]:.2f}]")
    return r_gh, r_fb


# --------------------------------------------------------------------------
# (a) 64-32-1 sigmoid network, batch 1, float64


def data_a(n, seed):
    """n random inputs (standard normal) with 0/1 labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 64))
    w = rng.standard_normal(64)
    Y = (X @ w + 0.5 * rng.standard_normal(n) > 0).astype(np.float64)
    return X, Y


def handwritten_a(params, blas_outer=False):
    """Per-example SGD step(x, y, lr) -> loss for the 64-32-1 network, in plain NumPy.

    x is a 1-D row of 64 float64 values, y a Python float (0.0 or 1.0).  The
    lecture's equations, arranged for batch 1:

        a = W1 x + b1, z = sigmoid(a), o = w2 . z + b2       (forward)
        J = softplus(o) - y o,  delta = dJ/do = sigmoid(o) - y   (loss from the logit)
        dJ/dw2 = delta z,  dJ/db2 = delta,
        dJ/da = delta w2 z (1 - z),  dJ/dW1 = dJ/da x^T,  dJ/db1 = dJ/da

    The scalar part (output logit, loss, delta) runs on Python floats; the vector
    part writes into preallocated buffers with ufunc `out=` arguments, folds lr
    into the hidden delta before the outer product, and updates the parameter
    arrays in place (w2 is a view of W2, so params sees every update).  NumPy
    functions and buffers are bound as default arguments (fast local lookups).

    With blas_outer=True (the contender "hand+blas") the step takes x as a
    (1, 64) row, like the generated module, and forms the outer product
    t x^T with np.dot of a column and that row, which NumPy hands to BLAS:
    on the machines here that is about 3x faster than the broadcast multiply
    (or np.outer) for 32 x 64.  The generated module does the same, so this is
    the baseline its target is judged against.
    """
    W1, b1, W2, b2 = (params[k] for k in ("linear1.W", "linear1.b", "linear2.W", "linear2.b"))
    hidden, inputs = W1.shape
    w2 = W2[0]                                  # (hidden,) view of the (1, hidden) W2
    z = np.empty(hidden)
    t = np.empty(hidden)
    outer = np.empty((hidden, inputs))
    t_col = t[:, None]                          # (hidden, 1) view of t

    def step(x_in, y, lr, W1=W1, b1=b1, w2=w2, b2=b2, z=z, t=t, outer=outer, t_col=t_col,
             dot=np.dot, exp=np.exp, negative=np.negative, reciprocal=np.reciprocal,
             multiply=np.multiply, subtract=np.subtract, add=np.add,
             mexp=math.exp, log1p=math.log1p,
             row_input=blas_outer, outer_product=np.dot if blas_outer else np.multiply):
        x = x_in[0] if row_input else x_in
        # forward: z = sigmoid(W1 x + b1), computed in the buffer z
        dot(W1, x, out=z)
        z += b1
        negative(z, out=z)
        exp(z, out=z)
        z += 1.0
        reciprocal(z, out=z)
        o = float(dot(w2, z)) + float(b2[0])
        # loss from the logit and s = sigmoid(o), without overflow
        if o >= 0.0:
            e = mexp(-o)
            J = o + log1p(e) - y * o
            s = 1.0 / (1.0 + e)
        else:
            e = mexp(o)
            J = log1p(e) - y * o
            s = e / (1.0 + e)
        c = lr * (s - y)                        # lr * delta
        # t = -lr * dJ/da = c * w2 * (z*z - z), with the old w2
        multiply(z, z, out=t)
        t -= z
        t *= w2
        t *= c
        # in-place updates: w2 -= c z, b2 -= c, W1 += t x^T, b1 += t
        multiply(z, c, out=z)
        subtract(w2, z, out=w2)
        subtract(b2, c, out=b2)
        outer_product(t_col, x_in, out=outer)   # t x^T: BLAS on a (1, 64) row, or broadcasting
        add(W1, outer, out=W1)
        add(b1, t, out=b1)
        return J

    return step


# --------------------------------------------------------------------------
# (b) 784-256-10 ReLU network, softmax cross-entropy, batch 64, float32


def data_b(batches, batch, seed):
    """Random float32 "pixels" in [0, 1) and integer class ids, as a list of batches."""
    rng = np.random.default_rng(seed)
    X = rng.random((batches * batch, 784), dtype=np.float32)
    Y = rng.integers(0, 10, batches * batch)
    return [(X[i * batch:(i + 1) * batch], Y[i * batch:(i + 1) * batch]) for i in range(batches)]


def handwritten_b(params):
    """SGD step(x, y, lr) -> loss for the 784-256-10 ReLU network, in plain NumPy.

    Forward h = relu(x W1^T + b1), logits = h W2^T + b2 (bias and ReLU in place);
    softmax cross-entropy from shifted logits; the gradient of the logits is
    built in the exp buffer and already multiplied by lr / B, so the weight
    updates are W -= (scaled delta)^T @ input with no lr * grad temporaries.
    """
    W1, b1, W2, b2 = (params[k] for k in ("linear1.W", "linear1.b", "linear2.W", "linear2.b"))

    def step(x, y, lr, W1=W1, b1=b1, W2=W2, b2=b2):
        B = len(x)
        h = x @ W1.T
        h += b1
        np.maximum(h, 0, out=h)
        z = h @ W2.T
        z += b2
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        total = e.sum(axis=1)
        rows = np.arange(B)
        J = float(np.log(total).sum() - z[rows, y].sum()) / B
        scale = lr / B
        e *= (scale / total)[:, None]           # lr * dJ/dlogits = lr/B * (softmax - onehot)
        e[rows, y] -= scale
        dh = e @ W2                             # with the old W2
        dh *= h > 0
        W2 -= e.T @ h
        b2 -= e.sum(axis=0)
        W1 -= dh.T @ x
        b1 -= dh.sum(axis=0)
        return J

    return step


# --------------------------------------------------------------------------
# PyTorch


def torch_model(torch, params, sizes, dtype):
    """nn.Linear layers with the same initial parameters as `params`."""
    nn = torch.nn
    act = nn.Sigmoid if sizes == (64, 32, 1) else nn.ReLU
    model = nn.Sequential(nn.Linear(sizes[0], sizes[1]), act(), nn.Linear(sizes[1], sizes[2])).to(dtype)
    with torch.no_grad():
        for i, layer in ((1, model[0]), (2, model[2])):
            layer.weight.copy_(torch.from_numpy(params[f"linear{i}.W"]))
            layer.bias.copy_(torch.from_numpy(params[f"linear{i}.b"]))
    return model


def torch_step(torch, model, loss_fn):
    """SGD step(x, y, lr) -> loss tensor (not converted to a Python float): gradients by
    torch.autograd.grad (no .grad bookkeeping), then one in-place foreach update
    (per-parameter add_ if torch._foreach_add_ is missing).  Of the variants tried
    (loss.backward() with add_ or torch.optim.SGD), this had the least overhead."""
    weights = list(model.parameters())
    foreach = getattr(torch, "_foreach_add_", None)

    def step(x, y, lr):
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            if foreach is not None:
                foreach(weights, grads, alpha=-lr)
            else:
                for w, g in zip(weights, grads):
                    w.add_(g, alpha=-lr)
        return loss.detach()

    return step


def torch_params(model):
    return {"linear1.W": model[0].weight, "linear1.b": model[0].bias,
            "linear2.W": model[2].weight, "linear2.b": model[2].bias}


# --------------------------------------------------------------------------
# timing


def interleaved(runners, rounds, warmup=2):
    """{name: [seconds per round]}: each runner timed once per round, the order rotating."""
    names = list(runners)
    times = {n: [] for n in names}
    for r in range(warmup + rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            seconds = runners[name]()
            if r >= warmup:
                times[name].append(seconds)
    return times


def timed(loop):
    """Seconds taken by loop(), with the garbage collector off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        loop()
        return time.perf_counter() - start
    finally:
        gc.enable()


def ratio(times, num, den):
    """(median of per-round ratios, ratio of minima) of time[num] / time[den]."""
    per_round = [a / b for a, b in zip(times[num], times[den])]
    return float(np.median(per_round)), min(times[num]) / min(times[den])


def spread(ts):
    return float(np.median(ts)) / min(ts)


def environment(torch):
    lines = [f"python {platform.python_version()}, numpy {np.__version__}, "
             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"]
    if torch is not None:
        lines.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    else:
        lines.append("torch: not installed (torch columns skipped)")
    blas = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                       "MKL_NUM_THREADS") if k in os.environ}
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in blas.items()) or "no BLAS/OMP variables set"))
    return lines


def fmt_time(seconds):
    return f"{seconds * 1e6:9.2f} us" if seconds < 1e-2 else f"{seconds * 1e3:9.3f} ms"


# --------------------------------------------------------------------------
# (a)


def bench_a(args, torch, summary):
    G = load_generated(SPECS / "case2_sgd.yaml")
    n, lr = args.examples, args.lr_a
    X, Y = data_a(n, args.seed)
    p0 = G.init_params(args.seed)

    # Per-example inputs, prepared once in each contender's preferred form.
    gen_x = [X[i:i + 1] for i in range(n)]                # (1, 64)
    Y2 = Y.reshape(n, 1)
    gen_y = [Y2[i:i + 1] for i in range(n)]               # (1, 1), no reshape in _check
    hw_x = list(X)                                        # 1-D rows (64,)
    hw_y = Y.tolist()                                     # Python floats

    p_gen = {k: v.copy() for k, v in p0.items()}
    p_hw = {k: v.copy() for k, v in p0.items()}
    p_hb = {k: v.copy() for k, v in p0.items()}
    hw_step = handwritten_a(p_hw)
    hb_step = handwritten_a(p_hb, blas_outer=True)
    gen_step = G.sgd_step

    def reset(p):
        for k, v in p0.items():
            np.copyto(p[k], v)

    def epoch_gen():
        for x, y in zip(gen_x, gen_y):
            gen_step(p_gen, x, y, lr)

    def epoch_hw():
        for x, y in zip(hw_x, hw_y):
            hw_step(x, y, lr)

    def epoch_hb():
        for x, y in zip(gen_x, hw_y):
            hb_step(x, y, lr)

    # Correctness: one epoch from the same start must give the same parameters.
    reset(p_gen)
    loss_gen = [float(gen_step(p_gen, x, y, lr)) for x, y in zip(gen_x, gen_y)]
    reset(p_hw)
    loss_hw = [hw_step(x, y, lr) for x, y in zip(hw_x, hw_y)]
    reset(p_hb)
    loss_hb = [hb_step(x, y, lr) for x, y in zip(gen_x, hw_y)]
    diffs = {"handwritten": (max(abs(a - b) for a, b in zip(loss_gen, loss_hw)),
                             max(float(np.abs(p_gen[k] - p_hw[k]).max()) for k in p0)),
             "hand+blas": (max(abs(a - b) for a, b in zip(loss_gen, loss_hb)),
                           max(float(np.abs(p_gen[k] - p_hb[k]).max()) for k in p0))}

    runners = {"generated": lambda: (reset(p_gen), timed(epoch_gen))[1],
               "handwritten": lambda: (reset(p_hw), timed(epoch_hw))[1],
               "hand+blas": lambda: (reset(p_hb), timed(epoch_hb))[1]}

    if torch is not None:
        model = torch_model(torch, p0, (64, 32, 1), torch.float64)
        t_step = torch_step(torch, model, torch.nn.BCEWithLogitsLoss())
        TX, TY = torch.from_numpy(X.copy()), torch.from_numpy(Y2.copy())
        t_x = [TX[i:i + 1] for i in range(n)]
        t_y = [TY[i:i + 1] for i in range(n)]
        t_p = torch_params(model)

        def t_reset():
            with torch.no_grad():
                for k, v in p0.items():
                    t_p[k].copy_(torch.from_numpy(v))

        def epoch_torch():
            for x, y in zip(t_x, t_y):
                t_step(x, y, lr)

        t_reset()
        loss_t = [float(t_step(x, y, lr)) for x, y in zip(t_x, t_y)]
        diffs["torch"] = (max(abs(a - b) for a, b in zip(loss_gen, loss_t)),
                          max(float(np.abs(p_gen[k] - t_p[k].detach().numpy()).max()) for k in p0))
        runners["torch"] = lambda: (t_reset(), timed(epoch_torch))[1]

    # forward and value_and_grad of the generated module, same inputs
    def fwd():
        for x, y in zip(gen_x, gen_y):
            G.forward(p_gen, x, y)

    def vag():
        for x, y in zip(gen_x, gen_y):
            G.value_and_grad(p_gen, x, y)

    runners["gen forward"] = lambda: timed(fwd)
    runners["gen value_and_grad"] = lambda: timed(vag)

    print(f"\n(a) 64-32-1 sigmoid MLP, binary cross-entropy on the logit, float64, batch 1, "
          f"{n} examples per epoch, lr {lr}")
    for name, (dl, dp) in diffs.items():
        print(f"    check vs generated, one epoch: {name:11s} max |loss diff| {dl:.1e}, "
              f"max |param diff| {dp:.1e}")
        tol = 1e-9 if name in BASELINES else 1e-7
        if not (dl <= tol and dp <= tol):
            sys.exit(f"bench_mlp: {name} disagrees with the generated module (tolerance {tol:g})")

    times = interleaved(runners, args.rounds_a)
    print(f"    {args.rounds_a} rounds of one epoch each (interleaved); per-example time and examples/second:")
    print_times(times, n, "ex/s")
    r_gh, r_fb = print_ratios(times)
    summary.append(("(a) batch 1, f64", "ex/s", times, n, r_gh, r_fb))


# --------------------------------------------------------------------------
# (b)


def bench_b(args, torch, summary):
    G = load_generated(SPECS / "mlp784.yaml")
    lr, steps = args.lr_b, args.steps_b
    batches = data_b(steps, 64, args.seed)
    p0 = G.init_params(args.seed)
    p_gen = {k: v.copy() for k, v in p0.items()}
    p_hw = {k: v.copy() for k, v in p0.items()}
    hw_step = handwritten_b(p_hw)
    gen_step = G.sgd_step

    def reset(p):
        for k, v in p0.items():
            np.copyto(p[k], v)

    def loop_gen():
        for x, y in batches:
            gen_step(p_gen, x, y, lr)

    def loop_hw():
        for x, y in batches:
            hw_step(x, y, lr)

    def losses(step, p, data):
        return [float(step(p, x, y, lr) if p is not None else step(x, y, lr)) for x, y in data]

    reset(p_gen)
    loss_gen = losses(gen_step, p_gen, batches)
    reset(p_hw)
    loss_hw = losses(hw_step, None, batches)

    def pdiff(other):
        return max(float(np.abs(p_gen[k] - other[k]).max() / max(np.abs(p_gen[k]).max(), 1e-30)) for k in p0)

    diffs = {"handwritten": (max(abs(a - b) for a, b in zip(loss_gen, loss_hw)), pdiff(p_hw))}
    runners = {"generated": lambda: (reset(p_gen), timed(loop_gen))[1],
               "handwritten": lambda: (reset(p_hw), timed(loop_hw))[1]}

    if torch is not None:
        model = torch_model(torch, p0, (784, 256, 10), torch.float32)
        t_step = torch_step(torch, model, torch.nn.CrossEntropyLoss())
        t_batches = [(torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))) for x, y in batches]
        t_p = torch_params(model)

        def t_reset():
            with torch.no_grad():
                for k, v in p0.items():
                    t_p[k].copy_(torch.from_numpy(v))

        def loop_t():
            for x, y in t_batches:
                t_step(x, y, lr)

        t_reset()
        loss_t = losses(t_step, None, t_batches)
        diffs["torch"] = (max(abs(a - b) for a, b in zip(loss_gen, loss_t)),
                          pdiff({k: v.detach().numpy() for k, v in t_p.items()}))
        runners["torch"] = lambda: (t_reset(), timed(loop_t))[1]

    def fwd():
        for x, y in batches:
            G.forward(p_gen, x, y)

    def vag():
        for x, y in batches:
            G.value_and_grad(p_gen, x, y)

    runners["gen forward"] = lambda: timed(fwd)
    runners["gen value_and_grad"] = lambda: timed(vag)

    print(f"\n(b) 784-256-10 ReLU MLP, softmax cross-entropy, float32, batch 64, lr {lr}")
    for name, (dl, dp) in diffs.items():
        print(f"    check vs generated, {steps} steps: {name:11s} max |loss diff| {dl:.1e}, "
              f"max relative param diff {dp:.1e}")
        if not (dl <= 1e-4 and dp <= 1e-4):
            sys.exit(f"bench_mlp: {name} disagrees with the generated module")

    times = interleaved(runners, args.rounds_b)
    print(f"    {args.rounds_b} rounds of {steps} steps each (interleaved); time per step and steps/second:")
    print_times(times, steps, "steps/s")
    r_gh, r_fb = print_ratios(times)
    summary.append(("(b) batch 64, f32", "steps/s", times, steps, r_gh, r_fb))


def print_summary(summary):
    print("\nSummary (median over interleaved rounds; ratios are medians of per-round ratios)")
    head = f"{'case':18s} {'contender':20s} {'per step':>12s} {'per second':>12s} {'time / generated':>17s}"
    print(head)
    print("-" * len(head))
    for case, unit, times, count, r_gh, r_fb in summary:
        for name, ts in times.items():
            med = float(np.median(ts)) / count
            rel = (float(np.median([a / b for a, b in zip(ts, times["generated"])]))
                   if not name.startswith("gen ") else float("nan"))
            rel_text = f"{rel:17.3f}" if not math.isnan(rel) else f"{'-':>17s}"
            print(f"{case:18s} {name:20s} {fmt_time(med)} {1 / med:12,.0f} {rel_text}")
        verdict = "met" if r_gh[0] <= TARGET else "NOT met"
        print(f"{case:18s} generated/hand-written time, fastest baseline: {r_gh[0]:.3f} "
              f"(target <= {TARGET}: {verdict}); generated fwd+bwd/fwd {r_fb[0]:.2f}")
    worst = max(spread(ts) for _, _, times, _, _, _ in summary for ts in times.values())
    print("Per-step times include each contender's Python call overhead.")
    if worst > 1.3:
        hint = "more rounds" if os.environ.get("OPENBLAS_NUM_THREADS") == "1" else "--threads 1 or more rounds"
        print(f"WARNING: the machine was busy (a median/min spread reached {worst:.2f}); the absolute "
              f"times are inflated and the ratios are less reliable than usual: rerun, perhaps with {hint}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("a", "b", "both"), default="both")
    parser.add_argument("--rounds-a", type=int, default=31, help="timed epochs per contender in (a)")
    parser.add_argument("--rounds-b", type=int, default=51, help="timed rounds per contender in (b)")
    parser.add_argument("--steps-b", type=int, default=10, help="SGD steps (distinct batches) per round in (b)")
    parser.add_argument("--examples", type=int, default=2000, help="examples per epoch in (a)")
    parser.add_argument("--lr-a", type=float, default=0.1)
    parser.add_argument("--lr-b", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP/torch threads (command line only; default: leave as is)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    args = parser.parse_args(argv)

    torch = load_torch(args.no_torch, args.threads)
    print("bench_mlp: generated bpcompile modules vs hand-written NumPy"
          + (" vs PyTorch" if torch is not None else ""))
    for line in environment(torch):
        print("    " + line)
    summary = []
    if args.case in ("a", "both"):
        bench_a(args, torch, summary)
    if args.case in ("b", "both"):
        bench_b(args, torch, summary)
    print_summary(summary)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
