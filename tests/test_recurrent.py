"""Recurrent layers: BPTT gradients vs finite differences (float64), masking,
truncated BPTT with a carried state, a user-written GRU cell, bad cells."""

import textwrap

import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.compiler import compile_file, compile_spec, load_module, load_spec
from bpcompile.training.gradcheck import relative_error

pytestmark = pytest.mark.both_targets

TOL = 1e-6
H = 1e-4       # central-difference step: truncation ~H**2, far below TOL in float64


def module_from(text):
    compiled = compile_spec(load_spec(textwrap.dedent(text), "spec.yaml"))
    return load_module(compiled.source, compiled.name)


def spec(layer, vocab=True, extra_layers=()):
    first = "input: {vocab: 6}\nlayers:\n  - embedding: 3\n" if vocab else "input: [3]\nlayers:\n"
    more = "".join(f"  - {layer}\n" for layer in extra_layers)
    return (f"name: seq\ndtype: float64\n{first}  - {layer}\n{more}  - linear: 4\n"
            "loss: softmax_cross_entropy\n")


def problem(module, vocab, batch=3, steps=5, seed=0, masked=True, with_state=False):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0.0, 0.5, s) for k, s in module.PARAMS.items()}
    x = rng.integers(0, 6, (batch, steps)) if vocab else rng.normal(size=(batch, steps, 3))
    y = rng.integers(0, module.OUTPUTS, (batch, steps))
    mask = np.ones((batch, steps))
    if masked:                       # lengths steps, steps-1, steps-2, ...: variable lengths
        for b in range(batch):
            mask[b, steps - b:] = 0
    state = None
    if with_state:
        _, cache = module.forward(params, x, y, mask)
        state = {k: rng.normal(size=v.shape) for k, v in cache["state"].items()}
    return params, x, y, mask, state


def gradient_errors(module, params, x, y, mask, state=None):
    """The largest relative error of the parameter and initial-state gradients
    against central differences of every entry."""
    _, grads, state_grads = module.value_and_grad(params, x, y, mask, state, state_grad=True)
    assert set(grads) == set(module.PARAMS)
    targets = [(grads[k], params[k]) for k in params]
    if state:
        assert set(state_grads) == set(state)
        targets += [(state_grads[k], state[k]) for k in state]
    errors = []
    for analytic, array in targets:
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            original = array[i]
            array[i] = original + H
            plus = module.forward(params, x, y, mask, state)[0]
            array[i] = original - H
            minus = module.forward(params, x, y, mask, state)[0]
            array[i] = original
            numeric[i] = (plus - minus) / (2 * H)
        errors.append(relative_error(analytic, numeric))
    return max(errors)


LAYERS = [
    "rnn: {hidden: 3}",
    "rnn: {hidden: 3, nonlinearity: relu}",
    "lstm: {hidden: 3}",
    "lstm: {hidden: 3, peephole: true}",
    "lstm: {hidden: 2, bidirectional: true}",
    "rnn: {hidden: 2, bidirectional: true, layers: 2}",
    "lstm: {hidden: 2, layers: 2, peephole: true}",
    "lstm: {hidden: 2, direction: reverse, peephole: true}",
    "rnn: {hidden: 2, direction: reverse, layers: 2}",
    "rnn: {hidden: 2, direction: bidirectional, layers: 2}",
]


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("masked", [False, True])
def test_bptt_gradients_match_finite_differences(layer, masked):
    module = module_from(spec(layer))
    assert gradient_errors(module, *problem(module, True, masked=masked)) < TOL


@pytest.mark.parametrize("layer", ["lstm: {hidden: 3, peephole: true}",
                                   "lstm: {hidden: 2, bidirectional: true}",
                                   "rnn: {hidden: 2, direction: reverse}"])
def test_gradients_when_padded_and_unpadded_steps_alternate(layer):
    # the scan masks only steps whose mask column has a 0; here such steps lie
    # between and before unpadded ones (not only at the end), with a given initial state
    module = module_from(spec(layer))
    params, x, y, _, state = problem(module, True, steps=6, with_state=True, seed=7)
    mask = np.ones((3, 6))
    mask[1, 1] = mask[2, 0] = mask[2, 3] = mask[1, 5] = 0     # full columns: 2 and 4
    assert gradient_errors(module, params, x, y, mask, state) < TOL


@pytest.mark.parametrize("layer", ["lstm: {hidden: 3, peephole: true}",
                                   "rnn: {hidden: 2, bidirectional: true, layers: 2}"])
def test_gradient_with_respect_to_a_given_initial_state(layer):
    module = module_from(spec(layer))
    params, x, y, mask, state = problem(module, True, with_state=True, seed=4)
    assert set(state) == set(module.forward(params, x, y, mask)[1]["state"])
    assert gradient_errors(module, params, x, y, mask, state) < TOL


def test_feature_vector_inputs_without_embedding():
    module = module_from(spec("lstm: {hidden: 2, bidirectional: true}", vocab=False))
    assert gradient_errors(module, *problem(module, False, seed=2)) < TOL


def test_user_defined_gru_cell_from_equations():
    text = open("examples/gru_tagger.yaml").read().replace("hidden: 32", "hidden: 3") \
        .replace("embedding: 16", "embedding: 3").replace("vocab: 50", "vocab: 6") \
        .replace("name: gru_tagger", "name: gru\ndtype: float64")
    module = module_from(text)
    assert module.PARAMS["gru.W_hn"] == (3, 3) and module.PARAMS["gru.W_xz"] == (3, 3)
    assert module.PARAMS["gru.b_n"] == (3,)
    for masked in (False, True):
        assert gradient_errors(module, *problem(module, True, masked=masked, seed=5)) < TOL
    assert gradient_errors(module, *problem(module, True, with_state=True, seed=6)) < TOL


@pytest.mark.parametrize("layer", ["lstm: {hidden: 3, bidirectional: true}", "rnn: {hidden: 3, layers: 2}",
                                   "rnn: {hidden: 3, direction: reverse, layers: 2}"])
def test_appending_padding_changes_nothing(layer):
    """Masking: extra padded steps change no loss, gradient, or final state."""
    module = module_from(spec(layer))
    params, x, y, mask, _ = problem(module, True, seed=3)
    J, grads = module.value_and_grad(params, x, y, mask)
    final = module.forward(params, x, y, mask)[1]["state"]
    pad = 4
    x2 = np.concatenate([x, np.full((len(x), pad), 5)], axis=1)
    y2 = np.concatenate([y, np.full((len(y), pad), 1)], axis=1)
    mask2 = np.concatenate([mask, np.zeros((len(mask), pad))], axis=1)
    J2, grads2 = module.value_and_grad(params, x2, y2, mask2)
    assert J2 == pytest.approx(J, rel=1e-13)
    for k in params:
        np.testing.assert_allclose(grads2[k], grads[k], rtol=1e-12, atol=1e-14)
    for k, v in module.forward(params, x2, y2, mask2)[1]["state"].items():
        np.testing.assert_allclose(v, final[k], rtol=1e-12, atol=1e-14)


def test_truncated_bptt_carries_the_state_but_not_the_gradient():
    module = module_from(spec("lstm: {hidden: 3}"))
    params, x, y, _, _ = problem(module, True, steps=8, masked=False)
    J_full, cache_full = module.forward(params, x, y)
    J1, cache1 = module.forward(params, x[:, :5], y[:, :5])
    J2, cache2 = module.forward(params, x[:, 5:], y[:, 5:], state=cache1["state"])
    # the forward pass over two chunks with the carried state is the forward pass over the whole
    assert (5 * J1 + 3 * J2) / 8 == pytest.approx(J_full, rel=1e-12)
    for k, v in cache_full["state"].items():
        np.testing.assert_allclose(cache2["state"][k], v, rtol=1e-12)
    # the second chunk's gradient treats the carried state as a constant input
    _, grads2, state_grads = module.value_and_grad(params, x[:, 5:], y[:, 5:], state=cache1["state"],
                                                   state_grad=True)
    _, grads_full = module.value_and_grad(params, x, y)
    assert not np.allclose(grads2["lstm1.W_hi"], grads_full["lstm1.W_hi"])
    assert set(state_grads) == {"lstm1.h", "lstm1.c"}


def test_predict_and_parameter_names():
    module = module_from(spec("lstm: {hidden: 2, bidirectional: true, layers: 2, peephole: true}"))
    names = set(module.PARAMS)
    for layer in ("lstm1", "lstm2"):
        for direction in ("fwd", "bwd"):
            for gate in "ifco":
                assert f"{layer}.{direction}.W_x{gate}" in names and f"{layer}.{direction}.b_{gate}" in names
            assert f"{layer}.{direction}.w_ci" in names and f"{layer}.{direction}.w_co" in names
    assert module.PARAMS["lstm2.fwd.W_xi"] == (2, 4)          # input: [forward, backward] = 2*hidden
    params, x, y, mask, _ = problem(module, True)
    p = module.predict(params, x, mask)
    assert p.shape == (3, 5, 4)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0)


def test_run_time_checks_for_sequences():
    module = module_from(spec("rnn: {hidden: 2}"))
    params, x, y, mask, _ = problem(module, True)
    with pytest.raises(ValueError, match="x: token ids must lie in"):
        module.forward(params, x + 10, y)
    with pytest.raises(ValueError, match=r"mask: expected an array of 0s and 1s of shape \(3, 5\)"):
        module.forward(params, x, y, mask[:, :2])
    with pytest.raises(ValueError, match=r"y: expected integer class ids of shape \(3, 5\)"):
        module.forward(params, x, y[:, :2])
    with pytest.raises(ValueError, match=r"state\['rnn1.h'\]"):
        module.forward(params, x, y, state={"rnn1.h": np.zeros((2, 2))})


@pytest.mark.parametrize("layer,message", [
    ("  - recurrent: {hidden: 3, state: [h], equations: 'g = tanh(W @ x)'}\n", "state 'h' is not assigned"),
    ("  - recurrent: {hidden: 3, equations: 'h = tanh(x @ W)'}\n", "the left side of @ must be a parameter"),
    ("  - recurrent: {hidden: 3, equations: 'h = tanh(W @ x +)'}\n", "syntax error"),
    ("  - lstm: {bidirectional: true}\n", "missing `hidden:`"),
    ("  - lstm: {hidden: 3, peephole: 1}\n", "peephole must be true or false"),
    ("  - rnn: {hidden: 3, nonlinearity: sigmoid}\n", "nonlinearity must be tanh or relu"),
    ("  - rnn: {hidden: 3, direction: backward}\n", "direction must be one of forward, reverse"),
    ("  - lstm: {hidden: 3, direction: reverse, bidirectional: true}\n",
     "direction: reverse contradicts bidirectional: true"),
])
def test_bad_recurrent_layers(tmp_path, capsys, layer, message):
    path = tmp_path / "bad.yaml"
    path.write_text("name: n\ninput: {vocab: 5}\nlayers:\n  - embedding: 3\n" + layer
                    + "  - linear: 2\nloss: softmax_cross_entropy\n")
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:") and "error: layer 2" in err and message in err, err
    assert err.count("\n") == 1


def test_embedding_needs_token_ids(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: n\ninput: [4]\nlayers:\n  - embedding: 3\n  - linear: 2\n"
                    "loss: softmax_cross_entropy\n")
    assert main([str(path)]) == 1
    assert "embedding needs token ids" in capsys.readouterr().err


def test_lstm_loop_stacks_gate_weights_and_hoists_input_products():
    source = compile_file("examples/gru_tagger.yaml").source
    hoisted = "_X = xs.transpose(1, 0, 2).reshape(T * B, -1) @ _Wx.T"
    assert hoisted in source                                     # every step's input products
    assert source.index(hoisted) < source.index("for t in")      # out of the loop
    assert "_S[:, 0:64] += (_Wh @ h_prev.T).T" in source         # one matmul per step for z and r
    assert "np.add.at" in source                                 # embedding gradient only


@pytest.mark.parametrize("path", ["examples/gru_tagger.yaml", "examples/pos_tagger.yaml",
                                  "examples/rnnlm.yaml"])
def test_check_command_on_sequence_specs(path, capsys):
    assert main(["check", path]) == 0
    assert ": ok" in capsys.readouterr().out


def test_backward_keeps_the_cache_unless_told_to_consume_it():
    # sgd_step and value_and_grad let the loss gradient overwrite the cached
    # exp(logits); backward(params, cache) leaves the cache reusable
    module = module_from(spec("lstm: {hidden: 3}"))
    params, x, y, mask, _ = problem(module, True, seed=8)
    _, cache = module.forward(params, x, y, mask)
    e = cache["e"].copy()
    first = module.backward(params, cache)
    np.testing.assert_array_equal(cache["e"], e)
    again = module.backward(params, cache)
    consumed = module.backward(params, cache, consume=True)
    _, combined = module.value_and_grad(params, x, y, mask)
    for k in params:
        np.testing.assert_array_equal(again[k], first[k], err_msg=k)
        np.testing.assert_array_equal(consumed[k], first[k], err_msg=k)
        np.testing.assert_array_equal(combined[k], first[k], err_msg=k)


def test_init_params_stores_gates_side_by_side_and_the_scan_uses_the_block():
    module = module_from(spec("lstm: {hidden: 3}"))
    params = module.init_params(0)
    gates = [params[f"lstm1.W_h{g}"] for g in "ifoc"]
    block = gates[0].base
    assert block is not None and all(w.base is block for w in gates)
    assert module._stacked(gates) is block                       # no copy per call
    # the same values as drawn gate by gate, without the stacking
    stack = module._side_by_side
    module._side_by_side = lambda params, keys: None
    try:
        plain = module.init_params(0)
    finally:
        module._side_by_side = stack
    assert plain["lstm1.W_hi"].base is None
    for key in params:
        np.testing.assert_array_equal(params[key], plain[key], err_msg=key)
    # separate arrays, or views in another order, are concatenated: the same numbers either way
    copies = {k: v.copy() for k, v in params.items()}
    assert module._stacked([copies[f"lstm1.W_h{g}"] for g in "ifoc"]) is not block
    swapped = dict(params, **{"lstm1.W_hi": params["lstm1.W_hf"], "lstm1.W_hf": params["lstm1.W_hi"]})
    swapped_copies = dict(copies, **{"lstm1.W_hi": copies["lstm1.W_hf"], "lstm1.W_hf": copies["lstm1.W_hi"]})
    _, x, y, mask, _ = problem(module, True, seed=3)
    for views, arrays in ((params, copies), (swapped, swapped_copies)):
        J1, g1 = module.value_and_grad(views, x, y, mask)
        J2, g2 = module.value_and_grad(arrays, x, y, mask)
        assert J1 == J2
        for k in params:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
    # sgd_step updates the gates in place, so the block follows
    before = block.copy()
    module.sgd_step(params, x, y, 0.5, mask)
    assert not np.array_equal(block, before)
    assert all(params[f"lstm1.W_h{g}"].base is block for g in "ifoc")
