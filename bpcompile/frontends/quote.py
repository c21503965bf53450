"""The spec as the module docstring quotes it: rebuilt from its validated parts.

A generated module shows the spec it was compiled from, but nothing of a
spec's raw text may reach generated code.  So the quote is rebuilt: keys and
names that are identifiers, numbers and booleans as Python prints them, and
expressions re-printed from their parsed form (only checked names, numbers,
operators and known functions).  Comments and free text (`description:`) are
left out.
"""

import math

import sympy as sp

from ..errors import SpecError
from ..core.parser import IDENTIFIER, parse_expression, parse_program
from ..core.primitives import matmul, matvec

# keys whose string value is an expression, and how to parse it
PROGRAMS = {"program": {"vectors": True}, "equations": {"matmul": matmul}}
EXPRESSIONS = {"expr", "activation"}
MAX_LINES = 60


def spec_lines(data):
    """The spec mapping `data` as YAML-like lines of validated parts."""
    lines = []
    _mapping(data, 0, lines)
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines)"]
    return lines


def _mapping(data, indent, lines):
    pad = " " * indent
    for key, value in data.items():
        if not _is_name(key) or value is None:
            continue
        if isinstance(value, str) and (key in PROGRAMS or key in EXPRESSIONS):
            printed = _expressions(key, value)
            if len(printed) == 1 and key not in PROGRAMS:
                lines.append(f"{pad}{key}: {printed[0]}")
            elif printed:
                lines.append(f"{pad}{key}: |")
                lines.extend(f"{pad}  {line}" for line in printed)
        elif isinstance(value, dict):
            inline = _flow(value)
            if inline is not None and len(pad + key + inline) < 90:
                lines.append(f"{pad}{key}: {inline}")
            else:
                lines.append(f"{pad}{key}:")
                _mapping(value, indent + 2, lines)
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")
            for item in value:
                inline = _flow(item)
                if inline is not None:
                    lines.append(f"{pad}  - {inline}")
                elif isinstance(item, dict):
                    first = len(lines)
                    _mapping(item, indent + 4, lines)
                    if len(lines) > first:
                        lines[first] = f"{pad}  - {lines[first].lstrip()}"
        else:
            text = _scalar(value) if not isinstance(value, list) else _flow(value)
            if text is not None:
                lines.append(f"{pad}{key}: {text}")


def _flow(value):
    """A short value on one line (`{out: 10, bias: true}`, `[1, 28, 28]`), or None."""
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if not _is_name(key) or item is None:
                continue
            if isinstance(item, str) and key in PROGRAMS:
                return None
            if isinstance(item, str) and key in EXPRESSIONS:
                printed = _expressions(key, item)
                text = printed[0] if len(printed) == 1 else None
            else:
                text = _flow(item)
            if text is None:
                return None
            parts.append(f"{key}: {text}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list):
        parts = [_flow(item) for item in value]
        return None if any(p is None for p in parts) else "[" + ", ".join(parts) + "]"
    return _scalar(value)


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**18 else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and _is_name(value):
        return value
    return None


def _is_name(text):
    return isinstance(text, str) and text.isascii() and IDENTIFIER.match(text) is not None


def _expressions(key, text):
    """The parsed form of an expression or program text, one line per assignment."""
    try:
        if key in PROGRAMS:
            return [f"{a.target} = {printed(a.expr)}" for a in parse_program(text, **PROGRAMS[key])]
        expr, _, _ = parse_expression(text, vectors=(key == "expr"))
        return [f'"{printed(expr)}"']
    except SpecError:
        return []


def printed(expr):
    """SymPy's own printing of a parsed expression (checked names, numbers and known
    functions only), with `W @ v` for a cell's products."""
    def product(e):
        W, v = e.args
        plain = v.is_Atom and " " not in str(v)       # a name, not an inner product
        return sp.Symbol(f"{W} @ {v}" if plain else f"{W} @ ({printed(v)})")
    return str(expr.replace(lambda e: isinstance(e, matvec), product))
