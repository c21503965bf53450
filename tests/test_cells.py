"""User-written recurrent cells: every valid cell compiles to a module whose float64
gradients equal central finite differences; every ill-shaped cell is refused with a
SpecError at its equation in the spec file (issues 9 and 10)."""

import textwrap

import numpy as np
import pytest

import bpcompile
from bpcompile.compiler import compile_spec, load_spec
from bpcompile.errors import SpecError
from bpcompile.training.gradcheck import relative_error

pytestmark = pytest.mark.both_targets

TOL = 1e-6
STEP = 1e-5


def cell_spec(equations, hidden=4, inputs=3, state=("h",), vocab=None, bidirectional=False,
              layers=1, direction=None):
    layer = {"hidden": hidden, "state": list(state), "equations": equations}
    if bidirectional:
        layer["bidirectional"] = True
    if direction:
        layer["direction"] = direction
    if layers > 1:
        layer["layers"] = layers
    first = [{"embedding": inputs}] if vocab else []
    return {"name": "cell", "dtype": "float64",
            "input": {"vocab": vocab} if vocab else [inputs],
            "layers": first + [{"recurrent": layer}, {"linear": 3}],
            "loss": "softmax_cross_entropy"}


def problem(module, batch=3, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0.0, 0.5, s) for k, s in module.PARAMS.items()}
    if hasattr(module, "VOCAB"):
        x = rng.integers(0, module.VOCAB, (batch, steps))
    else:
        x = rng.normal(size=(batch, steps) + tuple(module.INPUT_SHAPE))
    y = rng.integers(0, module.OUTPUTS, (batch, steps))
    mask = np.ones((batch, steps))
    for b in range(batch):           # lengths steps, steps-1, ...
        mask[b, steps - b:] = 0
    return params, x, y, mask


def gradient_error(module, seed=0, batch=3, steps=4):
    """The largest norm-wise relative error over the parameters (masked batch)."""
    params, x, y, mask = problem(module, batch, steps, seed)
    J, grads = module.value_and_grad(params, x, y, mask)
    assert np.isfinite(J)
    assert set(grads) >= set(params)
    worst = 0.0
    for key, array in params.items():
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            original = array[i]
            array[i] = original + STEP
            plus = module.forward(params, x, y, mask)[0]
            array[i] = original - STEP
            minus = module.forward(params, x, y, mask)[0]
            array[i] = original
            numeric[i] = (plus - minus) / (2 * STEP)
        worst = max(worst, relative_error(grads[key], numeric))
    return worst


def assert_exact(equations, **kw):
    module = bpcompile.compile(cell_spec(equations, **kw))
    error = gradient_error(module)
    assert error < TOL, (equations, error)
    return module


# --- 1. repeated products: one slot each, and a weight in several slots gets every slice --------

@pytest.mark.parametrize("equations", [
    "h = sigmoid(W @ x + U @ h_prev) * tanh(W @ x + U @ h_prev)",
    "h = tanh(W @ x + W @ x)",
    "h = tanh(W @ x + U @ h_prev + W @ x)",
    "a = sigmoid(W @ x + b1)\nh = a * tanh(W @ x + b2 + U @ h_prev)",
    "a = sigmoid(W @ x + b1 + U @ h_prev)\nh = a * tanh(W @ x + b2 + U @ h_prev)",
    "h = tanh(W @ x + b) * sigmoid(b + U @ h_prev)",
    "h = tanh(U @ h_prev + U @ (h_prev * h_prev) + W @ x)",
])
def test_repeated_products_give_exact_gradients(equations):
    assert_exact(equations)


def test_one_weight_with_the_input_and_the_state_when_the_sizes_agree():
    assert_exact("h = tanh(W @ x + W @ h_prev)", hidden=3, inputs=3)
    assert_exact("h = tanh(W @ x + b) + sigmoid(W @ h_prev + b)", hidden=3, inputs=3)


def test_same_product_twice_is_computed_once():
    module = bpcompile.compile(cell_spec("h = sigmoid(W @ x + U @ h_prev) * tanh(W @ x + U @ h_prev)"))
    assert module.SOURCE.count("_stacked([W, W])") == 0


# --- 2. user names equal to the scan's own names ----------------------------------------------

# (names with a leading underscore are not user names: the parser refuses them)
SCAN_NAMES = ["saved", "need_dx", "dout", "mask", "xs", "h0", "range", "full", "t", "k", "B",
              "T", "carry_h", "dJ_dh", "h_next", "out", "m", "order", "reverse", "np", "dxs",
              "len", "forward", "PARAMS", "grad_W", "saved_h_prev", "z_h", "dJ_dz_h", "x_1",
              "dW", "dU", "lambda_", "print", "sum", "final", "W_in"]


@pytest.mark.parametrize("name", SCAN_NAMES)
def test_user_names_that_the_scan_uses_itself(name):
    # as a parameter, as an intermediate variable, and as a second state
    equations = (f"g = sigmoid(W @ x + U @ h_prev + {name})\n"
                 f"v = g * h_prev\n"
                 f"h = tanh(V @ x + {name} * v + Z @ v)")
    module = assert_exact(equations)
    assert f"cell1.{name}" in module.PARAMS or f"recurrent1.{name}" in module.PARAMS
    assert_exact(f"{name} = sigmoid(W @ x + U @ h_prev)\nh = {name} * h_prev + (1 - {name}) * tanh(V @ x)")


@pytest.mark.parametrize("name", ["t", "k", "B", "T", "carry_h", "dJ_dh", "h_next", "full", "mask",
                                  "xs", "saved", "out", "m"])
def test_user_state_names_that_the_scan_uses_itself(name):
    assert_exact(f"h = tanh(W @ x + U @ h_prev + V @ {name}_prev)\n"
                 f"{name} = sigmoid(A @ x + C @ h_prev) * {name}_prev + h",
                 state=("h", name))


def test_parameter_keys_keep_the_users_spelling():
    module = bpcompile.compile(cell_spec("h = tanh(range @ x + t @ h_prev + saved)"))
    assert set(module.PARAMS) >= {"recurrent1.range", "recurrent1.t", "recurrent1.saved"}


# --- 3. cells without parameters ------------------------------------------------------------

@pytest.mark.parametrize("equations", ["h = tanh(h_prev)", "h = h_prev", "h = tanh(x + h_prev)",
                                       "h = h_prev * 0.5 + x"])
def test_cells_without_parameters(equations):
    module = bpcompile.compile(cell_spec(equations, hidden=3, inputs=3))
    params, x, y, mask = problem(module)
    J, grads = module.value_and_grad(params, x, y, mask)
    assert np.isfinite(J)
    assert gradient_error(module) < TOL


def test_bidirectional_and_stacked_user_cells():
    assert_exact("h = tanh(W @ x + U @ h_prev + b)", bidirectional=True, layers=2, hidden=2)
    assert_exact("h = tanh(h_prev + x)", bidirectional=True, hidden=3, inputs=3)


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_user_cells_in_every_direction(direction):
    module = assert_exact("h = tanh(W @ x + U @ h_prev + b)\nc = c_prev + h * sigmoid(V @ c_prev)",
                          state=("h", "c"), direction=direction, layers=2, hidden=2)
    halves = {"reverse": {"bwd"}, "bidirectional": {"fwd", "bwd"}}[direction]
    assert {key.split(".")[1] for key in module.PARAMS if key.startswith("recurrent")} == halves
    assert {key.split(".")[1] for key in module.STATE_KEYS} == halves


# --- 4. shapes: every size inferred, inconsistency refused where it is written --------------

def test_products_of_products_compile():
    module = assert_exact("h = tanh(W @ (U @ x) + V @ h_prev)", hidden=4, inputs=3)
    assert module.PARAMS["recurrent1.W"] == (4, 4)
    assert module.PARAMS["recurrent1.U"] == (4, 3)
    assert_exact("h = tanh(W @ tanh(U @ x + b) + V @ (A @ h_prev))")


def test_vector_parameters_take_the_size_of_what_they_meet():
    module = assert_exact("h = tanh(W @ (w * x) + U @ h_prev)", hidden=4, inputs=3)
    assert module.PARAMS["recurrent1.w"] == (3,)
    assert module.PARAMS["recurrent1.W"] == (4, 3)


def located(equations, hidden=4, inputs=3, state=("h",)):
    """The SpecError of a spec file whose cell is `equations`, and the text."""
    body = textwrap.indent(equations, " " * 10)
    states = ", ".join(state)
    text = (f"name: cell\ndtype: float64\ninput: [{inputs}]\nlayers:\n"
            f"  - recurrent:\n      hidden: {hidden}\n      state: [{states}]\n"
            f"      equations: |\n{body}\n  - linear: 3\nloss: softmax_cross_entropy\n")
    with pytest.raises(SpecError) as info:
        compile_spec(load_spec(text, "cell.yaml"))
    return info.value, text


@pytest.mark.parametrize("equations,line,message", [
    ("h = tanh(W @ x + W @ h_prev)", 0, "W"),
    ("a = tanh(U @ h_prev)\nh = tanh(W @ x + a + x)", 1, "size"),
    ("h = tanh(U @ h_prev + x)", 0, "size"),
    ("h = tanh(W @ h_prev + W)", 0, "W"),
    ("a = W @ x\nh = tanh(W @ h_prev + a)", 1, "W"),
    ("h = x", 0, "size"),
    ("h = tanh(W @ (x * h_prev))", 0, "size"),
    ("h = tanh(W @ b + U @ h_prev)", 0, "@"),
    ("h = tanh(W @ 2 + U @ h_prev)", 0, "@"),
    ("a = tanh(U @ h_prev)\nh = W @ (a * x)", 1, "size"),
    ("h = tanh(b)", 0, "depend"),
    ("a = tanh(U @ h_prev)\nh = tanh(W @ h_prev) * a\nh = a", 2, "assigned twice"),
])
def test_ill_shaped_cells_are_refused_at_the_equation(equations, line, message):
    err, text = located(equations)
    assert err.file == "cell.yaml"
    lines = text.splitlines()
    first = lines.index("      equations: |") + 2        # 1-based line of the first equation
    assert err.line == first + line, (str(err), text)
    assert lines[err.line - 1].strip().startswith(equations.splitlines()[line].split("=")[0].strip())
    assert err.col >= 11, str(err)
    assert message in err.message, str(err)


def test_duplicate_state_is_a_located_error():
    err, text = located("h = tanh(W @ x + U @ h_prev)", state=("h", "h"))
    assert "state" in err.message and "twice" in err.message
    assert text.splitlines()[err.line - 1].strip().startswith("state:")


def test_generated_lines_are_short_and_gate_slices_are_named():
    module = bpcompile.compile({"name": "t", "dtype": "float64", "input": {"vocab": 7},
                                "layers": [{"embedding": 4},
                                           {"lstm": {"hidden": 64, "bidirectional": True,
                                                     "peephole": True}},
                                           {"linear": 3}],
                                "loss": "softmax_cross_entropy"})
    source = module.SOURCE
    start = source.index("def lstm1_cell_forward")
    end = source.find("\ndef ", source.index("def lstm1_cell_backward"))
    end = len(source) if end < 0 else end
    scan = source[start:end]
    assert max(len(line) for line in scan.splitlines()) <= 100
    sliced = [line.strip() for line in scan.splitlines() if "_dWx[" in line]
    assert sliced and all(line.startswith("dW_x") for line in sliced)      # a named view per gate
    assert "dW_xo = _dWx[" in scan
    # one function per layer: the directions call it with reverse=
    assert "lstm1_fwd_cell_forward" not in source and "reverse=True" in source


@pytest.mark.parametrize("equations,state", [
    ("c = tanh(A @ c_prev + W @ x + B @ h_prev)\nh = tanh(U @ h_prev + c) * c_prev", ("h", "c")),
    ("i = sigmoid(W @ x + U @ h_prev + b)\nf = sigmoid(V @ x + A @ h_prev + b)\n"
     "h = i * f * h_prev + (1 - f) * tanh(C @ x + D @ h_prev + b)", ("h",)),
    ("a = W @ x\nh = tanh(a + U @ h_prev + U @ a)", ("h",)),
    ("h = tanh(-(W @ x) - U @ h_prev + b - b2)", ("h",)),
    ("h = max(W @ x, U @ h_prev)", ("h",)),
    ("h = tanh(W @ x + U @ h_prev)\nc = c_prev + h", ("h", "c")),
])
def test_more_cells_both_directions(equations, state):
    assert_exact(equations, state=state, bidirectional=True)


def test_cell_over_token_ids():
    assert_exact("h = sigmoid(W @ x + U @ h_prev) * tanh(W @ x + U @ h_prev)", vocab=5)


# --- values made of parameters alone broadcast: they never lend memory to a batch value ------

@pytest.mark.parametrize("equations", [
    "h = h_prev + p + p",
    "h = tanh(W @ h_prev + k + k)",
    "a = 2*p\nh = tanh(a + W @ x) * a",
])
def test_a_value_of_parameters_alone_is_not_written_over(equations):
    """`2*p` has shape (H,): the step's planner once wrote (B, H) into it."""
    assert_exact(equations, inputs=4)


def test_a_value_that_feeds_no_state_is_a_located_error():
    """An unused gate of a fused block once compiled into a module calling a missing helper."""
    text = textwrap.dedent("""\
        name: m
        input: [3]
        layers:
          - recurrent:
              hidden: 2
              equations: |
                a = sigmoid(W @ x + U @ h_prev)
                b = sigmoid(V @ x + Q @ h_prev)
                h = a * tanh(h_prev)
          - linear: 2
        loss: softmax_cross_entropy
        """)
    with pytest.raises(SpecError, match="'b' is assigned but never used") as info:
        compile_spec(load_spec(text, "s.yaml"))
    assert (info.value.line, info.value.col) == (8, 9)


@pytest.mark.parametrize("equations", [
    "p = W @ h_prev - W @ h_prev\nh = tanh(U @ p + h_prev)",
    "p = h_prev - h_prev\nh = tanh(U @ p) + h_prev",
    "p = 0*h_prev\nh = tanh(U @ p + W @ x) + h_prev",
])
def test_values_whose_partials_cancel_give_zero_adjoints_of_the_right_shape(equations):
    """d(z - z)/dz summed to the number 0, and `0 @ W` failed in the backward loop
    (found by the nightly random run)."""
    assert_exact(equations, inputs=2, hidden=2)
