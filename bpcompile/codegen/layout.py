"""Laying out generated statements within the line width, as a person would.

A statement's chain-rule comment goes after its code when both fit in WIDTH
columns, else on its own line above it.  Code longer than WIDTH is broken
between tokens inside brackets (Python joins such lines), with a hanging
indent; a right-hand side without brackets is put in parentheses first.  This
reads the statement's tokens (Python's own tokenizer); it never changes them.
"""

import io
import textwrap
import tokenize

WIDTH = 100
_OPEN, _CLOSE = "([{", ")]}"
_BEFORE = ("+", "-", "*", "/", "@", "if", "else", "and", "or")   # a line may break before these


def statement(code, comment="", indent=4, width=WIDTH):
    """The lines of one statement (without the indent of the first), comment included."""
    head, note = _split_comment(code)
    comment = "; ".join(c for c in (note, comment) if c)
    lines = wrap(head, indent, width)
    if not comment:
        return lines
    if len(lines) == 1 and indent + len(lines[0]) + 4 + len(comment) <= width:
        return [f"{lines[0]}  # {comment}"]
    return comment_lines(comment, indent, width) + lines


def comment_lines(text, indent=4, width=WIDTH):
    """`text` as `# ...` lines of at most `width` columns (a long word stays whole)."""
    notes = textwrap.wrap(text, width - indent - 2, break_long_words=False, break_on_hyphens=False)
    return [f"# {n}" for n in notes]


def wrap(code, indent=4, width=WIDTH):
    """`code` (one logical line, no comment) as lines of at most `width` columns
    where it can be broken; continuation lines are indented 4 more than the first."""
    if indent + len(code) <= width:
        return [code]
    tokens = _tokens(code)
    eq = _assignment(tokens)
    if eq is not None:
        # brackets to break inside: around a long tuple of targets, around a right-hand
        # side that has none
        left, right = code[:eq.start[1]].rstrip(), code[eq.end[1]:].strip()
        if "," in left and indent + len(left) + len(eq.string) + 2 > width // 2:
            left = f"({left})"
        if not any(t.string in _OPEN for t in tokens if t.start[1] > eq.start[1]):
            right = f"({right})"
        code = f"{left} {eq.string} {right}"
        tokens = _tokens(code)
    breaks, depth = [], 0          # offsets in `code` where a line may end, inside brackets
    for token in tokens:
        if token.string in _CLOSE:
            depth -= 1
        if depth > 0 and token.string in _BEFORE:
            breaks.append(token.start[1])
        if token.string in _OPEN:
            depth += 1
        if depth > 0 and (token.string in _OPEN or token.string == ","):
            breaks.append(token.end[1])
    lines, start = [], 0
    while indent + (4 if lines else 0) + len(code) - start > width:
        room = width - indent - (4 if lines else 0)
        fitting = [b for b in breaks if start < b <= start + room]
        if not fitting:
            break
        end = fitting[-1]
        lines.append(code[start:end].rstrip())
        start = end
    lines.append(code[start:].strip())
    return [lines[0]] + ["    " + line.lstrip() for line in lines[1:]]


def _tokens(code):
    skip = (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
    return [t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type not in skip]


def _assignment(tokens):
    """The `=` (or augmented `+=`) token of a statement at depth 0, if any."""
    depth = 0
    for token in tokens:
        if token.string in _OPEN:
            depth += 1
        elif token.string in _CLOSE:
            depth -= 1
        elif depth == 0 and token.type == tokenize.OP and token.string.endswith("=") \
                and token.string not in ("==", "<=", ">=", "!="):
            return token
    return None


def _split_comment(code):
    """(code, comment) of a line that may end with a comment."""
    tokens = _tokens(code)
    for token in tokens:
        if token.type == tokenize.COMMENT:
            return code[:token.start[1]].rstrip(), token.string[1:].strip()
    return code, ""
