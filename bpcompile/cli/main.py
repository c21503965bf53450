"""The `bpcompile` command.

    bpcompile SPEC.yaml -o model.py        compile a spec to a standalone module
    bpcompile expr "EXPR" -o f.py          compile one expression
    bpcompile check SPEC.yaml              finite-difference check of the gradients
    bpcompile graph SPEC.yaml -o g.dot     the computation graph (Graphviz DOT)
    bpcompile train SPEC.yaml              SGD training (layer specs)

Bad input is reported as one line `FILE:LINE:COL: error: ...` with exit status 1.
`-o -` (the default) writes to standard output.  An expression that starts
with `-` may follow `--` (`bpcompile expr -- -x`), or stand alone (`bpcompile expr -x`).
"""

import argparse
import os
import sys

from ..version import __version__
from ..errors import SpecError
from .output import check_output, write_output
from .train_args import TRAINING_COMMANDS, add_training_parsers

# SymPy and NumPy are imported by the commands that need them, so that
# `--help` and `--version` answer at once.

COMMANDS = ("compile", "expr", "check", "graph") + TRAINING_COMMANDS
_PLACEHOLDER = "\x00expression"          # stands for an `expr` text that starts with "-"
MAX_LINE = 1000                          # characters of the one error line


def _parser():
    parser = argparse.ArgumentParser(prog="bpcompile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bpcompile {__version__}")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("compile", help="compile a spec into a standalone module")
    p.add_argument("spec")
    _output_options(p)

    p = sub.add_parser("expr", help="compile one expression or program text")
    p.add_argument("text")
    p.add_argument("--inputs", help="comma-separated argument order")
    p.add_argument("--wrt", help="comma-separated inputs to differentiate with respect to")
    p.add_argument("--name", default="model", help="module name (an identifier)")
    _output_options(p)

    p = sub.add_parser("check", help="compare the gradients with central finite differences")
    p.add_argument("spec")
    p.add_argument("--at", action="append", default=[], metavar="NAME=VALUE",
                   help="input value (repeatable); default: the spec's check_at, else random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-6, help="largest acceptable relative error")

    p = sub.add_parser("graph", help="write the computation graph")
    p.add_argument("spec")
    p.add_argument("--text", action="store_true", help="one equation per line instead of DOT")
    _output_options(p)

    add_training_parsers(sub)
    return parser


def _output_options(p):
    p.add_argument("-o", "--output", help="output file; - is standard output (the default)")
    p.add_argument("--force", action="store_true",
                   help="replace a regular file bpcompile did not write")


_EXPR_LONG = ("--inputs", "--wrt", "--name", "--output", "--force", "--help")


def _expression_argument(argv):
    """(argv, text): in `expr`, an expression that starts with "-" and is no option
    (`-x`, `-(a+b)`, `--x`) is swapped for a placeholder so that argparse leaves it
    alone; `text` is the expression (None if there is none to swap)."""
    if "expr" not in argv[:1]:
        return argv, None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return argv, None
        option = arg.split("=", 1)[0]
        if arg in ("-h", "-o") or (option.startswith("--") and len(option) > 2
                                   and any(o.startswith(option) for o in _EXPR_LONG)):
            takes_value = option in ("-o",) or (option.startswith("--") and not any(
                o.startswith(option) for o in ("--force", "--help")))
            i += 2 if takes_value and "=" not in arg else 1
            continue
        if arg.startswith("-o"):          # -oFILE
            i += 1
            continue
        return argv[:i] + [_PLACEHOLDER] + argv[i + 1:], arg
    return argv, None


def main(argv=None):
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "compile")
    argv, text = _expression_argument(argv)
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 1
    if text is not None and getattr(args, "text", None) == _PLACEHOLDER:
        args.text = text
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
    return _emit(args, compile_file(args.spec).source)


def cmd_expr(args):
    from ..compiler import compile_text
    check_output(_output(args), args.force)
    split = (lambda s: [n.strip() for n in s.split(",") if n.strip()] if s else None)
    compiled = compile_text(args.text, inputs=split(args.inputs), wrt=split(args.wrt), name=args.name)
    return _emit(args, compiled.source)


def cmd_graph(args):
    from ..compiler import compile_file
    check_output(_output(args), args.force)
    graph = compile_file(args.spec).graph
    if args.text:
        return _emit(args, f"# @generated by bpcompile {__version__}\n" + graph.equations())
    return _emit(args, f"// @generated by bpcompile {__version__}\n" + graph.to_dot())


def cmd_check(args):
    from ..compiler import compile_file, load_module
    compiled = compile_file(args.spec)
    if not (args.tol >= 0 and args.tol < float("inf")):
        raise SpecError(f"--tol must be a finite non-negative number, got {args.tol}", args.spec, 1, 1)
    if compiled.model is not None:
        return _check_layers(compiled, args)
    module = load_module(compiled.source, compiled.name)
    values, where = _check_point(compiled, args)
    from ..training.gradcheck import check_module, one_sided_gradients
    import numpy as np
    point = [np.float64(values[n]) for n in module.INPUTS]   # NumPy: overflow gives inf, not an error
    at = ", ".join(f"{n}={values[n]:g}" for n in module.INPUTS)
    output = compiled.graph.output
    with np.errstate(all="ignore"):
        value, grads = module.value_and_grad(*point)
        if not (np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads)):
            raise where(f"{at} is outside the domain of {output}: its value or gradient is not "
                        "finite there; choose another point with --at NAME=VALUE")
        errors = check_module(module, point)
        worst = max(errors.values())
        if worst > args.tol or not np.isfinite(worst):
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
    for name, err in errors.items():
        print(f"d{output}/d{name}: relative error {err:.2e}")
    verdict = "ok" if worst <= args.tol else f"FAILED (tolerance {args.tol:g})"
    print(f"max relative error {worst:.2e} at {at}: {verdict}")
    return 0 if worst <= args.tol else 1


def _check_layers(compiled, args):
    from ..training.check import BATCH, ENTRIES, layer_errors
    errors = layer_errors(compiled.spec, args.seed)
    for key, err in errors.items():
        print(f"dJ/d{key}: relative error {err:.2e}")
    if not errors:
        print("the spec has no parameters: there is no gradient to check")
        return 0
    worst = max(errors.values())
    verdict = "ok" if worst <= args.tol else f"FAILED (tolerance {args.tol:g})"
    print(f"max relative error {worst:.2e} (float64, batch {BATCH}, up to {ENTRIES} entries per "
          f"parameter): {verdict}")
    return 0 if worst <= args.tol else 1


def _check_point(compiled, args):
    """(input name -> float, where): the point to check at, and a function that makes
    a SpecError located where the point came from (check_at, --at, or the file)."""
    import numpy as np
    from ..limits import MAX_CONSTANT, shorten
    inputs = list(compiled.graph.inputs)
    spec = compiled.spec
    rng = np.random.default_rng(args.seed)
    values = {n: float(rng.uniform(0.5, 1.5)) for n in inputs}
    where = (lambda message: SpecError(message, args.spec, 1, 1))

    def number(value):
        try:
            value = float(value)
        except (OverflowError, ValueError, TypeError):
            return None
        return value if abs(value) <= MAX_CONSTANT else None       # also refuses nan

    given = spec.get("check_at") if spec is not None else None
    if given is not None:
        if not isinstance(given, dict):
            raise spec.error("check_at must map input names to numbers", "check_at")
        for name, value in given.items():
            if name not in values or isinstance(value, bool) or not isinstance(value, (int, float)):
                raise spec.error(f"check_at: {shorten(name)} must be an input with a number",
                                 "check_at", name)
            if number(value) is None:
                raise spec.error(f"check_at: {shorten(name)} must be a finite number of magnitude "
                                 f"at most {MAX_CONSTANT:g}", "check_at", name)
            values[name] = number(value)
        where = (lambda message: spec.error(message, "check_at"))
    for item in args.at:
        name, _, value = item.partition("=")
        if name not in values:
            raise SpecError(f"--at {shorten(item)}: {shorten(name)} is not an input", args.spec, 1, 1)
        if number(value) is None:
            raise SpecError(f"--at {shorten(item)}: {shorten(value)} is not a finite number of "
                            f"magnitude at most {MAX_CONSTANT:g}", args.spec, 1, 1)
        values[name] = number(value)
        where = (lambda message: SpecError(message, args.spec, 1, 1))
    return values, where


def cmd_training(args):
    from .train_command import run_command
    return run_command(args)


COMMAND_FUNCTIONS = {"compile": cmd_compile, "expr": cmd_expr, "check": cmd_check,
                     "graph": cmd_graph, **{name: cmd_training for name in TRAINING_COMMANDS}}


if __name__ == "__main__":
    sys.exit(main())
