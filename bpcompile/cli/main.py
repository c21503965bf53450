"""The `bpcompile` command.

    bpcompile SPEC.yaml -o model.py        compile a spec to a standalone module
    bpcompile expr "EXPR" -o f.py          compile one expression
    bpcompile check SPEC.yaml|"EXPR"       finite-difference check of the gradients
    bpcompile graph SPEC.yaml|"EXPR" -o g.dot|g.png|g.svg|g.pdf
                                           the computation graph (DOT; images via Graphviz)
    bpcompile train SPEC.yaml              SGD training (layer specs)

`check` and `graph` take a spec file (a name ending in .yaml or .yml) or an
expression or program text, like `expr`.  Bad input is reported as one line
`FILE:LINE:COL: error: ...` with exit status 1.  `-o -` (the default) writes to
standard output.  An expression that starts with `-` may follow `--`
(`bpcompile expr -- -x`), or stand alone (`bpcompile expr -x`).
"""

import argparse
import os
import shlex
import shutil
import struct
import subprocess
import sys
import zlib

from ..version import __version__
from ..errors import SpecError
from .output import PNG_MARKER, check_output, is_stdout, write_file, write_output
from .train_args import TRAINING_COMMANDS, add_training_parsers

# SymPy and NumPy are imported by the commands that need them, so that
# `--help` and `--version` answer at once.

COMMANDS = ("compile", "expr", "check", "graph") + TRAINING_COMMANDS
_PLACEHOLDER = "\x00expression"          # stands for an `expr` text that starts with "-"
MAX_LINE = 1000                          # characters of the one error line
DOT_FORMATS = {".dot": "dot", ".gv": "dot", ".png": "png", ".svg": "svg", ".pdf": "pdf"}
DOT_TIMEOUT = 60                         # seconds Graphviz may take to render one graph


def _parser():
    parser = argparse.ArgumentParser(prog="bpcompile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bpcompile {__version__}")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("compile", help="compile a spec into a standalone module")
    p.add_argument("spec")
    _output_options(p)
    _target_option(p)

    p = sub.add_parser("expr", help="compile one expression or program text")
    p.add_argument("text")
    p.add_argument("--inputs", help="comma-separated argument order")
    p.add_argument("--wrt", help="comma-separated inputs to differentiate with respect to")
    p.add_argument("--name", default="model", help="module name (an identifier)")
    _output_options(p)
    _target_option(p)

    p = sub.add_parser("check", help="compare the gradients with central finite differences")
    p.add_argument("spec", help="a spec file (.yaml or .yml) or an expression or program text")
    p.add_argument("--at", action="append", default=[], metavar="NAME=VALUE",
                   help="input value: a number, a vector `theta=0.5,-1` (`x=2,` has one "
                        "entry) or a matrix `X=1,2;3,4` (rows separated by ;) (repeatable; "
                        "expressions and programs only); default: the spec's check_at, "
                        "else random numbers")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random point, or of a layer spec's random parameters and "
                        "batch (default 0)")
    p.add_argument("--tol", type=float, default=1e-6, help="largest acceptable relative error")

    p = sub.add_parser("graph", help="write the computation graph",
                       description="Write the computation graph. The format follows the -o "
                       "suffix: .dot or .gv (and -o -) DOT text; .png, .svg or .pdf rendered "
                       "by Graphviz's `dot` program, which must be installed.")
    p.add_argument("spec", help="a spec file (.yaml or .yml) or an expression or program text")
    p.add_argument("--text", action="store_true", help="one equation per line instead of DOT")
    _output_options(p)

    add_training_parsers(sub)
    return parser


def _target_option(p):
    from ..codegen.targets import DEFAULT_TARGET, TARGETS
    p.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                   help="numpy: NumPy only (the default); numba: compiled loops, needs the "
                        "numba package where the module runs (pip install 'bpcompile[numba]')")


def _output_options(p):
    p.add_argument("-o", "--output", help="output file; - is standard output (the default)")
    p.add_argument("--force", action="store_true",
                   help="replace a regular file bpcompile did not write")


# Commands whose positional argument may be expression text: (options that take a
# value, flags).  Used only to tell an expression such as `-x` from an option.
_TEXT_COMMANDS = {
    "expr": (("-o", "--output", "--inputs", "--wrt", "--name", "--target"),
             ("-h", "--help", "--force")),
    "check": (("--at", "--seed", "--tol"), ("-h", "--help")),
    "graph": (("-o", "--output"), ("-h", "--help", "--force", "--text")),
}


def _expression_argument(argv):
    """(argv, text): in `expr`, `check` and `graph`, an expression that starts with "-"
    and is no option (`-x`, `-(a+b)`, `--x`) is swapped for a placeholder so that
    argparse leaves it alone; `text` is the expression (None if there is none to swap)."""
    if not argv or argv[0] not in _TEXT_COMMANDS:
        return argv, None
    valued, flags = _TEXT_COMMANDS[argv[0]]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return argv, None
        kind = _option_kind(arg, valued, flags)
        if kind is None:
            return argv[:i] + [_PLACEHOLDER] + argv[i + 1:], arg
        i += 2 if kind == "valued" else 1
    return argv, None


def _option_kind(arg, valued, flags):
    """"valued" (an option whose value is the next argument), "flag" (an option that
    stands alone, or carries its value: `--at=x=1`, `-oFILE`), or None: no option."""
    option = arg.split("=", 1)[0]
    if option.startswith("--"):
        # argparse accepts unambiguous prefixes of long options
        matches = [o for o in valued + flags if len(option) > 2 and o.startswith(option)]
        if not matches:
            return None
        return "valued" if "=" not in arg and all(m in valued for m in matches) else "flag"
    if arg in valued:
        return "valued"
    if arg in flags or any(arg.startswith(o) for o in valued if len(o) == 2):
        return "flag"
    return None


def main(argv=None):
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "compile")
    argv, text = _expression_argument(argv)
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 1
    for positional in ("text", "spec"):
        if text is not None and getattr(args, positional, None) == _PLACEHOLDER:
            setattr(args, positional, text)
    import warnings
    try:
        with warnings.catch_warnings():
            # a NaN or an overflow is reported as an error line, never as a warning beside it
            warnings.simplefilter("ignore", RuntimeWarning)
            return COMMAND_FUNCTIONS[args.command](args)
    except SpecError as err:
        _error_line(str(err))
        return 1
    except BrokenPipeError:
        # `bpcompile ... | head -1`: the reader has gone, which is no error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except KeyboardInterrupt:
        print("bpcompile: interrupted", file=sys.stderr)
        return 130
    except Exception as err:      # a bug in bpcompile, not in the input: one line, unless debugging
        if os.environ.get("BPCOMPILE_DEBUG"):
            raise
        _error_line(f"bpcompile: internal error: {type(err).__name__}: {err} "
                    "(set BPCOMPILE_DEBUG=1 for the traceback)")
        return 2


def _error_line(text):
    lines = str(text).splitlines()
    line = lines[0].rstrip() if lines else "bpcompile: error"
    if len(line) > MAX_LINE:
        line = line[:MAX_LINE - 3] + "..."
    try:
        print(line, file=sys.stderr, flush=True)
    except (BrokenPipeError, OSError):
        pass


def _output(args):
    return "-" if args.output is None else args.output


def _emit(args, text):
    write_output(_output(args), text, force=args.force)
    return 0


def cmd_compile(args):
    from ..compiler import compile_file
    check_output(_output(args), args.force)
    return _emit(args, compile_file(args.spec, args.target).source)


def cmd_expr(args):
    from ..compiler import compile_text
    check_output(_output(args), args.force)
    split = (lambda s: [n.strip() for n in s.split(",") if n.strip()] if s else None)
    compiled = compile_text(args.text, inputs=split(args.inputs), wrt=split(args.wrt),
                            name=args.name, target=args.target)
    return _emit(args, compiled.source)


def _compile_argument(arg):
    """(Compiled, where messages point): `arg` is a spec file by the API's rule
    (compiler.spec_file), else expression or program text."""
    from ..compiler import compile_file, compile_text, spec_file
    if spec_file(arg) is not None:
        return compile_file(arg), arg
    return compile_text(arg), "<string>"


# --- graph ------------------------------------------------------------------------------------

def cmd_graph(args):
    out = _output(args)
    check_output(out, args.force)
    kind = _graph_format(out, args.text)
    dot_program = _graphviz(out, kind, args.spec) if kind not in ("dot", "text") else None
    graph = _compile_argument(args.spec)[0].graph
    if kind == "text":
        return _emit(args, f"# @generated by bpcompile {__version__}\n" + graph.equations())
    dot = f"// @generated by bpcompile {__version__}\n" + graph.to_dot()
    if kind == "dot":
        return _emit(args, dot)
    image = _render(dot_program, dot, kind, out)
    write_file(out, lambda f: f.write(image), force=args.force)
    return 0


def _graph_format(out, text):
    """"text", "dot", or the Graphviz output format that the -o suffix asks for."""
    if is_stdout(out):
        return "text" if text else "dot"
    suffix = os.path.splitext(out)[1].lower()
    kind = DOT_FORMATS.get(suffix)
    if text:
        if kind not in (None, "dot"):
            raise _file_error(out, f"--text writes text, not a {suffix} image; use -o NAME.txt")
        return "text"
    if kind is None:
        found = f"suffix {suffix!r}" if suffix else "no suffix"
        raise _file_error(out, f"-o: unknown graph format ({found}): use .dot or .gv for DOT "
                          "text, or .png, .svg or .pdf for an image rendered by Graphviz")
    return kind


def _graphviz(out, kind, spec):
    """The path of Graphviz's `dot` program, or a one-line error that says how to get it."""
    program = shutil.which("dot")
    if program is None:
        stem = os.path.splitext(os.path.basename(out))[0] or "graph"
        from ..limits import MAX_ECHO
        # the command as the user can paste it, unless the text is too long or has lines
        given = shlex.quote(spec) if len(spec) <= MAX_ECHO and "\n" not in spec else "SPEC"
        by_hand = (f"bpcompile graph {given} -o {shlex.quote(stem + '.dot')} && "
                   f"dot -T{kind} {shlex.quote(stem + '.dot')} -o {shlex.quote(out)}")
        raise _file_error(out, f"writing a .{kind} image needs Graphviz's `dot` program, which is "
                          "not installed: install the graphviz package (`apt install graphviz` or "
                          f"`brew install graphviz`), or write DOT and render it: {by_hand}")
    return program


def _render(program, dot, kind, out):
    """The image bytes that `dot -T<kind>` makes of the DOT text (given on stdin)."""
    try:
        result = subprocess.run([program, f"-T{kind}"], input=dot.encode("utf-8"),
                                capture_output=True, timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise _file_error(out, f"Graphviz's dot did not finish within {DOT_TIMEOUT} s; "
                          "write DOT (-o NAME.dot) instead") from None
    except OSError as err:
        raise _file_error(out, f"cannot run Graphviz's dot ({program}): "
                          f"{err.strerror or err}") from None
    if result.returncode != 0 or not result.stdout:
        from ..limits import clip
        said = result.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = f": {clip(said[0])}" if said else ""
        status = (f"failed (exit status {result.returncode})" if result.returncode
                  else "wrote nothing")
        raise _file_error(out, f"Graphviz's dot {status}{reason}")
    marked = {"png": _png_marked, "svg": _svg_marked}.get(kind)
    return marked(result.stdout) if marked else result.stdout


def _png_marked(data):
    """PNG bytes with bpcompile's text chunk after IHDR, so that a later run may
    replace the file without --force (output.generated_by_us looks for it)."""
    ihdr_end = 8 + 8 + 13 + 4                # signature, IHDR length and type, data, CRC
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"):
        return data
    kind_and_body = PNG_MARKER               # b"tEXt" + keyword NUL text
    chunk = (struct.pack(">I", len(kind_and_body) - 4) + kind_and_body
             + struct.pack(">I", zlib.crc32(kind_and_body)))
    return data[:ihdr_end] + chunk + data[ihdr_end:]


SVG_MARKER = b"<!-- @generated by bpcompile -->\n"


def _svg_marked(data):
    """SVG bytes with bpcompile's comment after the XML declaration (where a comment
    may stand), so that the file says where it came from."""
    if data.startswith(b"<?xml"):
        end = data.find(b"?>")
        if end >= 0:
            cut = end + 2
            if data[cut:cut + 1] == b"\n":
                cut += 1
            return data[:cut] + SVG_MARKER + data[cut:]
        return data
    return SVG_MARKER + data


def _file_error(path, message):
    from ..limits import clip
    return SpecError(message, clip(path), 1, 1)


# --- check ------------------------------------------------------------------------------------

def cmd_check(args):
    compiled, where = _compile_argument(args.spec)
    if not (args.tol >= 0 and args.tol < float("inf")):
        raise SpecError(f"--tol must be a finite non-negative number, got {args.tol}", where, 1, 1)
    if compiled.model is not None:
        if args.at:
            raise SpecError("--at applies to expressions and programs: a layer spec is checked "
                            "at random parameters and a random batch (choose them with --seed)",
                            where, 1, 1)
        return _check_layers(compiled, args)
    return _check_program(compiled, args, where)


def _subject(compiled, args, file):
    """What the check's heading calls the function: a short expression as written,
    else the name of the program's output."""
    from ..limits import MAX_ECHO
    text = args.spec
    if file == "<string>" and len(text) <= MAX_ECHO and "\n" not in text and "=" not in text:
        return text.strip()
    return compiled.graph.output


def _check_program(compiled, args, file):
    from ..compiler import load_module
    from ..training.gradcheck import module_checks, one_sided_gradients
    import numpy as np
    module = load_module(compiled.source, compiled.name)
    from ..training.check import point_text
    values, where = _check_point(compiled, args, file)
    # NumPy scalars and arrays: an overflow gives inf, not an error
    point = [np.asarray(values[n], dtype=np.float64)[()] for n in module.INPUTS]
    at = ", ".join(f"{n}={point_text(values[n])}" for n in module.INPUTS)
    output = compiled.graph.output
    with np.errstate(all="ignore"):
        try:
            value, grads = module.value_and_grad(*point)
        except ValueError as err:       # shapes that do not fit: `@`, broadcasting
            raise where(f"cannot evaluate {output} at {at}: {err}") from None
        if not (np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads)):
            raise where(f"{at} is outside the domain of {output}: its value or gradient is not "
                        "finite there; choose another point with --at NAME=VALUE")
        checks = module_checks(module, point)
        worst = max(c.error for c in checks)
        if worst > args.tol or not np.isfinite(worst):
            _refuse_kinks(module, point, output, at, where, one_sided_gradients)
    print(f"gradient of {_subject(compiled, args, file)} at {at} (analytic, and central "
          "differences in float64):")
    _print_checks(checks, "input")
    verdict = "ok" if worst <= args.tol else f"FAILED (tolerance {args.tol:g})"
    print(f"max relative error {worst:.2e} at {at}: {verdict}")
    return 0 if worst <= args.tol else 1


def _refuse_kinks(module, point, output, at, where, one_sided_gradients):
    """Raise where the check cannot mean anything: the differences leave the domain,
    or the one-sided differences disagree (a kink, as relu has at 0)."""
    import numpy as np
    for name, (left, right) in one_sided_gradients(module, point).items():
        if not (np.isfinite(left) and np.isfinite(right)):
            raise where(f"{output} is not defined on both sides of {at} (the "
                        f"finite differences in {name} leave its domain); choose "
                        "another point with --at NAME=VALUE")
        if abs(left - right) > 1e-3 * max(abs(left), abs(right), 1e-3):
            raise where(f"{output} is not differentiable at {at}: the one-sided "
                        f"differences in {name} disagree ({left:.6g} from the left, "
                        f"{right:.6g} from the right); choose another point with --at "
                        "NAME=VALUE")


def _print_checks(checks, first):
    """The checked entries side by side: name (with the index of an array entry),
    analytic, numeric and their relative error, in aligned columns."""
    from ..training.gradcheck import relative_error
    rows = [(first, "analytic", "numeric", "relative error")]
    for check in checks:
        for index, analytic, numeric in check.entries:
            label = check.name if check.checked == 1 and not index else (
                f"{check.name}[{','.join(map(str, index))}]")
            rows.append((label, f"{analytic:.15g}", f"{numeric:.15g}",
                         f"{relative_error(analytic, numeric):.2e}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _check_layers(compiled, args):
    from ..training.check import BATCH, ENTRIES, layer_checks
    from ..training.gradcheck import SHOWN
    checks = layer_checks(compiled.spec, args.seed)
    if not checks:
        print("the spec has no parameters: there is no gradient to check")
        return 0
    print(f"gradient of the loss at random parameters (float64, batch {BATCH}, seed {args.seed}; "
          f"{SHOWN} of the checked entries of each parameter):")
    _print_checks(checks.values(), "parameter")
    for key, check in checks.items():
        entries = f"{check.checked} entry" if check.checked == 1 else f"{check.checked} entries"
        print(f"dJ/d{key}: relative error {check.error:.2e} (norm-wise, over {entries})")
    worst = max(c.error for c in checks.values())
    verdict = "ok" if worst <= args.tol else f"FAILED (tolerance {args.tol:g})"
    print(f"max relative error {worst:.2e} (float64, batch {BATCH}, up to {ENTRIES} entries per "
          f"parameter): {verdict}")
    return 0 if worst <= args.tol else 1


def _check_point(compiled, args, file):
    """(input name -> value, where): the point to check at, and a function that makes a
    SpecError located where the point came from (check_at, --at, or the file).  A value
    is a float, or a float64 array (a vector or matrix from check_at or --at); inputs
    given no value get a random number in [0.5, 1.5]."""
    import numpy as np
    from ..limits import shorten
    from ..training.check import parse_point_value, point_value
    inputs = list(compiled.graph.inputs)
    spec = compiled.spec
    rng = np.random.default_rng(args.seed)
    values = {n: float(rng.uniform(0.5, 1.5)) for n in inputs}
    where = (lambda message: SpecError(message, file, 1, 1))

    given = spec.get("check_at") if spec is not None else None
    if given is not None:
        if not isinstance(given, dict):
            raise spec.error("check_at must map input names to numbers or lists of numbers",
                             "check_at")
        for name, value in given.items():
            if name not in values:
                raise spec.error(f"check_at: {shorten(name)} is not an input", "check_at", name)
            try:
                values[name] = point_value(value)
            except ValueError as err:
                raise spec.error(f"check_at: {shorten(name)} {err}", "check_at", name) from None
        where = (lambda message: spec.error(message, "check_at"))
    for item in args.at:
        name, _, value = item.partition("=")
        if name not in values:
            raise SpecError(f"--at {shorten(item)}: {shorten(name)} is not an input", file, 1, 1)
        try:
            values[name] = parse_point_value(value)
        except ValueError as err:
            raise SpecError(f"--at {shorten(item)}: the value {err} (a number, numbers "
                            "separated by commas, or rows separated by ;)", file, 1, 1) from None
        where = (lambda message: SpecError(message, file, 1, 1))
    return values, where


def cmd_training(args):
    from .train_command import run_command
    return run_command(args)


COMMAND_FUNCTIONS = {"compile": cmd_compile, "expr": cmd_expr, "check": cmd_check,
                     "graph": cmd_graph, **{name: cmd_training for name in TRAINING_COMMANDS}}


if __name__ == "__main__":
    sys.exit(main())
