"""The loss of a layer spec: the spec's `loss:` (and `l2:`) as the graph's output J,
one fused loss node (core/losses.py) on the last layer's output."""

import math

import sympy as sp

from ..core.ir import Node, shape_text
from ..core.losses import LOSSES
from ..core.parser import symbol
from ..limits import shorten


def add_loss(self, logits):
    """The loss node J of the spec's `loss:` on the last layer's output `logits`
    (`self`: the LayerCompiler)."""
    loss = self.spec.get("loss")
    if loss is None:
        raise self.spec.error(f"missing `loss:`; one of {', '.join(LOSSES)}")
    if not isinstance(loss, str) or loss not in LOSSES:
        raise self.spec.error(f"unknown loss {shorten(loss)}; known losses: {', '.join(LOSSES)}",
                              "loss")
    loss = LOSSES[loss]
    last = self.layers[-1]
    if self.sequence:
        return _sequence_loss(self, loss, logits, last)
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
    self.loss, self.classes = loss, k
    self.logits = logits.name
    g = self.graph
    if loss.class_ids:
        g.add(Node("y", "input", shape=("B",), dtype="int64", user=True))
    else:
        g.add(Node("y", "input", shape=("B", k), dtype=self.dtype, user=True))
    aux = {key: self.namer.fresh(key) for key in loss.aux}
    l2 = self.spec.get("l2", default=0)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not 0 <= l2 < math.inf:
        raise self.spec.error(f"l2 must be a non-negative number (and finite), got {shorten(l2)}", "l2")
    weights = [p for p in self.params if p.is_weight]
    data_name = "J" if not (l2 and weights) else self.namer.fresh("data_loss")
    g.add(Node(data_name, loss.op, (logits.name, "y"), shape=(), dtype=self.dtype,
               attrs={"aux": aux}))
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

def _sequence_loss(self, loss, logits, last):
    if loss.sequence_op is None:
        per_position = ", ".join(n for n, x in LOSSES.items() if x.sequence_op)
        raise self.spec.error(f"sequence specs support the losses {per_position} (per position)",
                              "loss")
    if len(logits.shape) != 3 or last.kind != "linear" or logits.shape[-1] < loss.min_outputs:
        raise self.spec.error(f"loss {loss.name} takes per-step logits: end with a linear "
                              f"layer of at least {loss.min_outputs} outputs", "loss")
    if self.spec.get("l2"):
        raise self.spec.error("l2 is not supported for sequence specs yet", "l2")
    self.loss, self.classes, self.logits = loss, logits.shape[-1], logits.name
    g = self.graph
    g.add(Node("y", "input", shape=("B", "T"), dtype="int64", user=True))
    aux = {key: self.namer.fresh(key) for key in loss.sequence_aux}
    g.add(Node("J", loss.sequence_op, (logits.name, "y", "mask"), shape=(),
               dtype=self.dtype, attrs={"aux": aux}))
    g.output = "J"
    g.wrt = [p.var for p in self.params] + [var for _, var, _ in self.states]
