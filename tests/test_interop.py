"""From and to PyTorch without PyTorch: the forward passes of nn.Linear, nn.Conv2d,
nn.MaxPool2d, nn.Embedding, nn.RNN, nn.LSTM and nn.GRU written here in NumPy
from PyTorch's documentation, evaluated on a random state_dict, give the same
loss as the generated module on from_torch(state_dict) (float64, 1e-10)."""

import numpy as np
import pytest
import yaml

from bpcompile import SpecError
from bpcompile.compiler import compile_file, compile_layers, load_spec
from bpcompile.interop import from_torch, to_torch, torch_names
from bpcompile.result import load_module
from conftest import EXAMPLES


# --- PyTorch's layers, from its documentation ------------------------------------------

def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def torch_linear(x, weight, bias=None):
    """nn.Linear: y = x A^T + b."""
    y = x @ weight.T
    return y if bias is None else y + bias


def torch_conv2d(x, weight, bias, stride, padding):
    """nn.Conv2d: out(N_i, C_out_j) = bias(C_out_j) + sum_k weight(C_out_j, k) * input(N_i, k),
    * the 2-D cross-correlation, with zero padding on both sides."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, height, width = xp.shape
    out_c, _, kh, kw = weight.shape
    oh, ow = (height - kh) // sh + 1, (width - kw) // sw + 1
    out = np.zeros((n, out_c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", window, weight)
    return out if bias is None else out + bias[None, :, None, None]


def torch_maxpool2d(x, kernel, stride):
    n, c, height, width = x.shape
    oh, ow = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + kernel,
                                j * stride:j * stride + kernel].max(axis=(2, 3))
    return out


def rnn_cell(nonlinearity):
    """nn.RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""
    f = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))

    def cell(x, state, w):
        (h,) = state
        return (f(x @ w["weight_ih"].T + w["bias_ih"] + h @ w["weight_hh"].T + w["bias_hh"]),)
    return cell


def lstm_cell(x, state, w):
    """nn.LSTM: i, f, g, o from the rows of W_ih and W_hh in that order;
    c' = f * c + i * g, h' = o * tanh(c')."""
    h, c = state
    gates = x @ w["weight_ih"].T + w["bias_ih"] + h @ w["weight_hh"].T + w["bias_hh"]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def gru_cell(x, state, w):
    """nn.GRU: r, z, n from the rows [r, z, n];
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h."""
    (h,) = state
    gi = x @ w["weight_ih"].T + w.get("bias_ih", 0)
    gh = h @ w["weight_hh"].T + w.get("bias_hh", 0)
    (ir, iz, i_n), (hr, hz, hn) = np.split(gi, 3, axis=-1), np.split(gh, 3, axis=-1)
    r, z = sigmoid(ir + hr), sigmoid(iz + hz)
    n = np.tanh(i_n + r * hn)
    return ((1 - z) * n + z * h,)


def torch_recurrent(cell, n_states, x, sd, module, hidden, num_layers, bidirectional):
    """nn.RNN/LSTM/GRU(batch_first=True): layer k reads layer k-1's output; the
    _reverse direction reads the sequence backwards; outputs are [forward, reverse]."""
    B, T = x.shape[:2]
    for k in range(num_layers):
        outputs = []
        for suffix in ([f"_l{k}", f"_l{k}_reverse"] if bidirectional else [f"_l{k}"]):
            w = {name: sd[f"{module}.{name}{suffix}"] for name in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if f"{module}.{name}{suffix}" in sd}
            state = tuple(np.zeros((B, hidden)) for _ in range(n_states))
            out = np.zeros((B, T, hidden))
            steps = range(T - 1, -1, -1) if suffix.endswith("reverse") else range(T)
            for t in steps:
                state = cell(x[:, t], state, w)
                out[:, t] = state[0]
            outputs.append(out)
        x = np.concatenate(outputs, axis=-1)
    return x


def cross_entropy(logits, y):
    """nn.CrossEntropyLoss (mean over all examples or positions)."""
    logits = logits.reshape(-1, logits.shape[-1])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(logits)), y.reshape(-1)].mean()


# --- helpers ------------------------------------------------------------------------------

def build(tmp_path, text, name="net"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path, load_module(compile_file(path).source, name)


def random_state_dict(names, seed=0):
    rng = np.random.default_rng(seed)
    return {key: rng.normal(scale=0.5, size=shape) for key, shape in names.torch_shapes.items()}


def loss(module, params, x, y):
    return module.forward(params, x, y)[0]


MLP = """
name: mlp
dtype: float64
input: [130]
layers:
  - linear: 128                 # 16,640 entries: init_params stores this W transposed
  - tanh
  - linear: {out: 5, bias: false}
loss: softmax_cross_entropy
"""

CONV = """
name: conv
dtype: float64
input: [2, 9, 9]
layers:
  - conv2d: {out_channels: 3, kernel: 3, stride: 2, padding: 1}
  - relu
  - maxpool2d: {kernel: 2}
  - conv2d: {out_channels: 2, kernel: [2, 1], bias: false}
  - flatten
  - linear: 4
loss: softmax_cross_entropy
"""

RNN = """
name: rnn
dtype: float64
input: {vocab: 7}
layers:
  - embedding: 5
  - rnn: {hidden: 4, layers: 2, bidirectional: true}
  - linear: 3
loss: softmax_cross_entropy
"""

RELU_RNN = """
name: relu_rnn
dtype: float64
input: [3]
layers:
  - rnn: {hidden: 4, nonlinearity: relu}
  - linear: 3
loss: softmax_cross_entropy
"""

LSTM = """
name: lstm
dtype: float64
input: {vocab: 7}
layers:
  - embedding: 5
  - lstm: {hidden: 4, layers: 2, bidirectional: true}
  - linear: 3
loss: softmax_cross_entropy
"""

# PyTorch's GRU written as equations: one bias for r and z (the sum of PyTorch's two)
GRU_ONE_BIAS = """
name: gru_one
dtype: float64
input: {vocab: 7}
layers:
  - embedding: 5
  - recurrent:
      name: gru
      hidden: 4
      layers: 2
      bidirectional: true
      equations: |
        z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)
        r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)
        n = tanh(W_xn @ x + b_xn + r * (W_hn @ h_prev + b_hn))
        h = (1 - z) * n + z * h_prev
  - linear: 3
loss: softmax_cross_entropy
"""

# ... and with both of PyTorch's biases, names of one's own, r * (...) multiplied out
GRU_TWO_BIASES = """
name: gru_two
dtype: float64
input: [3]
layers:
  - recurrent:
      hidden: 4
      equations: |
        reset = sigmoid(U_r @ h_prev + c_r + V_r @ x + a_r)
        update = sigmoid(V_u @ x + a_u + U_u @ h_prev + c_u)
        cand = tanh(V_n @ x + a_n + reset * (U_n @ h_prev) + reset * c_n)
        h = update * h_prev + (1 - update) * cand
  - linear: 3
loss: softmax_cross_entropy
"""


def sequence_batch(vocab=None, features=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(3, 6)) if vocab else rng.normal(size=(3, 6, features))
    return x, rng.integers(0, 3, size=(3, 6))


# --- the proof: same loss as PyTorch's documented forward ----------------------------------

def test_linear_layers_match_nn_linear(tmp_path):
    path, module = build(tmp_path, MLP)
    names = torch_names(path, sequential=True)
    assert dict(names.torch_shapes) == {"0.weight": (128, 130), "0.bias": (128,), "2.weight": (5, 128)}
    sd = random_state_dict(names)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 130)), rng.integers(0, 5, size=6)
    reference = cross_entropy(torch_linear(np.tanh(torch_linear(x, sd["0.weight"], sd["0.bias"])),
                                           sd["2.weight"]), y)
    params = from_torch(path, sd, sequential=True)
    assert abs(loss(module, params, x, y) - reference) < 1e-10


def test_conv_layers_match_nn_conv2d(tmp_path):
    path, module = build(tmp_path, CONV)
    names = torch_names(path, sequential=True)
    assert dict(names.torch_shapes) == {"0.weight": (3, 2, 3, 3), "0.bias": (3,),
                                        "3.weight": (2, 3, 2, 1), "5.weight": (4, 4),
                                        "5.bias": (4,)}
    sd = random_state_dict(names)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 2, 9, 9)), rng.integers(0, 4, size=4)
    a = np.maximum(torch_conv2d(x, sd["0.weight"], sd["0.bias"], (2, 2), (1, 1)), 0)
    a = torch_conv2d(torch_maxpool2d(a, 2, 2), sd["3.weight"], None, (1, 1), (0, 0))
    reference = cross_entropy(torch_linear(a.reshape(len(a), -1), sd["5.weight"], sd["5.bias"]), y)
    params = from_torch(path, sd, sequential=True)
    assert abs(loss(module, params, x, y) - reference) < 1e-10


@pytest.mark.parametrize("spec, hidden, layers, bidirectional, vocab", [
    (RNN, 4, 2, True, 7), (RELU_RNN, 4, 1, False, None)])
def test_rnn_matches_nn_rnn(tmp_path, spec, hidden, layers, bidirectional, vocab):
    path, module = build(tmp_path, spec)
    names = torch_names(path)
    sd = random_state_dict(names)
    x, y = sequence_batch(vocab)
    a = sd["embedding1.weight"][x] if vocab else x
    cell = rnn_cell("tanh" if vocab else "relu")
    a = torch_recurrent(cell, 1, a, sd, "rnn1", hidden, layers, bidirectional)
    reference = cross_entropy(torch_linear(a, sd["linear1.weight"], sd["linear1.bias"]), y)
    assert abs(loss(module, from_torch(path, sd), x, y) - reference) < 1e-10


def test_stacked_bidirectional_lstm_matches_nn_lstm(tmp_path):
    path, module = build(tmp_path, LSTM)
    names = torch_names(path)
    expected = ["embedding1.weight"] + [f"lstm1.{kind}_l{k}{direction}" for k in (0, 1)
                                        for direction in ("", "_reverse")
                                        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(names.torch_shapes) == expected + ["linear1.weight", "linear1.bias"]
    assert names.torch_shapes["lstm1.weight_ih_l1_reverse"] == (16, 8)
    assert [str(b) for b in names["lstm2.bwd.W_xc"]] == ["lstm1.weight_ih_l1_reverse[8:12]"]
    sd = random_state_dict(names)
    x, y = sequence_batch(7)
    a = torch_recurrent(lstm_cell, 2, sd["embedding1.weight"][x], sd, "lstm1", 4, 2, True)
    reference = cross_entropy(torch_linear(a, sd["linear1.weight"], sd["linear1.bias"]), y)
    assert abs(loss(module, from_torch(path, sd), x, y) - reference) < 1e-10


@pytest.mark.parametrize("spec, layers, bidirectional, vocab", [
    (GRU_ONE_BIAS, 2, True, 7), (GRU_TWO_BIASES, 1, False, None)])
def test_gru_cells_in_pytorch_form_match_nn_gru(tmp_path, spec, layers, bidirectional, vocab):
    path, module = build(tmp_path, spec)
    names = torch_names(path)
    gru = "gru" if vocab else "recurrent1"
    sd = random_state_dict(names)
    x, y = sequence_batch(vocab)
    a = sd["embedding1.weight"][x] if vocab else x
    a = torch_recurrent(gru_cell, 1, a, sd, gru, 4, layers, bidirectional)
    reference = cross_entropy(torch_linear(a, sd["linear1.weight"], sd["linear1.bias"]), y)
    assert abs(loss(module, from_torch(path, sd), x, y) - reference) < 1e-10


def test_gru_roles_follow_the_equations_not_the_names(tmp_path):
    path, _ = build(tmp_path, GRU_TWO_BIASES)
    shown = {key: " + ".join(map(str, blocks)) for key, blocks in torch_names(path).items()}
    assert shown["recurrent1.V_r"] == "recurrent1.weight_ih_l0[0:4]"       # rows [r, z, n]
    assert shown["recurrent1.U_u"] == "recurrent1.weight_hh_l0[4:8]"
    assert shown["recurrent1.a_n"] == "recurrent1.bias_ih_l0[8:12]"        # outside r
    assert shown["recurrent1.c_n"] == "recurrent1.bias_hh_l0[8:12]"        # inside r
    assert {shown["recurrent1.c_r"], shown["recurrent1.a_r"]} == {
        "recurrent1.bias_ih_l0[0:4]", "recurrent1.bias_hh_l0[0:4]"}


def test_gru_without_biases_is_nn_gru_with_bias_false(tmp_path):
    path, module = build(tmp_path, GRU_TWO_BIASES.replace(" + c_r + V_r", " + V_r").replace(
        " + a_r)", ")").replace(" + a_u", "").replace(" + c_u)", ")").replace(" + a_n", "")
        .replace(" + reset * c_n", ""))
    names = torch_names(path)
    assert set(names.torch_shapes) == {"recurrent1.weight_ih_l0", "recurrent1.weight_hh_l0",
                                       "linear1.weight", "linear1.bias"}
    sd = random_state_dict(names)
    x, y = sequence_batch()
    a = torch_recurrent(gru_cell, 1, x, sd, "recurrent1", 4, 1, False)
    reference = cross_entropy(torch_linear(a, sd["linear1.weight"], sd["linear1.bias"]), y)
    assert abs(loss(module, from_torch(path, sd), x, y) - reference) < 1e-10


# --- round trips and gradients ----------------------------------------------------------------

@pytest.mark.parametrize("spec", [MLP, CONV, GRU_TWO_BIASES])
def test_exact_mappings_round_trip(tmp_path, spec):
    path, _ = build(tmp_path, spec)
    names = torch_names(path)
    assert names.exact()
    sd = random_state_dict(names)
    back = to_torch(names, from_torch(names, sd))
    assert list(back) == list(sd)
    for key in sd:
        np.testing.assert_array_equal(back[key], sd[key])


def test_summed_biases_go_to_bias_ih_and_keep_the_function(tmp_path):
    path, module = build(tmp_path, LSTM)
    names = torch_names(path)
    assert not names.exact()
    sd = random_state_dict(names)
    params = from_torch(names, sd)
    H = 4
    np.testing.assert_allclose(params["lstm1.fwd.b_f"],
                               sd["lstm1.bias_ih_l0"][H:2 * H] + sd["lstm1.bias_hh_l0"][H:2 * H])
    back = to_torch(names, params)
    for key in sd:
        if "bias_hh" in key:
            assert not back[key].any()
        elif "bias_ih" in key:
            hh = key.replace("bias_ih", "bias_hh")
            np.testing.assert_allclose(back[key], sd[key] + sd[hh], rtol=1e-15)
        else:
            np.testing.assert_array_equal(back[key], sd[key])
    x, y = sequence_batch(7)
    assert abs(loss(module, from_torch(names, back), x, y) - loss(module, params, x, y)) < 1e-12


def test_grad_mapping_is_the_adjoint_of_from_torch(tmp_path):
    """<from_torch(sd), g> = <sd, to_torch(g, grad=True)>: the gradient of the
    loss with respect to the state_dict, by the chain rule."""
    path, _ = build(tmp_path, GRU_ONE_BIAS)
    names = torch_names(path)
    sd = random_state_dict(names, seed=4)
    g = {key: np.random.default_rng(5).normal(size=shape) for key, shape in names.param_shapes.items()}
    params = from_torch(names, sd)
    lhs = sum(np.vdot(params[key], g[key]) for key in g)
    mapped = to_torch(names, g, grad=True)
    rhs = sum(np.vdot(sd[key], mapped[key]) for key in sd)
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_mapped_gradients_match_finite_differences_of_the_reference(tmp_path):
    path, module = build(tmp_path, LSTM)
    names = torch_names(path)
    sd = random_state_dict(names, seed=6)
    x, y = sequence_batch(7)

    def reference(state):
        a = torch_recurrent(lstm_cell, 2, state["embedding1.weight"][x], state, "lstm1", 4, 2, True)
        return cross_entropy(torch_linear(a, state["linear1.weight"], state["linear1.bias"]), y)

    _, grads = module.value_and_grad(from_torch(names, sd), x, y)
    mapped = to_torch(names, grads, grad=True)
    step = 1e-6
    for key, index in [("lstm1.bias_hh_l0", 5), ("lstm1.bias_ih_l1_reverse", 9),
                       ("lstm1.weight_hh_l1", (13, 2)), ("lstm1.weight_ih_l0_reverse", (3, 4)),
                       ("embedding1.weight", (x[0, 0], 1))]:
        plus, minus = dict(sd), dict(sd)
        plus[key], minus[key] = sd[key].copy(), sd[key].copy()
        plus[key][index] += step
        minus[key][index] -= step
        numeric = (reference(plus) - reference(minus)) / (2 * step)
        assert abs(mapped[key][index] - numeric) < 1e-7, key


# --- names, options, dtypes -----------------------------------------------------------------

def test_examples_names_and_the_lstm_docstring_agree():
    names = torch_names(EXAMPLES / "pos_tagger.yaml")
    assert [str(b) for b in names["lstm1.bwd.W_hc"]] == ["lstm1.weight_hh_l0_reverse[128:192]"]
    assert [str(b) for b in names["lstm1.fwd.b_o"]] == ["lstm1.bias_ih_l0[192:256]",
                                                        "lstm1.bias_hh_l0[192:256]"]
    assert names.modules == {"embedding1": ("nn.Embedding", "embedding1"),
                             "lstm1": ("nn.LSTM", "lstm1"), "linear1": ("nn.Linear", "linear1")}
    assert "lstm1.fwd.b_o   lstm1.bias_ih_l0[192:256] + lstm1.bias_hh_l0[192:256]" in names.table()


def test_prefix_and_rename(tmp_path):
    path, _ = build(tmp_path, LSTM)
    names = torch_names(path, prefix="model.", rename={"lstm1": "encoder.rnn", "linear1": "head"})
    assert list(names.torch_shapes)[:2] == ["model.embedding1.weight", "model.encoder.rnn.weight_ih_l0"]
    assert "model.head.bias" in names.torch_shapes
    sequential = torch_names(path, sequential=True, rename={"linear1": "out"})
    assert {"0.weight", "1.weight_ih_l1", "out.weight"} <= set(sequential.torch_shapes)
    with pytest.raises(ValueError, match="no layer with parameters is called 'lstm2'"):
        torch_names(path, rename={"lstm2": "x"})
    with pytest.raises(TypeError, match="prefix"):
        from_torch(names, {}, prefix="x.")


def test_a_generated_module_gives_the_same_names(tmp_path):
    path, module = build(tmp_path, GRU_ONE_BIAS)
    from_path = torch_names(path)
    for other in (module, compile_file(path), yaml.safe_load(path.read_text())):
        names = torch_names(other)
        assert names == from_path and names.torch_shapes == from_path.torch_shapes
    as_float32 = load_module(compile_layers(load_spec(path.read_text()), dtype="float32").source, "g32")
    assert torch_names(as_float32).dtype == np.float32
    as_float32.__doc__ = "no quote"
    with pytest.raises(SpecError, match="not a module generated from a layer spec"):
        torch_names(as_float32)


def test_state_dict_is_cast_to_the_module_dtype(tmp_path):
    path, module = build(tmp_path, LSTM.replace("dtype: float64", "dtype: float32"))
    names = torch_names(path)
    sd = random_state_dict(names)                      # float64, as .double() gives
    params = from_torch(names, sd)
    assert all(p.dtype == np.float32 for p in params.values())
    np.testing.assert_array_equal(params["lstm1.bwd.W_ho"], sd["lstm1.weight_hh_l0_reverse"][12:16]
                                  .astype(np.float32))
    x, y = sequence_batch(7)
    assert np.isfinite(loss(module, params, x, y))      # the module's own checks accept them
    assert all(v.dtype == np.float32 for v in to_torch(names, params).values())
    assert to_torch(names, params, dtype=np.float64)["linear1.bias"].dtype == np.float64


def test_ported_lstm_weights_are_stored_side_by_side_like_init_params(tmp_path):
    path, module = build(tmp_path, LSTM)
    params = from_torch(path, random_state_dict(torch_names(path)))
    fresh = module.init_params(0)
    for stored in (fresh, params):
        block = stored["lstm1.fwd.W_xi"].base
        assert block is not None and stored["lstm1.fwd.W_xc"].base is block


# --- errors ------------------------------------------------------------------------------------

def test_state_dict_mismatches_name_the_key(tmp_path):
    path, _ = build(tmp_path, LSTM)
    names = torch_names(path)
    sd = random_state_dict(names)
    missing = {k: v for k, v in sd.items() if k != "lstm1.bias_hh_l1"}
    with pytest.raises(ValueError, match="state_dict: missing 'lstm1.bias_hh_l1'"):
        from_torch(names, missing)
    with pytest.raises(ValueError, match="unexpected 'lstm1.weight_ih_l2'"):
        from_torch(names, {**sd, "lstm1.weight_ih_l2": sd["lstm1.weight_ih_l1"]})
    with pytest.raises(ValueError, match=r"state_dict\['lstm1.weight_hh_l0'\]: expected shape "
                                         r"\(16, 4\), got \(4, 16\)"):
        from_torch(names, {**sd, "lstm1.weight_hh_l0": sd["lstm1.weight_hh_l0"].T})
    with pytest.raises(ValueError, match=r"state_dict\['linear1.bias'\]: expected a float array"):
        from_torch(names, {**sd, "linear1.bias": np.array(["a"] * 3)})
    params = from_torch(names, sd)
    del params["lstm2.fwd.b_o"]
    with pytest.raises(ValueError, match="params: missing 'lstm2.fwd.b_o'"):
        to_torch(names, params)


def test_chos_gru_is_refused_at_its_equation():
    with pytest.raises(SpecError) as err:
        torch_names(EXAMPLES / "gru_tagger.yaml")
    text = str(err.value)
    assert text.startswith(f"{EXAMPLES / 'gru_tagger.yaml'}:15:9: error: layer 2 (gru): the cell is "
                           "not PyTorch's GRU")
    assert "W_hn @ (r * h_prev) as in Cho et al.'s GRU" in text


@pytest.mark.parametrize("equations, reason", [
    ("h = tanh(W_xh @ x + W_hh @ h_prev + b_h)", "h is not (1 - z) * n + z * h_prev"),
    ("z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
     "        r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)\n"
     "        n = tanh(W_xn @ x + b_xn + r * (W_hn @ h_prev + b_hn))\n"
     "        h = z * n + (1 - z) * h_prev", "h is not (1 - z) * n + z * h_prev"),
    ("z = sigmoid(W_xz @ x + W_hz @ h_prev)\n"
     "        r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)\n"
     "        n = tanh(W_xn @ x + b_xn + r * (W_hn @ h_prev + b_hn))\n"
     "        h = (1 - z) * n + z * h_prev", "gate z has 0 biases"),
    ("z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
     "        n = tanh(W_xn @ x + W_hn @ h_prev + b_n)\n"
     "        h = (1 - z) * n + z * h_prev", "n has W_hn @ h_prev outside the reset gate"),
    ("z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
     "        n = tanh(W_xn @ x + b_n)\n"
     "        h = (1 - z) * n + z * h_prev", "n has no reset gate"),
    ("z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
     "        r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)\n"
     "        n = tanh(W_xn @ x + b_xn + r * (W_hn @ h_prev + b_hn))\n"
     "        h = (1 - z) * n + z * h_prev + 0.5 * b_z", "h is not"),
    ("z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
     "        r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)\n"
     "        n = tanh(2 * (W_xn @ x) + b_xn + r * (W_hn @ h_prev + b_hn))\n"
     "        h = (1 - z) * n + z * h_prev", "n has the term 2*W_xn @ x"),
    ("z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
     "        r = sigmoid(W_xr @ x + W_hz @ h_prev + b_r)\n"
     "        n = tanh(W_xn @ x + b_xn + r * (W_hn @ h_prev + b_hn))\n"
     "        h = (1 - z) * n + z * h_prev", "W_hz appears twice"),
])
def test_cells_that_are_not_nn_gru_are_refused(tmp_path, equations, reason):
    spec = (f"name: cell\ndtype: float64\ninput: [3]\nlayers:\n  - recurrent:\n      hidden: 2\n"
            f"      equations: |\n        {equations}\n  - linear: 2\nloss: softmax_cross_entropy\n")
    path, _ = build(tmp_path, spec)
    with pytest.raises(SpecError, match="the cell is not PyTorch's GRU") as err:
        from_torch(path, {})
    assert reason in str(err.value)
    assert str(err.value).startswith(str(path))


def test_peepholes_and_programs_are_refused(tmp_path):
    path, _ = build(tmp_path, LSTM.replace("bidirectional: true", "peephole: true"))
    with pytest.raises(SpecError, match="peepholes has no PyTorch layer"):
        torch_names(path)
    with pytest.raises(SpecError, match="is a program, not a layer spec"):
        torch_names(EXAMPLES / "quiz.yaml")
    with pytest.raises(SpecError, match="no spec file"):
        torch_names(tmp_path / "missing.yaml")
