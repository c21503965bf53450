"""Statements -> module source, through the Jinja2 templates.

Python decides what the statements are; the templates only lay them out.
"""

import ast
import hashlib
import math
import textwrap
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np

from . import layout, numba_scan, overlap, rowstep
from ..memory import blocks, planner
from ..version import __version__
from ..core.parser import symbol
from ..core.primitives import PRIMITIVES
from ..core.printer import to_numpy

COMMENT_COLUMN = 40   # adjoint comments start here when the code is shorter


@lru_cache(maxsize=1)
def templates_dir():
    """The templates, found through the package: the installed `bpcompile.templates`,
    or, when bpcompile runs from its source checkout, the checkout's `templates/`
    (never a loose `templates` folder beside an installed package)."""
    try:
        return Path(str(resources.files("bpcompile.templates")))
    except ModuleNotFoundError:
        pass
    checkout = Path(__file__).resolve().parents[2]
    project = checkout / "pyproject.toml"
    if project.is_file() and 'name = "bpcompile"' in project.read_text(encoding="utf-8"):
        return checkout / "templates"
    raise RuntimeError("bpcompile's templates are missing; reinstall bpcompile")


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
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._+-") else "?"
                   for ch in name) or "<string>"


def aligned(statements, indent=4):
    """`target = code` lines with their comments lined up, each comment on its own
    line above its statement where the two do not fit in the line width."""
    lines = [s.text() for s in statements]
    width = max([len(line) for line in lines if len(line) <= COMMENT_COLUMN] + [0])
    out = []
    for line, s in zip(lines, statements):
        padded = f"{line.ljust(width)}  # {s.comment}"
        if s.comment and indent + len(padded) <= layout.WIDTH:
            out.append(padded)
        else:
            out += layout.statement(line, s.comment, indent)
    return out


def render_program(sched, graph, spec_text, source=None, quoted=(), target="numpy"):
    """The standalone module of a scalar program, for `target` (targets.TARGETS).
    For numba, evaluate and value_and_grad run a compiled loop over the points
    (numba_points.py) where the program is elementwise; otherwise, and for forward
    and backward, the module is the NumPy target's code."""
    points = _points_context(sched, graph) if target == "numba" else None
    return render(
        "program.py.j2",
        source=source_label(source),
        sha256=sha256(spec_text),
        spec=list(quoted),
        about_backward=textwrap.wrap(
            f"backward(cache, seed) returns "
            f"{', '.join(f'seed * d{graph.output}/d{n}' for n in graph.wrt)} (a vector-Jacobian "
            "product). Inputs may be floats or NumPy arrays that broadcast; each gradient has the "
            "shape of its input." + ("" if points else " Needs only NumPy."), 78),
        target_header=_target_header(graph, target, points),
        target_note=_target_note(points),
        points=points,
        name=graph.name,
        output=graph.output,
        inputs=list(graph.inputs),
        wrt=list(graph.wrt),
        inputs_tuple=repr(tuple(graph.inputs)).replace("'", '"'),
        wrt_tuple=repr(tuple(graph.wrt)).replace("'", '"'),
        forward=_lines(sched.forward),
        cache=sched.cache,
        seed=sched.seed,
        backward=aligned(sched.backward),
        grads=sched.grads,
        block=None if points else _block_kernel(sched, graph),
        uses_dot=any(node.op == "dot" for node in graph),
        out=graph.names.fresh("out"),
        inputs_tuple_expr=f"({', '.join(graph.inputs)}{',' if len(graph.inputs) == 1 else ''})",
    )


# Points from which the numba target's loops run on all cores (below, a serial copy
# of the loop).  Measured on the quiz's value_and_grad, 2 cores, one of them busy with
# other work: serial 19 ns a point; parallel no faster below 2,000 points, 13% faster
# at 16,000, 2x at 10^6; and a thread that waits for a busy core can stall a small
# parallel call for milliseconds.
PARALLEL_POINTS = 16384
PARALLEL_NOTE = "below that, threads cost more than they save"


def _points_context(sched, graph):
    """What program.py.j2 needs for the numba target's loops, or None where the
    program has none (it reads whole arrays: sum, @)."""
    from .numba_points import points_kernels      # (numba target only)
    kernels = points_kernels(sched, graph)
    if kernels is None:
        return None
    wrt_index = tuple(graph.inputs.index(n) for n in graph.wrt)
    # the loops count sin and cos arguments beyond _TRIG_RANGE
    calls = kernels.vector_calls | ({"_TRIG_RANGE"} if kernels.value_and_grad.beyond else set())
    return {"kernels": kernels, "local": graph.names.fresh("points"),
            "vector_math": vector_math_source(calls),
            "trig": bool(kernels.value_and_grad.beyond or kernels.evaluate.beyond),
            "parallel": PARALLEL_POINTS, "parallel_note": PARALLEL_NOTE,
            "wrt_index": repr(wrt_index)}


def _target_header(graph, target, points):
    """The module's third line: what it needs, for a target other than NumPy."""
    if target != "numba":
        return []
    if points:
        return ["# Needs numba and scipy (pip install numba scipy, or pip install 'bpcompile[numba]'): "
                "compiled loops."]
    reason = "sum and @ read whole arrays" if any(node.op in ("sum", "dot") for node in graph) \
        else "no loop fits this program"
    return [f"# Target numba, but {reason}: no compiled loop; this module needs only NumPy."]


def _target_note(points):
    """The docstring's paragraph on what runs compiled and what runs on NumPy."""
    if not points:
        return []
    return textwrap.wrap(
        "Compiled with numba: evaluate and value_and_grad run one loop over the points, "
        "compiled on their first call, when every input is a float64 array or a real number "
        "(the inputs broadcast together); other inputs (complex numbers, other dtypes) take "
        "the NumPy code below, and so do forward and backward, always.", 78)


def _block_kernel(sched, graph):
    """The blocked kernel of value_and_grad, laid out, or None (blocks.py)."""
    names = graph.names
    kernel = blocks.block_kernel(sched, graph, names)
    if kernel is None:
        return None
    lines = []
    for code, comment in kernel.body:
        lines += layout.statement(code, comment) if code else layout.comment_lines(comment)
    argument = names.fresh("buffers")
    signature = layout.wrap(
        f"def _value_and_grad_block({', '.join(kernel.params + [argument])}):", indent=0)
    return {"signature": signature, "buffers": kernel.buffers, "body": lines, "argument": argument}


@lru_cache(maxsize=None)
def helper_blocks():
    """name -> source of every helper function in templates/helpers/*.py."""
    blocks = {}
    for path in sorted((templates_dir() / "helpers").glob("*.py")):
        blocks.update(_function_blocks(path))
    return blocks


def _function_blocks(path):
    """name -> source of each top-level function in `path`, its decorators included."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    return {node.name: "\n".join(lines[min([node.lineno] + [d.lineno for d in node.decorator_list])
                                        - 1:node.end_lineno])
            for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)}


# The optimizer updates every layer module defines after sgd_step (helpers/optimizers.py).
OPTIMIZERS = "optimizers.py"


@lru_cache(maxsize=None)
def module_globals():
    """Every top-level name that a helper or kernel file may bring into a generated
    module, the symbol table never hands these out."""
    names = set(helper_blocks()) | set(numba_helper_blocks()) | {
        name for defined, _, _ in _vector_math_parts()[1] for name in defined} | {
        "_WORKERS", "_FEW_ROWS", "_SPLIT_WORK", "_WORKSPACE", "_WORKSPACE_BYTES", "threading"}
    kernel_files = sorted((templates_dir() / "kernels").glob("*.py")) + [
        templates_dir() / file for file, _ in sorted(NUMBA_KERNELS.values())]
    for path in kernel_files:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


@lru_cache(maxsize=None)
def file_blocks(name):
    """The function names of templates/helpers/<name>, in the file's order."""
    text = (templates_dir() / "helpers" / name).read_text(encoding="utf-8")
    return tuple(node.name for node in ast.parse(text).body if isinstance(node, ast.FunctionDef))


def helpers_for(names, target="numpy"):
    """Helper sources for `names`, in a stable order; `kernels/x.py` includes a whole file.
    The numba target takes the helpers of templates/numba/helpers.py where it has them
    (and the helpers those call)."""
    blocks = dict(helper_blocks())
    names = set(names)
    kernel_file = _kernel_file
    if target == "numba":
        overrides = numba_helper_blocks()
        blocks.update(overrides)
        names |= numba_helper_needs(names)
        kernel_file = _numba_kernel_file
    return [kernel_file(n) if n.endswith(".py") else blocks[n] for n in sorted(names)]


@lru_cache(maxsize=1)
def numba_helper_blocks():
    """name -> source of the numba target's helper versions (templates/numba/helpers.py)."""
    return _function_blocks(templates_dir() / "numba" / "helpers.py")


VECTOR_MATH = "vector_math.py"    # templates/numba/: exp, log, sin, cos, tanh for compiled loops


@lru_cache(maxsize=1)
def _vector_math_parts():
    """(leading comment, [(names it defines, names it reads, source)]) of
    templates/numba/vector_math.py: its constants and functions, in the file's order."""
    text = (templates_dir() / "numba" / VECTOR_MATH).read_text(encoding="utf-8")
    lines = text.splitlines()
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line)
    parts = []
    for node in ast.parse(text).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        defined = {node.name} if isinstance(node, ast.FunctionDef) else {
            t.id for t in node.targets if isinstance(t, ast.Name)}
        read = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - defined
        parts.append((defined, read, "\n".join(lines[start - 1:node.end_lineno])))
    return "\n".join(comment), parts


def vector_math_source(names):
    """The part of templates/numba/vector_math.py that a module calling `names` needs:
    its leading comment, then those functions and what they read, in the file's order."""
    comment, parts = _vector_math_parts()
    wanted = set(names)
    while True:
        more = set().union(*(read for defined, read, _ in parts if defined & wanted)) - wanted
        if not more:
            break
        wanted |= more
    chosen = [source for defined, _, source in parts if defined & wanted]
    if not chosen:
        return ""
    constants = [c for c in chosen if not c.startswith("@")]
    functions = [c for c in chosen if c.startswith("@")]
    return "\n\n\n".join(["\n".join([comment, *constants]), *functions])


def numba_helper_needs(names):
    """The helpers that the numba target's versions of `names` call, transitively: its
    own versions, or the shared ones (helpers/*.py) where it has none."""
    overrides = numba_helper_blocks()
    blocks = {**helper_blocks(), **overrides}
    needed, todo = set(), [n for n in names if n in overrides]
    while todo:
        called = {node.id for node in ast.walk(ast.parse(blocks[todo.pop()]))
                  if isinstance(node, ast.Name) and node.id in blocks}
        todo += sorted(called - needed - set(names))
        needed |= called
    return needed


def _kernel_lines(name):
    return (templates_dir() / name).read_text(encoding="utf-8").splitlines()


def _is_import(line):
    return line.startswith(("import ", "from "))


@lru_cache(maxsize=None)
def _kernel_file(name):
    """A kernels file without its import lines (they go to the module's top)."""
    return "\n".join(line for line in _kernel_lines(name) if not _is_import(line)).strip()


# kernels files some of whose functions the numba target replaces: (the file of its
# versions, what the module's docstring says runs compiled)
NUMBA_KERNELS = {"kernels/conv.py": ("numba/conv.py", "Max pooling runs as compiled loops "
                                     "(maxpool2d_forward and maxpool2d_backward).")}


@lru_cache(maxsize=None)
def _numba_kernel_file(name):
    """A kernels file for the numba target: without the functions that its numba file
    (NUMBA_KERNELS) defines, followed by that file (import lines left out of both)."""
    if name not in NUMBA_KERNELS:
        return _kernel_file(name)
    replacement = NUMBA_KERNELS[name][0]
    replaced = set(_function_blocks(templates_dir() / replacement))
    lines = _kernel_file(name).splitlines()
    dropped = set()
    for node in ast.parse("\n".join(lines)).body:
        if isinstance(node, ast.FunctionDef) and node.name in replaced:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            end = node.end_lineno       # and the blank lines after it
            while end < len(lines) and not lines[end].strip():
                end += 1
            dropped.update(range(start - 1, end))
    kept = "\n".join(line for k, line in enumerate(lines) if k not in dropped).strip()
    return kept + "\n\n\n" + _kernel_file(replacement)


def imports_for(names):
    """Import lines the included kernel files need, beyond `import numpy as np`."""
    lines = [line for n in sorted(set(names)) if n.endswith(".py")
             for line in _kernel_lines(n) if _is_import(line)]
    return [line for line in dict.fromkeys(lines) if line != "import numpy as np"]


def render_layers(compiler, sched, graph, spec_text, source=None, quoted=(), target="numpy"):
    """The standalone module of a layer spec, for `target` (targets.TARGETS)."""
    from ..core.tensor_ops import TENSOR_OPS

    params = compiler.params
    param_of = {p.var: p for p in params}

    def used_params(statements, extra=()):
        read = set(extra).union(*(s.reads for s in statements))
        return [p for p in params if p.var in read]

    logits_needed = graph.ancestors(compiler.logits)
    predict_statements = [s for s in sched.forward if s.targets[0] in logits_needed]
    grads = {g for _, g in sched.grads if g}
    forward_names = {n for s in sched.forward for n in s.targets}
    # backward() must leave the cache as it found it, unless its caller says it may
    # consume it (the flag `consume`); sgd_step has no cache to keep
    forward_count = len(sched.forward)
    consuming = planner.plan(sched.forward + sched.backward, graph, sched.adjoints,
                           grads | forward_names, consume="consume")[forward_count:]
    consume = consuming != sched.backward
    seed_line = (f'{sched.seed} = _output_adjoint(seed, cache["output.shape"])' if compiler.vjp
                 else f"{sched.seed} = 1.0")
    backward_body = ["# backward (reverse topological order)", seed_line] + aligned(consuming)
    sparse = _sparse_updates(graph, sched, np.dtype(compiler.dtype).itemsize)
    update_reads = set().union(*(reads for _, reads, _ in sparse.values()))
    planned = planner.plan(sched.forward + [s for s in sched.backward if s.targets[0] not in sparse],
                         graph, sched.adjoints, grads | {sched.output} | update_reads, consume="True")
    reused_forward, sgd_statements = planned[:forward_count], planned[forward_count:]
    # sgd_step lets go of the forward values its backward pass does not read (the
    # recurrent layers' loops keep their own memory policy)
    sgd_released = [] if compiler.sequence else planner.released(
        reused_forward, sgd_statements, graph, grads | {sched.output} | update_reads)
    if target == "numba":
        reused_forward = split_products(reused_forward)
        predict_statements = split_products(predict_statements)
    forward = _lines(reused_forward)
    sgd_forward = _lines(planner.between_calls(reused_forward, sched.output))
    predict = _lines(predict_statements)
    sparse_lines = {g: layout.statement(code) for g, (code, _, _) in sparse.items()}
    early = overlap.start_early(sgd_statements, [u for _, _, u in sparse.values() if u],
                                graph.names) if target == "numba" else None
    if early:
        sgd_statements = early.before
        sparse_lines[early.update.grad] = [
            f"# {early.update.weight} -= dJ/d{early.update.weight}: done above ({early.finish})"]
    sgd_backward = aligned(sgd_statements)
    from ..core.autodiff import tensor_op
    helpers = [h for node in graph if node.op in TENSOR_OPS or "rule" in node.attrs
               for h in tensor_op(node).helpers]
    if compiler.stacks:
        helpers.append("_side_by_side")
    loss = compiler.loss
    if loss.link and loss.link not in PRIMITIVES:
        helpers.append(f"_{loss.link}")
    optimizers = [n for n in file_blocks(OPTIMIZERS) if not n.startswith("_")]
    helpers += [n for n in file_blocks(OPTIMIZERS) if n.startswith("_")] + ["_as_array", "_float_ids_hint"]
    if compiler.modes:
        helpers.append("_mode_arguments")
    if compiler.vjp:
        helpers.append("_output_adjoint")
    else:
        helpers.append("_batch_size")      # sgd_epoch's
    initial = {var for _, var, _ in compiler.states}
    cache = [n for n in sched.cache if n not in param_of and n not in initial]
    shape_text = ", ".join(map(str, compiler.input_shape))
    loss_text = loss.sequence_text if compiler.sequence else loss.text
    row = rowstep.render(compiler, sched, graph)
    if early:
        helpers.append("_subtract_product_later")
    if any(s.lines and s.lines == s.split for s in reused_forward):
        helpers.append("_dot_split")
    imports = imports_for(helpers)
    if row is not None:
        helpers += row.helpers
        imports = list(dict.fromkeys(imports + ["import math"]))
    # every helper the module holds: the numba target's versions call more of them
    held = set(helpers) | (numba_helper_needs(helpers) if target == "numba" else set())
    l2 = compiler.spec.get("l2", default=0)
    if l2:
        loss_text += f", plus {l2!r}/2 * the sum of squared weights (not biases)"
    return render(
        "layers.py.j2",
        source=source_label(source),
        sha256=sha256(spec_text),
        spec=list(quoted),
        name=compiler.name,
        dtype=compiler.dtype,
        summary=_summary(compiler, graph),
        loss=compiler.loss,
        loss_text=textwrap.wrap(f"Loss: {loss_text}.", 78),
        input_shape=repr(tuple(compiler.input_shape)),
        input_shape_text=shape_text,
        input_ndim=len(compiler.input_shape) + 1,
        classes=compiler.classes,
        params=[_param_view(p) for p in params],
        param_var={p.key: p.var for p in params},
        forward=forward,
        sgd_forward=sgd_forward,
        workspace="_workspace" in held,
        forward_params=used_params(sched.forward),
        cache=cache,
        backward_body=backward_body,
        consume=consume,
        sgd_backward=sgd_backward,
        sgd_released=_del_lines(sgd_released),
        seed=sched.seed,
        sparse_updates=sparse_lines,
        sgd_overlapped=aligned(early.during, indent=8) if early else [],
        sgd_finish=early.finish if early else "",
        backward_params=used_params(consuming),
        grads=[(param_of[name].key, g) for name, g in sched.grads if name in param_of],
        state_grads=[(key, dict(sched.grads).get(var) or f"np.zeros_like({var})")
                     for key, var, _ in compiler.states],
        sequence=compiler.sequence,
        vocab=compiler.vocab,
        states=compiler.states,
        final_states=compiler.final_states,
        functions=[_scan_source(context, target) for context in compiler.scans],
        # the numba target's exp, log, sin, cos and tanh that the compiled loops call
        vector_math=vector_math_source(
            {NUMBA_VECTOR_MATH[f] for f, _ in row.ufuncs if f in NUMBA_VECTOR_MATH})
        if target == "numba" and row else "",
        numba=target == "numba",
        notes=compiler.notes,
        seq_args=", mask=None, state=None" if compiler.sequence else "",
        seq_pass=", mask, state" if compiler.sequence else "",
        predict=predict,
        predict_params=used_params(predict_statements),
        predict_result=_predict_result(loss, compiler.logits),
        predict_doc=_predict_doc(loss, compiler),
        boundary_text=_boundary_text(compiler),
        optimizers=[helper_blocks()[n] for n in optimizers],
        helpers=helpers_for(helpers, target),
        numba_workers="_start_shared" in held,
        imports=imports,
        row=row,
        # the one-example buffers are module globals, assigned by _allocate_one_example
        row_globals=_global_statements(["_ONE_EXAMPLE_BUFFERS", *row.buffer_names]) if row else [],
        stacks=compiler.stacks,
        numba_epoch=_numba_epoch(compiler, row) if target == "numba" else None,
        numba_text=_numba_text(compiler, row, target,
                               split="_start_shared" in held,
                               kernels=[h for h in helpers if h.endswith(".py")]),
        epoch_doc=_epoch_doc(compiler, row is not None and target == "numba"),
        **_modes_context(compiler, sched, graph),
    )


# NumPy functions that numba calls differently: vdot takes only vectors there,
# maximum/minimum take `out` only by position (NumPy wants it by keyword), and numba
# has no copyto
NUMBA_WRAPPERS = frozenset({"vdot", "maximum", "minimum", "copyto"})
# NumPy functions the epoch kernel calls in vector_math.py's form (a loop LLVM vectorizes;
# numba's np.tanh calls the C library once per element)
NUMBA_VECTOR_MATH = {"tanh": "_tanh_into"}


def _numba_epoch(compiler, row):
    """What the numba target's compiled epoch needs from the one-example step (rowstep),
    or None when the spec has no one-example step."""
    if row is None:
        return None
    if compiler.loss.class_ids:
        targets = "y"
    elif compiler.classes == 1:
        targets = "np.ascontiguousarray(y).reshape(len(x))"
    else:
        targets = "np.ascontiguousarray(y)"
    args = [f'params["{key}"]' for _, key, _ in row.checks]
    call = (f"return float(_sgd_epoch_one({', '.join(args + ['np.ascontiguousarray(x)'])}, "
            f"{targets}, float(lr)))")
    return {"params": [var for var, _, _ in row.checks],
            "call": layout.wrap(call),
            "helpers": list(row.helpers),
            # the NumPy functions by the local names of the one-example statements;
            # where numba's differs (NUMBA_WRAPPERS), a compiled wrapper the template defines
            "functions": [(name, _numba_function(function)) for function, name in row.ufuncs],
            "wrappers": sorted({function for function, _ in row.ufuncs} & NUMBA_WRAPPERS),
            "targets": targets}


def _numba_function(function):
    """What the numba epoch kernel calls for NumPy's `function`."""
    if function in NUMBA_VECTOR_MATH:
        return NUMBA_VECTOR_MATH[function]
    return f"_{function}" if function in NUMBA_WRAPPERS else f"np.{function}"


def _epoch_doc(compiler, compiled):
    """sgd_epoch's docstring lines."""
    unit, weight = (("sequences", "real (unmasked) positions") if compiler.sequence
                    else ("examples", "examples"))
    text = (f"One pass of minibatch SGD over (x, y) in the given order: sgd_step on "
            f"batch_size {unit} at a time (the last batch may be smaller), updating params in "
            f"place.  Returns the mean of the steps' losses (each taken before its update), "
            f"weighted by their {weight}.")
    if compiler.sequence:
        text += "  Every batch starts from the zero state."
    if compiled:
        text += ("  With batch_size 1 the whole epoch is one compiled call "
                 "(_sgd_epoch_one, numba).")
    return textwrap.wrap(text, 74)


def _numba_text(compiler, row, target, split=False, kernels=()):
    """The numba module's docstring lines on what runs compiled (`split`: the module
    splits large matrix products between threads; `kernels`: the kernels files it
    includes, some of whose functions NUMBA_KERNELS replaces)."""
    if target != "numba":
        return []
    compiled = []
    if split:
        compiled.append("Large matrix products run on every core (NUMBA_NUM_THREADS threads).")
    compiled += [NUMBA_KERNELS[name][1] for name in sorted(kernels) if name in NUMBA_KERNELS]
    if row is not None:
        compiled.append("sgd_epoch with batch_size 1 runs the whole epoch as one compiled loop "
                        "over the examples (_sgd_epoch_one).")
    if compiler.scans:
        compiled.append("Recurrent layers run their loop over time as one compiled call where "
                        "their functions below say so.")
    compiled.append("Everything else is the NumPy target's code. numba compiles on the first "
                    "call, and keeps the result on disk when this module is a file.")
    return textwrap.wrap(" ".join(compiled), 78)


def _scan_source(context, target):
    """A recurrent layer's functions: the NumPy loop over time, or the numba target's
    compiled loop where numba_scan renders one."""
    if target == "numba":
        source = numba_scan.render_scan(context)
        if source is not None:
            return source
    return render("scan.py.j2", **context)


def _modes_context(compiler, sched, graph):
    """The template's values for train/eval mode, buffers and loss: none."""
    mode_args = ", *, train=True, rng=None" if compiler.modes else ""
    return {
        "modes": compiler.modes,
        "buffers": [{"key": b.key, "shape": repr(tuple(b.shape)), "init": b.init} for b in compiler.buffers],
        "mode_args": mode_args,
        "mode_pass": ", train=train, rng=rng" if compiler.modes else "",
        "update_arg": ", update_buffers=False" if compiler.buffers else "",
        "update_pass": ", update_buffers=True" if compiler.buffers else "",
        "modes_text": _modes_text(compiler, graph),
        "vjp": compiler.vjp,
        "output": graph.output,
        "output_shape": repr(tuple(graph[graph.output].shape[1:])),
        "dx": dict(sched.grads).get("x") if compiler.vjp else None,
    }


def _modes_text(compiler, graph):
    """The module docstring's paragraphs on modes, randomness, buffers and loss: none."""
    paragraphs = []
    if compiler.modes:
        functions = "forward and vjp" if compiler.vjp else "forward, value_and_grad and sgd_step"
        paragraphs.append(
            f"Train and eval mode: {functions} take the keywords train=True and rng=None. "
            "In train mode dropout drops each unit with probability p and scales the kept ones "
            "by 1/(1 - p), its masks drawn from rng (a numpy.random.Generator; None uses the "
            "module's _RNG, seeded with 0 when the module is loaded), and batch norm normalizes "
            "by the batch's mean and (biased) variance. In eval mode (train=False) dropout "
            "is the identity and batch norm uses the running statistics. predict is always "
            "eval mode. The same rng state gives the same masks: a run is reproducible from "
            "np.random.default_rng(seed), and a finite-difference check holds the masks fixed "
            "by passing a generator seeded the same way to every forward. forward's cache "
            "keeps the masks, so backward needs no rng.")
    if compiler.buffers:
        paragraphs.append(
            "BUFFERS names the batch norms' running statistics (<layer>.running_mean, "
            "<layer>.running_var; gamma and beta are the parameters <layer>.gamma and "
            "<layer>.beta). init_params puts them in the params dict beside the parameters "
            "(zeros and ones), so they are saved with them; they have no gradient, and an "
            "optimizer update takes {k: params[k] for k in PARAMS}. The training steps ("
            + ("vjp" if compiler.vjp else "value_and_grad and sgd_step")
            + ") update them in place in train mode, as PyTorch does in a train-mode forward: "
            "r = (1 - momentum) r + momentum s, with the batch's unbiased variance. forward "
            "does so only with update_buffers=True, so that a finite-difference check or a "
            "look at the loss changes nothing.")
    if compiler.vjp:
        paragraphs.append(
            "loss: none: the module is one piece of a larger model. forward(params, x) returns "
            "the network's output; backward(params, cache, seed) takes its adjoint seed (the "
            "gradient of the larger model's loss with respect to this output) and returns "
            "(grads, dx), the vector-Jacobian products for the parameters and the input; "
            "vjp(params, x, seed) does both. There is no value_and_grad or sgd_step.")
    return [textwrap.wrap(p, 78) for p in paragraphs]


def _predict_result(loss, logits):
    """predict's `prediction = ...` line(s): the logits, or the loss's link applied to
    them unless logits=True."""
    if loss.link in PRIMITIVES:      # an elementwise link prints as the primitive does
        linked = to_numpy(PRIMITIVES[loss.link].build(symbol(logits)))
    elif loss.link:
        linked = f"_{loss.link}({logits})"
    elif loss.name == "none":
        return [f"prediction = {logits}  # the network's output (loss: none)"]
    else:
        return [f"prediction = {logits}  # {loss.name} has no link: these are the logits"]
    return layout.statement(f"prediction = {logits} if logits else {linked}")


def _predict_doc(loss, compiler):
    """predict's docstring, as lines."""
    if compiler.vjp:
        return ['"""The network\'s output in eval mode, shape (B, *OUTPUT_SHAPE); for one example',
                'without the batch axis, its output alone.  (logits is accepted and changes nothing.)"""']
    batch = "B, T" if compiler.sequence else "B"
    one = "one sequence" if compiler.sequence else "one example"
    one_shape = f"(T, {compiler.classes})" if compiler.sequence else f"({compiler.classes},)"
    first = f"{loss.predict_text}, shape ({batch}, {compiler.classes})"
    if loss.link:
        first += f"; with logits=True the logits (before the {loss.link})"
    else:
        first += f" (the logits: logits=True changes nothing, as {loss.name} has no link)"
    text = textwrap.wrap(f'"""{first}.', 88) + [""] + textwrap.wrap(
        f"For {one} without the batch axis (see the module docstring) the result is its "
        f"{'rows' if compiler.sequence else 'row'} alone, shape {one_shape}.", 88)
    text[-1] += '"""'
    return text


def _boundary_text(compiler):
    """The module docstring's paragraph on what the functions accept."""
    dtype = compiler.dtype
    if compiler.sequence:
        x = ("x holds integer token ids (float ids are refused)" if compiler.vocab else
             f"x of another float, integer or bool dtype is cast to {dtype}")
        text = (f"forward, value_and_grad, predict and sgd_step check x, y, mask, state and "
                f"params, and raise ValueError naming the argument on anything ambiguous. "
                f"Where the meaning is clear they convert: a list or tuple becomes an array; "
                f"{x}; one sequence without the batch axis gets it, and so do its y and mask "
                f"of shape (T,) (predict then returns its rows alone). y holds integer class "
                f"ids: float labels are refused (pass integer ids).")
    elif compiler.vjp:
        text = (f"forward, vjp and predict check x and params, and backward its seed, and "
                f"raise ValueError naming the argument on anything ambiguous. Where the meaning "
                f"is clear they convert: a list or tuple becomes an array; x (and seed) of "
                f"another float, integer or bool dtype is cast to {dtype}; one example of shape "
                f"INPUT_SHAPE gets the batch axis (predict then returns its output alone; "
                f"forward and vjp what they return for a batch of one).")
    else:
        if compiler.loss.class_ids:
            y = ("y holds integer class ids, shape (B,), a single id for one example: "
                 "float labels are refused (pass integer ids)")
        else:
            y = (f"y holds targets, shape (B, {compiler.classes})"
                 + (" or (B,)" if compiler.classes == 1 else "")
                 + f", of another float, integer or bool dtype cast to {dtype}; for one "
                 f"example its ({compiler.classes},) targets"
                 + (" or one number" if compiler.classes == 1 else ""))
        text = (f"forward, value_and_grad, predict and sgd_step check x, y and params, and "
                f"raise ValueError naming the argument on anything ambiguous. Where the "
                f"meaning is clear they convert: a list or tuple becomes an array; x of "
                f"another float, integer or bool dtype is cast to {dtype}; one example of "
                f"shape INPUT_SHAPE gets the batch axis (predict then returns its row alone; "
                f"forward, value_and_grad and sgd_step what they return for a batch of one). "
                f"{y}.")
    return textwrap.wrap(text, 78)


def _global_statements(names, indent=4):
    """`global a, b, ...` lines within the line width (a global statement cannot be
    continued inside brackets, so long lists take several)."""
    lines, current = [], []
    for name in names:
        if current and indent + len("global ") + len(", ".join(current + [name])) > layout.WIDTH:
            lines.append(current)
            current = []
        current.append(name)
    return [f"global {', '.join(line)}" for line in lines + [current]]


def split_products(statements):
    """The numba target's forward: statements that have a split form (a dense layer's
    product, rows split between numba's threads) take it, unless the memory planner
    gave them a buffer to write into."""
    return [replace(s, lines=s.split) if s.split and s.buffer is None else s
            for s in statements]


def _sparse_updates(graph, sched, itemsize):
    """{gradient variable: (in-place update, names it reads, overlap.Update or None)} for
    tables and weights that sgd_step updates without forming their whole gradient; the
    third is the form that starts on the worker threads, where the op has one."""
    from ..core.autodiff import fill, is_tensor, tensor_op
    grads = dict(sched.grads)
    updates = {}
    for node in graph:
        if not is_tensor(node):
            continue
        op = tensor_op(node)
        table = node.operands[1] if op.sparse_update and len(node.operands) > 1 else None
        target = grads.get(table)
        if target and sum(s.targets[0] == target for s in sched.backward) == 1:
            g = sched.adjoints[node.name]
            reads = frozenset(node.node_operands()) | {g}
            later = op.sparse_update_later and overlap.Update(
                target, table, fill(op.sparse_update_later, node, g), reads,
                itemsize * math.prod(graph[table].shape))
            updates[target] = (fill(op.sparse_update, node, g), reads, later or None)
    return updates


def _del_lines(names, indent=4):
    """`del a, b, ...` statements for `names`, as many names a line as fit the width."""
    lines, line = [], ""
    for name in names:
        if line and indent + len(line) + len(name) + 2 > layout.WIDTH:
            lines.append(line)
            line = ""
        line = f"{line}, {name}" if line else f"del {name}"
    return lines + ([line] if line else [])


def _lines(statements, indent=4):
    """The printed statements: an op's own line list where it has one."""
    out = []
    for s in statements:
        if s.lines:
            out += [text for line in s.lines for text in layout.statement(line, indent=indent)]
        else:
            out += layout.statement(s.text(), s.comment, indent)
    return out


def _param_view(p):
    return {"key": p.key, "var": p.var, "shape": repr(tuple(p.shape)), "fan_in": p.fan_in,
            "fan_out": p.fan_out, "is_weight": p.is_weight, "transposed": p.transposed, "init": p.init}


def _summary(compiler, graph):
    def shape(s):
        return "(" + ", ".join(map(str, s)) + ")"
    lines = [f"x{'':<12} input          {shape(graph['x'].shape)}"]
    by_layer = {}
    for node in graph:
        if node.line:
            by_layer[node.line] = node
    for layer in compiler.layers:
        node = by_layer.get(layer.index)
        lines.append(f"{layer.name:<13} {layer.kind:<14} {shape(node.shape) if node else ''}")
    if not compiler.vjp:
        lines.append(f"{'J':<13} {compiler.loss.name}")
    return lines
