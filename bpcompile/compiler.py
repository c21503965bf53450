"""Front door of the compiler: spec text, expression text or SymPy -> module source.

    spec (YAML) -> program (parser) -> graph (frontend) -> schedule (autodiff)
                -> source (codegen) -> module (loader)
"""

import ast
import io
import os
import tokenize
from pathlib import Path

import sympy as sp

from .codegen import render
from .codegen.targets import check_target
from .core.autodiff import schedule
from .errors import SpecError
from .frontends.programs import build_graph, check_program, program_from_sympy
from .core.parser import (NAMED_CONSTANTS, check_identifier, parse_expression, parse_program,
                          Assignment)
from .frontends.quote import printed, spec_lines
from .result import Compiled, load_module  # noqa: F401  (load_module is part of the API)
from .frontends.spec import Spec

PROGRAM_KEYS = {"name", "inputs", "program", "expr", "output", "wrt", "check_at", "description"}
SPEC_SUFFIXES = (".yaml", ".yml")


def load_spec(text, file="<string>"):
    return Spec(text, file)


def compile_spec(spec, target=None):
    """A loaded Spec -> Compiled, rendered for `target` (codegen.targets.TARGETS)."""
    target = check_target(target)
    if "layers" in spec.data:
        return compile_layers(spec, target=target)
    return _compile_program_spec(spec, target)


def compile_layers(spec, dtype=None, target=None):
    """A layer spec -> Compiled (at `dtype` instead of the spec's, if given)."""
    from .frontends.layers import LayerCompiler   # the tensor front end
    model = LayerCompiler(spec, reserved=render.module_globals(), dtype=dtype)
    graph = model.compile()
    sched = schedule(graph)
    source = render.render_layers(model, sched, graph, spec.text, spec.file, spec_lines(spec.data),
                                  target=check_target(target))
    return Compiled(model.name, graph, sched, source, spec, model=model)


def compile_file(path, target=None):
    from .limits import MAX_SPEC_BYTES, clip
    if not isinstance(path, (str, Path)):
        raise SpecError(f"a spec file name must be a str or a Path, got {type(path).__name__}")
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)           # bytes as they are: the header hashes them
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"spec too large (more than {MAX_SPEC_BYTES} bytes)", str(path), 1, 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise SpecError(f"cannot read spec: {reason}", clip(path), 1, 1) from None
    spec = load_spec(text, str(path))
    compiled = compile_spec(spec, target)
    compiled.source_path = str(path)
    return compiled


def _compile_program_spec(spec, target=None):
    spec.check_keys(PROGRAM_KEYS)
    name = spec.get("name", default="model")
    try:
        check_identifier(name, "name")
    except SpecError as err:
        raise spec.error(err.message, "name") from None
    has_program, has_expr = "program" in spec.data, "expr" in spec.data
    if has_program == has_expr:
        raise spec.error("a spec needs exactly one of `program:` (assignments) or `expr:` (one expression)")
    key = "program" if has_program else "expr"
    text = spec.get(key)
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(text)
    if not isinstance(text, str):
        raise spec.error(f"{key} must be text, got {type(text).__name__}", key)
    inputs = spec.string_list("inputs")
    wrt = spec.string_list("wrt")
    output = spec.string("output")
    constants = program_constants(inputs)
    try:
        if has_program:
            assignments = parse_program(text, constants=constants, vectors=True)
        else:
            assignments = _expression_program(text, output, inputs, constants)
        inputs, output, wrt = check_program(assignments, inputs, output, wrt)
    except SpecError as err:
        if err.field:
            raise spec.error(err.message, err.field) from None
        raise spec.relocate(err, key) from None
    graph = build_graph(assignments, inputs, output, wrt, name)
    sched = schedule(graph)
    source = render.render_program(sched, graph, spec.text, spec.file, spec_lines(spec.data),
                                   target=target)
    return Compiled(name, graph, sched, source, spec)


def program_constants(inputs):
    """The named constants of a program: `e` and `pi`, except those listed as inputs
    (an explicit input wins, so a spec whose input is called `e` keeps working)."""
    return {name: value for name, value in NAMED_CONSTANTS.items() if name not in (inputs or ())}


def _expression_program(text, output=None, inputs=None, constants=None):
    expr, names, cols = parse_expression(text, constants=constants, vectors=True)
    target = output or _output_name(names + list(inputs or []))
    return [Assignment(target, expr, 1, 1, names, cols)]


def _output_name(taken):
    return next(n for n in ("y", "f", "J", "out", "result") if n not in taken)


def compile_text(text, inputs=None, wrt=None, output=None, name="model", target=None):
    """An expression or a program (lines of `name = expression`) -> Compiled."""
    if not isinstance(text, str):
        raise SpecError(f"expected text, got {type(text).__name__}")
    inputs, wrt = _name_list(inputs, "inputs"), _name_list(wrt, "wrt")
    if output is not None and not isinstance(output, str):
        raise SpecError(f"output must be a name, got {type(output).__name__}")
    if not isinstance(name, str):
        raise SpecError(f"name must be a string, got {type(name).__name__}")
    kind = "program" if _looks_like_program(text) else "expr"
    data = {"name": name, kind: text}
    for key, value in (("inputs", inputs), ("wrt", wrt), ("output", output)):
        if value is not None:
            data[key] = list(value) if key != "output" else value
    return _compile_program_spec(_DictSpec(data, text), check_target(target))


def _name_list(value, what):
    """None, one name, or a list/tuple of names (the API's `inputs=` and `wrt=`)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [n.strip() for n in value.split(",") if n.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise SpecError(f"{what} must be a list of names, got {type(value).__name__}")
    return list(value)


def compile_sympy(expr, inputs=None, wrt=None, output=None, name="model", target=None):
    """A SymPy expression -> Compiled."""
    names = sorted(s.name for s in getattr(expr, "free_symbols", ()))
    result = output or _output_name(names)
    assignments = program_from_sympy(expr, result)
    inputs, output, wrt = check_program(assignments, inputs, output, wrt)
    graph = build_graph(assignments, inputs, output, wrt, name)
    sched = schedule(graph)
    source = render.render_program(sched, graph, sp.srepr(expr), quoted=[f"expr: {printed(expr)}"],
                                   target=check_target(target))
    return Compiled(name, graph, sched, source)


def _looks_like_program(text):
    try:
        tree = ast.parse(text.strip())
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # text with a syntax error is a program when it assigns: its error is then
        # reported at its line in the program, not as an error of one expression
        return _has_assignment(text)
    return bool(tree.body) and all(isinstance(s, ast.Assign) for s in tree.body)


def _has_assignment(text):
    """Whether Python's tokenizer finds an `=` outside brackets in `text`."""
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.OP:
                depth += token.string in "([{"
                depth -= token.string in ")]}"
                if token.string == "=" and depth == 0:
                    return True
    except (tokenize.TokenError, SyntaxError):
        pass
    return False


class _DictSpec(Spec):
    """A Spec built from a Python dict (the API), with positions in `text`."""

    def __init__(self, data, text, file="<string>"):
        self.data, self.text, self.file, self.root = data, text, file, None

    def error(self, message, *path, key=False):
        return SpecError(message, self.file, 1, 1)

    def relocate(self, err, *path):
        return err.located(self.file)


# --- the API ---------------------------------------------------------------------------------

def spec_file(obj):
    """The spec file that `obj` names, or None when `obj` is expression or program text.

    The one rule of the API and the CLI: a str or an os.PathLike whose name ends in
    .yaml or .yml is a spec file (one that does not exist is an error naming it); a
    path of another suffix is an error, and so is a str that names an existing file
    of another suffix; any other str is expression or program text.
    """
    if isinstance(obj, os.PathLike):
        path = Path(obj)
        if path.suffix.lower() not in SPEC_SUFFIXES:
            raise _suffix_error(path)
        return path
    if not isinstance(obj, str) or "\n" in obj or not obj.strip():
        return None
    if obj.lower().endswith(SPEC_SUFFIXES):
        return Path(obj)
    path = Path(obj)
    if path.suffix and _is_file(path):
        raise _suffix_error(path)
    return None


def _is_file(path):
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _suffix_error(path):
    from .limits import clip
    return SpecError(f"a spec file name must end in .yaml or .yml (got {clip(path.name)!r}); "
                     "other text is read as an expression", clip(path), 1, 1)


def compile_any(obj, inputs=None, wrt=None, output=None, name=None, purpose="compile",
                target=None):
    """Compiled from a spec file (str or Path), a spec dict, a SymPy expression, or
    expression or program text: what `compile` and `graph` accept."""
    path = spec_file(obj)
    if path is not None or isinstance(obj, dict):
        _refuse_text_options(inputs=inputs, wrt=wrt, output=output, name=name)
        return compile_file(path, target) if path is not None else _compile_dict(obj, target)
    name = "model" if name is None else name
    if isinstance(obj, sp.Basic):
        return compile_sympy(obj, _name_list(inputs, "inputs"), _name_list(wrt, "wrt"),
                             output, name, target)
    if isinstance(obj, str):
        return compile_text(obj, inputs, wrt, output, name, target)
    raise SpecError(f"cannot {purpose} a {type(obj).__name__}: give expression or program text, "
                    "a SymPy expression, a spec dict or a spec file (.yaml or .yml)")


def _refuse_text_options(**given):
    for option, value in given.items():
        if value is not None:
            raise SpecError(f"{option}= applies to expression and program text; a spec gives "
                            f"its own `{option}:`")


def _compile_dict(obj, target=None):
    import yaml
    try:
        text = yaml.safe_dump(obj, sort_keys=False)
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        args = getattr(err, "args", ())
        culprit = f": it holds a {type(args[1]).__name__}" if len(args) > 1 else ""
        raise SpecError("a spec dict may hold only strings, numbers, booleans, None, lists "
                        f"and dicts{culprit}") from None
    return compile_spec(load_spec(text), target)


def compile(obj, inputs=None, wrt=None, output=None, name=None, target=None):
    """Compile expression or program text, a SymPy expression, a spec dict or a spec
    file (a str or Path ending in .yaml or .yml) into a loaded module with
    `evaluate`, `forward`, `backward`, `value_and_grad`, `SOURCE` (the module's text)
    and `GRAPH`.  `inputs`, `wrt`, `output` and `name` (default "model") apply to
    text and SymPy only: a spec names its own.  `target` is "numpy" (the default) or
    "numba" (needs the numba package to run; see the README)."""
    compiled = compile_any(obj, inputs, wrt, output, name, target=check_target(target))
    module = load_module(compiled.source, compiled.name)
    module.GRAPH = compiled.graph
    return module


def graph(obj, inputs=None, wrt=None, output=None, name=None):
    """The computation graph (core.ir.Graph) of anything `compile` accepts."""
    return compile_any(obj, inputs, wrt, output, name, purpose="build the graph of").graph
