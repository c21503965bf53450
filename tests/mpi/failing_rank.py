"""`bpcompile train` under mpirun with one rank made to fail (for tests/test_distributed.py).

    mpirun -n 2 python3 tests/mpi/failing_rank.py WHERE RANK -- TRAIN-ARGUMENTS...

WHERE is `gradient` (the rank's value_and_grad raises on its second call: a bad
shard) or `setup` (the rank raises while loading the module, before training,
while the other ranks go on). Every rank runs the same command otherwise.
"""

import sys

from bpcompile.cli.main import main as cli_main
from bpcompile.cli import train_command
from bpcompile.training import distributed


def failing_gradient(module):
    calls = {"n": 0}
    value_and_grad = module.value_and_grad

    def broken(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError(f"bad shard on rank {distributed.world_rank()}")
        return value_and_grad(*args, **kwargs)
    module.value_and_grad = broken
    return module


def main():
    where, rank = sys.argv[1], int(sys.argv[2])
    arguments = sys.argv[sys.argv.index("--") + 1:]
    if distributed.world_rank() == rank:
        load_module = train_command.load_module

        def patched(source, name):
            if where == "setup":
                raise ValueError(f"setup failed on rank {rank}")
            return failing_gradient(load_module(source, name))
        train_command.load_module = patched
    return cli_main(["train", *arguments])


if __name__ == "__main__":
    sys.exit(main())
