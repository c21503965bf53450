"""sgd_step keeps its large temporaries between calls (`_workspace`): a language
model's logits are 3 MB at minibatch 4 and 51 MB at 64, and a fresh array that
large may cost a page fault per page every step.  Only sgd_step does this (it
returns J alone and lets every other value go), each thread has its own buffers,
and the results are those of fresh arrays."""

import threading

import numpy as np
import pytest

import bpcompile
from conftest import step_page_faults

pytestmark = pytest.mark.both_targets

TAGGER = {"name": "lm", "dtype": "float64", "input": {"vocab": 50},
          "layers": [{"embedding": 6}, {"lstm": {"hidden": 8}}, {"linear": 50}],
          "loss": "softmax_cross_entropy"}


def batch(module, rows, steps, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, module.VOCAB, (rows, steps)),
            rng.integers(0, module.OUTPUTS, (rows, steps)))


def train(module, keep_from, batches, lr=0.3):
    """params after sgd_step on each batch, with buffers kept from `keep_from` bytes."""
    module._WORKSPACE_BYTES = keep_from
    params = module.init_params(3)
    losses = [float(module.sgd_step(params, x, y, lr)) for x, y in batches]
    return params, losses


def test_the_logits_are_written_into_a_kept_buffer_only_by_sgd_step():
    module = bpcompile.compile(TAGGER)
    sgd_step = module.SOURCE.split("def sgd_step(")[1].split("\ndef ")[0]
    assert '_linear_steps(lstm1, linear1_W, linear1_b, workspace="linear1")' in sgd_step
    for function in ("forward", "value_and_grad", "predict"):
        body = module.SOURCE.split(f"def {function}(")[1].split("\ndef ")[0]
        assert "workspace=" not in body, function


def test_kept_buffers_give_the_results_of_fresh_arrays():
    module = bpcompile.compile(TAGGER)
    # shapes change between batches: a kept buffer of another shape is replaced
    batches = [batch(module, 4, 7, 0), batch(module, 4, 7, 1), batch(module, 3, 5, 2),
               batch(module, 4, 7, 3)]
    fresh, fresh_losses = train(module, 1 << 62, batches)
    assert not module._WORKSPACE.__dict__
    kept, kept_losses = train(module, 0, batches)
    # the logits; on the numba target also its weight update's product (_subtract_into)
    assert "linear1" in module._WORKSPACE.__dict__
    assert set(module._WORKSPACE.__dict__) <= {"linear1", "_subtract_into"}
    assert kept_losses == pytest.approx(fresh_losses, rel=1e-13)
    for key in fresh:
        np.testing.assert_allclose(kept[key], fresh[key], rtol=1e-13, atol=1e-15, err_msg=key)


def test_the_same_buffer_serves_every_call_and_nothing_returned_shares_it():
    module = bpcompile.compile(TAGGER)
    module._WORKSPACE_BYTES = 0
    params = module.init_params(0)
    x, y = batch(module, 4, 7, 0)
    module.sgd_step(params, x, y, 0.1)
    buffer = module._WORKSPACE.__dict__["linear1"]
    J, cache = module.forward(params, x, y)
    J2, grads = module.value_and_grad(params, x, y)
    saved = {k: np.copy(v) for k, v in cache.items() if isinstance(v, np.ndarray)}
    saved_grads = {k: v.copy() for k, v in grads.items()}
    module.sgd_step(params, x, y, 0.1)
    assert module._WORKSPACE.__dict__["linear1"] is buffer
    for k, v in saved.items():
        np.testing.assert_array_equal(cache[k], v, err_msg=k)
        assert not np.shares_memory(cache[k], buffer), k
    for k, v in saved_grads.items():
        np.testing.assert_array_equal(grads[k], v, err_msg=k)


def test_small_temporaries_are_not_kept():
    module = bpcompile.compile(TAGGER)
    params = module.init_params(0)
    module.sgd_step(params, *batch(module, 4, 7, 0), 0.1)
    assert module._WORKSPACE_BYTES == 1 << 17
    assert not module._WORKSPACE.__dict__


def test_threads_have_their_own_buffers():
    """Two threads stepping their own params at once get what one thread gets."""
    module = bpcompile.compile(TAGGER)
    batches = [batch(module, 4, 7, seed) for seed in range(30)]
    expected, expected_losses = train(module, 0, batches)
    results = [None, None]
    start = threading.Barrier(2)

    def run(slot):
        start.wait()
        results[slot] = train(module, 0, batches)
    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for params, losses in results:
        assert losses == expected_losses
        for key in expected:
            np.testing.assert_array_equal(params[key], expected[key], err_msg=key)


def test_a_step_of_a_few_megabytes_of_logits_does_not_page_fault(tmp_path):
    """In a process of its own, logits of a few megabytes made afresh were page-faulted
    at every step (the allocator gave them back to the system when freed): 2,149 faults
    a step of the benchmark's language model at minibatch 4, 7.7 ms of system time, the
    step 36.5 ms where it takes 28.1 ms with the logits kept.  (Whether memory goes back
    depends on every allocation of the step: the same model with 64 hidden units, or 12
    positions, did not fault.)"""
    spec = {"name": "lm", "dtype": "float32", "input": {"vocab": 10000},
            "layers": [{"embedding": 128}, {"lstm": {"hidden": 256}}, {"linear": 10000}],
            "loss": "softmax_cross_entropy"}
    module = bpcompile.compile(spec)    # logits: 4 x 20 positions x 10,000 x 4 bytes = 3.2 MB
    assert step_page_faults(module, tmp_path, 4, 20) < 20
