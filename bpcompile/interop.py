"""From and to PyTorch: a layer spec's parameters as the `state_dict` of the
PyTorch model one would write for it, and back.

No torch import: a state_dict here is a dict of NumPy arrays, as
`{k: v.numpy() for k, v in model.state_dict().items()}` gives, and `to_torch`
returns one that `model.load_state_dict({k: torch.from_numpy(v) ...})` takes.

The PyTorch model has one module per layer of `layers:` that has parameters,
named after the bpcompile layer (`linear1`, `conv2d1`, `lstm1`, or the layer's
`name:`), or, with `sequential=True`, numbered by its position in `layers:`
as in `nn.Sequential` (where the activations, pools and flatten layers take
their indices too).  `prefix` is put before every key and `rename` maps a
layer name to another module path.

    layer            PyTorch module                     bpcompile parameters
    linear           nn.Linear  weight (out, in), bias  W (out, in), b
    conv2d           nn.Conv2d  weight (out, in, kh, kw), bias   W, b
    embedding        nn.Embedding  weight (vocab, dim)  E
    rnn              nn.RNN     weight_ih_l0, weight_hh_l0, bias_ih_l0 + bias_hh_l0
                                                        W_xh, W_hh, b_h
    lstm             nn.LSTM    rows [i, f, g, o] of weight_ih_lk / weight_hh_lk
                                                        W_xi W_xf W_xc W_xo, W_hi ...
    recurrent (GRU)  nn.GRU     rows [r, z, n]          as named in the equations
    batchnorm        nn.BatchNorm1d (a (B, F) input) / nn.BatchNorm2d (B, C, H, W):
                     weight, bias, running_mean, running_var, num_batches_tracked
                                                        gamma, beta, and the buffers
                                                        running_mean, running_var

A stacked layer (`layers: 2`: lstm1, lstm2) is one PyTorch module with
`num_layers=2` (suffixes _l0, _l1), and the `bwd` direction of a bidirectional
layer is PyTorch's `_reverse`.  Where bpcompile has one bias for a gate and
PyTorch two (bias_ih and bias_hh), `from_torch` sums them and `to_torch` puts
the sum in bias_ih and zeros in bias_hh: the same function, not the same
numbers.  Every other entry maps one to one.  A cell that computes something
PyTorch has no layer for (an LSTM with peepholes, Cho's GRU with
W_hn @ (r * h_prev), a reverse-only recurrent layer) is refused, never mapped
approximately.

Batch norm's running statistics are buffers: `from_torch` returns them in the
params dict beside the parameters (the module's functions read them there) and
`to_torch` writes them back.  PyTorch's `num_batches_tracked` counter changes
nothing with a numeric momentum (bpcompile's is always one): `from_torch`
accepts it or its absence and ignores its value, `to_torch` writes a 0-d int64
0 so that a strict `load_state_dict` takes the dict.  Give nn.BatchNorm the
spec's eps and momentum; they are not in a state_dict.  Layers without
parameters (activations, dropout, pools, lrn, flatten) have no keys, but with
`sequential=True` each takes its index, as its nn module does in nn.Sequential.
"""

import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy as sp

from .errors import SpecError

LSTM_GATES = ("i", "f", "c", "o")          # PyTorch's order [i, f, g, o]; g is our c
GRU_GATES = ("r", "z", "n")                # PyTorch's order
RECURRENT_KINDS = ("rnn", "lstm", "recurrent")
TORCH_CLASSES = {"linear": "nn.Linear", "conv2d": "nn.Conv2d", "embedding": "nn.Embedding",
                 "rnn": "nn.RNN", "lstm": "nn.LSTM", "recurrent": "nn.GRU",
                 "batchnorm": "nn.BatchNorm2d"}    # nn.BatchNorm1d on a (B, F) input
BATCHNORM_BUFFERS = (("running_mean", "running_mean"), ("running_var", "running_var"))
COUNTER = "num_batches_tracked"            # PyTorch's batch norm counter (0-d int64)
REVERSE_ONLY = ("no PyTorch module computes a reverse-only {kind} (nn.{torch} runs forward, or "
                "both ways with bidirectional=True); use direction: bidirectional, or a forward "
                "layer over sequences you flip yourself")


@dataclass(frozen=True)
class Block:
    """A PyTorch tensor, or the rows [start, stop) of it (one gate of a stacked weight)."""

    key: str
    start: int = None
    stop: int = None

    def of(self, array):
        return array if self.start is None else array[self.start:self.stop]

    def __str__(self):
        return self.key if self.start is None else f"{self.key}[{self.start}:{self.stop}]"


class TorchNames(dict):
    """bpcompile key -> tuple of Blocks whose sum is that entry of the params dict
    (the parameters, then batch norms' buffers).

    `torch_shapes` lists every key of the PyTorch state_dict with its shape, in
    the order PyTorch gives them; `param_shapes` and `buffer_shapes` are the
    module's PARAMS and BUFFERS; `torch_buffers` the state_dict keys that are
    buffers, not parameters (no gradient); `counters` the num_batches_tracked
    keys among them; `modules` names the PyTorch module of each layer
    (`{"lstm1": ("nn.LSTM", "lstm1")}`); `dtype` is the module's."""

    def __init__(self, sources, param_shapes, torch_shapes, modules, dtype, stacks,
                 buffer_shapes=None, torch_buffers=(), counters=()):
        super().__init__(sources)
        self.param_shapes = param_shapes
        self.buffer_shapes = dict(buffer_shapes or {})
        self.torch_shapes = torch_shapes
        self.torch_buffers = tuple(torch_buffers)
        self.counters = tuple(counters)
        self.modules = modules
        self.dtype = np.dtype(dtype)
        self.stacks = stacks

    def exact(self):
        """True when every parameter is one block: then to_torch(from_torch(sd)) == sd."""
        return all(len(blocks) == 1 for blocks in self.values())

    def table(self):
        """The mapping as text, one parameter a line."""
        width = max(map(len, self), default=0)
        return "\n".join(f"{key:<{width}}  {' + '.join(map(str, blocks))}"
                         for key, blocks in self.items())

    def __str__(self):
        return self.table()


def torch_names(spec, *, sequential=False, prefix="", rename=None):
    """The PyTorch state_dict keys of a layer spec's parameters (see the module doc).

    `spec`: a spec file path, a spec dict, a `Compiled` layer spec, or a generated
    module (its spec is read back from its docstring).  `sequential=True` names
    modules by their 0-based position in `layers:` (nn.Sequential); `prefix`
    ("model.") goes before every key; `rename` maps a layer name (`lstm1`) to
    the module path to use instead (`"encoder"`)."""
    model, dtype = _layer_model(spec)
    modules = _module_paths(model, sequential, prefix, rename)
    sources, torch_shapes = {}, {}
    for layer, scans in _layer_scans(model):
        mapper = _MAPPERS[layer.kind]
        mapper(model, layer, scans, modules[layer.name][1], sources, torch_shapes)
    param_shapes = {p.key: tuple(p.shape) for p in model.params}
    buffer_shapes = {b.key: tuple(b.shape) for b in model.buffers}
    ordered = {key: sources[key] for key in _layer_order(param_shapes, buffer_shapes)}
    torch_buffers = [blocks[0].key for key, blocks in ordered.items() if key in buffer_shapes]
    counters = [key for key in torch_shapes if key.endswith("." + COUNTER)]
    return TorchNames(ordered, param_shapes, torch_shapes, modules, dtype,
                      [list(group) for group in model.stacks], buffer_shapes,
                      torch_buffers + counters, counters)


def _layer_order(param_shapes, buffer_shapes):
    """The params dict's keys, each layer's buffers right after its parameters."""
    keys = list(param_shapes)
    for buffer in buffer_shapes:
        layer = buffer.rsplit(".", 1)[0] + "."
        last = max(i for i, key in enumerate(keys) if key.startswith(layer))
        keys.insert(last + 1, buffer)
    return keys


def from_torch(spec, state_dict, **options):
    """A PyTorch state_dict (NumPy arrays) -> bpcompile params, cast to the module's
    DTYPE, with batch norms' running statistics (BUFFERS) among them; a batch
    norm's num_batches_tracked may be there or not and is ignored.  Missing or
    extra keys and wrong shapes raise ValueError naming the key.
    `options` are torch_names' (sequential, prefix, rename); `spec` may also be
    what torch_names returned."""
    names = _names(spec, options)
    arrays = _checked(state_dict, names.torch_shapes, "state_dict", "the PyTorch model",
                      optional=names.counters)
    params = {}
    for key, blocks in names.items():
        total = blocks[0].of(arrays[blocks[0].key]).astype(np.float64)
        for block in blocks[1:]:
            total = total + block.of(arrays[block.key])
        params[key] = np.ascontiguousarray(total, dtype=names.dtype)
    for group in names.stacks:
        _side_by_side(params, group)
    return params


def to_torch(spec, params, *, grad=False, dtype=None, **options):
    """bpcompile params -> a PyTorch state_dict of NumPy arrays (in PyTorch's key
    order, at `dtype`, by default the module's DTYPE).  A parameter that is a sum
    of two PyTorch tensors goes into the first (bias_ih) and the other is zero.
    `params` holds the module's BUFFERS too (a batch norm's running statistics);
    a batch norm's num_batches_tracked is a 0-d int64 0.

    grad=True maps gradients instead (a dict with PARAMS' keys, as value_and_grad
    gives): the gradient of a sum reaches each of its terms, so a summed bias's
    gradient goes to both bias_ih and bias_hh, as PyTorch's autograd gives them;
    the result has the keys of model.named_parameters(), no buffers."""
    names = _names(spec, options)
    shapes = names.param_shapes if grad else {**names.param_shapes, **names.buffer_shapes}
    arrays = _checked(params, shapes, "grads" if grad else "params", "the spec")
    dtype = np.dtype(dtype or names.dtype)
    state = {key: np.zeros(shape, dtype=np.int64 if key in names.counters else dtype)
             for key, shape in names.torch_shapes.items()
             if not (grad and key in names.torch_buffers)}
    for key in shapes:
        for block in names[key] if grad else names[key][:1]:
            block.of(state[block.key])[...] = arrays[key]
    return state


# --- what the spec is ----------------------------------------------------------------

def _names(spec, options):
    if isinstance(spec, TorchNames):
        if options:
            raise TypeError(f"{', '.join(options)}: give these to torch_names, not with its result")
        return spec
    return torch_names(spec, **options)


def _layer_model(spec):
    """(LayerCompiler, dtype) of whatever names the spec."""
    from .result import Compiled
    if isinstance(spec, types.ModuleType):
        return _module_model(spec)
    if isinstance(spec, Compiled):
        compiled = spec
    elif isinstance(spec, (str, Path)):
        from .compiler import compile_file
        if not Path(spec).is_file():
            raise SpecError(f"no spec file {str(spec)[:80]!r}: give the path of a layer spec (.yaml)")
        compiled = compile_file(spec)
    elif isinstance(spec, dict):
        compiled = _compile_dict(spec)
    else:
        raise SpecError(f"cannot read a layer spec from a {type(spec).__name__}: give a spec file "
                        "path, a spec dict, a compiled spec or a generated module")
    if compiled.model is None:
        raise SpecError(f"{compiled.name} is a program, not a layer spec: it has no PyTorch layers")
    return compiled.model, compiled.model.dtype


def _compile_dict(data):
    import yaml
    from .compiler import compile_spec, load_spec
    try:
        text = yaml.safe_dump(data, sort_keys=False)
    except (yaml.YAMLError, RecursionError, ValueError):
        raise SpecError("a spec dict may hold only strings, numbers, booleans, None, lists "
                        "and dicts") from None
    return compile_spec(load_spec(text))


def _module_model(module):
    """A generated module's layer spec, compiled again from the quote in its docstring
    (the quote is rebuilt from the validated spec), checked against its PARAMS."""
    from .compiler import compile_spec, load_spec
    params = getattr(module, "PARAMS", None)
    doc = module.__doc__ or ""
    marker = "Compiled from:\n"
    where = f"<docstring of {module.__name__}>"
    if not isinstance(params, dict) or marker not in doc:
        raise SpecError(f"{module.__name__} is not a module generated from a layer spec "
                        "(no PARAMS, or no quoted spec in its docstring)")
    quote = textwrap.dedent(doc.split(marker, 1)[1]).strip("\n") + "\n"
    try:
        model = compile_spec(load_spec(quote, where)).model
    except SpecError as err:
        raise SpecError(f"cannot read the spec back from {module.__name__}'s docstring "
                        f"({err.message}); give the spec file instead") from None
    if model is None or {p.key: tuple(p.shape) for p in model.params} != dict(params):
        raise SpecError(f"the spec quoted in {module.__name__}'s docstring does not give its PARAMS "
                        "(the quote may be shortened); give the spec file instead")
    return model, np.dtype(module.DTYPE)


def _module_paths(model, sequential, prefix, rename):
    """layer name -> (PyTorch class, module path) for the layers with parameters."""
    rename = dict(rename or {})
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    with_params = [layer for layer in model.layers if layer.kind in TORCH_CLASSES]
    known = {layer.name for layer in with_params}
    for name, path in rename.items():
        if name not in known:
            raise ValueError(f"rename: no layer with parameters is called {name!r}; "
                             f"the layers are {', '.join(sorted(known))}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"rename[{name!r}]: expected a module path (a non-empty str)")
    paths = {}
    for layer in with_params:
        # layer.index counts every entry of `layers:` (activations, dropout, pools, lrn,
        # flatten), each of which is one module of nn.Sequential
        path = rename.get(layer.name, str(layer.index - 1) if sequential else layer.name)
        paths[layer.name] = (_torch_class(model, layer), prefix + path)
    return paths


def _torch_class(model, layer):
    """The PyTorch class of a layer; batch norm's depends on its input's rank."""
    if layer.kind != "batchnorm":
        return TORCH_CLASSES[layer.kind]
    node = next(node for node in model.graph.nodes.values()
                if node.op == "batchnorm" and node.line == layer.index)
    return "nn.BatchNorm1d" if len(node.shape) == 2 else "nn.BatchNorm2d"


def _layer_scans(model):
    """(layer, [(prefix, depth k, reverse, {name: Param})...]) for each layer with
    parameters; a recurrent layer has one entry per stacked layer and direction."""
    groups = []
    for p in model.params:
        prefix, name = p.key.rsplit(".", 1)
        if not groups or groups[-1][0] != prefix:
            groups.append((prefix, {}))
        groups[-1][1][name] = p
    cursor = iter(groups)
    for layer in sorted(model.layers, key=lambda layer: layer.index):
        if layer.kind not in TORCH_CLASSES:
            continue
        if layer.kind not in RECURRENT_KINDS:
            prefix, params = next(cursor)
            yield layer, [(prefix, 0, False, params)]
            continue
        if layer.options.get("direction") == "reverse":
            torch = TORCH_CLASSES[layer.kind].split(".")[1]
            kind = "GRU" if layer.kind == "recurrent" else torch.upper()
            raise model.error(layer, REVERSE_ONLY.format(kind=kind, torch=torch), "direction")
        directions = (False, True) if layer.options.get("bidirectional") else (False,)
        scans = []
        for k in range(layer.options.get("layers", 1)):
            for reverse in directions:
                prefix, params = next(cursor)
                scans.append((prefix, k, reverse, params))
        yield layer, scans


# --- one function per kind of layer: Blocks of each parameter, PyTorch's shapes --------

def _whole_tensors(suffixes):
    def mapper(model, layer, scans, module, sources, torch_shapes):
        (_, _, _, params), = scans
        for ours, theirs in suffixes:
            if ours in params:
                key = f"{module}.{theirs}"
                torch_shapes[key] = tuple(params[ours].shape)
                sources[params[ours].key] = (Block(key),)
    return mapper


def _batchnorm(model, layer, scans, module, sources, torch_shapes):
    """weight, bias, running_mean, running_var, num_batches_tracked, PyTorch's order."""
    _whole_tensors((("gamma", "weight"), ("beta", "bias")))(model, layer, scans, module,
                                                            sources, torch_shapes)
    (_, _, _, params), = scans
    size = params["gamma"].shape
    for ours, theirs in BATCHNORM_BUFFERS:
        key = f"{module}.{theirs}"
        torch_shapes[key] = tuple(size)
        sources[f"{layer.name}.{ours}"] = (Block(key),)
    torch_shapes[f"{module}.{COUNTER}"] = ()


def _rnn(model, layer, scans, module, sources, torch_shapes):
    for prefix, k, reverse, params in scans:
        H, inputs = params["W_xh"].shape
        keys = _recurrent_keys(module, k, reverse, torch_shapes, inputs, H, 1, bias=True)
        sources[params["W_xh"].key] = (Block(keys["weight_ih"]),)
        sources[params["W_hh"].key] = (Block(keys["weight_hh"]),)
        sources[params["b_h"].key] = (Block(keys["bias_ih"]), Block(keys["bias_hh"]))


def _lstm(model, layer, scans, module, sources, torch_shapes):
    if layer.options.get("peephole"):
        raise model.error(layer, "an LSTM with peepholes has no PyTorch layer (nn.LSTM has none); "
                          "it cannot be mapped to or from a state_dict", "peephole")
    for prefix, k, reverse, params in scans:
        H, inputs = params["W_xi"].shape
        keys = _recurrent_keys(module, k, reverse, torch_shapes, inputs, H, len(LSTM_GATES), bias=True)
        for g, gate in enumerate(LSTM_GATES):
            rows = (g * H, (g + 1) * H)
            sources[params[f"W_x{gate}"].key] = (Block(keys["weight_ih"], *rows),)
            sources[params[f"W_h{gate}"].key] = (Block(keys["weight_hh"], *rows),)
            sources[params[f"b_{gate}"].key] = (Block(keys["bias_ih"], *rows),
                                                Block(keys["bias_hh"], *rows))


def _gru(model, layer, scans, module, sources, torch_shapes):
    """A user cell, mapped to nn.GRU only when its equations are nn.GRU's."""
    roles = _gru_roles(model, layer)
    has_bias = any(kind.startswith("bias") for kind, _ in roles.values())
    input_weight = next(name for name, (kind, _) in roles.items() if kind == "weight_ih")
    for prefix, k, reverse, params in scans:
        H, inputs = params[input_weight].shape
        keys = _recurrent_keys(module, k, reverse, torch_shapes, inputs, H, len(GRU_GATES), bias=has_bias)
        for name, (kind, gate) in roles.items():
            rows = (GRU_GATES.index(gate) * H, (GRU_GATES.index(gate) + 1) * H)
            if kind == "bias_sum":
                sources[params[name].key] = (Block(keys["bias_ih"], *rows), Block(keys["bias_hh"], *rows))
            else:
                sources[params[name].key] = (Block(keys[kind], *rows),)


def _recurrent_keys(module, k, reverse, torch_shapes, inputs, H, gates, bias):
    """Add the keys of stacked layer k, one direction, in PyTorch's order: each
    tensor stacks the gates' rows (H each)."""
    suffix = f"_l{k}" + ("_reverse" if reverse else "")
    shapes = {"weight_ih": (gates * H, inputs), "weight_hh": (gates * H, H)}
    if bias:
        shapes.update(bias_ih=(gates * H,), bias_hh=(gates * H,))
    keys = {}
    for kind, shape in shapes.items():
        keys[kind] = f"{module}.{kind}{suffix}"
        torch_shapes[keys[kind]] = shape
    return keys


_MAPPERS = {
    "linear": _whole_tensors((("W", "weight"), ("b", "bias"))),
    "conv2d": _whole_tensors((("W", "weight"), ("b", "bias"))),
    "embedding": _whole_tensors((("E", "weight"),)),
    "rnn": _rnn,
    "lstm": _lstm,
    "recurrent": _gru,
    "batchnorm": _batchnorm,
}


# --- is a user cell nn.GRU? --------------------------------------------------------------

GRU_FORM = ("nn.GRU is h = (1 - z) * n + z * h_prev, n = tanh(W_in @ x + b_in + r * (W_hn @ h_prev "
            "+ b_hn)), with gates r and z = sigmoid(W_iz @ x + W_hz @ h_prev + b_z)")


class _NotGRU(Exception):
    """Why a cell is not nn.GRU; `param` names the parameter to point at, if any."""

    def __init__(self, message, param=None):
        super().__init__(message)
        self.message, self.param = message, param


def _gru_roles(model, layer):
    """{parameter name: (kind, gate)} of a user cell that is nn.GRU, where kind is
    weight_ih, weight_hh, bias_ih, bias_hh or bias_sum (one bias for both);
    else a SpecError at the layer (at the equation when one is to blame)."""
    from .core.parser import parse_program
    from .core.primitives import matmul
    text = layer.options["equations"]
    states = layer.options.get("state", ["h"])
    states = [states] if isinstance(states, str) else states
    assignments = parse_program(text, matmul=matmul)
    try:
        if len(states) != 1:
            raise _NotGRU(f"the cell has {len(states)} states; nn.GRU has one")
        return _gru_analysis(assignments, states[0])
    except _NotGRU as why:
        message = f"the cell is not PyTorch's GRU: {why.message}. {GRU_FORM}"
        lines = [a for a in assignments if why.param in a.names]
        if lines:
            err = SpecError(f"{layer.label()}: {message}", line=lines[0].line, col=lines[0].col)
            raise model.spec.relocate(err, "layers", layer.index - 1, layer.kind, "equations") from None
        raise model.error(layer, message) from None


def _gru_analysis(assignments, state):
    from .core.parser import symbol
    from .core.primitives import sigmoid
    h_prev, x = symbol(f"{state}_prev"), symbol("x")
    h = _inlined(assignments)[state]
    gates = _top_applications(h)
    z = [g for g in gates if isinstance(g, sigmoid)]
    n = [g for g in gates if isinstance(g, sp.tanh)]
    if len(z) != 1 or len(n) != 1 or len(gates) != 2:
        raise _NotGRU(f"{state} is not (1 - z) * n + z * {state}_prev with one sigmoid z and one tanh n")
    z, n = z[0], n[0]
    Z, N = sp.Dummy("z"), sp.Dummy("n")
    if sp.expand(h.xreplace({z: Z, n: N}) - ((1 - Z) * N + Z * h_prev)) != 0:
        raise _NotGRU(f"{state} is not (1 - z) * n + z * {state}_prev")
    roles = {}
    n_terms = _classified(n.args[0], "n", x, h_prev, gated_by=sigmoid)
    resets = {r for (_, _, r) in n_terms if r is not None}
    if len(resets) != 1:
        raise _NotGRU("n has no reset gate r multiplying W_hn @ h_prev")
    r = resets.pop()
    for gate, terms in (("z", _classified(z.args[0], "z", x, h_prev)),
                        ("r", _classified(r.args[0], "r", x, h_prev)),
                        ("n", n_terms)):
        for name, kind, _ in terms:
            if name in roles:
                raise _NotGRU(f"{name} appears twice; each of nn.GRU's parameters appears once", name)
            roles[name] = (kind, gate)
    _check_gru_counts(roles)
    return roles


def _inlined(assignments):
    """target -> its expression in x, the previous states and the parameters."""
    from .core.parser import symbol
    values = {}
    for a in assignments:
        values[a.target] = a.expr.xreplace({symbol(t): v for t, v in values.items()})
    return values


def _top_applications(expr):
    """The distinct sigmoid/tanh applications of expr that are not inside another."""
    from .core.primitives import sigmoid
    if isinstance(expr, (sigmoid, sp.tanh)):
        return {expr}
    found = set()
    for arg in expr.args:
        found |= _top_applications(arg)
    return found


def _terms(expr):
    """expr as a sum of products, each a tuple of factors (Mul distributed over Add)."""
    if isinstance(expr, sp.Add):
        return [term for arg in expr.args for term in _terms(arg)]
    if isinstance(expr, sp.Mul):
        products = [()]
        for arg in expr.args:
            products = [p + t for p in products for t in _terms(arg)]
        return products
    return [(expr,)]


def _classified(argument, gate, x, h_prev, gated_by=None):
    """[(parameter name, kind, reset application or None)] of one gate's pre-activation:
    W @ x, W @ h_prev and a bias b, and in n (gated_by) r * (W @ h_prev) and r * b."""
    from .core.primitives import matvec
    terms = []
    for term in _terms(argument):
        gates = [f for f in term if gated_by is not None and isinstance(f, gated_by)]
        rest = [f for f in term if f not in gates]
        if len(gates) > 1 or len(rest) != 1:
            raise _NotGRU(f"{gate} has the term {_shown(term)}, which nn.GRU does not", _first_param(term))
        reset = gates[0] if gates else None
        factor = rest[0]
        if isinstance(factor, matvec) and isinstance(factor.args[0], sp.Symbol):
            W, v = factor.args
            if v == x and reset is None:
                terms.append((W.name, "weight_ih", None))
            elif v == h_prev and (reset is not None) == (gated_by is not None):
                terms.append((W.name, "weight_hh", reset))
            elif v == h_prev:
                raise _NotGRU(f"n has {W.name} @ h_prev outside the reset gate; nn.GRU has "
                              f"r * ({W.name} @ h_prev + b_hn)", W.name)
            elif gated_by is not None and h_prev in v.free_symbols:
                raise _NotGRU(f"n applies {W.name} to a product with h_prev, {W.name} @ (r * h_prev) "
                              f"as in Cho et al.'s GRU, while nn.GRU applies r after it: "
                              f"r * ({W.name} @ h_prev + b_hn)", W.name)
            else:
                raise _NotGRU(f"{gate} has the term {_shown(term)}, which nn.GRU does not", W.name)
        elif isinstance(factor, sp.Symbol) and factor not in (x, h_prev):
            terms.append((factor.name, "bias_hh" if reset is not None else "bias_ih", reset))
        else:
            raise _NotGRU(f"{gate} has the term {_shown(term)}, which nn.GRU does not", _first_param(term))
    return terms


def _shown(term):
    from .frontends.quote import printed
    text = printed(sp.Mul(*term, evaluate=False))
    return text if len(text) <= 80 else text[:77] + "..."


def _first_param(term):
    names = sorted(s.name for f in term for s in f.free_symbols)
    return names[0] if names else None


def _check_gru_counts(roles):
    """One W @ x and one W @ h_prev per gate; biases all absent (bias=False), or
    one or two per gate (two: bias_ih and bias_hh; one: their sum)."""
    for gate in GRU_GATES:
        kinds = [kind for kind, g in roles.values() if g == gate]
        for kind in ("weight_ih", "weight_hh"):
            if kinds.count(kind) != 1:
                raise _NotGRU(f"gate {gate} has {kinds.count(kind)} products with "
                              f"{'x' if kind == 'weight_ih' else 'h_prev'}; nn.GRU has one")
    biases = {gate: [name for name, (kind, g) in roles.items() if g == gate and kind.startswith("bias")]
              for gate in GRU_GATES}
    if not any(biases.values()):
        return
    for gate in ("r", "z"):
        if len(biases[gate]) not in (1, 2):
            raise _NotGRU(f"gate {gate} has {len(biases[gate])} biases; with biases, nn.GRU has "
                          "b_i and b_h in every gate (one bias here stands for their sum)")
        if len(biases[gate]) == 1:
            roles[biases[gate][0]] = ("bias_sum", gate)
        else:
            first, second = biases[gate]
            roles[first], roles[second] = ("bias_ih", gate), ("bias_hh", gate)
    kinds = sorted(roles[name][0] for name in biases["n"])
    if kinds != ["bias_hh", "bias_ih"]:
        raise _NotGRU("n needs one bias outside the reset gate and one inside it, "
                      "tanh(W_in @ x + b_in + r * (W_hn @ h_prev + b_hn)), as nn.GRU has")


# --- arrays -------------------------------------------------------------------------------

def _checked(arrays, shapes, what, owner, optional=()):
    """arrays[key] as float arrays of the expected shapes; ValueError naming a bad key.
    The `optional` keys may be absent."""
    if not isinstance(arrays, dict):
        raise ValueError(f"{what}: expected a dict of arrays, got {type(arrays).__name__}")
    missing = [key for key in shapes if key not in arrays and key not in optional]
    extra = [key for key in arrays if key not in shapes]
    if missing:
        raise ValueError(f"{what}: missing {_keys(missing)} (expected by {owner})")
    if extra:
        raise ValueError(f"{what}: unexpected {_keys(extra)} ({owner} has no such parameter; "
                         f"its keys are {_keys(list(shapes))})")
    checked = {}
    for key, shape in shapes.items():
        if key not in arrays:
            continue
        value = np.asarray(arrays[key])
        if value.dtype.kind not in "fiu":
            raise ValueError(f"{what}[{key!r}]: expected a float array, got {value.dtype} values")
        if value.shape != tuple(shape):
            raise ValueError(f"{what}[{key!r}]: expected shape {tuple(shape)}, got {value.shape}")
        checked[key] = value
    return checked


def _keys(keys, most=6):
    shown = ", ".join(repr(k) for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _side_by_side(params, keys):
    """Store params[keys] as consecutive row blocks of one array, as init_params does,
    so that the module's scan uses the block instead of concatenating it per call."""
    block = np.concatenate([params[key] for key in keys])
    start = 0
    for key in keys:
        rows = len(params[key])
        params[key] = block[start:start + rows]
        start += rows
