"""A user's own training loop made data-parallel with allreduce_grads (for
tests/test_distributed.py).

    mpirun -n 2 python3 tests/mpi/own_loop.py MODULE.py DATA.npz OUT.npz

Global batches of the sizes in BATCHES (one of 1 example, so that a rank has
an empty shard) run through SGD with momentum: each rank takes its rows
(distributed.shard), computes value_and_grad, allreduce_grads sums the weighted
gradients, and every rank applies the module's sgd_update. Rank 0 writes the
final parameters and the losses to OUT.npz, after checking that every rank
holds the same parameters.
"""

import importlib.util
import sys

import numpy as np

from bpcompile.training import distributed

BATCHES = (5, 1, 4, 3)          # global batch sizes, taken in order from the data
LR, MOMENTUM = 0.1, 0.9


def load(path):
    spec = importlib.util.spec_from_file_location("user_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    module, data, out = load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
    x, y = data["x"], data["y"]
    params, state, losses, start = module.init_params(0), {}, [], 0
    for size in BATCHES:
        xb, yb = x[start:start + size], y[start:start + size]
        start += size
        part = distributed.shard(len(xb))
        if part.stop > part.start:
            loss, grads = module.value_and_grad(params, xb[part], yb[part])
        else:                   # an empty shard: zero gradients, weight 0
            loss, grads = 0.0, {k: np.zeros_like(v) for k, v in params.items()}
        weight = (part.stop - part.start) / len(xb)
        losses.append(distributed.allreduce_grads(grads, weight=weight, loss=loss))
        module.sgd_update(params, grads, state, LR, momentum=MOMENTUM)
    ranks = distributed.group()
    same = ranks.same_params(params)
    if ranks.is_root:
        np.savez(out, losses=np.array(losses), same=np.array(same), size=np.array(ranks.size),
                 **params)


if __name__ == "__main__":
    main()
