"""Data-parallel training over MPI (bpcompile.training.distributed).

Without MPI: the split of a global batch (examples, or a tagger's unmasked
tokens) and the weighting sum_r (b_r / B) * grad_r give the gradient of the
whole batch's mean loss, l2 term counted once; launched alone nothing imports
mpi4py.

Under `mpirun -n 2` (subprocesses; skipped when mpirun or mpi4py is missing):
`bpcompile train` of a float64 layer spec, an LSTM tagger with masks and a
language model gives the same weights, to 1e-12, as one process with the same
global batch, uneven last batches included; a user's own loop with
allreduce_grads matches a loop written here; a failure on one rank ends both
ranks within a time limit, the error printed once.

Like with like: the optimizer runs (--momentum, --optimizer adam) use
value_and_grad + the module's update in both cases. Plain SGD uses the fused
sgd_step in one process and value_and_grad + sgd_update under MPI (sgd_step
cannot take a summed gradient); those differ only by rounding, also checked
to 1e-12.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.compiler import compile_file, load_module
from bpcompile.training import distributed, train
from bpcompile.training.sequences import pad, pad_labels

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
HELPERS = Path(__file__).resolve().parent / "mpi"
TIMEOUT = 60            # seconds for one mpirun; a hang fails the test

MLP = ("name: mlp\ninput: 6\ndtype: float64\nlayers:\n  - linear: 5\n  - tanh\n"
       "  - linear: 3\nloss: softmax_cross_entropy\nl2: {l2}\n")
TAGGER = ("name: tagger\ninput: {vocab: 200}\ndtype: float64\nlayers:\n  - embedding: 6\n"
          "  - lstm: {hidden: 5, bidirectional: true}\n  - linear: 17\n"
          "loss: softmax_cross_entropy\n")
LM = ("name: lm\ninput: {vocab: 60}\ndtype: float64\nlayers:\n  - embedding: 6\n"
      "  - lstm: {hidden: 7}\n  - linear: 60\nloss: softmax_cross_entropy\n")


def _compile(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    compiled = compile_file(str(path))
    return path, load_module(compiled.source, compiled.name)


def _examples(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)


# ---------------------------------------------------------------------------
# without MPI: the split and the weighting

@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shards_cover_the_batch_in_order_with_sizes_one_apart(size):
    for n in range(0, 12):
        parts = [distributed.shard(n, r, size) for r in range(size)]
        assert parts[0].start == 0 and parts[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        lengths = [p.stop - p.start for p in parts]
        assert max(lengths) - min(lengths) <= 1


def test_token_shards_balance_the_unmasked_tokens():
    assert distributed.token_shards([5, 5, 5, 5], 2) == [slice(0, 2), slice(2, 4)]
    assert distributed.token_shards([10, 1, 1, 1, 1], 2) == [slice(0, 1), slice(1, 5)]
    assert distributed.token_shards([3, 4, 5], 1) == [slice(0, 3)]
    # fewer sentences than ranks: some parts are empty, all rows are covered once
    parts = distributed.token_shards([4], 3)
    assert parts == [slice(0, 0), slice(0, 1), slice(1, 1)]
    rng = np.random.default_rng(1)
    for _ in range(50):
        tokens = rng.integers(1, 30, size=rng.integers(1, 20))
        size = int(rng.integers(1, 5))
        parts = distributed.token_shards(tokens, size)
        assert parts[0].start == 0 and parts[-1].stop == len(tokens)
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        # each part is within one sentence of the ideal share
        for p in parts:
            assert abs(tokens[p].sum() - tokens.sum() / size) <= tokens.max()


def _weighted_sum(grads_and_weights, keys):
    """The Allreduce of flat buffers, done here by adding them up."""
    size = sum(np.size(grads_and_weights[0][0][k]) for k in keys)
    total = np.zeros(size)
    for grads, weight in grads_and_weights:
        buffer = np.empty(size)
        distributed.flat_weighted_sum(grads, weight, buffer, keys)
        total += buffer
    return total


def _flat(grads, keys):
    return np.concatenate([np.ravel(grads[k]) for k in keys])


@pytest.mark.parametrize("ranks", [2, 3, 8])
def test_weighted_shard_gradients_are_the_batch_gradient_l2_counted_once(tmp_path, ranks):
    _, module = _compile(tmp_path, MLP.format(l2=0.5))
    _, plain = _compile(tmp_path, MLP.format(l2=0.0), "plain.yaml")
    params = module.init_params(3)
    x, y = _examples(7)                     # 7 examples: uneven shards, empty ones for 8 ranks
    keys = sorted(params)

    def combined(mod):
        parts = []
        for r in range(ranks):
            part = distributed.shard(len(x), r, ranks)
            if part.stop == part.start:
                parts.append(({k: np.zeros_like(v) for k, v in params.items()}, 0.0))
                continue
            _, grads = mod.value_and_grad(params, x[part], y[part])
            parts.append((grads, (part.stop - part.start) / len(x)))
        return _weighted_sum(parts, keys)

    _, whole = module.value_and_grad(params, x, y)
    np.testing.assert_allclose(combined(module), _flat(whole, keys), rtol=0, atol=1e-12)
    # the l2 part of the combined gradient is l2 * W once (d/dW of l2/2 * |W|^2), 0 for b
    l2_part = combined(module) - combined(plain)
    expected = _flat({k: 0.5 * params[k] if k.endswith(".W") else np.zeros_like(params[k])
                      for k in keys}, keys)
    np.testing.assert_allclose(l2_part, expected, rtol=0, atol=1e-12)


def test_tagger_shards_weighted_by_unmasked_tokens_give_the_batch_gradient(tmp_path):
    _, module = _compile(tmp_path, TAGGER)
    params = module.init_params(1)
    rng = np.random.default_rng(2)
    lengths = [7, 2, 5, 5, 1]               # padded to 7: masks differ per row
    x, mask = pad([list(rng.integers(1, 200, size=n)) for n in lengths], pad_id=0)
    y = pad_labels([list(rng.integers(0, 17, size=n)) for n in lengths])
    mask = mask.astype(np.float64)
    tokens = mask.sum(axis=1)
    keys = sorted(params)
    parts = []
    for part in distributed.token_shards(tokens, 2):
        _, grads = module.value_and_grad(params, x[part], y[part], mask=mask[part])
        parts.append((grads, tokens[part].sum() / tokens.sum()))
    _, whole = module.value_and_grad(params, x, y, mask=mask)
    np.testing.assert_allclose(_weighted_sum(parts, keys), _flat(whole, keys), rtol=0, atol=1e-12)
    # weighting by sentences instead would be wrong here (the token counts differ)
    by_rows = [(g, (p.stop - p.start) / len(x)) for (g, _), p in
               zip(parts, distributed.token_shards(tokens, 2))]
    assert np.abs(_weighted_sum(by_rows, keys) - _flat(whole, keys)).max() > 1e-6


def test_allreduce_grads_alone_scales_by_the_weight():
    grads = {"a.W": np.array([[1.0, -2.0]]), "a.b": np.array([4.0])}
    loss = distributed.allreduce_grads(grads, weight=0.25, loss=2.0)
    assert loss == 0.5
    np.testing.assert_array_equal(grads["a.W"], [[0.25, -0.5]])
    np.testing.assert_array_equal(grads["a.b"], [1.0])


def _without_launcher():
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}


def test_alone_nothing_imports_mpi4py():
    code = ("import sys; from bpcompile.training import distributed as d; "
            "from bpcompile.cli import train_command; "
            "print(d.group(), d.world_size(), d.world_rank(), 'mpi4py' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_without_launcher(), timeout=60, check=True)
    assert result.stdout.split() == ["None", "1", "0", "False"]


def test_the_launcher_environment_gives_rank_and_size(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("PMI_", "PMIX_", "OMPI_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert (distributed.world_size(), distributed.world_rank()) == (4, 3)
    assert distributed.is_distributed()
    monkeypatch.setenv("PMI_SIZE", "1")         # MPICH's, checked first
    monkeypatch.setenv("PMI_RANK", "0")
    assert not distributed.is_distributed()


# ---------------------------------------------------------------------------
# under mpirun -n 2

def _mpi_ready():
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (pip install 'bpcompile[mpi]' brings MPICH's)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'bpcompile[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(_mpi_ready() is not None, reason=str(_mpi_ready()))


def _mpirun(*command, cwd, env=None):
    """`mpirun -n 2 COMMAND` with one BLAS thread per rank; (status, stdout, stderr)."""
    environment = {**_without_launcher(), "OPENBLAS_NUM_THREADS": "1",
                   "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(["mpirun", "-n", "2", *map(str, command)], cwd=cwd,
                            capture_output=True, text=True, env=environment, timeout=TIMEOUT)
    return result.returncode, result.stdout, result.stderr


def _bpcompile():
    return [sys.executable, "-c", "import sys; from bpcompile.cli.main import main; "
            "sys.exit(main())"]


def _train_both(capsys, tmp_path, spec, *options):
    """The checkpoints of `train` in this process and under mpirun -n 2, and the
    MPI run's standard output."""
    args = ["train", spec, *options, "--quiet", "--force"]
    status = main([str(a) for a in args] + ["--save", str(tmp_path / "one.npz")])
    assert status == 0, capsys.readouterr().err
    capsys.readouterr()
    status, out, err = _mpirun(*_bpcompile(), *args, "--save", tmp_path / "two.npz",
                               cwd=tmp_path)
    assert status == 0, err
    return np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz"), out


def _assert_same_params(one, two, module):
    for key in module.PARAMS:
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-12, err_msg=key)
    # and training moved them: the comparison is not of two initialisations
    assert any(np.abs(one[k] - module.init_params(0)[k]).max() > 1e-3 for k in module.PARAMS)


@needs_mpi
@pytest.mark.parametrize("options", [("--momentum", "0.9"), ()], ids=["momentum", "plain-sgd"])
def test_layer_spec_two_ranks_equal_one_process(capsys, tmp_path, options):
    spec, module = _compile(tmp_path, MLP.format(l2=0.01))
    x, y = _examples(33, seed=4)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x[:23], y_train=y[:23], x_test=x[23:], y_test=y[23:])
    # global batch 6: 4 steps per epoch, the last of 5 examples (shards of 2 and 3)
    one, two, out = _train_both(capsys, tmp_path, spec, "--data", data, "--epochs", 3,
                                "--batch-size", 6, "--lr", 0.3, *options)
    _assert_same_params(one, two, module)
    np.testing.assert_array_equal(one["epoch"], two["epoch"])
    assert out.count("epoch 3/3") == 1 and out.count("checkpoint written") == 1
    assert "data-parallel over 2 MPI ranks (global batch 6)" in out


@needs_mpi
@pytest.mark.parametrize("options", [("--optimizer", "adam", "--lr", "0.01"), ("--lr", "0.5")],
                         ids=["adam", "plain-sgd"])
def test_lstm_tagger_two_ranks_equal_one_process(capsys, tmp_path, options):
    spec, module = _compile(tmp_path, TAGGER)
    # 216 training sentences in batches of 5 (the last of 1: one rank's part is empty),
    # bucketed by length and padded, each rank's part weighted by its unmasked tokens
    one, two, out = _train_both(capsys, tmp_path, spec, "--data", DATA / "tiny.conllu",
                                "--epochs", 2, "--batch-size", 5, *options)
    _assert_same_params(one, two, module)
    assert out.count("epoch 2/2") == 1


@needs_mpi
@pytest.mark.parametrize("options", [(), ("--momentum", "0.5", "--clip-norm", "0.5")],
                         ids=["default-clipped-sgd", "optimizer"])
def test_language_model_two_ranks_equal_one_process(capsys, tmp_path, options):
    spec, module = _compile(tmp_path, LM)
    # 5 stream rows: ranks hold 2 and 3, each carrying its rows' state; the clipping
    # (by default at norm 5) applies to the summed gradient
    one, two, out = _train_both(capsys, tmp_path, spec, "--data", DATA / "tiny.txt",
                                "--epochs", 2, "--batch-size", 5, "--seq-len", 9, "--lr", 1.0,
                                *options)
    _assert_same_params(one, two, module)
    assert out.count("epoch 2/2") == 1


@needs_mpi
def test_own_loop_with_allreduce_grads_matches_a_loop_written_here(tmp_path):
    _, module = _compile(tmp_path, MLP.format(l2=0.01))
    source = compile_file(str(tmp_path / "spec.yaml")).source
    (tmp_path / "mlp.py").write_text(source)
    x, y = _examples(13, seed=5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    status, _, err = _mpirun(sys.executable, HELPERS / "own_loop.py", tmp_path / "mlp.py",
                             tmp_path / "d.npz", tmp_path / "out.npz", cwd=tmp_path)
    assert status == 0, err
    got = np.load(tmp_path / "out.npz")
    assert int(got["size"]) == 2 and bool(got["same"])
    # the same global batches in one process, SGD with momentum written out here
    params, velocity, losses, start = module.init_params(0), {}, [], 0
    for size in (5, 1, 4, 3):
        loss, grads = module.value_and_grad(params, x[start:start + size], y[start:start + size])
        start += size
        losses.append(loss)
        for k in params:
            velocity[k] = grads[k] if k not in velocity else 0.9 * velocity[k] + grads[k]
            params[k] = params[k] - 0.1 * velocity[k]
    np.testing.assert_allclose(got["losses"], losses, rtol=0, atol=1e-12)
    for k in params:
        np.testing.assert_allclose(got[k], params[k], rtol=0, atol=1e-12, err_msg=k)


def _mlp_with_data(tmp_path):
    spec, _ = _compile(tmp_path, MLP.format(l2=0.0))
    x, y = _examples(300, seed=7)
    np.savez(tmp_path / "d.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:],
             y_test=y[200:])
    return spec, tmp_path / "d.npz"


def _error_lines(text, needle):
    return [line for line in text.splitlines() if needle in line]


@needs_mpi
@pytest.mark.parametrize("rank", [1, 0])
def test_a_bad_shard_on_one_rank_stops_both_with_one_error_line(tmp_path, rank):
    spec, data = _mlp_with_data(tmp_path)
    status, out, err = _mpirun(sys.executable, HELPERS / "failing_rank.py", "gradient", rank,
                               "--", spec, "--data", data, "--epochs", 2, "--batch-size", 64, "--quiet",
                               cwd=tmp_path)
    assert status != 0
    assert _error_lines(out + err, "error:") == [
        f"{spec}:1:1: error: training failed: bad shard on rank {rank}"]
    assert "epoch 1/2" not in out


@needs_mpi
def test_a_failure_outside_any_collective_aborts_every_rank(tmp_path):
    spec, data = _mlp_with_data(tmp_path)
    # rank 1 fails while loading; rank 0 goes on and waits for it: rank 1 finds
    # out within BPCOMPILE_MPI_ERROR_WAIT seconds, prints and aborts both
    status, out, err = _mpirun(sys.executable, HELPERS / "failing_rank.py", "setup", 1,
                               "--", spec, "--data", data, "--epochs", 2, "--quiet", cwd=tmp_path,
                               env={distributed.ERROR_WAIT_VARIABLE: "1"})
    assert status != 0
    assert len(_error_lines(out + err, "setup failed on rank 1")) == 1
    assert "epoch 1/2" not in out


def test_abort_waits_for_the_launcher_to_forward_the_error_line(monkeypatch, capsys):
    """The failing rank prints, then waits ABORT_GRACE before Abort: CI once lost the
    whole stderr of a rank that called Abort right after printing (MPICH's Hydra)."""
    events = []

    class Communicator:
        def Get_rank(self):
            return 1

        def Get_size(self):
            return 2

        def Dup(self):
            return self

        def Abort(self, status):
            events.append(("abort", status))

    monkeypatch.setattr(distributed.time, "sleep", lambda seconds: events.append(("sleep", seconds)))
    ranks = distributed.Group(Communicator())
    print("error: stopping", file=sys.stderr)
    ranks.abort(1)
    assert events == [("sleep", distributed.ABORT_GRACE), ("abort", 1)]
    assert distributed.ABORT_GRACE >= 0.2
    assert capsys.readouterr().err == "error: stopping\n"


@needs_mpi
def test_a_failure_on_every_rank_is_printed_once(tmp_path):
    spec, data = _mlp_with_data(tmp_path)
    status, out, err = _mpirun(*_bpcompile(), "train", spec, "--data", "missing.npz",
                               cwd=tmp_path)
    assert status == 1
    assert _error_lines(out + err, "error:") == [
        "missing.npz:1:1: error: cannot load data: missing.npz: no such file"]
    # diverging (the l2 term overflows): every rank sees the same summed loss and
    # stops at the same batch
    spec, _ = _compile(tmp_path, MLP.format(l2=0.01), "l2.yaml")
    status, out, err = _mpirun(*_bpcompile(), "train", spec, "--data", data, "--lr", "1e300",
                               "--quiet", cwd=tmp_path)
    assert status == 1
    lines = _error_lines(out + err, "error:")
    assert len(lines) == 1 and "training failed: the loss became" in lines[0], out + err


@needs_mpi
def test_a_failure_in_rank_0s_own_work_stops_every_rank(tmp_path):
    """on_epoch_end (saving, in the command) runs on rank 0 alone; its failure is
    broadcast, so rank 1 leaves at once instead of waiting at the next batch."""
    spec, module = _compile(tmp_path, MLP.format(l2=0.0))
    (tmp_path / "mlp.py").write_text(compile_file(str(spec)).source)
    script = tmp_path / "root_fails.py"
    script.write_text(
        "import importlib.util, io\nimport numpy as np\n"
        "from bpcompile.training import distributed, train\n"
        "spec = importlib.util.spec_from_file_location('m', 'mlp.py')\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "rng = np.random.default_rng(0); x = rng.normal(size=(40, 6)); "
        "y = rng.integers(0, 3, 40)\n"
        "def full(epoch, params, record): raise OSError('disk full on rank 0')\n"
        "distributed.run(lambda: train.train(m, (x, y, x, y), epochs=3, batch_size=8, "
        "progress=False, out=io.StringIO(), on_epoch_end=full, ranks=distributed.group()))\n")
    status, out, err = _mpirun(sys.executable, script, cwd=tmp_path,
                               env={distributed.ERROR_WAIT_VARIABLE: "30"})
    assert status != 0
    assert len(_error_lines(err, "OSError: disk full on rank 0")) == 1, err
    assert "Abort" not in err           # both ranks left together, no MPI_Abort


@needs_mpi
def test_train_api_two_ranks_equal_one_process(tmp_path):
    """train.train(ranks=...) with its default step (plain SGD) against the
    one-process loop, in the same script under mpirun."""
    spec, module = _compile(tmp_path, MLP.format(l2=0.01))
    (tmp_path / "mlp.py").write_text(compile_file(str(spec)).source)
    x, y = _examples(40, seed=6)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    script = tmp_path / "api.py"
    script.write_text(
        "import importlib.util, sys, io\nimport numpy as np\n"
        "from bpcompile.training import distributed, train\n"
        "spec = importlib.util.spec_from_file_location('m', 'mlp.py')\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "d = np.load('d.npz'); data = (d['x'][:30], d['y'][:30], d['x'][30:], d['y'][30:])\n"
        "ranks = distributed.group()\n"
        "params, history = train.train(m, data, epochs=2, lr=0.2, batch_size=7, "
        "progress=False, out=io.StringIO(), ranks=ranks)\n"
        "assert ranks.same_params(params)\n"
        "if ranks.is_root: np.savez('api.npz', **params, loss=history[-1]['test_loss'])\n"
        "elif history[-1]['test_loss'] <= 0: sys.exit(3)\n")
    status, _, err = _mpirun(sys.executable, script, cwd=tmp_path)
    assert status == 0, err
    got = np.load(tmp_path / "api.npz")
    data = (x[:30], y[:30], x[30:], y[30:])
    params, history = train.train(module, data, epochs=2, lr=0.2, batch_size=7, progress=False,
                                  out=open(os.devnull, "w"))
    for key in module.PARAMS:
        np.testing.assert_allclose(got[key], params[key], rtol=0, atol=1e-12, err_msg=key)
    assert abs(float(got["loss"]) - history[-1]["test_loss"]) < 1e-12


BATCHNORM = ("name: bn\ninput: 6\ndtype: float64\nlayers:\n  - linear: 5\n  - batchnorm: {}\n"
             "  - tanh\n  - linear: 3\nloss: softmax_cross_entropy\n")


def _batchnorm_reference(module, x, y, epochs, batch_size, lr, seed=0):
    """Two ranks written out here: each global batch cut by shard(), each shard's gradient
    in train mode on its own copy of the running statistics, the gradients summed with
    the shards' shares as weights, one sgd_update, the statistics averaged by share."""
    from bpcompile.training.distributed import shard
    params, state = module.init_params(seed), {}
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng(seed + epoch).permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            total, buffers = None, {k: 0.0 for k in module.BUFFERS}
            for rank in (0, 1):
                part = batch[shard(len(batch), rank, 2)]
                share = len(part) / len(batch)
                own = {k: v.copy() for k, v in params.items()}
                _, grads = module.value_and_grad(own, x[part], y[part], train=True)
                total = {k: share * g + (0 if total is None else total[k]) for k, g in grads.items()}
                buffers = {k: buffers[k] + share * own[k] for k in buffers}
            module.sgd_update(params, total, state, lr)
            for k in buffers:
                params[k][...] = buffers[k]
    return params


@needs_mpi
def test_batch_norm_two_ranks_average_the_running_statistics_after_every_step(capsys, tmp_path):
    spec, module = _compile(tmp_path, BATCHNORM)
    x, y = _examples(30, seed=6)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x[:24], y_train=y[:24], x_test=x[24:], y_test=y[24:])
    status, out, err = _mpirun(*_bpcompile(), "train", spec, "--data", data, "--epochs", 2,
                               "--batch-size", 8, "--lr", 0.2, "--quiet", "--save",
                               tmp_path / "two.npz", cwd=tmp_path)
    assert status == 0, err
    expected = _batchnorm_reference(module, x[:24], y[:24], epochs=2, batch_size=8, lr=0.2)
    two = np.load(tmp_path / "two.npz")
    for key in expected:
        np.testing.assert_allclose(two[key], expected[key], rtol=0, atol=1e-12, err_msg=key)
    assert np.abs(two["batchnorm1.running_mean"]).max() > 1e-3      # they moved


@needs_mpi
@pytest.mark.parametrize("options, name", [("{class_weights: [1, 2, 3]}", "class_weights"),
                                           ("{ignore_index: 1}", "ignore_index"),
                                           ("{reduction: sum}", "reduction")])
def test_losses_that_shares_of_examples_cannot_weight_are_refused_under_mpi(tmp_path, options,
                                                                            name):
    text = MLP.format(l2=0).replace("loss: softmax_cross_entropy",
                                    f"loss: {{softmax_cross_entropy: {options}}}")
    spec, _ = _compile(tmp_path, text)
    x, y = _examples(20)
    np.savez(tmp_path / "d.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    status, out, err = _mpirun(*_bpcompile(), "train", spec, "--data", tmp_path / "d.npz",
                               "--quiet", cwd=tmp_path)
    line = text.splitlines().index(next(l for l in text.splitlines() if l.startswith("loss:"))) + 1
    assert status == 1 and err.count("error:") == 1, err
    assert f"spec.yaml:{line}:" in err and f"which is not this loss's J with {name}" in err, err
