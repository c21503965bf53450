"""A hand-written NumPy LSTM language model: the baseline for bench_rnnlm.py.

Written independently of bpcompile, the way one writes it by hand in plain
NumPy (no Numba, no C): embedding lookup, one LSTM layer, an output layer over
the vocabulary and softmax cross-entropy averaged over the real (unmasked)
tokens; backpropagation through time; in-place SGD.  Works in the dtype of the
parameters (float32 for timing, float64 for the gradient check).

Layout, time-major inside (the public functions take x, y, mask as (B, T)):

    E  (V, D)      embedding rows
    Wx (4H, D)     input weights of the four gates, stacked in the order i, f, o, g
    Wh (4H, H)     recurrent weights, same order
    b  (4H,)       gate biases
    W  (V, H)      output layer, b_out (V,)

so the three sigmoid gates are one contiguous block [:, :3H] and the
candidate g = tanh(.) is [:, 3H:].  to_stacked/from_stacked convert from/to
the per-gate names of a bpcompile module (lstm1.W_xi, ... where c is g).

What keeps it fast:
- the input projections of all steps are one matmul before the loop, written
  into a buffer that the loop turns into the gate activations in place;
- one (B, H) x (H, 4H) matmul per step; the sigmoid is applied once to the
  whole 3H gate block;
- states go straight into preallocated (T+1, B, H) arrays (no lists, no
  concatenation), so the weight gradients after the loop are one matmul each;
- masking (a padded step keeps the previous state) is applied only at the steps
  whose mask column is not all ones: the same math, nothing to do otherwise;
- the output layer, the softmax and its gradient work on one (T*B, V) buffer
  in place; the gradient's normalisation and mask are one multiplication;
- sums over many rows (softmax totals, bias gradients) are products with a
  vector of ones, which BLAS does faster than np.sum here;
- SGD updates in place, with lr folded into the scaling of dJ/dlogits (every
  gradient is linear in it), so no gradient is multiplied by lr afterwards;
  the embedding gradient is scattered with np.add.at (by default straight
  into E, i.e. only the rows that occur are touched).
"""
import numpy as np

GATE_ORDER = ("i", "f", "o", "c")      # bpcompile's name of each stacked block (g is "c")


def init_params(vocab=10000, embed=128, hidden=256, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)

    def u(shape, fan_in, fan_out):
        a = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=shape).astype(dtype)

    H = hidden
    return {"E": u((vocab, embed), 1, embed), "Wx": u((4 * H, embed), embed, H),
            "Wh": u((4 * H, H), H, H), "b": np.zeros(4 * H, dtype),
            "W": u((vocab, H), H, vocab), "b_out": np.zeros(vocab, dtype)}


def to_stacked(gen, prefix=("embedding1", "lstm1", "linear1")):
    """A bpcompile parameter dict (per-gate matrices) -> this module's stacked dict (copies)."""
    e, l, o = prefix
    return {"E": gen[f"{e}.E"].copy(),
            "Wx": np.concatenate([gen[f"{l}.W_x{g}"] for g in GATE_ORDER]),
            "Wh": np.concatenate([gen[f"{l}.W_h{g}"] for g in GATE_ORDER]),
            "b": np.concatenate([gen[f"{l}.b_{g}"] for g in GATE_ORDER]),
            "W": gen[f"{o}.W"].copy(), "b_out": gen[f"{o}.b"].copy()}


def from_stacked(p, prefix=("embedding1", "lstm1", "linear1")):
    """This module's stacked dict (parameters or gradients) -> bpcompile's per-gate names."""
    e, l, o = prefix
    H = p["Wh"].shape[1]
    out = {f"{e}.E": p["E"], f"{o}.W": p["W"], f"{o}.b": p["b_out"]}
    for k, g in enumerate(GATE_ORDER):
        rows = slice(k * H, (k + 1) * H)
        out[f"{l}.W_x{g}"] = p["Wx"][rows]
        out[f"{l}.W_h{g}"] = p["Wh"][rows]
        out[f"{l}.b_{g}"] = p["b"][rows]
    return out


def forward(p, x, y, mask=None, state=None):
    """(mean loss over the real tokens, cache for backward).  x, y: int (B, T)."""
    E, Wx, Wh, b, W, b_out = p["E"], p["Wx"], p["Wh"], p["b"], p["W"], p["b_out"]
    dt = E.dtype
    B, T = x.shape
    H = Wh.shape[1]
    H3 = 3 * H
    xt = x.T                                              # time-major ids (T, B)
    if mask is None:
        mt = np.ones((T, B), dt)
    else:
        mt = np.ascontiguousarray(mask.T, dtype=dt)
    full = mt.all(axis=1) if B else np.ones(T, bool)      # steps with no padding
    keep = (mt == 0)[:, :, None]                          # where a step keeps the old state

    emb = E[xt]                                           # (T, B, D)
    G = emb.reshape(T * B, -1) @ Wx.T                     # every step's input products
    G += b
    G = G.reshape(T, B, 4 * H)                            # becomes the gate activations
    Hs = np.empty((T + 1, B, H), dt)                      # Hs[t] = h_prev of step t
    Cs = np.empty((T + 1, B, H), dt)
    Tc = np.empty((T, B, H), dt)                          # tanh(c) of each step
    if state is None:
        Hs[0] = 0
        Cs[0] = 0
    else:
        Hs[0] = state["h"]
        Cs[0] = state["c"]
    WhT = Wh.T
    for t in range(T):
        a = G[t]
        a += Hs[t] @ WhT
        s = a[:, :H3]                                     # sigmoid(z) = (1 + tanh(z/2)) / 2
        s *= 0.5
        np.tanh(s, out=s)
        s *= 0.5
        s += 0.5
        g = a[:, H3:]
        np.tanh(g, out=g)
        c = Cs[t + 1]
        np.multiply(a[:, H:2 * H], Cs[t], out=c)          # f * c_prev
        c += a[:, :H] * g                                 # + i * g
        tc = Tc[t]
        np.tanh(c, out=tc)
        h = Hs[t + 1]
        np.multiply(a[:, 2 * H:H3], tc, out=h)            # o * tanh(c)
        if not full[t]:
            np.copyto(h, Hs[t], where=keep[t])
            np.copyto(c, Cs[t], where=keep[t])

    # output layer over all steps, softmax cross-entropy over the real tokens
    Hout = Hs[1:].reshape(T * B, H)
    L = Hout @ W.T                                        # (T*B, V), becomes dJ/dlogits
    L += b_out
    L -= L.max(axis=1, keepdims=True)
    yf = y.T.ravel()
    rows = np.arange(T * B)
    zy = L[rows, yf]
    np.exp(L, out=L)
    total = L @ np.ones(L.shape[1], L.dtype)             # row sums
    mf = mt.ravel()
    n = max(float(mf.sum()), 1.0)
    loss = float(np.dot(np.log(total) - zy, mf)) / n
    cache = dict(xt=xt, mt=mt, full=full, keep=keep, emb=emb, G=G, Hs=Hs, Cs=Cs, Tc=Tc,
                 L=L, total=total, yf=yf, rows=rows, n=n)
    return loss, cache


def backward(p, cache, embedding="dense", scale=1.0):
    """Gradients (stacked names, plus "h0", "c0")  times `scale`.  Overwrites cache["L"]
    and cache["G"]'s use.

    embedding="dense": grads["E"] is the (V, D) gradient (np.add.at into zeros);
    embedding="rows": grads["E"] is (ids, per-position rows) for a sparse update.
    """
    E, Wx, Wh, W = p["E"], p["Wx"], p["Wh"], p["W"]
    xt, mt, full, keep = cache["xt"], cache["mt"], cache["full"], cache["keep"]
    emb, G, Hs, Cs, Tc = cache["emb"], cache["G"], cache["Hs"], cache["Cs"], cache["Tc"]
    L, n = cache["L"], cache["n"]
    T, B = xt.shape
    H = Wh.shape[1]
    H3 = 3 * H
    dt = E.dtype

    # softmax cross-entropy: dJ/dlogits = (softmax - onehot) * mask / n, in place
    mf = mt.ravel() * (scale / n)
    L *= (mf / cache["total"])[:, None]
    L[cache["rows"], cache["yf"]] -= mf
    Hout = Hs[1:].reshape(T * B, H)
    grads = {"W": L.T @ Hout, "b_out": np.ones(len(L), dt) @ L}
    dHout = (L @ W).reshape(T, B, H)

    # backpropagation through time
    dG = np.empty_like(G)
    dh = np.zeros((B, H), dt)                             # dJ/dh_next carried backwards
    dc = np.zeros((B, H), dt)
    for t in range(T - 1, -1, -1):
        dh += dHout[t]
        if not full[t]:
            m = mt[t][:, None]                            # h_next = m*h + (1-m)*h_prev
            dh_keep = np.where(keep[t], dh, 0)            # the part that goes to h_prev directly
            dc_keep = np.where(keep[t], dc, 0)
            dh *= m
            dc *= m
        a = G[t]
        tc = Tc[t]
        dz = dG[t]
        np.multiply(dh, tc, out=dz[:, 2 * H:H3])          # do
        tmp = tc * tc                                     # dc += dh * o * (1 - tanh(c)^2)
        np.subtract(1, tmp, out=tmp)
        tmp *= a[:, 2 * H:H3]
        tmp *= dh
        dc += tmp
        np.multiply(dc, a[:, 3 * H:], out=dz[:, :H])      # di = dc * g
        np.multiply(dc, Cs[t], out=dz[:, H:2 * H])        # df = dc * c_prev
        np.multiply(dc, a[:, :H], out=dz[:, H3:])         # dg = dc * i
        s = a[:, :H3]                                     # sigmoid' on the gate block
        tmp = 1 - s
        tmp *= s
        dz[:, :H3] *= tmp
        g = a[:, H3:]                                     # tanh' on the candidate
        tmp = g * g
        np.subtract(1, tmp, out=tmp)
        dz[:, H3:] *= tmp
        dc *= a[:, H:2 * H]                               # dJ/dc_prev
        dh = dz @ Wh                                      # dJ/dh_prev
        if not full[t]:
            dh += dh_keep
            dc += dc_keep
    dGf = dG.reshape(T * B, 4 * H)
    grads["Wh"] = dGf.T @ Hs[:-1].reshape(T * B, H)
    grads["Wx"] = dGf.T @ emb.reshape(T * B, -1)
    grads["b"] = np.ones(len(dGf), dt) @ dGf
    demb = dGf @ Wx                                       # (T*B, D)
    if embedding == "dense":
        dE = np.zeros_like(E)
        np.add.at(dE, xt.ravel(), demb)
        grads["E"] = dE
    else:
        grads["E"] = (xt.ravel(), demb)
    grads["h0"], grads["c0"] = dh, dc
    return grads


def value_and_grad(p, x, y, mask=None, state=None):
    loss, cache = forward(p, x, y, mask, state)
    return loss, backward(p, cache)


def sgd_step(p, x, y, lr, mask=None, state=None, embedding="rows"):
    """One SGD step in place; returns the loss before the step.

    embedding="rows" (default) subtracts lr * the adjoint of every position
    straight from its row of E with np.add.at; "dense" builds the (V, D)
    gradient first (the same update up to rounding order).
    """
    loss, cache = forward(p, x, y, mask, state)
    g = backward(p, cache, embedding, scale=lr)           # lr times the gradients
    for name in ("Wx", "Wh", "b", "W", "b_out"):
        p[name] -= g[name]
    if embedding == "dense":
        p["E"] -= g["E"]
    else:
        ids, rows = g["E"]
        np.subtract.at(p["E"], ids, rows)
    return loss
