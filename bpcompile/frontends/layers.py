"""Layer specs (MLPs) -> tensor computation graph -> standalone module.

A layer is a rewrite into primitives: `linear` into one `linear` node,
`sigmoid`/`tanh`/`relu`/`softplus` into one elementwise node, `activation`
into the elementwise nodes of its expression (parsed by the safe parser), and
the loss into one fused node whose adjoint is the lecture's simple form
((p - onehot(y))/B for softmax cross-entropy).  Shapes are inferred here, so a
mismatch is a compile-time error that names the layer and its YAML line.
"""

import math
from dataclasses import dataclass, field

from ..errors import SpecError
from .programs import _Lowering
from . import image_layers, loss_layers, norm_layers, sequence_layers
from ..core.ir import Graph, Node, shape_text
from ..core.losses import Loss
from ..limits import MAX_LAYER_DEPTH, MAX_LAYERS, MAX_PARAMETERS, shorten
from ..core.naming import LAYER_LOCALS, SymbolTable
from ..core.parser import check_identifier, parse_expression, symbol, Assignment

LAYER_SPEC_KEYS = {"name", "dtype", "input", "layers", "loss", "l2", "train", "description"}
DTYPES = ("float32", "float64")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "softplus")


@dataclass
class Layer:
    index: int          # 1-based position in `layers:`
    kind: str
    name: str
    options: dict = field(default_factory=dict)

    def label(self):
        return f"layer {self.index} ({self.name})"


# A linear layer's W with at least this many entries is stored transposed (see linear).
TRANSPOSED_WEIGHTS = 16384

@dataclass
class Param:
    key: str            # "linear1.W": the name in PARAMS and in the params dict
    var: str            # "linear1_W": the variable in generated code
    shape: tuple
    fan_in: int = 0
    fan_out: int = 0
    is_weight: bool = True
    transposed: bool = False   # init_params stores it as the transpose of a row-major array
    init: str = ""             # "ones": init_params sets it to ones (a batch norm's gamma)


@dataclass
class Buffer:
    """A value kept in the params dict that is not a parameter: no gradient, no optimizer
    step (a batch norm's running statistics, which train mode updates in place)."""
    key: str            # "bn1.running_mean": the name in BUFFERS and in the params dict
    shape: tuple
    init: str           # "zeros" | "ones"


class LayerCompiler:
    """Walks `layers:` once, adding nodes and inferring shapes."""

    def __init__(self, spec, reserved=(), dtype=None):
        """`reserved`: the names the generated module defines itself (its helpers);
        `dtype` overrides the spec's (float64 for finite-difference checks)."""
        self.spec = spec
        spec.check_keys(LAYER_SPEC_KEYS)
        self.name = spec.get("name", default="model")
        try:
            check_identifier(self.name, "name")
        except SpecError as err:
            raise spec.error(err.message, "name") from None
        self.dtype = spec.get("dtype", default="float32")
        if self.dtype not in DTYPES:
            raise spec.error(f"dtype must be one of {', '.join(DTYPES)}, got {shorten(self.dtype)}", "dtype")
        self.dtype = dtype or self.dtype
        self.vocab = None
        self.sequence = self._is_sequence()
        self.input_shape = self._input_shape()
        self.graph = Graph(self.name)
        # x, y, mask and J are the template's own names (LAYER_LOCALS): graph nodes that
        # no minted name can equal
        self.namer = SymbolTable(reserved=LAYER_LOCALS | set(reserved))
        self.graph.names = self.namer
        self.params = []
        self.layers = []
        self.scans = []              # recurrent layers' loops over time (template contexts)
        self.states = []             # (state key, initial-state variable, size)
        self.final_states = []       # (tuple variable, state keys)
        self.notes = []              # paragraphs for the module docstring
        self.stacks = []             # groups of parameter keys init_params stores side by side
        self.counts = {}
        self.parameter_count = 0
        self.modes = False           # a layer behaves differently in train and eval mode
        self.buffers = []            # Buffers, in the order of their layers
        self.vjp = False             # `loss: none`: the module's backward takes the output's adjoint

    def _is_sequence(self):
        layers = self.spec.get("layers")
        kinds = set()
        for entry in layers if isinstance(layers, list) else []:
            kinds.add(entry if isinstance(entry, str) else
                      next(iter(entry)) if isinstance(entry, dict) and len(entry) == 1 else None)
        return isinstance(self.spec.get("input"), dict) or bool(kinds & set(sequence_layers.SEQUENCE_KINDS))

    def next_name(self, layer):
        """The next free default name of `layer`'s kind (for stacked layers), never the
        name of another layer of the spec."""
        while True:
            self.counts[layer.kind] = self.counts.get(layer.kind, 0) + 1
            name = f"{layer.kind}{self.counts[layer.kind]}"
            if name not in self.layer_names:
                self.layer_names.add(name)
                return name

    # --- spec reading ---------------------------------------------------------------
    def _input_shape(self):
        shape = self.spec.get("input")
        if isinstance(shape, dict):
            self.spec.check_keys({"vocab"}, "input")
            vocab = shape.get("vocab")
            if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
                raise self.spec.error(f"input.vocab must be a positive integer, got {shorten(vocab)}", "input")
            self.vocab = vocab
            return ()
        if shape is None:
            raise self.spec.error("missing `input:` (the shape of one example, e.g. [64])")
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = [shape]
        if (not isinstance(shape, list) or not shape
                or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
            raise self.spec.error(f"input must be a list of positive integers, got {shorten(shape)}", "input")
        return tuple(shape)

    def _layer_entries(self):
        entries = self.spec.get("layers")
        if not isinstance(entries, list) or not entries:
            raise self.spec.error("layers must be a non-empty list", "layers")
        if len(entries) > MAX_LAYERS:
            raise self.spec.error(f"too many layers: {len(entries)} (at most {MAX_LAYERS})", "layers")
        parsed = [self._kind_and_options(i, entry) for i, entry in enumerate(entries)]
        self._check_depth(parsed)
        # A layer's name is the prefix of its parameter keys; default names (`linear2`)
        # skip the names the spec gives, so keys are unique by construction.
        explicit = {}
        for i, (kind, options) in enumerate(parsed):
            name = options.get("name")
            if name is None:
                continue
            try:
                check_identifier(name, "layer name")
            except SpecError as err:
                raise self.spec.error(f"layer {i + 1}: {err.message}", "layers", i) from None
            if name in explicit:
                raise self.spec.error(f"layer {i + 1} ({name}): the name {name!r} is already used "
                                      f"by layer {explicit[name] + 1}", "layers", i)
            explicit[name] = i
        self.layer_names = set(explicit)
        for i, (kind, options) in enumerate(parsed):
            name = options.pop("name", None)
            yield Layer(i + 1, kind, name if name is not None else self.next_name(Layer(i + 1, kind, "")),
                        options)

    def _check_depth(self, parsed):
        """Stacked recurrent layers count one each toward the layer limit."""
        total = 0
        for i, (kind, options) in enumerate(parsed):
            depth = options.get("layers", 1)
            if isinstance(depth, int) and not isinstance(depth, bool) and depth > MAX_LAYER_DEPTH:
                raise self.spec.error(f"layer {i + 1}: layers is {depth}; at most {MAX_LAYER_DEPTH} "
                                      "stacked layers", "layers", i)
            total += depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else 1
        if total > MAX_LAYERS:
            raise self.spec.error(f"too many layers: {total} with stacked layers counted (at most "
                                  f"{MAX_LAYERS})", "layers")

    def _kind_and_options(self, i, entry):
        if isinstance(entry, str):
            return entry, {}
        if isinstance(entry, dict) and len(entry) == 1:
            kind, value = next(iter(entry.items()))
            if not isinstance(kind, str):
                raise self.spec.error(f"layer {i + 1}: the layer kind must be a name", "layers", i)
            if value is None:
                return kind, {}
            if isinstance(value, dict):
                return kind, dict(value)
            return kind, {SHORT_OPTION.get(kind, "value"): value}
        raise self.spec.error(f"layer {i + 1}: write a layer as `kind` or `kind: options` "
                              f"(one key), got {shorten(entry)}", "layers", i)

    def error(self, layer, message, *path):
        return self.spec.error(f"{layer.label()}: {message}", "layers", layer.index - 1,
                               *(path and (layer.kind,) + path))

    def positive_int(self, layer, key):
        value = layer.options.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(layer, f"{key} must be a positive integer, got {shorten(value)}", key)
        return value

    def flag(self, layer, key, default=False):
        value = layer.options.get(key, default)
        if not isinstance(value, bool):
            raise self.error(layer, f"{key} must be true or false, got {shorten(value)}", key)
        return value

    def _options(self, layer, allowed):
        for key in layer.options:
            if key not in allowed:
                known = ", ".join(sorted(allowed | {"name"}))
                raise self.error(layer, f"unknown option {shorten(key)} for {layer.kind}; known: {known}")

    # --- building ---------------------------------------------------------------------
    def compile(self):
        g = self.graph
        if self.sequence:
            x_dtype = "int64" if self.vocab else self.dtype
            current = g.add(Node("x", "input", shape=("B", "T") + self.input_shape, dtype=x_dtype, user=True))
            g.add(Node("mask", "input", shape=("B", "T"), dtype=self.dtype, user=True))
        else:
            current = g.add(Node("x", "input", shape=("B",) + self.input_shape, dtype=self.dtype, user=True))
        layers = list(self._layer_entries())
        for layer in layers:
            if layer.kind not in LAYER_KINDS:
                known = ", ".join(sorted(LAYER_KINDS))
                raise self.spec.error(f"layer {layer.index} ({layer.kind}): unknown layer kind; "
                                      f"known kinds: {known}", "layers", layer.index - 1)
        for layer in image_layers.pool_before_relu(layers, self.notes):
            self.layers.append(layer)
            current = LAYER_KINDS[layer.kind](self, layer, current)
        if self.spec.get("loss") == "none":
            output_vjp(self, current)
        else:
            loss_layers.add_loss(self, current)
        return self.graph

    def param(self, layer, suffix, shape, fan_in=0, fan_out=0, is_weight=True, key_prefix=None,
              transposed=False, init=""):
        key = f"{key_prefix or layer.name}.{suffix}"
        if any(p.key == key for p in self.params) or any(b.key == key for b in self.buffers):
            raise self.error(layer, f"the parameter key {shorten(key)} is already used by another layer; "
                             "rename one of the layers")
        self.parameter_count += math.prod(shape)
        if self.parameter_count > MAX_PARAMETERS:
            raise self.error(layer, f"the model has more than {MAX_PARAMETERS:,} parameters "
                             f"({self.parameter_count:,} so far)")
        var = self.namer.fresh(key.replace(".", "_"))
        self.params.append(Param(key, var, shape, fan_in, fan_out, is_weight, transposed, init))
        node = Node(var, "input", shape=shape, dtype=self.dtype, user=True, attrs={"param": key})
        return self.graph.add(node)

    def buffer(self, layer, suffix, shape, init):
        """Add the buffer `<layer>.<suffix>` (BUFFERS); returns its key."""
        key = f"{layer.name}.{suffix}"
        if any(p.key == key for p in self.params) or any(b.key == key for b in self.buffers):
            raise self.error(layer, f"the key {shorten(key)} is already used by another layer; "
                             "rename one of the layers")
        self.buffers.append(Buffer(key, shape, init))
        return key

    def node(self, layer, op, operands, shape, name=None, **attrs):
        name = self.namer.fresh(name or layer.name)
        return self.graph.add(Node(name, op, tuple(operands), shape=shape, dtype=self.dtype,
                                   attrs=attrs, line=layer.index))

    def lower(self, target, expr, shape, line=0):
        """Add the elementwise nodes of `target = expr` (a SymPy expression)."""
        before = set(self.graph.nodes)
        names = sorted(s.name for s in expr.free_symbols)
        _Lowering(self.graph, self.namer).assignment(Assignment(target, expr, line, 1, names, {}))
        for name in self.graph.nodes:
            if name not in before:
                self.graph.nodes[name].shape = shape
                self.graph.nodes[name].dtype = self.dtype
        return self.graph[target]


SHORT_OPTION = {"linear": "out", "activation": "expr"}


def _linear(compiler, layer, prev):
    compiler._options(layer, {"out", "bias"})
    if "out" not in layer.options:
        raise compiler.error(layer, "missing `out:` (the number of outputs)")
    out = compiler.positive_int(layer, "out")
    bias = layer.options.get("bias", True)
    if not isinstance(bias, bool):
        raise compiler.error(layer, f"bias must be true or false, got {shorten(bias)}", "bias")
    per_step = compiler.sequence and len(prev.shape) == 3
    if len(prev.shape) != 2 and not per_step:
        raise compiler.error(layer, f"linear needs a (B, features) input, got shape "
                             f"{shape_text(prev.shape)}; add a flatten layer before it")
    n_in = prev.shape[-1]
    # A large W is stored transposed: x @ W.T then multiplies two row-major arrays, which
    # BLAS does fastest (a small one stays row-major for the one-example step's updates).
    W = compiler.param(layer, "W", (out, n_in), fan_in=n_in, fan_out=out,
                       transposed=out * n_in >= TRANSPOSED_WEIGHTS)
    op = "linear_seq" if per_step else "linear"
    shape = prev.shape[:-1] + (out,)
    if bias:
        b = compiler.param(layer, "b", (out,), is_weight=False)
        return compiler.node(layer, op, (prev.name, W.name, b.name), shape)
    return compiler.node(layer, op + "_nobias", (prev.name, W.name), shape)


def _activation(kind):
    def build(compiler, layer, prev):
        compiler._options(layer, set())
        return compiler.node(layer, kind, (prev.name,), prev.shape)
    return build


def _user_activation(compiler, layer, prev):
    compiler._options(layer, {"expr"})
    text = layer.options.get("expr")
    if not isinstance(text, str):
        raise compiler.error(layer, f"activation needs an expression in x, got {shorten(text)}")
    try:
        expr, names, cols = parse_expression(text)
    except SpecError as err:
        path = ("layers", layer.index - 1, layer.kind) + (("expr",) if isinstance(
            compiler.spec.get("layers", layer.index - 1, layer.kind), dict) else ())
        located = compiler.spec.relocate(err, *path)
        raise SpecError(f"{layer.label()}: {err.message}", located.file, located.line, located.col) from None
    others = [n for n in names if n != "x"]
    if others:
        raise compiler.error(layer, f"an activation is an expression in x only; {others[0]!r} is unknown")
    if "x" not in names:
        raise compiler.error(layer, "the activation does not use x")
    expr = expr.xreplace({symbol("x"): symbol(prev.name)})
    name = compiler.namer.fresh(layer.name)
    try:
        node = compiler.lower(name, expr, prev.shape, line=layer.index)
    except SpecError as err:
        raise compiler.error(layer, err.message) from None
    if prev.name not in compiler.graph.ancestors(node.name):
        raise compiler.error(layer, f"the activation {shorten(text.strip())} is a constant once "
                             "simplified: it does not depend on x")
    return node


def _sequence_builders():
    return {"embedding": sequence_layers.embedding,
            **{kind: sequence_layers.recurrent for kind in sequence_layers.RECURRENT_KINDS}}


SHORT_OPTION.update({"embedding": "dim", **norm_layers.SHORT_OPTION})

LAYER_KINDS = {
    **_sequence_builders(),
    **image_layers.LAYER_KINDS,
    **norm_layers.LAYER_KINDS,
    "linear": _linear,
    "activation": _user_activation,
    **{kind: _activation(kind) for kind in ACTIVATIONS},
}


def output_vjp(compiler, out):
    """`loss: none`: the graph's output is the last layer's output; backward takes its
    adjoint (a vector-Jacobian product) and also returns the input's, so the module can
    be one piece of a larger model."""
    if compiler.sequence:
        raise compiler.spec.error("loss: none is supported for specs without a time axis only", "loss")
    if compiler.spec.get("l2"):
        raise compiler.spec.error("l2 needs a loss; with loss: none, add the penalty in the "
                                  "larger model", "l2")
    compiler.vjp = True
    compiler.loss = NO_LOSS
    compiler.classes = math.prod(out.shape[1:])
    compiler.logits = out.name
    compiler.graph.output = out.name
    compiler.graph.wrt = [p.var for p in compiler.params] + ["x"]


NO_LOSS = Loss("none", "", "", "The network's output",
               "none: forward returns the network's output and backward takes its adjoint",
               takes_logits=False)
