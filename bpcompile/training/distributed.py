"""Data-parallel training over MPI (mpi4py): every rank holds the same parameters,
computes the gradient of its shard of each global batch, and one Allreduce over a
single flat buffer sums the gradients, each weighted by its shard's share of the
batch; then every rank applies the same update, so the parameters stay identical.

With a global batch of B examples cut into shards of b_r examples, the mean loss
of the batch is sum_r (b_r / B) * (mean loss of shard r), so its gradient is

    grad = sum_r (b_r / B) * grad_r

exactly, uneven shards included; an empty shard has weight 0 and contributes
zeros. A spec's `l2` term is in every shard's loss and gradient, and the weights
sum to 1, so it is counted once. A tagger's loss is a mean over unmasked
positions, so its shards are weighted by their unmasked tokens instead.

Launched without mpirun (or with one process) nothing here imports mpi4py:
:func:`world_size` reads the launcher's environment, and the training loops run
as they always did.

For your own loop::

    from bpcompile.training.distributed import allreduce_grads, shard
    part = shard(len(xb))                       # this rank's rows of the global batch
    loss, grads = module.value_and_grad(params, xb[part], yb[part])   # empty part: zeros
    loss = allreduce_grads(grads, weight=len(xb[part]) / len(xb), loss=loss)
    module.sgd_update(params, grads, state, lr)   # the same update on every rank

Failures: a rank whose shard fails (an exception in its gradient) says so in the
flag slot of the same Allreduce, so every rank stops at that step and the
failing rank alone prints its error; work that only rank 0 does (scoring,
saving) is run through :meth:`Group.on_root`, which broadcasts its outcome; any
other failure is handled by :func:`run`: when every rank fails at the same
point rank 0 prints, otherwise the failing rank prints and calls ``Abort``.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from typing import Callable, Dict, Optional

import numpy as np

__all__ = ["world_size", "world_rank", "is_distributed", "group", "Group", "PeerFailure",
           "allreduce_grads", "shard", "token_shards", "run", "flat_weighted_sum",
           "example_step", "tagger_step", "language_model_step"]

# what launchers put in each process's environment: (size, rank) variable names
_LAUNCHER_VARIABLES = (("PMI_SIZE", "PMI_RANK"),                            # MPICH (Hydra)
                       ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),    # Open MPI
                       ("PMIX_SIZE", "PMIX_RANK"))
ERROR_WAIT = 10.0        # seconds a failing rank waits to learn whether every rank failed
ERROR_WAIT_VARIABLE = "BPCOMPILE_MPI_ERROR_WAIT"     # overrides ERROR_WAIT
# seconds between a failing rank's error line and its Abort: launchers forward a rank's
# output through a pipe, and an Abort handled before the pipe is read loses the line
# (seen once in CI under MPICH's Hydra: the whole stderr of the failing rank was lost)
ABORT_GRACE = 0.5


class PeerFailure(Exception):
    """Another rank failed and reports its error: leave quietly (exit status 1)."""


# ---------------------------------------------------------------------------
# who we are, without importing mpi4py

def _launcher_value(index: int) -> Optional[int]:
    for names in _LAUNCHER_VARIABLES:
        value = os.environ.get(names[index])
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def world_size() -> int:
    """The number of processes mpirun started (1 when not launched under MPI)."""
    return _launcher_value(0) or 1


def world_rank() -> int:
    """This process's rank (0 when not launched under MPI)."""
    return _launcher_value(1) or 0


def is_distributed() -> bool:
    """Whether this process is one of several that mpirun started."""
    return world_size() > 1


_GROUP = None


def group() -> Optional["Group"]:
    """The Group of MPI.COMM_WORLD when launched on more than one process, else None
    (and mpi4py is not imported)."""
    global _GROUP
    if _GROUP is None and is_distributed():
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError(f"this process is one of {world_size()} that mpirun started, "
                              "but mpi4py is not installed: pip install 'bpcompile[mpi]'"
                              ) from None
        _GROUP = Group(MPI.COMM_WORLD)
    return _GROUP


# ---------------------------------------------------------------------------
# splitting a global batch

def shard(n: int, rank: Optional[int] = None, size: Optional[int] = None) -> slice:
    """This rank's contiguous part of n items: sizes differ by at most one, and
    the parts of ranks 0..size-1 cover 0..n in order (a part may be empty)."""
    rank = world_rank() if rank is None else rank
    size = world_size() if size is None else size
    return slice(rank * n // size, (rank + 1) * n // size)


def token_shards(tokens, size: int):
    """Slices of rows (a batch's rows, in order) with `tokens[i]` unmasked tokens
    each, cut so that each part's token count is as close to total / size as
    contiguous parts allow (the cut after row i is where the running count
    reaches k * total / size)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    running = np.concatenate([[0.0], np.cumsum(tokens)])
    targets = running[-1] * np.arange(1, size) / size
    # the row boundary whose running count is nearest each target
    right = np.searchsorted(running, targets)
    right = np.clip(right, 1, len(running) - 1)
    nearer_left = (targets - running[right - 1]) <= (running[right] - targets)
    cuts = np.where(nearer_left, right - 1, right)
    cuts = np.maximum.accumulate(np.concatenate([[0], cuts, [len(tokens)]]))
    return [slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


# ---------------------------------------------------------------------------
# the flat buffer

def flat_weighted_sum(grads: Dict[str, np.ndarray], weight: float, buffer: np.ndarray,
                      keys) -> None:
    """Write weight * grads[k] for k in `keys`, each in C order, into `buffer`
    (the first entries; the caller's extra slots follow)."""
    offset = 0
    for key in keys:
        g = grads[key]
        view = buffer[offset:offset + g.size].reshape(g.shape)
        np.multiply(g, weight, out=view)
        offset += g.size


def _unflatten(buffer: np.ndarray, grads: Dict[str, np.ndarray], keys) -> None:
    """grads[k] <- its part of `buffer`, in place (a read-only gradient is replaced)."""
    offset = 0
    for key in keys:
        g = grads[key]
        view = buffer[offset:offset + g.size].reshape(g.shape)
        if isinstance(g, np.ndarray) and g.flags.writeable:
            np.copyto(g, view)
        else:
            grads[key] = view.copy()
        offset += g.size


class Group:
    """The ranks of one MPI communicator training together."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self._errors = comm.Dup()           # for failure handling only, apart from training
        self._buffers = {}
        self.reporting = False              # this rank prints the error everyone stops on
        self.allreduce_seconds = 0.0        # time spent in the gradient Allreduce

    # --- gradients ---------------------------------------------------------------------------
    def _buffer(self, grads, keys):
        layout = (tuple(keys), tuple(np.shape(grads[k]) for k in keys),
                  np.result_type(*[grads[k] for k in keys]))
        if layout not in self._buffers:
            size = sum(int(np.prod(shape)) for shape in layout[1])
            self._buffers = {layout: (np.empty(size + 2, dtype=layout[2]),
                                      np.empty(size + 2, dtype=layout[2]))}
        return self._buffers[layout]

    def allreduce_grads(self, grads, weight, loss=0.0, failure=None):
        """grads <- sum over ranks of weight_r * grads_r, in place, with one Allreduce
        of one flat buffer (gradients, then weight * loss, then the failure flag).
        Returns sum_r weight_r * loss_r. `failure` (an exception of this rank's
        shard) makes every rank stop here: this rank re-raises it (the lowest
        failing rank alone is marked as the one that reports), the others raise
        PeerFailure."""
        from mpi4py import MPI
        keys = sorted(grads)
        send, receive = self._buffer(grads, keys)
        if failure is None:
            flat_weighted_sum(grads, weight, send, keys)
            send[-2] = weight * float(loss)
            send[-1] = 0.0
        else:
            send[:] = 0.0
            send[-1] = 1.0
        start = time.perf_counter()
        self.comm.Allreduce(send, receive, op=MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - start
        if receive[-1] != 0:
            self._stop_on_failure(failure)
        _unflatten(receive, grads, keys)
        return float(receive[-2])

    def _stop_on_failure(self, failure):
        from mpi4py import MPI
        first = self.comm.allreduce(self.rank if failure is not None else self.size, op=MPI.MIN)
        if failure is None:
            raise PeerFailure(f"rank {first} failed")
        self.reporting = self.rank == first
        if not self.reporting:
            raise PeerFailure(f"rank {first} failed")
        raise failure

    # --- the same values everywhere ----------------------------------------------------------
    def average_buffers(self, params: Dict[str, np.ndarray], keys, weight: float) -> None:
        """params[k] <- sum over ranks of weight_r * params_r[k] for the buffers `keys`
        (batch norm's running statistics), in place, with one Allreduce: each rank moved
        them with its own shard's statistics, and the weights (the shards' shares of the
        batch) sum to 1, so every rank ends with the same, shard-weighted, statistics."""
        from mpi4py import MPI
        keys = sorted(keys)
        if not keys:
            return
        send = np.concatenate([np.ravel(params[k]).astype(np.float64) * weight for k in keys])
        receive = np.empty_like(send)
        self.comm.Allreduce(send, receive, op=MPI.SUM)
        start = 0
        for k in keys:
            size = int(np.size(params[k]))
            params[k][...] = receive[start:start + size].reshape(np.shape(params[k]))
            start += size

    def bcast_params(self, params: Dict[str, np.ndarray]) -> None:
        """Rank 0's parameters, copied into every rank's arrays in place."""
        for key in sorted(params):
            value = np.ascontiguousarray(params[key])
            self.comm.Bcast(value, root=0)
            if value is not params[key]:
                np.copyto(params[key], value)

    def same_params(self, params: Dict[str, np.ndarray]) -> bool:
        """Whether every rank holds bit for bit the same parameters (a crc32 per rank)."""
        crc = 0
        for key in sorted(params):
            crc = zlib.crc32(np.ascontiguousarray(params[key]).tobytes(), crc)
        return len(set(self.comm.allgather(crc))) == 1

    def on_root(self, work: Callable[[], object]):
        """Run `work` on rank 0 alone and give every rank its result (pickled, so keep
        it small). When it raises, rank 0 re-raises (and reports) and the others raise
        PeerFailure, all at the same point."""
        outcome = None
        if self.is_root:
            try:
                outcome = ("ok", work())
            except Exception as err:
                outcome = ("failed", err)
                self.comm.bcast(("failed", None), root=0)
                self.reporting = True
                raise
        outcome = self.comm.bcast(outcome, root=0)
        if outcome[0] == "failed":
            raise PeerFailure("rank 0 failed")
        return outcome[1]

    # --- failures ----------------------------------------------------------------------------
    def every_rank_failed(self, wait: float = ERROR_WAIT) -> bool:
        """Called by a failing rank: whether every rank reaches this point within
        `wait` seconds (a failure that all ranks share, such as a bad spec)."""
        request = self._errors.Ibarrier()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if request.Test():
                return True
            time.sleep(0.01)
        return False

    def abort(self, status: int = 1) -> None:
        """End every rank, after giving the launcher time to forward what this rank
        printed (see ABORT_GRACE)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE)
        self.comm.Abort(status)


# ---------------------------------------------------------------------------
# the training loops' steps: this rank's shard, one Allreduce, the same update

def _zero_grads(params, buffers=()):
    # buffers (batch norm's running statistics) have no gradient: leaving them out keeps
    # an empty shard's Allreduce buffer laid out like the others'
    return {key: np.zeros(np.shape(value), dtype=np.result_type(value))
            for key, value in params.items() if key not in buffers}


def _shard_gradient(ranks, params, weight, compute, buffers=()):
    """(weight * loss, grads, extra, failure) of this rank's shard: `compute()` gives
    (loss, grads, extra); an empty shard (weight 0) gives zeros, an exception is
    returned as `failure` (with zero grads) for the Allreduce to announce."""
    if weight == 0:
        return 0.0, _zero_grads(params, buffers), None, None
    try:
        loss, grads, extra = compute()
        return loss, grads, extra, None
    except Exception as err:            # announced in the Allreduce, re-raised there
        return 0.0, _zero_grads(params, buffers), None, err


def example_step(module, update, ranks, rng=None):
    """``step(params, x, y) -> loss`` of :func:`bpcompile.training.train.train` for a
    global batch (x, y): this rank's rows (:func:`shard`), weighted by their share
    of the batch, then ``update(params, grads)`` with the summed gradient.

    A module with dropout or batch norm runs in train mode with masks from `rng`
    (every rank holds the same generator, so the ranks draw the same stream for
    their different rows). Batch norm normalizes each shard by its own statistics
    (as PyTorch's DistributedDataParallel without SyncBatchNorm), and after every
    step the running statistics are averaged over the ranks, weighted by the
    shards' shares (:meth:`Group.average_buffers`), so that every rank, and the
    checkpoint rank 0 writes, holds the same buffers."""
    keywords = {"train": True, "rng": rng} if _has_modes(module) else {}
    buffers = tuple(getattr(module, "BUFFERS", ()))

    def step(params, x, y):
        part = shard(len(x), ranks.rank, ranks.size)
        weight = (part.stop - part.start) / len(x)

        def compute():
            loss, grads = module.value_and_grad(params, x[part], y[part], **keywords)
            return loss, grads, None
        loss, grads, _, failure = _shard_gradient(ranks, params, weight, compute, buffers)
        loss = ranks.allreduce_grads(grads, weight, loss, failure)
        update(params, grads)
        ranks.average_buffers(params, buffers, weight)
        return loss
    return step


def _has_modes(module):
    from .metrics import has_modes
    return has_modes(module)


def tagger_step(module, update, ranks):
    """``step(params, x, y, mask) -> loss`` of seqtrain.train_tagger: the batch's
    sentences cut into parts of nearly equal unmasked tokens (:func:`token_shards`),
    each weighted by its tokens over the batch's (the loss is a mean over
    unmasked positions). The padded width is kept, so each row is computed as in
    the whole batch."""
    def step(params, x, y, mask):
        tokens = np.asarray(mask).reshape(len(x), -1).sum(axis=1)
        part = token_shards(tokens, ranks.size)[ranks.rank]
        weight = float(tokens[part].sum() / tokens.sum())

        def compute():
            loss, grads = module.value_and_grad(params, x[part], y[part], mask=mask[part])
            return loss, grads, None
        loss, grads, _, failure = _shard_gradient(ranks, params, weight, compute)
        loss = ranks.allreduce_grads(grads, weight, loss, failure)
        update(params, grads)
        return loss
    return step


def language_model_step(module, update, ranks):
    """``step(params, x, y, state) -> (loss, state)`` of seqtrain.train_language_model:
    this rank's rows of the stream (the same rows in every chunk, so the
    truncated-BPTT state it carries is its own), weighted by their tokens."""
    def step(params, x, y, state):
        part = shard(len(x), ranks.rank, ranks.size)
        weight = (part.stop - part.start) / len(x)

        def compute():
            loss, cache = module.forward(params, x[part], y[part], None, state)
            return loss, module.backward(params, cache), cache["state"]
        loss, grads, new_state, failure = _shard_gradient(ranks, params, weight, compute)
        loss = ranks.allreduce_grads(grads, weight, loss, failure)
        update(params, grads)
        return loss, new_state
    return step


# ---------------------------------------------------------------------------
# the helper for your own loop, and the guard for a whole program

def allreduce_grads(grads: Dict[str, np.ndarray], weight: float = 1.0, comm=None,
                    loss: float = 0.0) -> float:
    """Sum ``weight * grads`` over the ranks of `comm` (default: every rank mpirun
    started) in place, with one Allreduce over one flat buffer; returns the sum
    of ``weight * loss``. Give each rank ``weight = its examples / global batch``
    (a tagger: its unmasked tokens / the batch's), so that the result is the
    gradient (and the loss) of the global batch's mean loss; a rank with no
    examples passes zero gradients and weight 0. Every rank must pass the same
    keys and shapes. Without MPI (one process) the grads are multiplied by
    `weight` and ``weight * loss`` is returned."""
    found = group() if comm is None else _group_of(comm)
    if found is None:
        for key in grads:
            grads[key] = np.multiply(grads[key], weight)
        return weight * float(loss)
    return found.allreduce_grads(grads, float(weight), loss)


_GROUPS = {}


def _group_of(comm):
    """One Group per communicator (a Group duplicates its communicator once)."""
    world = group()
    if world is not None and world.comm == comm:
        return world
    key = comm.py2f()
    if key not in _GROUPS:
        _GROUPS[key] = Group(comm)
    return _GROUPS[key]


def error_line(err: BaseException) -> str:
    """The line bpcompile prints for `err`: a SpecError as it is, anything else as an
    internal error."""
    from ..errors import SpecError
    if isinstance(err, SpecError):
        return str(err)
    return f"bpcompile: internal error: {type(err).__name__}: {err}"


def _error_wait():
    try:
        return max(0.0, float(os.environ.get(ERROR_WAIT_VARIABLE, ERROR_WAIT)))
    except ValueError:
        return ERROR_WAIT


def run(work: Callable[[], object], wait: Optional[float] = None):
    """Run `work()` on every rank so that a failure ends every rank with the error
    printed once, never a hang.

    Not launched under MPI: just ``work()``. Otherwise, an exception that one rank
    reports (see :meth:`Group.allreduce_grads`, :meth:`Group.on_root`) is re-raised
    on that rank and SystemExit(1) ends the others; an exception every rank meets
    within `wait` seconds (default ERROR_WAIT, or the environment's
    BPCOMPILE_MPI_ERROR_WAIT) is re-raised on rank 0 alone; any other exception
    is printed by its rank, which then calls MPI Abort (ending all ranks)."""
    wait = _error_wait() if wait is None else wait
    ranks = group()
    if ranks is None:
        return work()
    try:
        return work()
    except PeerFailure:
        raise SystemExit(1) from None
    except Exception as err:
        if ranks.reporting:
            raise
        if ranks.every_rank_failed(wait):
            if ranks.is_root:
                raise
            raise SystemExit(1) from None
        print(error_line(err) + f" (rank {ranks.rank} of {ranks.size}; stopping every rank)",
              file=sys.stderr, flush=True)
        ranks.abort(1)
