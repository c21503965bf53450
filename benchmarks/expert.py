"""The generated modules against the expert hand-written baselines, in one run.

    python benchmarks/expert.py                      # all five workloads, 15 rounds (~15 min)
    python benchmarks/expert.py -w B2,C --rounds 9   # some of them
    python benchmarks/expert.py --memory-only        # only the peak-memory table

It runs the shared harness (../shared/baselines/run_baselines.py, see its
README) with benchmarks/adapter.py as the column `bpcompile`, beside the expert
NumPy code and PyTorch, with one BLAS thread, and prints the harness's own
tables followed by a summary: per workload the paired median ratio of
bpcompile's time to expert NumPy's (< 1 is faster), PyTorch's ratio from the
same run, the target of issue 11, and (forward + backward) / forward.  Then it
measures peak memory with tracemalloc over setup and two training steps
(each implementation in its own process; bpcompile's module is compiled before
tracing starts, and its generated source is loaded inside the traced setup).

Needs the benchmark environment: pip install -r ../shared/baselines/requirements.txt
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINES = Path(os.environ.get("BPCOMPILE_BASELINES", ROOT.parent / "shared" / "baselines"))
ADAPTER = ROOT / "benchmarks" / "adapter.py"

TARGETS = {"A": 1.0, "B1": 1.0, "B2": 1.0, "C": 0.9, "D": 1.0}
MEMORY_WORKLOADS = ("B2", "C", "D")

MEMORY_CHILD = r"""
import json, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
workload, which = sys.argv[3], sys.argv[4]
import problems
make = getattr(problems, "make_" + workload)
prob = make(mb=64) if workload == "D" else make()
if which == "expert":
    import ref_numpy as impl
else:
    import importlib.util
    spec = importlib.util.spec_from_file_location("bpc_adapter", sys.argv[2])
    impl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(impl)
    getattr(impl, "setup_" + workload)(prob)          # compiles (untraced)
setup, step = getattr(impl, "setup_" + workload), getattr(impl, "step_" + workload)
tracemalloc.start()
state = setup(prob)
step(state)
step(state)
print(json.dumps(tracemalloc.get_traced_memory()[1]))
"""


def run_harness(args, json_path):
    cmd = [sys.executable, str(BASELINES / "run_baselines.py"), "-w", args.workloads,
           "--impls", args.impls, "--extra", f"bpcompile={ADAPTER}", "--no-gemm",
           "--rounds", str(args.rounds), "--json", json_path]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               BPCOMPILE_ROOT=str(ROOT))     # this checkout's bpcompile compiles the modules
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def _ratio(rows, workload, impl):
    row = rows.get((workload, impl))
    return row["paired_ratio"] if row else float("nan")


def _numba_target(workload, rows):
    """Issue 12's target for the numba target on `workload`: (bound, what it is)."""
    kind = workload.split()[0]
    jax = min(_ratio(rows, workload, "jax"), _ratio(rows, workload, "jax/scan"))
    if kind == "A":
        return min(0.4, jax), "<= 0.4 and below JAX"
    if kind == "B1":
        return _ratio(rows, workload, "jax/scan"), "<= JAX scan"
    if workload == "D mb=1":
        return 1 / 1.5, ">= 1.5x expert words/s"
    return _ratio(rows, workload, "bpcompile"), "<= NumPy target"


def summary(json_path):
    data = json.loads(Path(json_path).read_text())
    rows = {(r["workload"], r["impl"]): r for r in data["rows"]}
    cheap = {(r["workload"], r["impl"]): r for r in data["cheap_gradient"]}
    env = data["env"]
    print(f"\n# summary: {data['rounds']} interleaved rounds; {env.get('cpu')}, {env.get('nproc')} cores, "
          f"one BLAS thread; numpy {env['versions'].get('numpy')}, torch {env['versions'].get('torch')}, "
          f"jax {env['versions'].get('jax')}")
    print("# paired median ratios of time to expert NumPy's (< 1 is faster)")
    print(f"{'workload':10} {'bpcompile':>9} {'target':>6} {'met':>4} {'fb/f':>5} | "
          f"{'numba tgt':>9} {'target':>6} {'met':>4} | {'torch':>6} {'jax':>6} {'jax/scan':>8} "
          f"{'ref numba':>9}")
    for workload in dict.fromkeys(r["workload"] for r in data["rows"]):
        if (workload, "bpcompile") not in rows:
            continue
        ratio = _ratio(rows, workload, "bpcompile")
        target = TARGETS[workload.split()[0]]
        fb = cheap.get((workload, "bpcompile"), {}).get("fwdbwd_over_fwd")
        numba = _ratio(rows, workload, "bpcompile/numba")
        bound, _ = _numba_target(workload, rows)
        print(f"{workload:10} {ratio:9.2f} {target:6.2f} {'yes' if ratio <= target else 'NO':>4} "
              f"{fb if fb is not None else float('nan'):5.2f} | {numba:9.2f} {bound:6.2f} "
              f"{'yes' if numba <= bound else 'NO':>4} | {_ratio(rows, workload, 'torch'):6.2f} "
              f"{_ratio(rows, workload, 'jax'):6.2f} {_ratio(rows, workload, 'jax/scan'):8.2f} "
              f"{_ratio(rows, workload, 'numba'):9.2f}")
    print("# numba targets: A " + _numba_target("A", rows)[1] + "; B1 " + _numba_target("B1", rows)[1]
          + "; D mb=1 " + _numba_target("D mb=1", rows)[1] + "; the rest <= the NumPy target")


def memory():
    print("\n# peak memory (tracemalloc, MiB) over setup and two steps; D at minibatch 64")
    print(f"{'workload':10} {'bpcompile':>10} {'expert':>10}")
    for workload in MEMORY_WORKLOADS:
        peaks = {}
        for which in ("bpcompile", "expert"):
            res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(BASELINES), str(ADAPTER),
                                  workload, which], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, OPENBLAS_NUM_THREADS="1",
                                          BPCOMPILE_ROOT=str(ROOT)))
            peaks[which] = json.loads(res.stdout.strip().splitlines()[-1]) / 2 ** 20
        print(f"{workload:10} {peaks['bpcompile']:10.2f} {peaks['expert']:10.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workloads", default="A,B1,B2,C,D")
    ap.add_argument("--impls", default="numpy,torch,jax,numba",
                    help="the harness's other columns (numba: the hand-written reference)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", help="keep the harness's JSON results here")
    ap.add_argument("--memory-only", action="store_true")
    args = ap.parse_args()
    if not (BASELINES / "run_baselines.py").is_file():
        sys.exit(f"error: no harness at {BASELINES} (set BPCOMPILE_BASELINES)")
    if not args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            json_path = args.json or str(Path(tmp) / "results.json")
            run_harness(args, json_path)
            summary(json_path)
    memory()


if __name__ == "__main__":
    main()
