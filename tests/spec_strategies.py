"""Hypothesis strategies for random layer specs and recurrent cells (tests/test_random_specs.py).

A drawn spec is a `Drawn`: the YAML text (written by hand, so that cell
equations are block literals and every layer's lines are known), the line
range of each layer, the number of parameter arrays the spec should give, and
labels for the statistics.  The specs are valid or invalid at random: the
property under test accepts a located SpecError or a correct module.
"""

import builtins
import random
import json
from dataclasses import dataclass, field

from hypothesis import strategies as st

# --- names ---------------------------------------------------------------------------

# Every name a generated module uses itself (templates/*.j2, templates/helpers,
# templates/kernels, and the generated source of the examples), the names the
# issue lists, and names a default layer / parameter / buffer would get.
INTERNAL_NAMES = sorted(set("""
X Y os batch_size positions weight add dot multiply subtract vdot maximum minimum
lr len dict range full prediction one_example logits sgd_update adam_update adamw_update t k B T saved need_dx dout mask xs h0 carry_h carry_c dJ_dh dJ_dc h_next c_next
OUTPUTS LOSS VOCAB PARAMS DTYPE INPUT_SHAPE SEQUENCE INPUTS WRT SOURCE GRAPH
conv2d_forward conv2d_backward maxpool2d_forward maxpool2d_backward conv_windows conv_im2col_band
conv_out_size conv_matmul_into col2im
np math numba x y J p s e n total params cache state consume x_row grads seed value m z r
forward backward predict sgd_step sgd_epoch init_params value_and_grad evaluate
g dx dW db dE dh dc dxs dHs dX buf out rng key keys shape size step steps start offset offsets
slots stacked initial final_states states h_prev c_prev h c i j o f u v w a b W U E
dJ_dx dJ_dW dJ_dJ dJ_dh_prev dJ_dc_prev linear1 linear2 lstm1 lstm2 rnn1 rnn2 recurrent1 recurrent2
relu1 sigmoid1 tanh1 softplus1 activation1 embedding1 conv2d1 conv2d2 maxpool2d1 flatten1
lstm1_cell rnn1_cell zx_h zh_h z_h z_c zx_c linear1_W linear1_b embedding1_E lstm1_fwd_W_xi
W_xi W_hi b_i w_ci W_hh W_xh b_h fn data_loss l2_penalty linear1_W_sq u_1 J_1 h_1 x_1
window windows kernel stride padding sw xp dxp ph pw kh kw
onehot logits probabilities mean alpha scale flat
""".split()))

BUILTIN_NAMES = ["sum", "max", "min", "abs", "len", "list", "tuple", "print", "id", "type",
                 "object", "iter", "next", "map", "zip", "enumerate", "isinstance", "float",
                 "int", "str", "bool", "all", "any", "pow", "round", "sorted", "slice", "super",
                 "vars", "locals", "globals", "exec", "eval", "open", "input", "format", "hash",
                 "property", "ValueError", "Exception", "__name__", "None", "True", "False",
                 "lambda", "class", "def", "return", "match", "case", "_", "print"]

NUMPY_NAMES = ["exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sigmoid", "softplus", "relu",
               "where", "dot", "matmul", "zeros", "ones", "empty", "array", "float64", "int64",
               "newaxis", "maximum", "minimum", "einsum", "concatenate", "outer", "add",
               "multiply", "copyto", "take", "pi", "inf", "nan", "E", "I", "S", "N", "O", "Q",
               "beta", "gamma", "zeta", "Max", "Min", "Symbol", "arctan", "arcsinh", "cosh"]

ORDINARY_NAMES = ["alpha", "hidden", "gate", "foo", "cell", "out1", "proj", "layer", "enc",
                  "dec", "W1", "b2", "h2", "state2", "q", "kv", "Wx", "Wh", "bias", "head",
                  "body", "tagger", "gru", "zz", "h_", "x2", "candidate", "reset", "update"]

ASSUMED_BUILTINS = set(dir(builtins))
NAME_POOL = sorted(set(INTERNAL_NAMES) | set(BUILTIN_NAMES) | set(NUMPY_NAMES) | set(ORDINARY_NAMES))
random.Random(9).shuffle(NAME_POOL)     # hypothesis favours the first entries: no fixed favourite


def pool_kind(name):
    """Which part of the pool a name came from (for the statistics)."""
    if name in INTERNAL_NAMES:
        return "internal"
    if name in BUILTIN_NAMES or name in ASSUMED_BUILTINS:
        return "builtin"
    if name in NUMPY_NAMES:
        return "numpy"
    return "ordinary"


names = st.sampled_from(NAME_POOL)


# --- elementwise expressions in one variable (activations) ----------------------------

UNARY = [  # bounded or mild functions: "{}" is the argument
    "sin({})", "cos({})", "tanh({})", "sigmoid({})", "softplus({})", "relu({})", "abs({})",
    "arctan({})", "arcsinh({})", "exp(tanh({}))", "log(1 + ({})**2)", "sqrt(1 + ({})**2)",
    "cosh(tanh({}))", "sinh(tanh({}))", "tan(tanh({})/2)", "log(2 + tanh({}), 3)",
    "-({})", "({})**2", "tanh({})**3", "pow(sigmoid({}), 2)", "({})/(1 + ({})**2)",
    "arcsin(tanh({})/2)", "arccos(sigmoid({}))", "log1p(({})**2)", "expm1(tanh({}))",
]
BINARY = ["({}) + ({})", "({}) - ({})", "({}) * ({})", "max({}, {})", "min({}, {})",
          "({}) / (2 + sin({}))", "max(({0}) - ({0}), {1})", "min({1}, ({0}) - ({0}))"]
CONSTANTS = ["0.5", "2", "3", "1.5", "0.25"]


@st.composite
def elementwise(draw, leaves, depth=2):
    """A random elementwise expression over `leaves` (a list of strings)."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        leaf = draw(st.sampled_from(leaves))
        if draw(st.integers(0, 5)) == 0:
            return f"{draw(st.sampled_from(CONSTANTS))} * {leaf}"
        return leaf
    if draw(st.booleans()):
        f = draw(st.sampled_from(UNARY))
        a = draw(elementwise(leaves, depth - 1))
        return f.replace("{}", a)
    f = draw(st.sampled_from(BINARY))
    a = draw(elementwise(leaves, depth - 1))
    if draw(st.integers(0, 3)) == 0:
        b = a                                     # a repeated subexpression
    else:
        b = draw(elementwise(leaves, depth - 1))
    if "{0}" in f:
        return f.format(a, b)
    if f.count("{}") == 3:
        return f.format(a, b, b)
    return f.format(a, b)


# --- drawn specs -------------------------------------------------------------------------

@dataclass
class Drawn:
    text: str
    layer_lines: list                 # per layer: (first line, last line), 1-based
    expected_params: int              # number of parameter arrays, if the spec compiles
    sequence: bool
    labels: list = field(default_factory=list)
    names_used: list = field(default_factory=list)


def _flow(options):
    parts = []
    for k, v in options.items():
        parts.append(f"{k}: {_scalar(v)}")
    return "{" + ", ".join(parts) + "}"


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(a) for a in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)          # a double-quoted YAML scalar
    return repr(v)


@st.composite
def maybe_name(draw, labels, used):
    if draw(st.integers(0, 2)) == 0:
        name = draw(names)
        labels.append(f"name:{pool_kind(name)}")
        used.append(name)
        return name
    return None


class Builder:
    """Collects YAML lines and the line range of each layer."""

    def __init__(self):
        self.lines, self.layer_lines = [], []
        self.params = 0

    def layer(self, lines):
        first = len(self.lines) + 1
        self.lines.extend(lines)
        self.layer_lines.append((first, len(self.lines)))


def _layer_line(kind, options, name):
    if name is not None:
        options = dict(options, name=name)
    if not options:
        return [f"  - {kind}"]
    return [f"  - {kind}: {_flow(options)}"]


@st.composite
def dense_layers(draw, b, labels, used, n_in, final_linear, min_out=1):
    """linear / activation layers on (B, n) features."""
    count = draw(st.integers(0, 3))
    for _ in range(count):
        kind = draw(st.sampled_from(["linear", "sigmoid", "tanh", "relu", "softplus",
                                     "activation", "flatten"]))
        name = draw(maybe_name(labels, used))
        labels.append(kind)
        if kind == "linear":
            out = draw(st.integers(1, 3))
            bias = draw(st.sampled_from([None, True, False]))
            options = {"out": out} if bias is None else {"out": out, "bias": bias}
            if bias is None and name is None and draw(st.booleans()):
                b.layer([f"  - linear: {out}"])
            else:
                b.layer(_layer_line("linear", options, name))
            labels.append(f"linear:bias={bias is not False}")
            b.params += 1 + (bias is not False)
            n_in = out
        elif kind == "activation":
            expr = draw(elementwise(["x"]))
            labels.append("activation:expr")
            if name is None and draw(st.booleans()):
                b.layer([f"  - activation: {_scalar(expr)}"])
            else:
                b.layer(_layer_line("activation", {"expr": expr}, name))
        else:
            b.layer(_layer_line(kind, {}, name))
    if final_linear:
        out = draw(st.integers(min_out, 3))
        name = draw(maybe_name(labels, used))
        b.layer(_layer_line("linear", {"out": out}, name))
        labels.append("linear")
        b.params += 2
    return n_in


@st.composite
def conv_layers(draw, b, labels, used, shape):
    c, h, w = shape
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv2d", "conv2d", "maxpool2d", "relu", "tanh"]))
        name = draw(maybe_name(labels, used))
        labels.append(kind)
        if kind == "conv2d":
            options = {"out_channels": draw(st.integers(1, 2))}
            kernel = draw(st.one_of(st.integers(1, 3), st.lists(st.integers(1, 3), min_size=2, max_size=2)))
            options["kernel"] = kernel
            if draw(st.booleans()):
                options["stride"] = draw(st.one_of(st.integers(1, 2),
                                                   st.lists(st.integers(1, 2), min_size=2, max_size=2)))
            if draw(st.booleans()):
                options["padding"] = draw(st.one_of(st.integers(0, 1),
                                                    st.lists(st.integers(0, 1), min_size=2, max_size=2)))
            bias = draw(st.booleans())
            if not bias:
                options["bias"] = False
            labels.append(f"conv2d:bias={bias}")
            b.params += 1 + bias
        elif kind == "maxpool2d":
            options = {"kernel": draw(st.integers(1, 2))}
            if draw(st.booleans()):
                options["stride"] = draw(st.integers(1, 2))
        else:
            options = {}
        b.layer(_layer_line(kind, options, name))
    b.layer(_layer_line("flatten", {}, draw(maybe_name(labels, used))))
    labels.append("flatten")


# --- recurrent cells -------------------------------------------------------------------

@st.composite
def cell(draw, labels, used, hidden, input_size):
    """(equations text, states, number of distinct parameters)."""
    n_states = draw(st.sampled_from([1, 1, 2]))
    states = [draw(st.sampled_from(["h", "c", "s", "hh"]) | names) for _ in range(n_states)]
    if n_states == 2 and draw(st.integers(0, 7)) == 0:
        states[1] = states[0]                       # state: [h, h]
    labels.append(f"cell:states={n_states}")
    for s in states:
        used.append(s)
        labels.append(f"state-name:{pool_kind(s)}")
    n_params = draw(st.integers(0, 4))
    if n_params == 0:
        labels.append("cell:no-params")
    params = [draw(names) for _ in range(n_params)]
    for p in params:
        used.append(p)
        labels.append(f"param-name:{pool_kind(p)}")
    prevs = [f"{s}_prev" for s in states]
    temps = []
    lines = []
    elementwise_x = hidden == input_size or draw(st.integers(0, 5)) == 0
    if hidden != input_size and elementwise_x:
        labels.append("cell:x-elementwise-mismatch")

    # parameter roles: matrices for the first ones, biases / elementwise for the rest
    matrices = params[: max(1, (len(params) + 1) // 2)] if params else []
    vectors = params[len(matrices):]

    shared = {}

    def product(vec, d):
        W = d(st.sampled_from(matrices))
        return f"{W} @ {vec}"

    @st.composite
    def vector_expr(draw2, depth):
        leaves = list(prevs) + temps + (["x"] if elementwise_x else [])
        options = ["leaf", "unary", "binary"]
        if matrices:
            options += ["product", "product", "shared", "nested"]
        if vectors:
            options += ["bias"]
        choice = draw2(st.sampled_from(options)) if depth > 0 else draw2(st.sampled_from(
            ["leaf"] + (["product"] if matrices else [])))
        if choice == "leaf":
            return draw2(st.sampled_from(leaves))
        if choice == "product":
            v = draw2(st.sampled_from(["x"] + prevs + temps))
            return product(v, draw2)
        if choice == "shared":                      # the same product used again
            if not shared:
                shared["p"] = product(draw2(st.sampled_from(["x", prevs[0]])), draw2)
                labels.append("cell:repeated-product")
            return shared["p"]
        if choice == "nested":                      # W @ (U @ h_prev), W @ (expr)
            inner = draw2(vector_expr(depth - 1))
            labels.append("cell:product-of-expr")
            return f"{draw2(st.sampled_from(matrices))} @ ({inner})"
        if choice == "bias":
            v = draw2(st.sampled_from(vectors))
            inner = draw2(vector_expr(depth - 1))
            op = draw2(st.sampled_from(["+", "*"]))
            return f"{inner} {op} {v}"
        if choice == "unary":
            f = draw2(st.sampled_from(["tanh", "sigmoid", "relu", "softplus", "sin", "abs",
                                       "arctan"]))
            return f"{f}({draw2(vector_expr(depth - 1))})"
        a = draw2(vector_expr(depth - 1))
        if draw2(st.integers(0, 3)) == 0:
            b2 = a
            labels.append("cell:repeated-subexpression")
        else:
            b2 = draw2(vector_expr(depth - 1))
        f = draw2(st.sampled_from(["({}) + ({})", "({}) * ({})", "({}) - ({})", "max({}, {})",
                                   "min({}, {})", "max(({0}) - ({0}), {1})"]))
        return f.format(a, b2) if "{0}" not in f else f.format(a, b2)

    for _ in range(draw(st.integers(0, 2))):
        target = draw(names)
        used.append(target)
        labels.append(f"cell-var-name:{pool_kind(target)}")
        expr = draw(vector_expr(2))
        lines.append(f"{target} = {expr}")
        temps.append(target)
    for s in dict.fromkeys(states):
        expr = draw(vector_expr(2))
        wrap = draw(st.sampled_from(["tanh({})", "{}", "sigmoid({}) * tanh({})"]))
        lines.append(f"{s} = " + wrap.replace("{}", f"({expr})" if wrap != "{}" else expr))
    text = "\n".join(lines) + "\n"
    # the parameters the cell should have: free names that are neither x, a previous state
    # nor an assigned name (as the README defines them)
    assigned = {line.split(" = ")[0] for line in lines}
    free = {p for p in params if p in text and p not in assigned and p != "x" and p not in prevs}
    import re
    free = {p for p in free if re.search(rf"(?<![\w.]){re.escape(p)}(?![\w(])", text)}
    return text, states, len(free)


@st.composite
def sequence_layers(draw, b, labels, used, features):
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["rnn", "lstm", "recurrent", "recurrent", "tanh", "linear"]))
        name = draw(maybe_name(labels, used))
        labels.append(kind)
        if kind in ("rnn", "lstm", "recurrent"):
            hidden = draw(st.integers(1, 3))
            options = {"hidden": hidden}
            bidir = draw(st.booleans())
            depth = draw(st.sampled_from([1, 1, 2]))
            if bidir:
                options["bidirectional"] = True
                labels.append(f"{kind}:bidirectional")
            if depth > 1:
                options["layers"] = depth
                labels.append(f"{kind}:layers=2")
            dirs = 2 if bidir else 1
            if kind == "rnn":
                if draw(st.booleans()):
                    options["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
                b.params += 3 * dirs * depth
                b.layer(_layer_line(kind, options, name))
            elif kind == "lstm":
                peephole = draw(st.booleans())
                if peephole:
                    options["peephole"] = True
                    labels.append("lstm:peephole")
                b.params += (15 if peephole else 12) * dirs * depth
                b.layer(_layer_line(kind, options, name))
            else:
                # deeper layers of the stack see hidden*dirs features; draw for the first
                text, states, n = draw(cell(labels, used, hidden, features))
                b.params += n * dirs * depth
                lines = ["  - recurrent:"]
                if name is not None:
                    lines.append(f"      name: {name}")
                for k, v in options.items():
                    lines.append(f"      {k}: {_scalar(v)}")
                if states != ["h"] or draw(st.booleans()):
                    lines.append(f"      state: {_scalar(states)}")
                lines.append("      equations: |")
                lines += ["        " + line for line in text.splitlines()]
                b.layer(lines)
            features = hidden * dirs
        elif kind == "linear":
            features = draw(st.integers(1, 3))
            b.params += 2
            b.layer(_layer_line("linear", {"out": features}, name))
        else:
            b.layer(_layer_line(kind, {}, name))
    name = draw(maybe_name(labels, used))
    b.layer(_layer_line("linear", {"out": draw(st.integers(2, 3))}, name))
    b.params += 2
    labels.append("linear")


@st.composite
def specs(draw):
    labels, used = [], []
    b = Builder()
    family = draw(st.sampled_from(["mlp", "mlp", "conv", "sequence", "sequence", "sequence"]))
    labels.append(f"family:{family}")
    model = draw(st.sampled_from(["model", "net"]) | names)
    header = [f"name: {model}", "dtype: float64"]
    loss = draw(st.sampled_from(["softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mse"]))
    if family == "mlp":
        n = draw(st.integers(1, 3))
        header.append(f"input: [{n}]")
        end_linear = loss != "mse" or draw(st.booleans())
        header.append("layers:")
        b.lines = header
        draw(dense_layers(b, labels, used, n, end_linear, 2 if loss == "softmax_cross_entropy" else 1))
        if not b.layer_lines:
            b.layer([f"  - {draw(st.sampled_from(['relu', 'tanh', 'sigmoid']))}"])
    elif family == "conv":
        shape = [draw(st.integers(1, 2)), draw(st.integers(2, 5)), draw(st.integers(2, 5))]
        header.append(f"input: {_scalar(shape)}")
        header.append("layers:")
        b.lines = header
        draw(conv_layers(b, labels, used, shape))
        draw(dense_layers(b, labels, used, None, loss != "mse" or draw(st.booleans()),
                          2 if loss == "softmax_cross_entropy" else 1))
    else:
        loss = draw(st.sampled_from(["softmax_cross_entropy"] * 15 + ["mse"]))
        if draw(st.booleans()):
            vocab = draw(st.integers(2, 4))
            dim = draw(st.integers(1, 3))
            header.append(f"input: {{vocab: {vocab}}}")
            header.append("layers:")
            b.lines = header
            name = draw(maybe_name(labels, used))
            b.layer(_layer_line("embedding", {"dim": dim}, name) if name or draw(st.booleans())
                    else [f"  - embedding: {dim}"])
            labels.append("embedding")
            b.params += 1
            features = dim
        else:
            features = draw(st.integers(1, 3))
            header.append(f"input: [{features}]")
            header.append("layers:")
            b.lines = header
        draw(sequence_layers(b, labels, used, features))
    labels.append(f"loss:{loss}")
    b.lines.append(f"loss: {loss}")
    if family != "sequence" and draw(st.booleans()):
        b.lines.append(f"l2: {draw(st.sampled_from(['0.01', '0.5', '0']))}")
        labels.append("l2")
    text = "\n".join(b.lines) + "\n"
    return Drawn(text, b.layer_lines, b.params, family == "sequence", labels, used)
