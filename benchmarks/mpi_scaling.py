"""Data-parallel training steps per second with 1 and 2 MPI ranks, and the share
of a step spent in the gradient Allreduce.

    python benchmarks/mpi_scaling.py [--ranks 1 2] [--steps 40] [--repeat 3] [--json out.json]

Two workloads, each rank with one BLAS thread (OPENBLAS_NUM_THREADS=1 and the
like), as `mpirun -n N bpcompile train` runs them:

* lenet5: examples/lenet5.yaml (float32, 1x28x28) on random images, a global
  batch of 128 (64 per rank with 2 ranks), plain SGD;
* rnnlm: examples/rnnlm.yaml (embedding 128, LSTM 256, vocabulary 10,000,
  float32) on examples/data/tiny.txt, 16 stream rows (8 per rank) by 35 steps
  of truncated BPTT, clipped SGD.

With 1 rank the step is the one-process path (the fused sgd_step for LeNet-5,
seqtrain.clipped_sgd for the language model). With N ranks it is
bpcompile.training.distributed's example_step / language_model_step: the
rank's shard, one Allreduce over one flat buffer, the same update everywhere.
The script also times the Allreduce of a buffer of the gradient's size alone
(after a barrier, so without waiting for a slower rank): the transfer cost
that a cluster's network would change.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
WARMUP = 3


def _module(spec):
    from bpcompile.compiler import compile_file, load_module
    compiled = compile_file(str(ROOT / "examples" / spec))
    return load_module(compiled.source, compiled.name)


def _lenet5(ranks, steps):
    import numpy as np
    from bpcompile.training import distributed
    module = _module("lenet5.yaml")
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(128, 1, 28, 28)).astype(module.DTYPE),
                rng.integers(0, 10, size=128)) for _ in range(4)]
    params, lr = module.init_params(0), 0.01
    if ranks is None:
        def step(k):
            x, y = batches[k % len(batches)]
            module.sgd_step(params, x, y, lr)
    else:
        state = {}
        parallel = distributed.example_step(
            module, lambda p, g: module.sgd_update(p, g, state, lr), ranks)

        def step(k):
            x, y = batches[k % len(batches)]
            parallel(params, x, y)
    return module, params, step


def _rnnlm(ranks, steps):
    from bpcompile.training import distributed, seqtrain, sequences
    module = _module("rnnlm.yaml")
    tokens = sequences.read_text_tokens(str(ROOT / "examples" / "data" / "tiny.txt"))
    vocab = sequences.Vocabulary.build([tokens], max_size=int(module.VOCAB))
    chunks = sequences.bptt_chunks(vocab.encode(tokens), 16, 35)
    chunks = [c for c in chunks if c[0].shape[1] == 35]         # full-width chunks only
    params, lr, carried = module.init_params(0), 1.0, {"state": None}
    if ranks is None:
        inner = seqtrain.clipped_sgd(module, lr)
    else:
        inner = distributed.language_model_step(
            module, lambda p, g: seqtrain.clipped_sgd_update(p, g, lr), ranks)

    def step(k):
        if k % len(chunks) == 0:
            carried["state"] = None
        x, y = chunks[k % len(chunks)]
        _, carried["state"] = inner(params, x, y, carried["state"])
    return module, params, step


WORKLOADS = {"lenet5": _lenet5, "rnnlm": _rnnlm}


def _pure_allreduce(ranks, size, dtype, repeats=20):
    """Seconds per Allreduce of `size` numbers, every rank starting together."""
    import numpy as np
    from mpi4py import MPI
    send, receive = np.ones(size, dtype=dtype), np.empty(size, dtype=dtype)
    total = 0.0
    for _ in range(repeats):
        ranks.comm.Barrier()
        start = time.perf_counter()
        ranks.comm.Allreduce(send, receive, op=MPI.SUM)
        total += time.perf_counter() - start
    return total / repeats


def worker(name, steps):
    """Runs on every rank; rank 0 prints one JSON line."""
    from bpcompile.training import distributed
    ranks = distributed.group()
    module, params, step = WORKLOADS[name](ranks, steps)
    for k in range(WARMUP):
        step(k)
    if ranks is not None:
        ranks.comm.Barrier()
        ranks.allreduce_seconds = 0.0
    start = time.perf_counter()
    for k in range(WARMUP, WARMUP + steps):
        step(k)
    seconds = time.perf_counter() - start
    numbers = sum(int(v.size) for v in params.values())
    result = {"workload": name, "ranks": 1 if ranks is None else ranks.size, "steps": steps,
              "steps_per_second": steps / seconds, "gradient_numbers": numbers,
              "gradient_bytes": numbers * params[next(iter(params))].itemsize}
    if ranks is not None:
        result["allreduce_fraction"] = ranks.allreduce_seconds / seconds
        result["allreduce_ms_per_step"] = 1e3 * ranks.allreduce_seconds / steps
        result["pure_allreduce_ms"] = 1e3 * _pure_allreduce(ranks, numbers + 2, module.DTYPE)
        if not ranks.same_params(params):
            raise SystemExit("the ranks' parameters differ")
        if not ranks.is_root:
            return
    print(json.dumps(result), flush=True)


def _launch(name, ranks, steps):
    environment = dict(os.environ, **{v: "1" for v in THREAD_VARIABLES})
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
               "--steps", str(steps)]
    if ranks > 1:
        command = ["mpirun", "-n", str(ranks)] + command
    else:                   # one process, not launched by mpirun: today's path
        environment = {k: v for k, v in environment.items()
                       if not k.startswith(("PMI_", "PMIX_", "OMPI_"))}
    output = subprocess.run(command, env=environment, capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def _median_run(found):
    """The run with the median steps per second (the machine may be shared)."""
    ordered = sorted(found, key=lambda r: r["steps_per_second"])
    return ordered[len(ordered) // 2]


def _table(results):
    lines = [f"{'workload':<8} {'ranks':>5} {'steps/s':>8} {'speed-up':>8} "
             f"{'allreduce':>9} {'ms/step':>8} {'pure ms':>8} {'gradient':>9}"]
    base = {r["workload"]: r["steps_per_second"] for r in results if r["ranks"] == 1}
    for r in results:
        share = r.get("allreduce_fraction")
        extra = ["", "", ""] if share is None else [
            f"{100 * share:.1f}%", f"{r['allreduce_ms_per_step']:.2f}",
            f"{r['pure_allreduce_ms']:.2f}"]
        speed_up = r["steps_per_second"] / base.get(r["workload"], r["steps_per_second"])
        lines.append(f"{r['workload']:<8} {r['ranks']:>5} {r['steps_per_second']:>8.2f} "
                     f"{speed_up:>7.2f}x {extra[0]:>9} {extra[1]:>8} {extra[2]:>8} "
                     f"{r['gradient_bytes'] / 1e6:>7.2f}MB")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each setting, interleaved; the median run is shown")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    runs = {}
    for _ in range(args.repeat):            # interleaved, so that a busy moment hits all
        for name in args.workloads:
            for n in args.ranks:
                runs.setdefault((name, n), []).append(_launch(name, n, args.steps))
    results = [_median_run(found) for found in runs.values()]
    print(_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
