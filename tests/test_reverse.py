"""Reverse-direction recurrent layers (issue 13): `direction: forward|reverse|bidirectional`.

A reverse layer is a bidirectional layer's `bwd` half alone.  Checked in float64
against a NumPy reference written here (PyTorch's packed reverse direction: the
forward cell run over the reversed valid part of each sequence, from the initial
state), against central finite differences (rnn, lstm, a user cell; masked,
stacked, with a given initial state), and for equivalence: a bidirectional layer
is concat(forward-only, reverse-only) with the same weights, and a stacked reverse
layer is the composition of single reverse layers."""


import numpy as np
import pytest

from bpcompile.cli.main import main
from bpcompile.compiler import compile_spec, load_module, load_spec
from bpcompile.frontends.sequence_layers import layer_direction
from test_recurrent import gradient_errors   # central differences of params and state

pytestmark = pytest.mark.both_targets

TOL = 1e-6

GRU = ("z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\\n"
       "r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)\\n"
       "n = tanh(W_xn @ x + W_hn @ (r * h_prev) + b_n)\\n"
       "h = (1 - z) * n + z * h_prev")


def spec_text(layers, outputs=4, vocab=True):
    first = "input: {vocab: 6}\nlayers:\n  - embedding: 3\n" if vocab else "input: [3]\nlayers:\n"
    middle = "".join(f"  - {layer}\n" for layer in layers)
    return (f"name: rev\ndtype: float64\n{first}{middle}  - linear: {outputs}\n"
            "loss: softmax_cross_entropy\n")


def module_from(*layers, outputs=4, vocab=True):
    compiled = compile_spec(load_spec(spec_text(layers, outputs, vocab), "spec.yaml"))
    return load_module(compiled.source, compiled.name)


def right_padded_mask(lengths, steps):
    return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype(float)


def random_problem(module, lengths=(5, 3, 1), steps=5, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0.0, 0.5, s) for k, s in module.PARAMS.items()}
    x = rng.integers(0, 6, (len(lengths), steps))
    y = rng.integers(0, module.OUTPUTS, (len(lengths), steps))
    return params, x, y, right_padded_mask(lengths, steps)


def initial_state(module, params, x, y, mask, seed):
    """A random state of the shapes the module's final state has."""
    rng = np.random.default_rng(seed)
    final = module.forward(params, x, y, mask)[1]["state"]
    return {k: rng.normal(size=v.shape) for k, v in final.items()}


# --- the NumPy reference: each cell's equations, one example and one step at a time -------

def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rnn_cell(p, x, s, nonlinearity=np.tanh):
    return {"h": nonlinearity(p["W_xh"] @ x + p["W_hh"] @ s["h"] + p["b_h"])}


def lstm_cell(p, x, s, peephole=False):
    h, c = s["h"], s["c"]
    peep = (lambda w, v: p[w] * v) if peephole else (lambda w, v: 0.0)
    i = sigmoid(p["W_xi"] @ x + p["W_hi"] @ h + peep("w_ci", c) + p["b_i"])
    f = sigmoid(p["W_xf"] @ x + p["W_hf"] @ h + peep("w_cf", c) + p["b_f"])
    c_new = f * c + i * np.tanh(p["W_xc"] @ x + p["W_hc"] @ h + p["b_c"])
    o = sigmoid(p["W_xo"] @ x + p["W_ho"] @ h + peep("w_co", c_new) + p["b_o"])
    return {"h": o * np.tanh(c_new), "c": c_new}


def gru_cell(p, x, s):
    h = s["h"]
    z = sigmoid(p["W_xz"] @ x + p["W_hz"] @ h + p["b_z"])
    r = sigmoid(p["W_xr"] @ x + p["W_hr"] @ h + p["b_r"])
    n = np.tanh(p["W_xn"] @ x + p["W_hn"] @ (r * h) + p["b_n"])
    return {"h": (1 - z) * n + z * h}


def reverse_layer(cell, p, xs, lengths, init):
    """PyTorch's packed reverse direction: sequence b runs from its step lengths[b]-1
    down to 0, from its initial state; its padded positions hold the initial state."""
    B, T, _ = xs.shape
    H = init["h"].shape[1]
    out = np.empty((B, T, H))
    final = {k: np.empty_like(v) for k, v in init.items()}
    for b in range(B):
        s = {k: v[b] for k, v in init.items()}
        out[b, lengths[b]:] = s["h"]
        for t in range(lengths[b] - 1, -1, -1):
            s = cell(p, xs[b, t], s)
            out[b, t] = s["h"]
        for k in s:
            final[k][b] = s[k]
    return out, final


def layer_params(params, prefix):
    return {k[len(prefix) + 1:]: v for k, v in params.items() if k.startswith(prefix + ".")}


def reference(cell, states, layers, params, x, y, lengths, state=None):
    """(loss, logits, final state) of embedding -> reverse layers (keys `<layer>.bwd.*`,
    one a name in `layers`) -> linear -> softmax cross-entropy, mean over the unpadded
    positions."""
    seq = params["embedding1.E"][x]
    B = len(x)
    final = {}
    for layer in layers:
        prefix = f"{layer}.bwd"
        p = layer_params(params, prefix)
        H = next(v.shape[0] for v in p.values())
        init = {s: (state[f"{prefix}.{s}"] if state else np.zeros((B, H))) for s in states}
        seq, last = reverse_layer(cell, p, seq, lengths, init)
        final.update({f"{prefix}.{s}": v for s, v in last.items()})
    logits = seq @ params["linear1.W"].T + params["linear1.b"]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    mask = right_padded_mask(lengths, x.shape[1])
    picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    return -(picked * mask).sum() / mask.sum(), logits, final


def relu_rnn_cell(p, x, s):
    return rnn_cell(p, x, s, lambda v: np.maximum(v, 0.0))


def peephole_lstm_cell(p, x, s):
    return lstm_cell(p, x, s, peephole=True)


REFERENCE_CASES = [   # (layer, reference cell, states, layer names in the keys)
    ("rnn: {hidden: 3, direction: reverse}", rnn_cell, ("h",), ["rnn1"]),
    ("rnn: {hidden: 2, direction: reverse, nonlinearity: relu}", relu_rnn_cell, ("h",), ["rnn1"]),
    ("lstm: {hidden: 3, direction: reverse}", lstm_cell, ("h", "c"), ["lstm1"]),
    ("lstm: {hidden: 2, direction: reverse, peephole: true}", peephole_lstm_cell, ("h", "c"),
     ["lstm1"]),
    ("lstm: {hidden: 2, direction: reverse, layers: 2}", lstm_cell, ("h", "c"), ["lstm1", "lstm2"]),
    (f'recurrent: {{name: gru, hidden: 3, direction: reverse, state: [h], equations: "{GRU}"}}',
     gru_cell, ("h",), ["gru"]),
    (f'recurrent: {{name: gru, hidden: 2, direction: reverse, layers: 2, state: [h], '
     f'equations: "{GRU}"}}', gru_cell, ("h",), ["gru", "recurrent1"]),
]


@pytest.mark.parametrize("layer,cell,states,layers", REFERENCE_CASES)
@pytest.mark.parametrize("with_state", [False, True])
def test_reverse_layers_match_the_numpy_reference(layer, cell, states, layers, with_state):
    module = module_from(layer)
    lengths = (5, 3, 1, 4)
    params, x, y, mask = random_problem(module, lengths, seed=1)
    state = initial_state(module, params, x, y, mask, seed=2) if with_state else None
    J_ref, logits_ref, final_ref = reference(cell, states, layers, params, x, y, lengths, state)
    J, cache = module.forward(params, x, y, mask, state)
    assert J == pytest.approx(J_ref, rel=1e-12)
    # every position: a padded one holds the initial state (zeros when state=None)
    np.testing.assert_allclose(module.predict(params, x, mask, state, logits=True), logits_ref,
                               rtol=1e-12, atol=1e-12)
    assert set(cache["state"]) == set(final_ref)
    for k, v in final_ref.items():      # the state after step 0, PyTorch's h_n (reverse)
        np.testing.assert_allclose(cache["state"][k], v, rtol=1e-12, atol=1e-12)


# --- gradients against central finite differences -------------------------------------

@pytest.mark.parametrize("layer", [case[0] for case in REFERENCE_CASES] + [
    "rnn: {hidden: 2, direction: reverse, layers: 2}",
    "rnn: {hidden: 2, bidirectional: false, direction: reverse}",
])
def test_reverse_gradients_match_finite_differences_on_padded_batches(layer):
    module = module_from(layer)
    params, x, y, mask = random_problem(module, (5, 2, 4), seed=3)
    assert gradient_errors(module, params, x, y, mask) < TOL
    state = initial_state(module, params, x, y, mask, seed=4)
    assert gradient_errors(module, params, x, y, mask, state) < TOL


def test_reverse_gradients_when_padding_lies_between_steps():
    # a padded step in the middle of a sequence is skipped (keeps the state) in either direction
    module = module_from("lstm: {hidden: 2, direction: reverse, peephole: true}")
    params, x, y, _ = random_problem(module, (6, 6, 6), steps=6, seed=5)
    mask = np.ones((3, 6))
    mask[1, 1] = mask[2, 0] = mask[2, 3] = mask[1, 5] = 0
    state = initial_state(module, params, x, y, mask, seed=6)
    assert gradient_errors(module, params, x, y, mask, state) < TOL


# --- packed-sequence semantics ------------------------------------------------------------

@pytest.mark.parametrize("layer", ["lstm: {hidden: 3, direction: reverse}",
                                   "rnn: {hidden: 2, direction: reverse, layers: 2}"])
def test_each_sequence_starts_at_its_own_last_unpadded_step(layer):
    """A padded batch gives each sequence what it gets alone, unpadded."""
    module = module_from(layer)
    lengths = (5, 2, 4)
    params, x, y, mask = random_problem(module, lengths, seed=7)
    batch = module.predict(params, x, mask, logits=True)
    final = module.forward(params, x, y, mask)[1]["state"]
    for b, n in enumerate(lengths):
        alone = module.predict(params, x[b:b + 1, :n], logits=True)
        np.testing.assert_allclose(batch[b, :n], alone[0], rtol=1e-12, atol=1e-13)
        state = module.forward(params, x[b:b + 1, :n], y[b:b + 1, :n])[1]["state"]
        for k, v in state.items():
            np.testing.assert_allclose(final[k][b], v[0], rtol=1e-12, atol=1e-13)


def test_appending_padding_to_a_reverse_layer_changes_nothing():
    module = module_from("lstm: {hidden: 3, direction: reverse}")
    params, x, y, mask = random_problem(module, (5, 4, 2), seed=8)
    J, grads = module.value_and_grad(params, x, y, mask)
    pad = 3
    x2 = np.concatenate([x, np.full((3, pad), 5)], axis=1)
    y2 = np.concatenate([y, np.full((3, pad), 1)], axis=1)
    mask2 = np.concatenate([mask, np.zeros((3, pad))], axis=1)
    J2, grads2 = module.value_and_grad(params, x2, y2, mask2)
    assert J2 == pytest.approx(J, rel=1e-13)
    for k in params:
        np.testing.assert_allclose(grads2[k], grads[k], rtol=1e-12, atol=1e-14)


def test_reverse_chunks_carry_the_state_from_the_last_chunk_to_the_first():
    """state= enters at a reverse layer's last step and cache["state"] leaves after its
    step 0, so chunks fed last to first give the pass over the whole sequence."""
    module = module_from("lstm: {hidden: 3, direction: reverse}")
    params, x, y, mask = random_problem(module, (8, 8), steps=8, seed=9)
    J_full, cache_full = module.forward(params, x, y)
    J2, cache2 = module.forward(params, x[:, 5:], y[:, 5:])
    J1, cache1 = module.forward(params, x[:, :5], y[:, :5], state=cache2["state"])
    assert (5 * J1 + 3 * J2) / 8 == pytest.approx(J_full, rel=1e-12)
    for k, v in cache_full["state"].items():
        np.testing.assert_allclose(cache1["state"][k], v, rtol=1e-12)
    # fed first to last, the chunks are another function: a reverse layer sees the future
    J_wrong = module.forward(params, x[:, 5:], y[:, 5:], state=module.forward(
        params, x[:, :5], y[:, :5])[1]["state"])[0]
    assert J_wrong != pytest.approx(J2, rel=1e-6)


# --- equivalences -----------------------------------------------------------------------

def identity_head(params, width):
    params["linear1.W"] = np.eye(width)
    params["linear1.b"] = np.zeros(width)


@pytest.mark.parametrize("kind", [
    "lstm: {hidden: 2, %s}", "rnn: {hidden: 2, %s}",
    f'recurrent: {{name: gru, hidden: 2, %s, state: [h], equations: "{GRU}"}}'])
@pytest.mark.parametrize("spelling", ["bidirectional: true", "direction: bidirectional"])
def test_bidirectional_is_concat_of_forward_and_reverse_layers(kind, spelling):
    both = module_from(kind % spelling, outputs=4)
    fwd = module_from(kind % "direction: forward", outputs=2)
    rev = module_from(kind % "direction: reverse", outputs=2)
    params, x, y, mask = random_problem(both, (5, 3, 1), seed=10)
    identity_head(params, 4)            # the logits are the layer's output itself
    name = "gru" if kind.startswith("recurrent") else kind.split(":")[0] + "1"
    p_fwd = {k.replace(".fwd.", "."): v for k, v in params.items() if ".bwd." not in k}
    p_rev = {k: v for k, v in params.items() if ".fwd." not in k}
    identity_head(p_fwd, 2)
    identity_head(p_rev, 2)
    assert set(p_fwd) == set(fwd.PARAMS) and set(p_rev) == set(rev.PARAMS)
    out = both.predict(params, x, mask, logits=True)
    np.testing.assert_allclose(out[..., :2], fwd.predict(p_fwd, x, mask, logits=True), rtol=1e-13)
    np.testing.assert_allclose(out[..., 2:], rev.predict(p_rev, x, mask, logits=True), rtol=1e-13)
    final = both.forward(params, x, y, mask)[1]["state"]
    final_rev = rev.forward(p_rev, x, y % 2, mask)[1]["state"]
    for k, v in final_rev.items():
        assert k.startswith(f"{name}.bwd.")
        np.testing.assert_allclose(final[k], v, rtol=1e-13)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_stacked_reverse_layer_is_the_composition_of_reverse_layers(kind):
    stacked = module_from(f"{kind}: {{hidden: 2, direction: reverse, layers: 2}}")
    composed = module_from(f"{kind}: {{hidden: 2, direction: reverse}}",
                           f"{kind}: {{hidden: 2, direction: reverse}}")
    assert stacked.PARAMS == composed.PARAMS        # keys kind1.bwd.*, kind2.bwd.*
    assert stacked.STATE_KEYS == composed.STATE_KEYS
    params, x, y, mask = random_problem(stacked, (5, 3, 4), seed=11)
    J, grads = stacked.value_and_grad(params, x, y, mask)
    J2, grads2 = composed.value_and_grad(params, x, y, mask)
    assert J == pytest.approx(J2, rel=1e-13)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads2[k], rtol=1e-12, atol=1e-15)


def test_direction_forward_is_the_default_layer():
    plain = module_from("lstm: {hidden: 2}")
    forward = module_from("lstm: {hidden: 2, direction: forward}")
    assert plain.PARAMS == forward.PARAMS and plain.STATE_KEYS == forward.STATE_KEYS
    params, x, y, mask = random_problem(plain, seed=12)
    assert plain.forward(params, x, y, mask)[0] == forward.forward(params, x, y, mask)[0]


def test_the_module_docstring_states_the_reverse_state_semantics():
    assert 'cache["state"] is the state after step 0' in module_from(
        "rnn: {hidden: 2, direction: reverse}").__doc__
    assert "A reverse layer" not in module_from("rnn: {hidden: 2, bidirectional: true}").__doc__


def test_reverse_layer_keys_are_the_bwd_half():
    module = module_from("lstm: {hidden: 2, direction: reverse, layers: 2}")
    assert "lstm1.bwd.W_xi" in module.PARAMS and "lstm2.bwd.b_o" in module.PARAMS
    assert not any(".fwd." in k for k in module.PARAMS)
    assert module.PARAMS["lstm2.bwd.W_xi"] == (2, 2)      # stacked: input is one direction's H
    assert module.STATE_KEYS == {"lstm1.bwd.h", "lstm1.bwd.c", "lstm2.bwd.h", "lstm2.bwd.c"}


def test_the_compiled_layer_records_one_spelling_of_its_direction():
    for options, expected in [("", "forward"), ("bidirectional: true", "bidirectional"),
                              ("direction: bidirectional", "bidirectional"),
                              ("direction: reverse", "reverse"),
                              ("bidirectional: false", "forward")]:
        text = spec_text([f"lstm: {{hidden: 2, {options}}}" if options else "lstm: {hidden: 2}"])
        compiled = compile_spec(load_spec(text, "spec.yaml"))
        lstm = next(layer for layer in compiled.model.layers if layer.kind == "lstm")
        assert layer_direction(lstm) == expected, options
        assert bool(lstm.options.get("bidirectional")) == (expected == "bidirectional")


@pytest.mark.parametrize("options,message,where", [
    ("direction: sideways", "direction must be one of forward, reverse, bidirectional, got "
     "'sideways'", "direction"),
    ("direction: [reverse]", "direction must be one of forward, reverse, bidirectional, got "
     "['reverse']", "direction"),
    ("bidirectional: true, direction: reverse",
     "direction: reverse contradicts bidirectional: true (give one of them)", "direction"),
    ("direction: bidirectional, bidirectional: false",
     "direction: bidirectional contradicts bidirectional: false (give one of them)", "direction"),
    ("direction: forward, bidirectional: true",
     "direction: forward contradicts bidirectional: true (give one of them)", "direction"),
    ("direction: reverse, bidirectional: 1", "bidirectional must be true or false, got 1",
     "bidirectional"),
])
def test_bad_directions_are_located_errors(tmp_path, capsys, options, message, where):
    path = tmp_path / "bad.yaml"
    text = spec_text([f"lstm: {{hidden: 3, {options}}}"])
    path.write_text(text)
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    line = text.splitlines()[5]
    col = line.index(f"{where}: ") + len(f"{where}: ") + 1          # at the option's value
    assert err == f"{path}:6:{col}: error: layer 2 (lstm1): {message}\n"
