"""LeNet-5 at 28x28, batch 64, float32: one SGD step of the generated module
(examples/lenet5.yaml) against the hand-written NumPy baseline
(handwritten_lenet5.py) and PyTorch on the CPU when it is installed, all in
the same run, contenders interleaved; also time(forward+backward)/time(forward)
of the generated module.

    python benchmarks/bench_lenet5.py [--rounds 30]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import handwritten_lenet5 as hand  # noqa: E402
from bench_conv_kernels import make_torch  # noqa: E402
from bpcompile.compiler import compile_file, load_module  # noqa: E402

NAMES = {"conv2d1": "conv1", "conv2d2": "conv2", "linear1": "fc1", "linear2": "fc2", "linear3": "fc3"}


def to_generated(p):
    """Hand-written parameter names -> the generated module's ("conv1_w" -> "conv2d1.W")."""
    return {f"{g}.{t}": p[f"{h}_{s}"].copy() for g, h in NAMES.items() for s, t in (("w", "W"), ("b", "b"))}


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    compiled = compile_file(HERE.parent / "examples" / "lenet5.yaml")
    gen = load_module(compiled.source, compiled.name)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    lr = 0.01

    p_hand = hand.init_params(0)
    p_gen = to_generated(p_hand)
    # the same step from the same parameters: the two must agree
    loss_gen = gen.sgd_step(p_gen, x, y, lr)
    loss_hand = hand.sgd_step(p_hand, x, y, lr)
    worst = max(float(np.max(np.abs(p_gen[k] - v))) for k, v in to_generated(p_hand).items())
    print(f"agreement after one step: loss {loss_gen:.6f} vs {loss_hand:.6f}, "
          f"max parameter difference {worst:.2e}")

    torch_parts = make_torch(hand.init_params(0), lr)
    contenders = {"generated": lambda: gen.sgd_step(p_gen, x, y, lr),
                  "hand-written": lambda: hand.sgd_step(p_hand, x, y, lr),
                  "forward": lambda: gen.forward(p_gen, x, y),
                  "forward+backward": lambda: gen.value_and_grad(p_gen, x, y)}
    if torch_parts:
        torch, step, _, _ = torch_parts
        torch.set_num_threads(2)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        contenders["pytorch"] = lambda: step(tx, ty)
    times = {name: [] for name in contenders}
    for fn in contenders.values():         # warm up
        fn()
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    low = {name: min(t) for name, t in times.items()}
    print(f"LeNet-5 28x28, batch {args.batch}, float32, one SGD step; median (min) of {args.rounds} rounds")
    for name in contenders:
        print(f"  {name:18s} {1e3 * med[name]:8.2f} ms  ({1e3 * low[name]:.2f} ms)")
    print(f"generated / hand-written: {med['generated'] / med['hand-written']:.3f}  (target <= 1.05)")
    if "pytorch" in med:
        print(f"generated / pytorch:      {med['generated'] / med['pytorch']:.3f}  (target <= 1.5)")
    else:
        print("pytorch: not installed (pip install torch==2.13.0 to compare)")
    print(f"generated (forward+backward) / forward: {med['forward+backward'] / med['forward']:.2f}  "
          "(target <= 3)")


if __name__ == "__main__":
    main()
