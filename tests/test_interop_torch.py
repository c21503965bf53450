"""From and to PyTorch, against PyTorch itself (skipped when torch is not installed):
the real nn modules, loaded from or ported to bpcompile params, give the same
loss and, mapped back with to_torch(grad=True), the same gradients (float64)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from bpcompile.interop import from_torch, to_torch, torch_names  # noqa: E402
from test_interop import (CONV, GRU_ONE_BIAS, GRU_TWO_BIASES, LSTM, MLP, RELU_RNN, RNN,  # noqa: E402
                          build, sequence_batch)


class Stack(nn.Module):
    """Named layers in order; a recurrent layer's output is the first of its pair."""

    def __init__(self, layers):
        super().__init__()
        for name, layer in layers:
            self.add_module(name, layer)

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
            x = x[0] if isinstance(x, tuple) else x
        return x


def torch_models():
    """spec -> (the PyTorch model a user would write, names options, example batch)."""
    rng = np.random.default_rng(0)
    return {
        "mlp": (MLP, lambda: nn.Sequential(nn.Linear(130, 128), nn.Tanh(), nn.Linear(128, 5, bias=False)),
                {"sequential": True}, (rng.normal(size=(6, 130)), rng.integers(0, 5, size=6))),
        "conv": (CONV, lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(3, 2, (2, 1), bias=False), nn.Flatten(), nn.Linear(4, 4)),
            {"sequential": True}, (rng.normal(size=(4, 2, 9, 9)), rng.integers(0, 4, size=4))),
        "rnn": (RNN, lambda: Stack([("embedding1", nn.Embedding(7, 5)),
                                    ("rnn1", nn.RNN(5, 4, num_layers=2, bidirectional=True,
                                                    batch_first=True)),
                                    ("linear1", nn.Linear(8, 3))]), {}, sequence_batch(7)),
        "relu_rnn": (RELU_RNN, lambda: Stack([("rnn1", nn.RNN(3, 4, nonlinearity="relu",
                                                              batch_first=True)),
                                              ("linear1", nn.Linear(4, 3))]), {}, sequence_batch()),
        "lstm": (LSTM, lambda: Stack([("embedding1", nn.Embedding(7, 5)),
                                      ("lstm1", nn.LSTM(5, 4, num_layers=2, bidirectional=True,
                                                        batch_first=True)),
                                      ("linear1", nn.Linear(8, 3))]), {}, sequence_batch(7)),
        "gru_one": (GRU_ONE_BIAS, lambda: Stack([("embedding1", nn.Embedding(7, 5)),
                                                 ("encoder", nn.GRU(5, 4, num_layers=2, bidirectional=True,
                                                                    batch_first=True)),
                                                 ("linear1", nn.Linear(8, 3))]),
                    {"rename": {"gru": "encoder"}}, sequence_batch(7)),
        "gru_two": (GRU_TWO_BIASES, lambda: Stack([("recurrent1", nn.GRU(3, 4, batch_first=True)),
                                                   ("linear1", nn.Linear(4, 3))]), {}, sequence_batch()),
    }


def torch_loss_and_grads(model, x, y):
    model.zero_grad()
    logits = model(torch.from_numpy(x))
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       torch.from_numpy(y).reshape(-1))
    loss.backward()
    return loss.item(), {name: p.grad.numpy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("which", list(torch_models()))
def test_pytorch_weights_give_pytorchs_loss_and_gradients(tmp_path, which):
    spec, make, options, (x, y) = torch_models()[which]
    path, module = build(tmp_path, spec)
    torch.manual_seed(1)
    model = make().double()
    names = torch_names(path, **options)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert set(state) == set(names.torch_shapes)
    tensors = from_torch(names, model.state_dict())     # CPU tensors convert like arrays
    assert all(np.array_equal(v, from_torch(names, state)[k]) for k, v in tensors.items())
    J, grads = module.value_and_grad(from_torch(names, state), x, y)
    expected_J, expected_grads = torch_loss_and_grads(model, x, y)
    assert abs(J - expected_J) < 1e-8
    mapped = to_torch(names, grads, grad=True)
    assert set(mapped) == set(expected_grads)
    for key, g in expected_grads.items():
        np.testing.assert_allclose(mapped[key], g, rtol=0, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("which", list(torch_models()))
def test_bpcompile_weights_load_into_pytorch(tmp_path, which):
    spec, make, options, (x, y) = torch_models()[which]
    path, module = build(tmp_path, spec)
    params = module.init_params(3)
    for key, value in params.items():                  # init_params zeroes the biases
        value[...] = np.random.default_rng(len(key)).normal(scale=0.5, size=value.shape)
    model = make().double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch(path, params, **options).items()})
    J, _ = module.value_and_grad(params, x, y)
    assert abs(J - torch_loss_and_grads(model, x, y)[0]) < 1e-8
