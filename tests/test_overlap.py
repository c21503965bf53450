"""The numba target's sgd_step starts its largest weight update on the worker threads
while the rest of the backward pass runs (bpcompile/codegen/overlap.py).  Where the
start goes is decided on the statements as data; these tests check that decision, that
the results equal the NumPy target's, and that no thread writes params after sgd_step
returns or raises."""

import threading

import numpy as np
import pytest

import bpcompile
from bpcompile.codegen import overlap
from bpcompile.core.autodiff import Statement
from bpcompile.core.naming import SymbolTable
from conftest import step_page_faults

BIG = overlap.EARLY_BYTES


def statement(target, *reads, buffer=None):
    return Statement((target,), "f(...)", frozenset(reads), buffer=buffer)


def update(nbytes=BIG, weight="W", reads=("W", "g", "h")):
    return overlap.Update("dJ_dW", weight, "_subtract_product_later(W, g, h)",
                          frozenset(reads), nbytes)


def test_the_update_starts_after_the_last_statement_that_assigns_its_operands_or_reads_W():
    statements = [statement("g", "a"), statement("dh", "g", "W"), statement("h2", "dh"),
                  statement("dx", "h2")]
    early = overlap.start_early(statements, [update()], SymbolTable())
    assert [s.targets[0] for s in early.before] == ["g", "dh", "finish_W"]
    assert early.before[-1].code == "_subtract_product_later(W, g, h)"
    assert [s.targets[0] for s in early.during] == ["h2", "dx"]
    assert early.finish == "finish_W()"


def test_no_early_start_when_a_later_statement_writes_into_what_the_update_reads():
    statements = [statement("g", "a"), statement("dh", "g", "W"),
                  statement("dx", "dh", "h", buffer="h")]
    assert overlap.start_early(statements, [update()], SymbolTable()) is None


def test_no_early_start_without_statements_to_overlap_or_for_a_small_weight():
    assert overlap.start_early([statement("g", "a"), statement("dh", "g", "W")],
                               [update()], SymbolTable()) is None
    statements = [statement("g", "a"), statement("dh", "g", "W"), statement("dx", "dh")]
    assert overlap.start_early(statements, [update(BIG - 1)], SymbolTable()) is None


def test_the_largest_weight_is_the_one_started_and_its_handle_name_is_fresh():
    statements = [statement("g", "a"), statement("dh", "g", "W", "V"), statement("dx", "dh")]
    names = SymbolTable()
    names.claim("finish_W")
    small = update(BIG, weight="V", reads=("V", "g", "h"))
    early = overlap.start_early(statements, [small, update(4 * BIG)], names)
    assert early.update.weight == "W"
    assert early.before[-1].targets[0] not in ("finish_W", "finish_V")


# --- the numba target ---------------------------------------------------------------------

# the output weights take 4.4 MB (so the update starts early) and a batch of 36 tokens
# makes the product large enough for the worker threads (_subtract_product_later)
LANGUAGE_MODEL = {"name": "lm", "dtype": "float64", "input": {"vocab": 9000},
                  "layers": [{"embedding": 8}, {"lstm": {"hidden": 64}}, {"linear": 9000}],
                  "loss": "softmax_cross_entropy"}


@pytest.fixture(scope="module")
def modules():
    pytest.importorskip("numba")
    return (bpcompile.compile(LANGUAGE_MODEL, target="numpy"),
            bpcompile.compile(LANGUAGE_MODEL, target="numba"))


def batches(module, count, rows=3, steps=12):
    rng = np.random.default_rng(5)
    return [(rng.integers(0, module.VOCAB, (rows, steps)),
             rng.integers(0, module.OUTPUTS, (rows, steps))) for _ in range(count)]


def test_the_numba_step_starts_the_output_update_early_and_equals_the_numpy_step(modules):
    reference, module = modules
    sgd_step = module.SOURCE.split("def sgd_step(")[1].split("\ndef ")[0]
    assert "finish_linear1_W = _subtract_product_later(linear1_W," in sgd_step
    assert "    finally:" in sgd_step and "        finish_linear1_W()" in sgd_step
    assert "_subtract_product_later" not in reference.SOURCE
    expected, params = reference.init_params(1), module.init_params(1)
    for x, y in batches(module, 3):
        J0 = reference.sgd_step(expected, x, y, 0.5)
        J1 = module.sgd_step(params, x, y, 0.5)
        assert J1 == pytest.approx(J0, rel=1e-12)
    for key in expected:
        scale = np.max(np.abs(expected[key]))
        assert np.max(np.abs(params[key] - expected[key])) <= 1e-12 * scale, key


def test_an_exception_in_the_backward_leaves_no_thread_writing_params(modules, monkeypatch):
    """The update finishes (in `finally`) before the exception leaves sgd_step."""
    reference, module = modules
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: the update runs at once")
    x, y = batches(module, 1)[0]
    expected = reference.init_params(2)
    reference.sgd_step(expected, x, y, 0.5)

    def fails(*args, **kwargs):
        raise RuntimeError("backward failed")
    monkeypatch.setattr(module, "lstm1_cell_backward", fails)
    params = module.init_params(2)
    with pytest.raises(RuntimeError, match="backward failed"):
        module.sgd_step(params, x, y, 0.5)
    W = params["linear1.W"].copy()
    scale = np.max(np.abs(expected["linear1.W"]))
    assert np.max(np.abs(W - expected["linear1.W"])) <= 1e-12 * scale
    for _ in range(20):      # and nothing writes W afterwards
        threading.Event().wait(0.005)
        np.testing.assert_array_equal(params["linear1.W"], W)


def test_a_busy_worker_leaves_its_share_of_a_split_product_to_this_thread(modules):
    """_in_parallel does not wait for a worker that is still on earlier work (an update
    started early): this thread takes every block the worker has not begun."""
    _, module = modules
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: nothing is split")
    release = threading.Event()
    busy = module._start_shared(lambda: release.wait(30))
    try:
        seen, done = [], threading.Event()

        def split():
            module._in_parallel(10, seen.append, work=1 << 30)
            done.set()
        threading.Thread(target=split, daemon=True).start()
        assert done.wait(10), "_in_parallel waited for the busy worker"
        assert sorted(r for part in seen for r in range(10)[part]) == list(range(10))
    finally:
        release.set()
        for future in busy:
            future.result()



def test_the_worker_threads_keep_their_temporaries_between_steps(tmp_path):
    """Megabyte temporaries made afresh by two threads at once were page-faulted at
    every step: about 800 faults a step of the benchmark's language model at minibatch
    1, 2.2-2.5 ms of system time on a 2-core VM."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: no worker threads")
    module = bpcompile.compile(LANGUAGE_MODEL, target="numba")
    assert step_page_faults(module, tmp_path, 1, 36) < 20
