"""From and to PyTorch, against PyTorch itself (skipped when torch is not installed):
the real nn modules, loaded from or ported to bpcompile params, give the same
loss and, mapped back with to_torch(grad=True), the same gradients (float64)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from bpcompile.interop import from_torch, to_torch, torch_names  # noqa: E402
from test_interop import (BATCHNORM, BATCHNORM_TRAIN, CONV, GRU_ONE_BIAS, GRU_TWO_BIASES,  # noqa: E402
                          LSTM, MLP, RELU_RNN, RNN, build, sequence_batch)


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


# --- batch norm: eval mode (predict) and train mode (batch statistics, running updates) --------

def batchnorm_model():
    """BATCHNORM as nn.Sequential: every layer of the spec one module, in order."""
    return nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, dilation=2, groups=2), nn.BatchNorm2d(6, eps=1e-3, momentum=0.2),
        nn.ReLU(), nn.Dropout(0.25), nn.AvgPool2d(2), nn.LocalResponseNorm(3), nn.Flatten(),
        nn.Linear(54, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()


def batchnorm_train_model():
    return nn.Sequential(
        nn.Conv2d(6, 6, 3, dilation=2, groups=3), nn.BatchNorm2d(6, momentum=0.3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5),
        nn.Linear(5, 3)).double()


def with_running_statistics(model, seed):
    """Running statistics other than the initial zeros and ones, as after training."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator,
                                                  dtype=torch.float64))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator,
                                                dtype=torch.float64) + 0.5)
            module.num_batches_tracked.fill_(12)
    return model


def test_batchnorm_eval_mode_matches_pytorch_both_ways(tmp_path):
    path, module = build(tmp_path, BATCHNORM)
    torch.manual_seed(2)
    model = with_running_statistics(batchnorm_model(), 3).eval()
    names = torch_names(path, sequential=True)
    assert set(names.torch_shapes) == set(model.state_dict())
    params = from_torch(names, {k: v.numpy() for k, v in model.state_dict().items()})
    x = np.random.default_rng(4).normal(size=(5, 4, 8, 8))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(module.predict(params, x, logits=True), expected, rtol=0, atol=1e-10)
    ported = batchnorm_model().eval()                  # strict: num_batches_tracked must be there
    ported.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch(names, params).items()})
    with torch.no_grad():
        np.testing.assert_allclose(ported(torch.from_numpy(x)).numpy(), expected, rtol=0, atol=1e-12)


def test_batchnorm_train_mode_matches_pytorch(tmp_path):
    path, module = build(tmp_path, BATCHNORM_TRAIN)
    torch.manual_seed(5)
    model = with_running_statistics(batchnorm_train_model(), 6).train()
    names = torch_names(path, sequential=True)
    params = from_torch(names, {k: v.numpy() for k, v in model.state_dict().items()})
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(4, 6, 6, 6)), rng.integers(0, 3, size=4)
    J, grads = module.value_and_grad(params, x, y)     # train mode, running statistics updated
    expected_J, expected_grads = torch_loss_and_grads(model, x, y)
    assert abs(J - expected_J) < 1e-10
    mapped = to_torch(names, grads, grad=True)
    assert set(mapped) == set(expected_grads)
    for key, g in expected_grads.items():
        np.testing.assert_allclose(mapped[key], g, rtol=0, atol=1e-10, err_msg=key)
    updated = to_torch(names, params)
    for key, value in model.state_dict().items():
        if "running" in key:
            np.testing.assert_allclose(updated[key], value.numpy(), rtol=0, atol=1e-12, err_msg=key)
