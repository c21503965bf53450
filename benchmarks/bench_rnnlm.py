"""Words/second of an LSTM language-model training step: the lecture's RNNLM table.

Network (benchmarks/specs/rnnlm_bench.yaml): embedding 128, one LSTM layer with
256 hidden units, vocabulary 10,000, float32; softmax cross-entropy at every
position, averaged over the real tokens.  A training step is forward,
backward and the SGD update.

Data: synthetic sentences of random length 20-40 with random token ids (fixed
seed), sorted by length and cut into minibatches (buckets of similar length),
each padded to its longest sentence with mask 0 on the padding.  Only real
tokens count as words.  For every minibatch size the same batches (about
--words words) are given to every contender.

Contenders, interleaved batch by batch with a rotating order (the machine is
shared and noisy); each round times every contender on all batches of every
size, and the table shows medians over rounds:

* generated:    sgd_step of the module bpcompile generates from the spec, on
                parameters from its init_params (which stores each layer's
                gate weights side by side, so no call concatenates them);
* hand-written: benchmarks/handwritten_lstm.py, plain NumPy written by hand;
* torch:        PyTorch CPU nn.Embedding + nn.LSTM + nn.Linear, cross-entropy
                with ignore_index on the padding; only if `import torch` works.

Also times the generated module's forward and value_and_grad on the same
batches: time(forward + backward) / time(forward).

Before timing it checks, at float64, that the hand-written model's loss and
gradients (and torch's, if present) equal the generated module's on the same
parameters, and at float32 that all contenders compute the same first loss.

If the generated step is more than 5% slower than the hand-written one at some
minibatch size (or with --profile), it profiles both line by line (see
LineProfiler) and prints where the time goes, by statement class.

Threads: --threads N (default 1) sets OpenBLAS/OpenMP threads (before NumPy is
imported) and torch.set_num_threads(N) alike, so all contenders use the same
number of cores; --threads 0 leaves the libraries' defaults.  On a shared
machine, 2-thread OpenBLAS with small per-step matmuls is very sensitive to
other load, hence the default of 1.

Usage: python benchmarks/bench_rnnlm.py [--mb 1 4 16 64] [--words 2400]
       [--rounds 7] [--budget 150] [--threads 1] [--no-torch]
       [--profile | --no-profile]
"""
import argparse
import ast
import os
import pathlib
import re
import sys
import time
from collections import defaultdict


def _threads_from_argv(argv, default=1):
    for k, a in enumerate(argv):
        if a == "--threads" and k + 1 < len(argv):
            return int(argv[k + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


if __name__ == "__main__" and "numpy" not in sys.modules:
    THREADS = _threads_from_argv(sys.argv[1:])
    if THREADS > 0:
        for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import handwritten_lstm as hw  # noqa: E402

SPEC = HERE / "specs" / "rnnlm_bench.yaml"
VOCAB, EMBED, HIDDEN = 10000, 128, 256
LR = 0.05


# --- data --------------------------------------------------------------------------------

def make_corpus(n_sentences, seed=0, lo=20, hi=40):
    """Sentences as (x, y) int64 pairs: y is x shifted by one (next-word prediction)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n_sentences)
    out = []
    for L in lengths:
        tokens = rng.integers(0, VOCAB, L + 1)
        out.append((tokens[:-1], tokens[1:]))
    return out


def make_batches(corpus, mb):
    """Sort by length, cut into minibatches of mb, pad each to its longest: (x, y, mask, words)."""
    order = sorted(range(len(corpus)), key=lambda k: len(corpus[k][0]))
    batches = []
    for start in range(0, len(order) - mb + 1, mb):
        members = [corpus[k] for k in order[start:start + mb]]
        T = max(len(s[0]) for s in members)
        x = np.zeros((mb, T), np.int64)
        y = np.zeros((mb, T), np.int64)
        mask = np.zeros((mb, T), np.float32)
        for b, (xs, ys) in enumerate(members):
            x[b, :len(xs)], y[b, :len(ys)], mask[b, :len(xs)] = xs, ys, 1
        batches.append((x, y, mask, int(mask.sum())))
    return batches


def pick_batches(batches, words, seed=0):
    """A fixed random choice of batches holding at least `words` real tokens."""
    rng = np.random.default_rng(seed)
    chosen, total = [], 0
    for k in rng.permutation(len(batches)):
        chosen.append(batches[k])
        total += batches[k][3]
        if total >= words:
            break
    return chosen


# --- the contenders --------------------------------------------------------------------------

def load_generated(dtype="float32"):
    from bpcompile.compiler import compile_spec, load_module, load_spec
    text = SPEC.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^dtype:\s*\w+", f"dtype: {dtype}", text)
    assert n == 1, "the spec has no top-level dtype line"
    compiled = compile_spec(load_spec(text, str(SPEC)))
    return load_module(compiled.source, compiled.name)


def import_torch(disabled):
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


class TorchLM:
    """nn.Embedding + nn.LSTM + nn.Linear with the given (bpcompile-named) parameters."""

    def __init__(self, torch, gen_params, dtype, lr=LR, pack=False):
        nn = torch.nn
        self.torch, self.pack = torch, pack
        tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
        self.emb = nn.Embedding(VOCAB, EMBED).to(tdt)
        self.lstm = nn.LSTM(EMBED, HIDDEN, batch_first=True).to(tdt)
        self.lin = nn.Linear(HIDDEN, VOCAB).to(tdt)
        g = lambda k: torch.from_numpy(np.ascontiguousarray(gen_params[k], dtype=dtype))  # noqa: E731
        gates = "ifco"                       # torch's order is i, f, g, o: c is g
        with torch.no_grad():
            self.emb.weight.copy_(g("embedding1.E"))
            self.lstm.weight_ih_l0.copy_(torch.cat([g(f"lstm1.W_x{k}") for k in gates]))
            self.lstm.weight_hh_l0.copy_(torch.cat([g(f"lstm1.W_h{k}") for k in gates]))
            self.lstm.bias_ih_l0.copy_(torch.cat([g(f"lstm1.b_{k}") for k in gates]))
            self.lstm.bias_hh_l0.zero_()
            self.lin.weight.copy_(g("linear1.W"))
            self.lin.bias.copy_(g("linear1.b"))
        self.params = [*self.emb.parameters(), *self.lstm.parameters(), *self.lin.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=lr)

    def prepare(self, batch):
        """Tensors for a (x, y, mask, words) batch, made once outside the timing."""
        x, y, mask, _ = batch
        t = self.torch
        target = np.where(mask > 0, y, -100)            # ignore_index on the padding
        return t.from_numpy(x), t.from_numpy(target), t.from_numpy(mask.sum(1).astype(np.int64))

    def loss(self, xt, target, lengths):
        e = self.emb(xt)
        if self.pack:
            nnu = self.torch.nn.utils.rnn
            packed = nnu.pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
            h, _ = nnu.pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                           total_length=xt.shape[1])
        else:
            h, _ = self.lstm(e)                          # padding comes last: the loss is unchanged
        logits = self.lin(h)
        return self.torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), target.reshape(-1), ignore_index=-100)

    def step(self, prepared):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(*prepared)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def grads(self, prepared):
        """Loss and gradients under bpcompile's names (the two LSTM biases get one gradient)."""
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(*prepared)
        loss.backward()
        H = HIDDEN
        out = {"embedding1.E": self.emb.weight.grad, "linear1.W": self.lin.weight.grad,
               "linear1.b": self.lin.bias.grad}
        for k, gname in enumerate("ifco"):
            rows = slice(k * H, (k + 1) * H)
            out[f"lstm1.W_x{gname}"] = self.lstm.weight_ih_l0.grad[rows]
            out[f"lstm1.W_h{gname}"] = self.lstm.weight_hh_l0.grad[rows]
            out[f"lstm1.b_{gname}"] = self.lstm.bias_ih_l0.grad[rows]
        return float(loss.detach()), {k: v.numpy() for k, v in out.items()}


# --- agreement --------------------------------------------------------------------------------

def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def check_agreement(torch, batch, batch32):
    """float64: loss and gradients of hand-written (and torch) vs generated on the same params."""
    gen64 = load_generated("float64")
    params = gen64.init_params(1)
    rng = np.random.default_rng(5)
    for k in params:                      # nonzero biases, so their gradients are tested too
        if params[k].ndim == 1:
            params[k] = rng.uniform(-0.3, 0.3, params[k].shape)
    x, y, mask, words = batch
    J, grads = gen64.value_and_grad(params, x, y, mask)
    Jh, cache = hw.forward(hw.to_stacked(params), x, y, mask)
    gh = hw.from_stacked(hw.backward(hw.to_stacked(params), cache))
    T = x.shape[1]
    print(f"agreement at float64 on a batch of {len(x)} sentences, T = {T}, "
          f"{words} real tokens of {x.size} (padding {1 - words / x.size:.0%}):")
    worst = abs(J - Jh) / abs(J)
    print(f"  loss: generated {J:.12f}  hand-written {Jh:.12f}  rel. diff {worst:.1e}")
    errs = {k: rel_err(grads[k], gh[k]) for k in params}
    worst = max(worst, *errs.values())
    print("  gradients, max|gen - hand| / max|gen|: "
          + ", ".join(f"{k.split('.', 1)[1] if k.startswith('lstm1') else k} {e:.1e}"
                      for k, e in errs.items()))
    ok = worst < 1e-8
    if torch is not None:
        tm = TorchLM(torch, params, np.float64)
        Jt, gt = tm.grads(tm.prepare(batch))
        terrs = {k: rel_err(grads[k], gt[k]) for k in params}
        tworst = max(abs(J - Jt) / abs(J), *terrs.values())
        print(f"  torch float64: loss {Jt:.12f}, worst loss/gradient rel. diff vs generated {tworst:.1e}")
        ok = ok and tworst < 1e-8
    print(f"  => {'OK' if ok else 'MISMATCH'} (worst hand-written rel. diff {worst:.1e}, tolerance 1e-8)")
    if not ok:
        raise SystemExit("the contenders disagree; not timing them")

    # float32, one SGD step each from the same parameters: the same loss
    gen32 = load_generated("float32")
    p32 = gen32.init_params(0)
    x, y, mask, _ = batch32
    losses = {"generated": float(gen32.sgd_step({k: v.copy() for k, v in p32.items()}, x, y, LR, mask)),
              "hand-written": hw.sgd_step(hw.to_stacked(p32), x, y, LR, mask)}
    if torch is not None:
        tm = TorchLM(torch, p32, np.float32)
        losses["torch"] = tm.step(tm.prepare(batch32))
    spread = max(losses.values()) - min(losses.values())
    print("  float32 first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in losses.items())
          + f" (spread {spread:.1e})")
    if spread > 1e-4 * abs(losses["generated"]):
        raise SystemExit("float32 losses disagree")


# --- line profiler ------------------------------------------------------------------------------

class LineProfiler:
    """Exclusive wall time per source line of the functions defined in one file (sys.settrace).

    Each interval between two trace events of the traced code is charged to the
    line that was running; calls into untraced code (NumPy) are charged to the
    calling line.  The tracer's own cost per event is measured on a function of
    trivial lines and subtracted, so the totals come out near the untraced time
    (both are printed).
    """

    def __init__(self, filename):
        self.filename = filename
        self.times, self.counts = defaultdict(float), defaultdict(int)
        self.per_event = 0.0

    def _tracers(self, times, counts):
        clock, stack, last = time.perf_counter, [], [0.0]
        filename = self.filename

        def local(frame, event, arg):
            now = clock()
            key = stack[-1]
            times[key] += now - last[0]
            counts[key] += 1
            if event == "line":
                stack[-1] = frame.f_lineno
            elif event == "return":
                stack.pop()
            last[0] = clock()
            return local

        def global_(frame, event, arg):
            if frame.f_code.co_filename != filename:
                return None
            now = clock()
            if stack:
                times[stack[-1]] += now - last[0]
                counts[stack[-1]] += 1
            stack.append(frame.f_code.co_firstlineno)
            last[0] = clock()
            return local

        return global_

    def calibrate(self, n=20000):
        src = "def _calib(n):\n    for _ in range(n):\n        a = 1\n        b = a\n    return b\n"
        scope = {}
        exec(compile(src, self.filename, "exec"), scope)
        f = scope["_calib"]
        t0 = time.perf_counter()
        f(n)
        plain = time.perf_counter() - t0
        times, counts = defaultdict(float), defaultdict(int)
        sys.settrace(self._tracers(times, counts))
        t0 = time.perf_counter()
        f(n)
        sys.settrace(None)
        traced = sum(times.values())
        self.per_event = max(0.0, (traced - plain) / max(1, sum(counts.values())))

    def run(self, fn):
        sys.settrace(self._tracers(self.times, self.counts))
        try:
            fn()
        finally:
            sys.settrace(None)

    def corrected(self):
        return {k: max(0.0, t - self.counts[k] * self.per_event) for k, t in self.times.items()}


def function_map(source):
    """line -> (function name, inside a for loop?) for the top-level functions of a module."""
    tree = ast.parse(source)
    where = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for line in range(node.lineno, node.end_lineno + 1):
                where[line] = (node.name, False)
            for sub in ast.walk(node):
                if isinstance(sub, ast.For):
                    for line in range(sub.body[0].lineno, sub.end_lineno + 1):
                        where[line] = (node.name, True)
                    where[sub.lineno] = (node.name, "header")
    return where


def _is_plain_access(text):
    """Is the line `a = b`, `a = b[...]` or `t = k` (no arithmetic, no call)?"""
    try:
        node = ast.parse(text.strip()).body[0]
    except (SyntaxError, IndexError):
        return False
    if not isinstance(node, ast.Assign):
        return False
    value = node.value
    while isinstance(value, ast.Subscript):
        value = value.value
    return isinstance(value, (ast.Name, ast.Constant))


def classify(text, func, in_loop):
    """A statement class for a line of the generated (or hand-written) module."""
    if in_loop == "header":
        return "loop: for statement"
    if in_loop:
        if ".append(" in text:
            return "loop: list appends"
        if "concatenate" in text:
            return "loop: np.concatenate"
        if "np.where" in text or "copyto" in text or re.search(r"\bif not full", text):
            return "loop: masking (np.where / copyto)"
        if "@" in text:
            return "loop: matmul (B,H)x(H,4H)"
        if _is_plain_access(text):
            return "loop: indexing/slicing, assignments"
        return "loop: elementwise ufuncs"
    if func in ("_check", "_initial_state", "_describe"):
        return "_check/_initial_state validation"
    if func == "_onehot" or "_onehot(" in text:
        return "one-hot (np.eye(V)[y]) and dlogits"
    if func in ("_masked_softmax_cross_entropy", "_softmax_cross_entropy") or "_masked_softmax" in text:
        return "softmax cross-entropy (forward)"
    if func == "_embedding_grad" or "add.at" in text:
        return "embedding gradient (np.add.at)"
    if re.search(r"-=", text):
        return "SGD update"
    if "@" in text:
        return "matmuls outside the loop"
    if "concatenate" in text:
        return "np.concatenate outside the loop"
    return "other (setup, sums, indexing)"


def profile(name, filename, source, fn, reps, untraced, top=6):
    """Print the time per statement class of fn(), traced over `reps` calls."""
    prof = LineProfiler(filename)
    prof.calibrate()
    for _ in range(reps):
        prof.run(fn)
    cor = prof.corrected()
    total = sum(cor.values()) / reps
    lines = source.splitlines()
    where = function_map(source)
    classes, execs = defaultdict(float), defaultdict(int)
    loop_lines = defaultdict(int)
    for line, t in cor.items():
        func, in_loop = where.get(line, ("?", False))
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        cls = classify(text, func, in_loop)
        classes[cls] += t / reps
        execs[cls] += prof.counts[line] / reps
        if in_loop is True:
            loop_lines[func] += prof.counts[line] / reps
    print(f"\n  {name}: traced {total * 1e3:.1f} ms after subtracting "
          f"{prof.per_event * 1e9:.0f} ns/event (untraced: median {untraced * 1e3:.1f} ms)")
    for cls, t in sorted(classes.items(), key=lambda kv: -kv[1]):
        print(f"    {cls:38s} {t * 1e3:8.2f} ms  {t / total:6.1%}  ({execs[cls]:.0f} line events)")
    print("    top lines:")
    for line, t in sorted(cor.items(), key=lambda kv: -kv[1])[:top]:
        text = lines[line - 1].strip() if 0 < line <= len(lines) else "?"
        text = text.split("  #")[0]
        print(f"      {t / reps * 1e3:8.2f} ms {prof.counts[line] / reps:6.0f}x  {text[:88]}")
    return classes, total, loop_lines


# --- timing --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, nargs="+", default=[1, 4, 16, 64], help="minibatch sizes")
    ap.add_argument("--words", type=int, default=2400, help="real tokens per contender per round and size")
    ap.add_argument("--sentences", type=int, default=2000, help="sentences in the synthetic corpus")
    ap.add_argument("--rounds", type=int, default=7, help="at most this many rounds")
    ap.add_argument("--min-rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=150.0,
                    help="no new round starts after this many seconds of timing (min-rounds always run)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch contender")
    ap.add_argument("--torch-pack", action="store_true", help="torch uses pack_padded_sequence")
    ap.add_argument("--no-ratio", action="store_true", help="skip timing forward / value_and_grad")
    ap.add_argument("--profile", action="store_true", help="profile even if within 5%%")
    ap.add_argument("--no-profile", action="store_true", help="never profile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/torch threads for every contender (0: library defaults)")
    args = ap.parse_args()

    torch = import_torch(args.no_torch)
    if torch is not None and args.threads > 0:
        torch.set_num_threads(args.threads)
    corpus = make_corpus(args.sentences, args.seed)
    data = {mb: pick_batches(make_batches(corpus, mb), args.words, args.seed + mb) for mb in args.mb}
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"numpy {np.__version__} (OpenBLAS threads: {blas})"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
             if torch else ", torch not importable: no PyTorch column"))
    print(f"corpus: {args.sentences} sentences of 20-40 tokens, vocabulary {VOCAB}; "
          f"per minibatch size, the same batches for every contender:")
    for mb, batches in data.items():
        words = sum(b[3] for b in batches)
        cells = sum(b[0].size for b in batches)
        print(f"  MB {mb:3d}: {len(batches):4d} batches, {words} words, padding {1 - words / cells:.1%}")

    # agreement first: a padded batch of 4 for float64, the first MB batch for float32
    check_batch = make_batches(corpus[:41], 4)
    check_batch = max(check_batch, key=lambda b: b[0].size - b[3])     # the most padding
    check_agreement(torch, check_batch, data[args.mb[-1]][0])

    gen = load_generated("float32")
    p0 = gen.init_params(0)
    contenders = {}
    pg = gen.init_params(0)        # the same values as p0, with each layer's gates side by side
    contenders["generated"] = lambda b: gen.sgd_step(pg, b[0], b[1], LR, b[2])
    ph = hw.to_stacked(p0)
    contenders["hand-written"] = lambda b: hw.sgd_step(ph, b[0], b[1], LR, b[2])
    prepared = {}
    if torch is not None:
        tm = TorchLM(torch, p0, np.float32, pack=args.torch_pack)
        prepared = {id(b): tm.prepare(b) for bs in data.values() for b in bs}
        contenders["torch"] = lambda b: tm.step(prepared[id(b)])
    if not args.no_ratio:
        pf = gen.init_params(0)
        contenders["gen.forward"] = lambda b: gen.forward(pf, b[0], b[1], b[2])
        contenders["gen.value_and_grad"] = lambda b: gen.value_and_grad(pf, b[0], b[1], b[2])
        contenders["hw.forward"] = lambda b: hw.forward(ph, b[0], b[1], b[2])
        contenders["hw.value_and_grad"] = lambda b: hw.value_and_grad(ph, b[0], b[1], b[2])

    for mb, batches in data.items():          # warm-up: one batch each
        for f in contenders.values():
            f(batches[0])

    names = list(contenders)
    times = {(n, mb): [] for n in names for mb in args.mb}
    start = time.perf_counter()
    rounds = 0
    for r in range(args.rounds):
        if r >= args.min_rounds and time.perf_counter() - start > args.budget:
            break
        for mb in args.mb:
            acc = dict.fromkeys(names, 0.0)
            for j, b in enumerate(data[mb]):     # batch by batch, every contender in turn,
                k = (r + j) % len(names)         # rotating who goes first
                for n in names[k:] + names[:k]:
                    t0 = time.perf_counter()
                    contenders[n](b)
                    acc[n] += time.perf_counter() - t0
            for n in names:
                times[n, mb].append(acc[n])
        rounds += 1
        print(f"  round {rounds} done at {time.perf_counter() - start:.0f} s", flush=True)

    med = {k: float(np.median(v)) for k, v in times.items()}
    wps = {(n, mb): sum(b[3] for b in data[mb]) / med[n, mb] for n in names for mb in args.mb}
    has_t = torch is not None
    print(f"\nwords/second of a training step (forward, backward, SGD), float32, median of {rounds} rounds")
    head = f"{'MB':>4s} {'generated':>10s} {'hand':>10s}" + (f" {'torch':>10s}" if has_t else "") \
        + f" {'gen/hand':>9s}" + (f" {'torch/gen':>9s}" if has_t else "") \
        + ("" if args.no_ratio else f" {'gen fb/f':>9s} {'hand fb/f':>9s}")
    print(head + "   (gen/hand, fb/f: time ratios"
          + ("; torch/gen: words/s of torch / words/s of generated)" if has_t else ")"))
    slow = []
    for mb in args.mb:
        g, h = med["generated", mb], med["hand-written", mb]
        row = f"{mb:4d} {wps['generated', mb]:10.0f} {wps['hand-written', mb]:10.0f}"
        if has_t:
            row += f" {wps['torch', mb]:10.0f}"
        row += f" {g / h:9.2f}"
        if has_t:
            row += f" {g / med['torch', mb]:9.2f}"
        if not args.no_ratio:
            row += f" {med['gen.value_and_grad', mb] / med['gen.forward', mb]:9.2f}" \
                   f" {med['hw.value_and_grad', mb] / med['hw.forward', mb]:9.2f}"
        print(row)
        if g / h > 1.05:
            slow.append(mb)
    spread = {k: (min(v) / med[k], max(v) / med[k]) for k, v in times.items()}
    print("spread of rounds (min/median .. max/median): " + "; ".join(
        f"{n} MB{mb} {lo:.2f}..{hi:.2f}" for (n, mb), (lo, hi) in spread.items()
        if n in ("generated", "hand-written", "torch")))
    print(f"targets: gen/hand <= 1.05 ({'met' if not slow else 'missed at MB ' + ', '.join(map(str, slow))})"
          + ("" if args.no_ratio else
             f"; gen fb/f <= 3 ({'met' if all(med['gen.value_and_grad', mb] / med['gen.forward', mb] <= 3 for mb in args.mb) else 'missed'})"))

    if (slow or args.profile) and not args.no_profile:
        print("\nprofile (line by line, by statement class), one pass over each size's batches:")
        hw_source = pathlib.Path(hw.__file__).read_text(encoding="utf-8")
        for mb in (args.mb if args.profile else slow):
            batches = data[mb]
            print(f"\nMB {mb}: {len(batches)} batches, mean T {np.mean([b[0].shape[1] for b in batches]):.1f}")
            n = len(batches)
            _, gtot, gl = profile("generated sgd_step", gen.__spec__.loader.get_filename(""), gen.SOURCE,
                                  lambda: [gen.sgd_step(pg, b[0], b[1], LR, b[2]) for b in batches], 1,
                                  med["generated", mb])
            _, htot, hl = profile("hand-written sgd_step", hw.__file__, hw_source,
                                  lambda: [hw.sgd_step(ph, b[0], b[1], LR, b[2]) for b in batches], 1,
                                  med["hand-written", mb])
            steps = sum(b[0].shape[1] for b in batches)
            print("  statements executed per time step (both loops): generated "
                  f"{sum(gl.values()) / steps:.0f}, hand-written {sum(hl.values()) / steps:.0f}")


if __name__ == "__main__":
    main()
