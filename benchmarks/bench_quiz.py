"""Time the generated gradient of the lecture's quiz expression against a naive
SymPy baseline, and the compile time of the example program specs.

    y = exp(x*z) + x*z/log(x) + sin(log(x))/(x*z)

* "generated": `value_and_grad` of the module bpcompile writes for examples/quiz.yaml
  (one forward pass, one backward pass, shared subexpressions);
* "naive": `sympy.diff` of y for each partial, each expression turned into a NumPy
  function by `sympy.lambdify(modules="numpy")`, and the value and both partials
  computed separately.

Both run in the same process on the same float64 arrays (x in [1.5, 3], z in [1, 4]);
each figure is the best of several repeats.  Before timing, the two are checked to agree.

Usage: python benchmarks/bench_quiz.py [--points 1000000] [--repeat 7]
"""
import argparse
import pathlib
import platform
import sys
import time

import numpy as np
import sympy as sp
import yaml

import bpcompile

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def naive_functions():
    x, z = sp.symbols("x z", real=True)
    y = sp.exp(x * z) + x * z / sp.log(x) + sp.sin(sp.log(x)) / (x * z)
    return [sp.lambdify((x, z), e, modules="numpy") for e in (y, sp.diff(y, x), sp.diff(y, z))]


def bench_gradient(points, repeat, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(1.5, 3.0, points)
    zs = rng.uniform(1.0, 4.0, points)

    compiled = bpcompile.compile_file(EXAMPLES / "quiz.yaml")
    module = bpcompile.load_module(compiled.source, compiled.name)
    value_f, dx_f, dz_f = naive_functions()

    def generated():
        return module.value_and_grad(xs, zs)

    def naive():
        return value_f(xs, zs), (dx_f(xs, zs), dz_f(xs, zs))

    v1, (gx1, gz1) = generated()
    v2, (gx2, gz2) = naive()
    worst = max(float(np.max(np.abs(a - b) / np.abs(b))) for a, b in ((v1, v2), (gx1, gx2), (gz1, gz2)))
    if worst > 1e-10:
        sys.exit(f"generated and naive results disagree (max relative difference {worst:.2e})")

    # interleave so that both see the same machine load
    t_gen, t_naive = [], []
    for _ in range(repeat):
        t_gen.append(best_time(generated, 1))
        t_naive.append(best_time(naive, 1))
    return min(t_gen), min(t_naive), worst


def program_specs():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and ("program" in data or "expr" in data):
            yield path


def bench_compile(repeat):
    rows = []
    for path in program_specs():
        start = time.perf_counter()
        bpcompile.compile_file(path)
        first = time.perf_counter() - start
        best = best_time(lambda: bpcompile.compile_file(path), repeat)
        rows.append((path.name, first, best))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    print(f"Python {platform.python_version()}, NumPy {np.__version__}, SymPy {sp.__version__}, "
          f"bpcompile {bpcompile.__version__}")
    compile_rows = bench_compile(args.repeat)      # first: the first call is a cold start
    t_gen, t_naive, worst = bench_gradient(args.points, args.repeat)
    print(f"quiz value + gradient over {args.points:,} float64 points (best of {args.repeat}):")
    print(f"  generated (bpcompile value_and_grad):      {t_gen * 1e3:9.1f} ms")
    print(f"  naive (sympy.diff + lambdify, 3 functions): {t_naive * 1e3:9.1f} ms")
    print(f"  ratio naive / generated:                    {t_naive / t_gen:9.2f}x")
    print(f"  (results agree to a relative {worst:.1e})")
    print(f"compile time of the example program specs, via bpcompile.compile_file "
          f"(first call in this process; best of {args.repeat}):")
    for name, first, best in compile_rows:
        print(f"  {name:<28} {first * 1e3:8.1f} ms  {best * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
