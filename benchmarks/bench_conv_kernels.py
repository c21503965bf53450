"""Time one LeNet-5 training step built from templates/kernels/conv.py.

Compares, in the same run and interleaved round by round (the machine is shared
and noisy, so each figure is the median and the minimum over many steps):

* "kernels":     conv/pool from templates/kernels/conv.py, linear layers by matmul;
* "handwritten": the independent plain-NumPy baseline in handwritten_lenet5.py;
* "torch":       PyTorch CPU, only if `import torch` works (never required).

Also prints time(forward + backward) / time(forward) for the kernels and the
baseline.  Before timing it checks that all implementations compute the same
loss and the same parameters after one SGD step.

Usage: python benchmarks/bench_conv_kernels.py [--batch 64] [--rounds 30] [--steps 10]
           [--torch-threads N] [--no-torch] [--kernels PATH]

When the machine is shared, multithreaded BLAS calls (the linear layers here, the
baseline's convolutions, PyTorch) can stall for milliseconds while the other core
is busy; the minimum is then the more meaningful figure.  For a one-core
comparison run `OPENBLAS_NUM_THREADS=1 python benchmarks/bench_conv_kernels.py
--torch-threads 1`.
"""
import argparse
import importlib.util
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import handwritten_lenet5 as hw  # noqa: E402


def load_kernels(path=HERE.parent / "templates" / "kernels" / "conv.py"):
    spec = importlib.util.spec_from_file_location("conv_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


K = load_kernels()
NO_TORCH = False
TORCH_THREADS = None


def kernels_forward(p, x):
    """LeNet-5 forward from the kernels; returns (logits, saved state for backward)."""
    c1, s1 = K.conv2d_forward(x, p["conv1_w"], p["conv1_b"], (1, 1), (2, 2))
    r1 = np.maximum(c1, 0)
    p1, sp1 = K.maxpool2d_forward(r1, (2, 2), (2, 2))
    c2, s2 = K.conv2d_forward(p1, p["conv2_w"], p["conv2_b"], (1, 1), (0, 0))
    r2 = np.maximum(c2, 0)
    p2, sp2 = K.maxpool2d_forward(r2, (2, 2), (2, 2))
    h0 = p2.reshape(x.shape[0], -1)
    h1 = np.maximum(h0 @ p["fc1_w"].T + p["fc1_b"], 0)
    h2 = np.maximum(h1 @ p["fc2_w"].T + p["fc2_b"], 0)
    logits = h2 @ p["fc3_w"].T + p["fc3_b"]
    return logits, (c1, s1, sp1, c2, s2, sp2, p2.shape, h0, h1, h2)


def kernels_sgd_step(p, x, y, lr):
    """Same computation as hw.sgd_step, with the convolution and pooling kernels."""
    logits, (c1, s1, sp1, c2, s2, sp2, p2_shape, h0, h1, h2) = kernels_forward(p, x)
    loss, g, dh0 = hw.head_backward(p, logits, y, h0, h1, h2)
    dp2 = dh0.reshape(p2_shape)
    dr2 = K.maxpool2d_backward(dp2, sp2)
    dp1, g["conv2_w"], g["conv2_b"] = K.conv2d_backward(hw.relu_backward(dr2, c2), s2, p["conv2_w"])
    dr1 = K.maxpool2d_backward(dp1, sp1)
    _, g["conv1_w"], g["conv1_b"] = K.conv2d_backward(hw.relu_backward(dr1, c1), s1, p["conv1_w"], need_dx=False)
    for name, grad in g.items():
        p[name] -= lr * grad
    return loss


def make_torch(params, lr):
    """PyTorch CPU LeNet-5 with the same parameters, or None if torch is not importable."""
    if NO_TORCH:
        return None
    try:
        import torch
    except ImportError:
        return None
    if TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for name, layer in zip(names, layers):
            layer.weight.copy_(torch.from_numpy(params[name + "_w"]))
            layer.bias.copy_(torch.from_numpy(params[name + "_b"]))
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def forward(x):
        with torch.no_grad():
            return model(x)

    def params_out():
        return {n + s: getattr(l, a).detach().numpy() for n, l in zip(names, layers)
                for s, a in (("_w", "weight"), ("_b", "bias"))}

    return torch, step, forward, params_out


def copy_params(p):
    return {k: v.copy() for k, v in p.items()}


def check_agreement(x, y, lr):
    """All implementations: same loss and same parameters after one step."""
    p0 = hw.init_params(0)
    pk, ph = copy_params(p0), copy_params(p0)
    lk, lh = kernels_sgd_step(pk, x, y, lr), hw.sgd_step(ph, x, y, lr)
    assert abs(lk - lh) < 1e-4 * max(1.0, abs(lh)), (lk, lh)
    for name in p0:
        assert pk[name].dtype == np.float32, name
        np.testing.assert_allclose(pk[name], ph[name], rtol=1e-4, atol=1e-5, err_msg=name)
    t = make_torch(p0, lr)
    if t is not None:
        torch, step, _, params_out = t
        lt = step(torch.from_numpy(x), torch.from_numpy(y))
        assert abs(lk - lt) < 1e-4 * max(1.0, abs(lt)), (lk, lt)
        for name, value in params_out().items():
            np.testing.assert_allclose(pk[name], value, rtol=1e-3, atol=1e-5, err_msg=name)
    print(f"agreement: loss {lk:.6f} (kernels) {lh:.6f} (handwritten)"
          + ("" if t is None else f" {lt:.6f} (torch)") + "; updated parameters match")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10, help="calls per implementation per round")
    ap.add_argument("--kernels", help="path of an alternative kernels file to time")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own)")
    args = ap.parse_args()
    global K, NO_TORCH, TORCH_THREADS
    if args.kernels:
        K = load_kernels(pathlib.Path(args.kernels))
    NO_TORCH, TORCH_THREADS = args.no_torch, args.torch_threads
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} cpus")

    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    lr = 0.01
    check_agreement(x, y, lr)

    pk, ph = hw.init_params(0), hw.init_params(0)
    cases = {
        "kernels step": lambda: kernels_sgd_step(pk, x, y, lr),
        "kernels fwd": lambda: kernels_forward(pk, x),
        "handwritten step": lambda: hw.sgd_step(ph, x, y, lr),
        "handwritten fwd": lambda: hw.forward(ph, x),
    }
    t = make_torch(hw.init_params(0), lr)
    if t is not None:
        torch, tstep, tfwd, _ = t
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        cases["torch step"] = lambda: tstep(xt, yt)
        cases["torch fwd"] = lambda: tfwd(xt)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    else:
        print("torch not importable: skipping the PyTorch comparison")

    times = {name: [] for name in cases}
    for f in cases.values():  # warm-up
        for _ in range(3):
            f()
    for _ in range(args.rounds):
        for name, f in cases.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)

    med = {n: float(np.median(v)) * 1e3 for n, v in times.items()}
    low = {n: float(np.min(v)) * 1e3 for n, v in times.items()}
    print(f"\nbatch {args.batch}, float32, {args.rounds} rounds x {args.steps} calls")
    print(f"{'':20s} {'median ms':>10s} {'min ms':>10s}")
    for n in cases:
        print(f"{n:20s} {med[n]:10.3f} {low[n]:10.3f}")

    def ratio(a, b):
        return f"{med[a] / med[b]:.2f} (median)  {low[a] / low[b]:.2f} (min)"

    print("\nratios")
    print(f"kernels / handwritten step   {ratio('kernels step', 'handwritten step')}")
    if t is not None:
        print(f"kernels / torch step         {ratio('kernels step', 'torch step')}")
        print(f"handwritten / torch step     {ratio('handwritten step', 'torch step')}")
    print(f"kernels (fwd+bwd)/fwd        {ratio('kernels step', 'kernels fwd')}")
    print(f"handwritten (fwd+bwd)/fwd    {ratio('handwritten step', 'handwritten fwd')}")
    if t is not None:
        print(f"torch (fwd+bwd)/fwd          {ratio('torch step', 'torch fwd')}")


if __name__ == "__main__":
    main()
