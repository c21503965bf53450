"""Statements -> module source, through the Jinja2 templates.

Python decides what the statements are; the templates only lay them out.
"""

import hashlib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2

from . import __version__

COMMENT_COLUMN = 40   # adjoint comments start here when the code is shorter


def templates_dir():
    """The templates folder: the checkout's top-level one, or the installed copy."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("bpcompile") / "templates"))


@lru_cache(maxsize=1)
def environment():
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template, **context):
    return environment().get_template(template).render(version=__version__, **context)


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def source_label(path):
    """A file name that is safe to print in a comment (no newlines or quotes)."""
    if path is None or str(path).startswith("<"):
        return "<string>"
    name = Path(str(path)).name
    return re.sub(r"[^A-Za-z0-9._+-]", "?", name) or "<string>"


def aligned(statements, indent=4):
    """`target = code` lines with their comments lined up."""
    lines = [f"{s.target} = {s.code}" for s in statements]
    width = max([len(line) for line in lines if len(line) <= COMMENT_COLUMN] + [0])
    out = []
    for line, s in zip(lines, statements):
        out.append(f"{line.ljust(width)}  # {s.comment}" if s.comment else line)
    return out


def render_program(sched, graph, spec_text, source=None):
    """The standalone module of a scalar program."""
    return render(
        "program.py.j2",
        source=source_label(source),
        sha256=sha256(spec_text),
        name=graph.name,
        output=graph.output,
        inputs=list(graph.inputs),
        wrt=list(graph.wrt),
        inputs_tuple=repr(tuple(graph.inputs)).replace("'", '"'),
        wrt_tuple=repr(tuple(graph.wrt)).replace("'", '"'),
        forward=sched.forward,
        cache=sched.cache,
        seed=sched.seed,
        backward=aligned(sched.backward),
        grads=sched.grads,
    )
