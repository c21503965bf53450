"""The loss of a layer spec: the spec's `loss:` (and `l2:`) as the graph's output J,
one fused loss node (core/losses.py) on the last layer's output."""

import math
from dataclasses import replace

import sympy as sp

from ..core.ir import Node, shape_text
from ..core.losses import LOSSES, OPTIONS_AUX
from ..core.parser import symbol
from ..limits import shorten


def add_loss(self, logits):
    """The loss node J of the spec's `loss:` on the last layer's output `logits`
    (`self`: the LayerCompiler)."""
    loss, options, path = _parse_loss(self.spec)
    last = self.layers[-1]
    if self.sequence:
        return _sequence_loss(self, loss, options, path, logits, last)
    if len(logits.shape) != 2:
        raise self.spec.error(f"loss {loss.name}: the last layer ({last.name}) gives shape "
                              f"{shape_text(logits.shape)}; a loss needs (B, K)", "loss")
    k = logits.shape[1]
    if loss.takes_logits and last.kind != "linear":
        raise self.spec.error(
            f"loss {loss.name} takes logits, but the last layer is {last.name} ({last.kind}); "
            f"end with a linear layer (the loss applies its own {loss.link})", "loss")
    if k < loss.min_outputs:
        raise self.spec.error(f"loss {loss.name} needs at least {loss.min_outputs} classes, but the "
                              f"last layer has {k} output; use sigmoid_binary_cross_entropy", "loss")
    arguments = _option_arguments(self.spec, loss, options, path, k, sequence=False)
    self.loss, self.classes = _described(loss, options), k
    self.logits = logits.name
    g = self.graph
    if loss.class_ids:
        g.add(Node("y", "input", shape=("B",), dtype="int64", user=True))
    else:
        g.add(Node("y", "input", shape=("B", k), dtype=self.dtype, user=True))
    op, aux_keys = (loss.options_op, OPTIONS_AUX) if arguments else (loss.op, loss.aux)
    aux = {key: self.namer.fresh(key) for key in aux_keys}
    l2 = self.spec.get("l2", default=0)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not 0 <= l2 < math.inf:
        raise self.spec.error(f"l2 must be a non-negative number (and finite), got {shorten(l2)}", "l2")
    if l2 and options.get("reduction") == "none":
        raise self.spec.error("l2 needs a number J; with reduction: none the loss is one per "
                              "example (drop l2, or use reduction: mean or sum)", "l2")
    weights = [p for p in self.params if p.is_weight]
    data_name = "J" if not (l2 and weights) else self.namer.fresh("data_loss")
    attrs = {"aux": aux, "fmt": {"options": arguments}} if arguments else {"aux": aux}
    g.add(Node(data_name, op, (logits.name, "y"), shape=_loss_shape(loss, options, ("B",), k),
               dtype=self.dtype, attrs=attrs))
    if l2 and weights:
        squares = [self.graph.add(Node(self.namer.fresh(f"{p.var}_sq"), "sum_squares", (p.var,),
                                       shape=(), dtype=self.dtype)).name for p in weights]
        total = sp.Add(*[symbol(s) for s in squares], evaluate=False) if len(squares) > 1 \
            else symbol(squares[0])
        penalty = sp.Mul(sp.Float(l2 / 2), total, evaluate=False)
        penalty_name = self.namer.fresh("l2_penalty")
        self.lower(penalty_name, penalty, shape=())
        self.lower("J", sp.Add(symbol(data_name), symbol(penalty_name), evaluate=False), shape=())
    g.output = "J"
    g.wrt = [p.var for p in self.params]


def _sequence_loss(self, loss, options, path, logits, last):
    if len(logits.shape) != 3 or last.kind != "linear" or logits.shape[-1] < loss.min_outputs:
        raise self.spec.error(f"loss {loss.name} takes per-step outputs: end with a linear "
                              f"layer of at least {loss.min_outputs} outputs", "loss")
    if self.spec.get("l2"):
        raise self.spec.error("l2 is not supported for sequence specs yet", "l2")
    k = logits.shape[-1]
    arguments = _option_arguments(self.spec, loss, options, path, k, sequence=True)
    self.loss, self.classes, self.logits = _described(loss, options), k, logits.name
    g = self.graph
    if loss.class_ids:
        g.add(Node("y", "input", shape=("B", "T"), dtype="int64", user=True))
    else:
        g.add(Node("y", "input", shape=("B", "T", k), dtype=self.dtype, user=True))
    op, aux_keys = ((loss.sequence_options_op, OPTIONS_AUX) if arguments
                    else (loss.sequence_op, loss.sequence_aux))
    aux = {key: self.namer.fresh(key) for key in aux_keys}
    attrs = {"aux": aux, "fmt": {"options": arguments}} if arguments else {"aux": aux}
    g.add(Node("J", op, (logits.name, "y", "mask"), shape=_loss_shape(loss, options, ("B", "T"), k),
               dtype=self.dtype, attrs=attrs))
    g.output = "J"
    g.wrt = [p.var for p in self.params] + [var for _, var, _ in self.states]


REDUCTIONS = ("mean", "sum", "none")


def _parse_loss(spec):
    """(the Loss record, its options dict, the spec path of the options) of `loss:`,
    which is a name or {name: {option: value, ...}}."""
    loss = spec.get("loss")
    if loss is None:
        raise spec.error(f"missing `loss:`; one of {', '.join(LOSSES)}")
    options, path = {}, ("loss",)
    if isinstance(loss, dict):
        if len(loss) != 1:
            raise spec.error(f"loss: give one loss, as {{name: {{option: value}}}}, got "
                             f"{len(loss)} keys", "loss")
        (loss, options), = loss.items()
        path = ("loss", loss)
    if not isinstance(loss, str) or loss not in LOSSES:
        raise spec.error(f"unknown loss {shorten(loss)}; known losses: {', '.join(LOSSES)}",
                         *path, key=len(path) > 1)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise spec.error(f"the options of loss {loss} must be a mapping {{option: value}}, "
                         f"got {shorten(options)}", *path)
    record = LOSSES[loss]
    if options:
        spec.check_keys(set(record.options), *path)
    reduction = options.get("reduction")
    if reduction is not None and reduction not in REDUCTIONS:
        raise spec.error(f"reduction must be one of {', '.join(REDUCTIONS)}, got {shorten(reduction)}",
                         *path, "reduction")
    return record, options, path


def _option_arguments(spec, loss, options, path, k, sequence):
    """The keyword arguments (code) of the loss's options op, or "" where the loss
    has its plain op (no options, or only the default reduction of cross-entropy)."""
    reduction = options.get("reduction")
    if loss.class_ids:
        weights = options.get("class_weights")
        if weights is not None:
            weights = _class_weights(spec, weights, k, (*path, "class_weights"))
        ignore = options.get("ignore_index")
        if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)
                                   or not -2**63 <= ignore < 2**63):
            raise spec.error(f"ignore_index must be a 64-bit integer (a label that adds no loss), got "
                             f"{shorten(ignore)}", *path, "ignore_index")
        if weights is None and ignore is None and reduction in (None, "mean"):
            return ""
        return (f"weights={_tuple(weights)}, ignore_index={ignore!r}, "
                f"reduction={(reduction or 'mean')!r}")
    reduction_code = repr(reduction or "batchmean")
    if loss.name == "mse":
        if reduction is None and not sequence:
            return ""
        return f"reduction={reduction_code}, half={reduction is None}"
    pos_weight = options.get("pos_weight")
    if pos_weight is not None:
        pos_weight = _pos_weight(spec, pos_weight, k, (*path, "pos_weight"))
    if pos_weight is None and reduction is None and not sequence:
        return ""
    return f"pos_weight={_tuple(pos_weight)}, reduction={reduction_code}"


def _non_negative_numbers(spec, values, where, what):
    """`values` as floats, refused with the position of the first that is not a finite
    number >= 0."""
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise spec.error(f"{what} must be finite numbers >= 0 (PyTorch accepts negative ones, "
                             f"but they make the weighted mean meaningless), got {shorten(v)}",
                             *where, i)
    return [float(v) for v in values]


def _class_weights(spec, weights, k, where):
    """class_weights: one non-negative number per class, not all 0."""
    if not isinstance(weights, list):
        raise spec.error(f"class_weights must be a list of {k} numbers (one per class), got "
                         f"{shorten(weights)}", *where)
    if len(weights) != k:
        raise spec.error(f"class_weights has {len(weights)} entries, but the last layer has "
                         f"{k} classes", *where)
    weights = _non_negative_numbers(spec, weights, where, "class_weights")
    if not any(weights):
        raise spec.error("class_weights are all 0: every loss would be 0/0", *where)
    return weights


def _pos_weight(spec, pos_weight, k, where):
    """pos_weight: one non-negative number (for every output), or one per output."""
    if isinstance(pos_weight, list):
        if len(pos_weight) != k:
            raise spec.error(f"pos_weight has {len(pos_weight)} entries, but the last layer has "
                             f"{k} outputs (give one number, or one per output)", *where)
        return _non_negative_numbers(spec, pos_weight, where, "pos_weight")
    if isinstance(pos_weight, bool) or not isinstance(pos_weight, (int, float)) \
            or not 0 <= pos_weight < math.inf:
        raise spec.error(f"pos_weight must be a finite number >= 0 or a list of them (one per "
                         f"output), got {shorten(pos_weight)}", *where)
    return [float(pos_weight)] * k


def _tuple(values):
    """A list of floats as a tuple literal (None stays None)."""
    if values is None:
        return "None"
    return "(" + ", ".join(map(repr, values)) + ("," if len(values) == 1 else "") + ")"


def _loss_shape(loss, options, positions, k):
    """J's shape: a number, or with reduction none one loss per position (class ids)
    or per element."""
    if options.get("reduction") != "none":
        return ()
    return positions if loss.class_ids else positions + (k,)


_TERMS = {
    "softmax_cross_entropy": ("softmax cross-entropy from the logits (log-sum-exp), as "
                              "torch.nn.functional.cross_entropy", "-log softmax(a)[y]"),
    "sigmoid_binary_cross_entropy": ("binary cross-entropy of sigmoid(logits), computed from the "
                                     "logits, as torch.nn.functional.binary_cross_entropy_with_logits",
                                     "pos_weight*y*softplus(-a) + (1-y)*softplus(a) per output"),
    "mse": ("squared error, as torch.nn.functional.mse_loss", "(a - y)**2 per output, without "
            "the 1/2 of the default mse"),
}

_REDUCED = {
    "mean": "the mean of the terms (for class weights: divided by the sum of the weights)",
    "sum": "the sum of the terms",
    "none": ("every term: J has the losses' shape, and backward and value_and_grad give the "
             "gradient of their sum, as torch's loss.backward(torch.ones_like(loss)) does"),
    None: "the terms summed over outputs and averaged over the batch, as without options",
}


def _described(loss, options):
    """The loss record with its docstring texts saying what its options compute, and its
    ignore_index (the generated module's label check lets it through)."""
    if not options:
        return loss
    name, term = _TERMS[loss.name]
    if "class_weights" in options:
        term += " times class_weights[y]"
    if "ignore_index" in options:
        term += f", 0 where y is {options['ignore_index']} (ignore_index)"
    given = ", ".join(f"{key}={_option_text(value)}" for key, value in options.items())
    reduced = _REDUCED[options.get("reduction")]
    text = f"{name} with {given}; a term is {term}; J is {reduced}"
    where = "over the unmasked positions" if loss.class_ids else "at the unmasked positions"
    return replace(loss, text=text, sequence_text=f"{text}, {where} (padding adds nothing)",
                   ignore_index=options.get("ignore_index"))


def _option_text(value):
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
