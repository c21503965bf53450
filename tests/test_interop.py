"""From and to PyTorch without PyTorch: the forward passes of nn.Linear, nn.Conv2d
(with groups and dilation), nn.MaxPool2d, nn.AvgPool2d, nn.LocalResponseNorm,
nn.BatchNorm1d/2d, nn.Embedding, nn.RNN, nn.LSTM and nn.GRU written here in NumPy
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


def torch_conv2d_grouped(x, weight, bias, padding, dilation, groups):
    """nn.Conv2d(groups=g, dilation=d), stride 1: output channel j reads the input
    channels of its group, weight (out, in / g, kh, kw), kernel taps d apart."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_c, in_per_group, kh, kw = weight.shape
    oh, ow = xp.shape[2] - dilation * (kh - 1), xp.shape[3] - dilation * (kw - 1)
    out = np.zeros((len(x), out_c, oh, ow))
    per_group = out_c // groups
    for j in range(out_c):
        channels = slice((j // per_group) * in_per_group, (j // per_group + 1) * in_per_group)
        for a in range(kh):
            for b in range(kw):
                taps = xp[:, channels, a * dilation:a * dilation + oh, b * dilation:b * dilation + ow]
                out[:, j] += np.einsum("nchw,c->nhw", taps, weight[j, :, a, b])
    return out + bias[None, :, None, None]


def torch_batchnorm(x, weight, bias, running_mean, running_var, eps, train):
    """nn.BatchNorm1d/2d: y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta per channel
    (axis 1); train mode uses the batch's mean and biased variance, eval mode the
    running statistics."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = (x.mean(axis=axes), x.var(axis=axes)) if train else (running_mean, running_var)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * weight.reshape(shape)
            + bias.reshape(shape))


def torch_avgpool2d(x, kernel):
    """nn.AvgPool2d(kernel) on sizes the kernel divides."""
    n, c, height, width = x.shape
    return x.reshape(n, c, height // kernel, kernel, width // kernel, kernel).mean(axis=(3, 5))


def torch_lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """nn.LocalResponseNorm: b_c = a_c / (k + alpha / n * sum of a_c'^2 over the n
    channels c - n//2 .. c + (n-1)//2, zero outside)."""
    squares = np.pad(x * x, ((0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)))
    sums = sum(squares[:, i:i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * sums) ** beta


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


# batch norm after a grouped dilated convolution and after a linear layer, with the
# layers without parameters that nn.Sequential counts (relu, dropout, pool, lrn, flatten)
BATCHNORM = """
name: bn
dtype: float64
input: [4, 8, 8]
layers:
  - conv2d: {out_channels: 6, kernel: 3, groups: 2, dilation: 2, padding: 1}
  - batchnorm: {eps: 0.001, momentum: 0.2}
  - relu
  - dropout: 0.25
  - avgpool2d: {kernel: 2}
  - lrn: {size: 3}
  - flatten
  - linear: 5
  - batchnorm
  - tanh
  - linear: 3
loss: softmax_cross_entropy
"""

# ... without dropout, so that train mode is deterministic; global average pooling
BATCHNORM_TRAIN = """
name: bn_train
dtype: float64
input: [6, 6, 6]
layers:
  - conv2d: {out_channels: 6, kernel: 3, groups: 3, dilation: 2}
  - batchnorm: {momentum: 0.3}
  - relu
  - global_avgpool2d
  - flatten
  - linear: 5
  - batchnorm
  - linear: 3
loss: softmax_cross_entropy
"""


def batchnorm_state_dict(names, seed=0):
    """A random state_dict whose running variances are positive, as PyTorch's are."""
    sd = random_state_dict(names, seed)
    for key in sd:
        if key.endswith("running_var"):
            sd[key] = np.abs(sd[key]) + 0.5
        elif key.endswith("num_batches_tracked"):
            sd[key] = np.array(7, dtype=np.int64)
    return sd


def batchnorm_net_logits(sd, x):
    """BATCHNORM's forward pass in eval mode (dropout is the identity)."""
    a = torch_conv2d_grouped(x, sd["0.weight"], sd["0.bias"], padding=1, dilation=2, groups=2)
    a = np.maximum(torch_batchnorm(a, *(sd[f"1.{k}"] for k in BN_KEYS), eps=1e-3, train=False), 0)
    a = torch_lrn(torch_avgpool2d(a, 2), 3)
    a = torch_linear(a.reshape(len(a), -1), sd["7.weight"], sd["7.bias"])
    a = np.tanh(torch_batchnorm(a, *(sd[f"8.{k}"] for k in BN_KEYS), eps=1e-5, train=False))
    return torch_linear(a, sd["10.weight"], sd["10.bias"])


def batchnorm_train_loss(sd, x, y, inputs=None):
    """BATCHNORM_TRAIN's loss in train mode: batch statistics.  `inputs` (a list)
    receives the two batch norms' inputs."""
    inputs = [] if inputs is None else inputs
    a = torch_conv2d_grouped(x, sd["0.weight"], sd["0.bias"], padding=0, dilation=2, groups=3)
    inputs.append(a)
    a = np.maximum(torch_batchnorm(a, *(sd[f"1.{k}"] for k in BN_KEYS), eps=1e-5, train=True), 0)
    a = torch_linear(a.mean(axis=(2, 3)), sd["5.weight"], sd["5.bias"])
    inputs.append(a)
    a = torch_batchnorm(a, *(sd[f"6.{k}"] for k in BN_KEYS), eps=1e-5, train=True)
    return cross_entropy(torch_linear(a, sd["7.weight"], sd["7.bias"]), y)


BN_KEYS = ("weight", "bias", "running_mean", "running_var")


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


def test_grouped_dilated_conv_weights_are_pytorchs(tmp_path):
    path, module = build(tmp_path, """
name: gconv
dtype: float64
input: [6, 8, 8]
layers:
  - conv2d: {out_channels: 4, kernel: [3, 2], groups: 2, dilation: 2, padding: 1}
  - flatten
  - linear: 3
loss: softmax_cross_entropy
""")
    names = torch_names(path, sequential=True)
    assert names.torch_shapes["0.weight"] == (4, 3, 3, 2)        # (out, in / groups, kh, kw)
    sd = random_state_dict(names)
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(3, 6, 8, 8)), rng.integers(0, 3, size=3)
    a = torch_conv2d_grouped(x, sd["0.weight"], sd["0.bias"], padding=1, dilation=2, groups=2)
    reference = cross_entropy(torch_linear(a.reshape(len(a), -1), sd["2.weight"], sd["2.bias"]), y)
    assert abs(loss(module, from_torch(names, sd), x, y) - reference) < 1e-10


def test_batchnorm_net_matches_pytorchs_eval_forward(tmp_path):
    path, module = build(tmp_path, BATCHNORM)
    names = torch_names(path, sequential=True)
    # nn.Sequential's indices: relu, dropout, avgpool, lrn, flatten and tanh count
    bn = {f"{k}.{key}": (6 if k == 1 else 5,) for k in (1, 8) for key in BN_KEYS}
    assert names.torch_shapes == {
        "0.weight": (6, 2, 3, 3), "0.bias": (6,),
        **{k: v for k, v in bn.items() if k.startswith("1.")}, "1.num_batches_tracked": (),
        "7.weight": (5, 54), "7.bias": (5,),
        **{k: v for k, v in bn.items() if k.startswith("8.")}, "8.num_batches_tracked": (),
        "10.weight": (3, 5), "10.bias": (3,)}
    assert list(names.torch_shapes)[2:7] == ["1.weight", "1.bias", "1.running_mean",
                                             "1.running_var", "1.num_batches_tracked"]
    assert names.modules["batchnorm1"] == ("nn.BatchNorm2d", "1")
    assert names.modules["batchnorm2"] == ("nn.BatchNorm1d", "8")
    sd = batchnorm_state_dict(names)
    params = from_torch(names, sd)
    assert set(params) == set(module.PARAMS) | set(module.BUFFERS)
    np.testing.assert_array_equal(params["batchnorm2.running_var"], sd["8.running_var"])
    x = np.random.default_rng(9).normal(size=(5, 4, 8, 8))
    expected = batchnorm_net_logits(sd, x)
    np.testing.assert_allclose(module.predict(params, x, logits=True), expected, rtol=0, atol=1e-10)
    # eval mode is predict's: the running statistics, not the batch's, and no dropout
    J, _ = module.forward(params, x, np.arange(5) % 3, train=False)
    assert abs(J - cross_entropy(expected, np.arange(5) % 3)) < 1e-10


def test_batchnorm_train_mode_loss_statistics_and_gradients(tmp_path):
    path, module = build(tmp_path, BATCHNORM_TRAIN)
    names = torch_names(path, sequential=True)
    assert {"1.running_var", "6.num_batches_tracked", "7.bias"} <= set(names.torch_shapes)
    sd = batchnorm_state_dict(names, seed=2)
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(4, 6, 6, 6)), rng.integers(0, 3, size=4)
    params = from_torch(names, sd)
    inputs = []
    reference = batchnorm_train_loss(sd, x, y, inputs)
    J, grads = module.value_and_grad(params, x, y)          # train mode; updates the buffers
    assert abs(J - reference) < 1e-10
    # PyTorch's update: r = (1 - momentum) r + momentum * batch statistic (unbiased variance)
    for k, (a, momentum) in zip((1, 6), zip(inputs, (0.3, 0.1))):
        axes = (0,) + tuple(range(2, a.ndim))
        mean, var = a.mean(axis=axes), a.var(axis=axes, ddof=1)
        got = to_torch(names, params)
        np.testing.assert_allclose(got[f"{k}.running_mean"], (1 - momentum) * sd[f"{k}.running_mean"]
                                   + momentum * mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[f"{k}.running_var"], (1 - momentum) * sd[f"{k}.running_var"]
                                   + momentum * var, rtol=0, atol=1e-12)
    mapped = to_torch(names, grads, grad=True)
    assert not any("running" in key or "num_batches" in key for key in mapped)
    step = 1e-6
    for key, index in [("1.weight", 2), ("1.bias", 4), ("6.weight", 1), ("6.bias", 3),
                       ("0.weight", (4, 1, 2, 0)), ("5.weight", (2, 3))]:
        plus, minus = dict(sd), dict(sd)
        plus[key], minus[key] = sd[key].copy(), sd[key].copy()
        plus[key][index] += step
        minus[key][index] -= step
        numeric = (batchnorm_train_loss(plus, x, y) - batchnorm_train_loss(minus, x, y)) / (2 * step)
        assert abs(mapped[key][index] - numeric) < 1e-7, key


def test_batchnorm_buffers_round_trip_and_the_counter(tmp_path):
    path, module = build(tmp_path, BATCHNORM)
    names = torch_names(path)
    assert names.exact()
    assert names.buffer_shapes == {key: tuple(shape) for key, shape in module.BUFFERS.items()}
    assert names.param_shapes == {key: tuple(shape) for key, shape in module.PARAMS.items()}
    assert [str(b) for b in names["batchnorm1.running_var"]] == ["batchnorm1.running_var"]
    assert "batchnorm2.running_mean  batchnorm2.running_mean" in names.table()
    sd = batchnorm_state_dict(names)
    back = to_torch(names, from_torch(names, sd))
    assert list(back) == list(sd)
    for key in sd:
        if key.endswith("num_batches_tracked"):    # ignored by from_torch; 0 for load_state_dict
            assert back[key].shape == () and back[key].dtype == np.int64 and back[key] == 0
        else:
            np.testing.assert_array_equal(back[key], sd[key])
    without_counter = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    params = from_torch(names, without_counter)
    assert all(np.array_equal(params[k], v) for k, v in from_torch(names, sd).items())
    with pytest.raises(ValueError, match=r"num_batches_tracked'\]: expected shape \(\), got \(1,\)"):
        from_torch(names, {**sd, "batchnorm1.num_batches_tracked": np.zeros(1, np.int64)})
    no_buffers = {k: v for k, v in params.items() if k in module.PARAMS}
    with pytest.raises(ValueError, match="params: missing 'batchnorm1.running_mean'"):
        to_torch(names, no_buffers)
    with pytest.raises(ValueError, match="grads: unexpected 'batchnorm1.running_mean'"):
        to_torch(names, params, grad=True)


@pytest.mark.parametrize("layer, kind", [
    ("lstm: {hidden: 4, direction: reverse}", "LSTM"),
    ("rnn: {hidden: 4, layers: 2, direction: reverse}", "RNN"),
    ("recurrent:\n      hidden: 4\n      direction: reverse\n      equations: |\n"
     "        z = sigmoid(W_xz @ x + W_hz @ h_prev + b_z)\n"
     "        r = sigmoid(W_xr @ x + W_hr @ h_prev + b_r)\n"
     "        n = tanh(W_xn @ x + b_xn + r * (W_hn @ h_prev + b_hn))\n"
     "        h = (1 - z) * n + z * h_prev", "GRU")])
def test_reverse_only_recurrent_layers_are_refused(tmp_path, layer, kind):
    """PyTorch has no reverse-only module: nn.LSTM over flipped sequences differs with
    padding, so no mapping would be exact."""
    path, _ = build(tmp_path, f"name: rev\ndtype: float64\ninput: [3]\nlayers:\n  - {layer}\n"
                              "  - linear: 2\nloss: softmax_cross_entropy\n")
    with pytest.raises(SpecError) as err:
        torch_names(path)
    text = str(err.value)
    assert text.startswith(f"{path}:")
    assert f"no PyTorch module computes a reverse-only {kind}" in text
    assert "direction: bidirectional" in text
    with pytest.raises(SpecError, match="reverse-only"):
        to_torch(path, {})


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
