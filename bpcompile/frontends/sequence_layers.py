"""Sequence layers: embedding and recurrent layers (rnn, lstm, user cells).

Each recurrent layer's cell is compiled once by `recurrent.ScanCompiler` into a
forward/backward pair of functions over time that take `reverse`; each
direction of the layer becomes one graph node whose rule calls them, and the
outer scheduler treats it like any other tensor primitive.  The backward
returns the gradients by argument name; the node's joint rule unpacks them in
argument order.

Directions (`direction: forward|reverse|bidirectional`; `bidirectional: true`
is the old spelling of the last).  A reverse layer is a bidirectional layer's
`bwd` half alone: its keys are `<layer>.bwd.*` (parameters and states), it
runs from the last step to the first, and a padded step (mask 0) keeps the
state, so with right padding each sequence starts at its own last unpadded
step from the initial state, as PyTorch's packed sequences do; its padded
output positions hold the initial state.  Its initial state enters at the
last step and its final state is the one after step 0 (PyTorch's h_n of the
reverse direction).  Stacked (`layers: k`), every layer runs in reverse: the
composition of k single-layer reverse scans (PyTorch has no reverse-only
nn.LSTM).
"""

from ..errors import SpecError
from ..limits import shorten
from ..core.ir import Node
from .recurrent import ScanCompiler, lstm_equations, parse_cell, rnn_equations
from ..core.tensor_ops import TensorOp

RECURRENT_KINDS = ("rnn", "lstm", "recurrent")

TORCH_LAYOUT = """\
An LSTM without peepholes is PyTorch's nn.LSTM with another parameter layout.
PyTorch stacks the gates as [i, f, g, o] (g is the cell candidate, here c):
with H the hidden size and layer k (suffix _reverse for the bwd direction),
    W_xi, W_xf, W_xc, W_xo = weight_ih_lk[0:H], [H:2H], [2H:3H], [3H:4H]
    W_hi, W_hf, W_hc, W_ho = weight_hh_lk[0:H], [H:2H], [2H:3H], [3H:4H]
    b_i, b_f, b_c, b_o = (bias_ih_lk + bias_hh_lk)[0:H], [H:2H], [2H:3H], [3H:4H]"""
SEQUENCE_KINDS = RECURRENT_KINDS + ("embedding",)
REVERSE_STATE = """\
A reverse layer (keys <layer>.bwd.*) runs each sequence from its last unpadded
step to its first (PyTorch's packed reverse direction); its output past a
sequence's end holds the initial state.  Its state= enters at the last step
and cache["state"] is the state after step 0, so chunks of a long sequence
chain last chunk first."""
DIRECTIONS = ("forward", "reverse", "bidirectional")
# the scans of one stacked layer, by their key infix (None: the layer's own keys)
DIRECTION_HALVES = {"forward": (None,), "reverse": ("bwd",), "bidirectional": ("fwd", "bwd")}


def embedding(compiler, layer, prev):
    compiler._options(layer, {"dim"})
    if compiler.vocab is None or len(prev.shape) != 2:
        raise compiler.error(layer, "embedding needs token ids: write `input: {vocab: N}`")
    if "dim" not in layer.options:
        raise compiler.error(layer, "missing `dim:` (the embedding size)")
    dim = compiler.positive_int(layer, "dim")
    E = compiler.param(layer, "E", (compiler.vocab, dim), fan_in=1, fan_out=dim)
    return compiler.node(layer, "embedding", (prev.name, E.name), ("B", "T", dim))


def recurrent(compiler, layer, prev):
    """rnn / lstm / recurrent: stacked layers and directions of one cell."""
    allowed = {"hidden", "bidirectional", "direction", "layers"}
    allowed |= {"rnn": {"nonlinearity"}, "lstm": {"peephole"},
                "recurrent": {"state", "equations", "output"}}[layer.kind]
    compiler._options(layer, allowed)
    if "hidden" not in layer.options:
        raise compiler.error(layer, "missing `hidden:` (the state size)")
    hidden = compiler.positive_int(layer, "hidden")
    depth = layer.options.get("layers", 1)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise compiler.error(layer, f"layers must be a positive integer, got {depth!r}", "layers")
    direction = _direction(compiler, layer)
    # one spelling for whoever reads the compiled layers (interop, the training task check)
    layer.options["direction"] = direction
    if direction == "bidirectional":
        layer.options["bidirectional"] = True
    halves = DIRECTION_HALVES[direction]
    if direction == "reverse" and REVERSE_STATE not in compiler.notes:
        compiler.notes.append(REVERSE_STATE)
    text, states, output = _cell_text(compiler, layer)
    if layer.kind == "lstm" and not layer.options.get("peephole") and TORCH_LAYOUT not in compiler.notes:
        compiler.notes.append(TORCH_LAYOUT)
    if len(prev.shape) != 3:
        raise compiler.error(layer, f"{layer.kind} needs a (B, T, features) input; got shape "
                             f"({', '.join(map(str, prev.shape))})")
    current = prev
    for k in range(depth):
        name = layer.name if k == 0 else compiler.next_name(layer)
        cell, fn = _compile_cell(compiler, layer, name, text, states, output, hidden, current)
        outputs = []
        for half in halves:
            outputs.append(_scan(compiler, layer, name, half, cell, fn, current))
        if len(outputs) == 2:
            width = 2 * hidden
            current = compiler.graph.add(Node(
                compiler.namer.fresh(name), "concat_last", (outputs[0].name, outputs[1].name),
                shape=("B", "T", width), dtype=compiler.dtype, line=layer.index,
                attrs={"fmt": {"n0": str(hidden)}}))
        else:
            current = outputs[0]
    return current


def _direction(compiler, layer):
    """The layer's direction from `direction:` and the older `bidirectional:` flag;
    both given and disagreeing is an error at `direction`."""
    flag = compiler.flag(layer, "bidirectional")
    if "direction" not in layer.options:
        return "bidirectional" if flag else "forward"
    direction = layer.options["direction"]
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise compiler.error(layer, f"direction must be one of {', '.join(DIRECTIONS)}, got "
                             f"{shorten(direction)}", "direction")
    if "bidirectional" in layer.options and flag != (direction == "bidirectional"):
        raise compiler.error(layer, f"direction: {direction} contradicts bidirectional: "
                             f"{str(flag).lower()} (give one of them)", "direction")
    return direction


def layer_direction(layer):
    """'forward', 'reverse' or 'bidirectional': a compiled recurrent layer's direction (for
    code that reads a compiled model's layers: interop, the training task check)."""
    return layer.options["direction"]


def _cell_text(compiler, layer):
    if layer.kind == "rnn":
        nonlinearity = layer.options.get("nonlinearity", "tanh")
        if nonlinearity not in ("tanh", "relu"):
            raise compiler.error(layer, f"nonlinearity must be tanh or relu, got {nonlinearity!r}",
                                 "nonlinearity")
        return rnn_equations(nonlinearity), ["h"], "h"
    if layer.kind == "lstm":
        return lstm_equations(compiler.flag(layer, "peephole")), ["h", "c"], "h"
    text = layer.options.get("equations")
    if not isinstance(text, str):
        raise compiler.error(layer, "missing `equations:` (one `name = expression` per line)")
    states = layer.options.get("state", ["h"])
    if isinstance(states, str):
        states = [states]
    if not isinstance(states, list) or not states or not all(isinstance(s, str) for s in states):
        raise compiler.error(layer, f"state must be a list of names, got {states!r}", "state")
    for k, s in enumerate(states):
        if s in states[:k]:
            raise compiler.error(layer, f"state {s!r} is listed twice", "state")
    from ..core.parser import check_identifier
    for s in states:
        try:
            check_identifier(s, "state")
        except SpecError as err:
            raise compiler.error(layer, err.message, "state") from None
    output = layer.options.get("output", states[0])
    return text, states, output


def _compile_cell(compiler, layer, name, text, states, output, hidden, prev):
    """The cell's scan functions, rendered once for the layer (both directions use them);
    a cell error is placed at its equation in the spec file."""
    try:
        cell = parse_cell(text, states, hidden, prev.shape[-1], output)
        fn = compiler.namer.fresh(f"{name.replace('.', '_')}_cell", suffixes=("_forward", "_backward"))
        scan = ScanCompiler(cell, fn)
    except SpecError as err:
        if layer.kind == "recurrent":
            path = ("layers", layer.index - 1, layer.kind, "equations")
            located = compiler.spec.relocate(err, *path)
            raise SpecError(f"{layer.label()}: {err.message}", located.file, located.line,
                            located.col) from None
        raise
    compiler.scans.append(scan.context(compiler.dtype))    # rendered by the code generator
    return (cell, scan), fn


def _scan(compiler, layer, name, direction, compiled, fn, prev):
    """One direction of one layer: a graph node whose rule calls the layer's scan.
    `direction` is the key infix: None (a forward layer), "fwd" or "bwd" (run reversed)."""
    cell, scan = compiled
    hidden, states = cell.hidden, cell.states
    prefix = name if direction is None else f"{name}.{direction}"
    var_prefix = prefix.replace(".", "_")
    g = compiler.graph
    initial = []
    for s in states:
        var = compiler.namer.fresh(f"{var_prefix}_{s}0")
        g.add(Node(var, "input", shape=("B", hidden), dtype=compiler.dtype,
                   attrs={"state": f"{prefix}.{s}", "size": hidden}))
        initial.append(var)
        compiler.states.append((f"{prefix}.{s}", var, hidden))
    params, keys = [], {}
    for pname, shape in cell.params.items():
        fan_in = shape[1] if len(shape) == 2 else 1
        p = compiler.param(layer, pname, shape, fan_in=fan_in, fan_out=shape[0],
                           is_weight=len(shape) == 2, key_prefix=prefix)
        params.append(p.name)
        keys[pname] = f"{prefix}.{pname}"
    # init_params stores these side by side, so the scan need not concatenate them per call
    compiler.stacks += [[keys[pname] for pname in group] for group in scan.stacks()]
    operands = (prev.name, "mask", *initial, *params)
    n = len(operands)
    fields = ", ".join(f"{{{i}}}" for i in range(n))
    param_fields = "".join(f", {{{i}}}" for i in range(2 + len(states), n))
    reverse = f", {scan.n['reverse']}=True" if direction == "bwd" else ""
    # the backward returns the gradients by the forward's argument names
    keys = ([scan.n["xs"], scan.n["mask"]] + [scan.state_names[s]["init"] for s in cell.states]
            + [scan.V(p) for p in cell.params])
    rule = TensorOp(fn, f"{fn}_forward({fields}{reverse})", (None,) * n, aux=("state", "saved"),
                    helpers=("_stacked",),
                    joint=f"{fn}_backward({{g}}, {{saved}}, {{0}}, {{1}}{param_fields}, "
                          f"{scan.n['need_dx']}={{need0}})", joint_keys=tuple(keys))
    aux_base = fn if direction is None else f"{var_prefix}_cell"
    node = g.add(Node(compiler.namer.fresh(var_prefix + "_out" if direction else name), "scan", operands,
                      shape=("B", "T", hidden), dtype=compiler.dtype, line=layer.index,
                      attrs={"rule": rule, "aux": {"state": compiler.namer.fresh(f"{aux_base}_state"),
                                                   "saved": compiler.namer.fresh(f"{aux_base}_saved")},
                             "states": [f"{prefix}.{s}" for s in states]}))
    compiler.final_states.append((node.attrs["aux"]["state"], [f"{prefix}.{s}" for s in states]))
    return node
