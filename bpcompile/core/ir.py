"""The computation graph: a flat, printable DAG of named nodes.

Every node is assigned once, knows its operation, its operands (other
nodes' names or numeric constants), its shape and its dtype.  Nodes are kept
in the order they were created, which is a topological order.
"""

from dataclasses import dataclass, field
from typing import Optional, Union

Operand = Union[str, int, float]   # a node name, or a numeric constant


def shape_text(shape):
    """A shape as messages print it: (B, 6, 28, 28)."""
    return "(" + ", ".join(map(str, shape)) + ")"


@dataclass
class Node:
    name: str
    op: str                         # "input" or a primitive's name
    operands: tuple = ()
    shape: Optional[tuple] = None   # None: a scalar-graph value that may broadcast
    dtype: str = "float64"
    user: bool = False              # named in the spec (kept in the output)
    line: int = 0                   # spec line that defined it (for messages)
    attrs: dict = field(default_factory=dict)

    def node_operands(self):
        """Operands that are nodes (not constants)."""
        return [o for o in self.operands if isinstance(o, str)]


class Graph:
    """A DAG of nodes with designated inputs, one output, and `wrt` inputs."""

    def __init__(self, name="model"):
        self.name = name
        self.nodes = {}          # name -> Node, in topological order
        self.inputs = []
        self.output = None
        self.wrt = []

    def add(self, node):
        if node.name in self.nodes:
            raise ValueError(f"node {node.name!r} defined twice")
        for operand in node.node_operands():
            if operand not in self.nodes:
                raise ValueError(f"node {node.name!r} uses undefined {operand!r}")
        self.nodes[node.name] = node
        if node.op == "input":
            self.inputs.append(node.name)
        return node

    def __getitem__(self, name):
        return self.nodes[name]

    def __iter__(self):
        return iter(self.nodes.values())

    def __len__(self):
        return len(self.nodes)

    def ancestors(self, name):
        """Names that `name` depends on, itself included."""
        seen, stack = set(), [name]
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.nodes[current].node_operands())
        return seen

    def descendants(self, names):
        """Names that depend on any of `names`, those included."""
        reached = set(names)
        for node in self:
            if any(o in reached for o in node.node_operands()):
                reached.add(node.name)
        return reached

    def label(self, name):
        """What a reader knows a node by: a parameter by its key in the params dict
        (`linear1.W`, not the variable `linear1_W`), anything else by its name."""
        attrs = self.nodes[name].attrs if name in self.nodes else {}
        return attrs.get("param") or name

    def equations(self):
        """One typed equation per line, like a jaxpr: `t:f64[] = pow x 2`."""
        inputs = ", ".join(self.label(n) for n in self.inputs)
        lines = [f"graph {self.name}({inputs}) -> {self.output}"]
        for node in self:
            if node.op == "input":
                continue
            shape = "" if node.shape is None else ",".join(map(str, node.shape))
            args = " ".join(self.label(o) if isinstance(o, str) else str(o) for o in node.operands)
            lines.append(f"  {node.name}:{_short(node.dtype)}[{shape}] = {node.op} {args}")
        return "\n".join(lines) + "\n"

    def __str__(self):
        return self.equations()

    def to_dot(self):
        """The graph in Graphviz DOT: inputs as boxes, edges point forward."""
        out = [f'digraph "{self.name}" {{', "  rankdir=BT;",
               '  node [fontname="Helvetica"];']
        for node in self:
            if node.op == "input":
                style = "shape=box"
                label = self.label(node.name)
                if "state" in node.attrs:       # an initial state, keyed as in STATE_KEYS
                    label = f"{node.attrs['state']}\\n(initial state)"
            else:
                style = "shape=ellipse" + (", style=bold" if node.user else "")
                label = f"{node.name}\\n{node.op}"
            if node.name == self.output:
                style += ", peripheries=2"
            out.append(f'  "{node.name}" [label="{label}", {style}];')
        for node in self:
            for i, operand in enumerate(node.operands):
                if isinstance(operand, str):
                    out.append(f'  "{operand}" -> "{node.name}";')
                else:
                    const = f"{node.name}.c{i}"
                    out.append(f'  "{const}" [label="{operand!r}", shape=plaintext];')
                    out.append(f'  "{const}" -> "{node.name}";')
        out.append("}")
        return "\n".join(out) + "\n"


def _short(dtype):
    return {"float64": "f64", "float32": "f32", "int64": "i64"}.get(dtype, dtype)
