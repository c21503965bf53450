"""One forward and backward pass of AlexNet as published (examples/alexnet.yaml:
LRN, groups of two, dropout) at 224x224, batch 1, float32: its time.

    OPENBLAS_NUM_THREADS=1 python3 benchmarks/alexnet.py [--rounds 5] [--batch 1]

Prints the compile time, the parameter count, and the median over the rounds of
`forward` alone and of `value_and_grad` (train mode, dropout active).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bpcompile.compiler import compile_file  # noqa: E402
from bpcompile.result import load_module  # noqa: E402


def median_seconds(run, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    compiled = compile_file(ROOT / "examples" / "alexnet.yaml")
    module = load_module(compiled.source, compiled.name)
    compile_seconds = time.perf_counter() - start
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch,) + tuple(module.INPUT_SHAPE)).astype(module.DTYPE)
    y = rng.integers(0, module.OUTPUTS, args.batch)
    module.value_and_grad(params, x, y, rng=rng)            # warm-up: buffers, page faults
    forward = median_seconds(lambda: module.forward(params, x, y, rng=rng), args.rounds)
    both = median_seconds(lambda: module.value_and_grad(params, x, y, rng=rng), args.rounds)
    count = sum(int(np.prod(shape)) for shape in module.PARAMS.values())
    print(f"alexnet: {count:,} parameters, compiled in {compile_seconds:.2f} s")
    print(f"batch {args.batch}, 224x224, float32, median of {args.rounds}: forward "
          f"{forward * 1e3:.0f} ms, forward + backward {both * 1e3:.0f} ms "
          f"(ratio {both / forward:.2f})")


if __name__ == "__main__":
    main()
