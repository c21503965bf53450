"""Bad input: one line `FILE:LINE:COL: error: ...`, exit status 1, no traceback,
no output file written or changed; the same SpecError through the API; and
nothing of the spec's free text reaching the generated code."""

import ast
import re

import numpy as np
import pytest

import bpcompile
from bpcompile import SpecError, compile_file, load_module
from bpcompile.cli.main import main

from conftest import EXAMPLES, run_bpcompile, write

DEEP_PARENS = "(" * 5000 + "x" + ")" * 5000
LONG_SUM = " + ".join(["x"] * 1000)

# id, spec text, expected line (None: any line of the file), expected column, message pattern
CASES = [
    ("syntax_error_in_program", "name: m\ninputs: [x]\nprogram: |\n  a = x*2\n  b = a +* 3\n",
     5, 10, r"syntax error"),
    ("syntax_error_in_expr", 'name: m\nexpr: "x +"\n', 2, None, r"syntax error"),
    ("syntax_error_in_quoted_program", 'name: m\nprogram: "a = x*2\\nb = a +* 3"\n', 2, None,
     r"syntax error"),
    ("unknown_function_in_quoted_program", 'name: m\nprogram: "a = x*2\\n\\n\\nb = foo(a)"\n', 2, None,
     r"unknown function 'foo'"),
    ("unknown_function", "name: m\nexpr: foo(x) + 1\n", 2, 7, r"unknown function 'foo'"),
    ("unknown_name", "name: m\ninputs: [x]\nprogram: |\n  a = x*2\n  b = a + q\n",
     5, 11, r"undefined name 'q'"),
    ("input_not_identifier", 'name: m\ninputs: [x, "1y"]\nexpr: x*2\n', 2, None, r"'1y' is not an identifier"),
    ("input_with_code", 'name: m\ninputs: ["x); import os; (y"]\nexpr: x*2\n', 2, None, r"not an identifier"),
    ("input_keyword", "name: m\ninputs: [x, class]\nexpr: x*2\n", 2, None, r"'class' is a Python keyword"),
    ("target_keyword", "name: m\nprogram: |\n  a = x*2\n  lambda = a + 1\n", 4, None, r"syntax error"),
    ("target_soft_keyword", "name: m\nprogram: |\n  a = x*2\n  match = a + 1\n",
     4, 3, r"'match' is a Python keyword"),
    ("target_not_identifier", "name: m\nprogram: |\n  a = x*2\n  _b = a + 1\n",
     4, 3, r"'_b' is not an identifier"),
    ("target_reserved", "name: m\nprogram: |\n  np = x*2\n  b = np*3\n", 3, 3, r"'np' is reserved"),
    ("name_keyword", "name: class\nexpr: x\n", 1, None, r"'class' is a Python keyword"),
    ("name_with_code", 'name: "m\\nimport os"\nexpr: x*2\n', 1, None, r"not an identifier"),
    ("output_with_code", 'name: m\noutput: "J\\nimport os"\nprogram: |\n  J = x*2\n', 2, None,
     r"not an identifier"),
    ("duplicate_assignment", "name: m\nprogram: |\n  a = x*2\n  a = x + 1\n  b = a\n",
     4, 3, r"'a' is assigned twice"),
    ("used_before_assigned", "name: m\nprogram: |\n  a = x*2\n  b = a + c\n  c = x\n",
     4, 11, r"'c' is used before it is assigned"),
    ("unused_variable", "name: m\nprogram: |\n  a = x*2\n  c = x + 1\n  b = a*3\n",
     4, 3, r"'c' is assigned but never used"),
    ("unused_input", "name: m\ninputs: [x, z]\nprogram: |\n  a = x*2\n", 2, None, r"'z' is not used"),
    ("wrt_not_an_input", "name: m\ninputs: [x, z]\nexpr: x*z\nwrt: [x, w]\n",
     4, None, r"wrt names 'w', which is not an input"),
    ("wrt_a_variable", "name: m\nprogram: |\n  a = x*2\n  b = a*a\nwrt: [a]\n",
     5, None, r"wrt names 'a', which is not an input"),
    ("empty_program", 'name: m\nprogram: ""\n', 2, None, r"empty program"),
    ("comment_only_program", "name: m\nprogram: |\n  # nothing here\n", None, None, r"empty program"),
    ("empty_expr", 'name: m\nexpr: ""\n', 2, None, r"empty expression"),
    ("no_program", "name: m\ninputs: [x]\n", None, None, r"exactly one of `program:`"),
    ("unknown_key", "name: m\nexpr: x\nwrtt: [x]\n", 3, 1, r"unknown key 'wrtt'"),
    ("yaml_list", "- a\n- b\n", 1, 1, r"YAML mapping"),
    ("yaml_scalar", "42\n", 1, 1, r"YAML mapping"),
    ("yaml_string", "just some words\n", 1, 1, r"YAML mapping"),
    ("yaml_empty_file", "", 1, 1, r"YAML mapping"),
    ("yaml_only_comments", "\n# nothing\n", 1, 1, r"YAML mapping"),
    ("invalid_yaml", "name: [unclosed\nexpr: x\n", None, None, r"invalid YAML"),
    ("invalid_yaml_indent", "name: m\n  expr: x\n bad: 1\n", None, None, r"invalid YAML"),
    ("yaml_python_tag", 'name: m\nexpr: !!python/object/apply:os.system ["echo PWNED"]\n', 2, None,
     r"invalid YAML"),
    ("attribute_access", "name: m\nexpr: x.__class__\n", 2, 7, r"unsupported syntax"),
    ("string_literal", "name: m\nexpr: \"'abc' + x\"\n", 2, None, r"only numbers"),
    ("huge_power", "name: m\nexpr: x + 9**9**9**9\n", 2, None, r"too large"),
    ("huge_power_in_program", "name: m\nprogram: |\n  a = x*2\n  b = a + 9**9**9**9\n  c = b*2\n",
     4, None, r"too large"),
    ("huge_exp_constant", "name: m\nexpr: x + exp(1000)\n", 2, None, r"too large|not a finite"),
    ("deep_parentheses", f"name: m\nexpr: {DEEP_PARENS}\n", 2, None, r"nested too deeply"),
    ("deep_parentheses_in_program",
     "name: m\nprogram: |\n  a = x*2\n  b = " + "(" * 300 + "a" + ")" * 300 + "\n  c = b*2\n",
     4, None, r"nested too deeply"),
    ("long_sum", f"name: m\nexpr: {LONG_SUM}\n", 2, None, r"nested too deeply|too long|too large"),
    ("long_sum_in_program",
     "name: m\nprogram: |\n  a = x*2\n  b = " + " + ".join(["a"] * 1000) + "\n  c = b*2\n",
     4, None, r"nested too deeply|too long|too large"),
    ("too_long_program", "name: m\nprogram: |\n" + "".join(f"  a{i} = x*{i}\n" for i in range(3000)),
     None, None, r"too long"),
]
IDS = [c[0] for c in CASES]


def _spec(tmp_path, case_id, text):
    return write(tmp_path / f"{case_id}.yaml", text)


def _error_line(err, path):
    lines = err.splitlines()
    assert len(lines) == 1, err
    m = re.match(rf"^{re.escape(str(path))}:(\d+):(\d+): error: (.+)$", lines[0])
    assert m, lines[0]
    return int(m.group(1)), int(m.group(2)), m.group(3)


@pytest.mark.parametrize("case_id,text,line,col,pattern", CASES, ids=IDS)
def test_bad_spec_through_the_cli(tmp_path, capsys, case_id, text, line, col, pattern):
    spec = _spec(tmp_path, case_id, text)
    out = tmp_path / "out.py"
    status = main(["compile", str(spec), "-o", str(out)])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert "Traceback" not in captured.err
    got_line, got_col, message = _error_line(captured.err, spec)
    assert re.search(pattern, message), message
    n_lines = max(1, len(text.splitlines()))
    assert 1 <= got_line <= n_lines and got_col >= 1
    if line is not None:
        assert got_line == line, captured.err
    if col is not None:
        assert got_col == col, captured.err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [spec.name], "stray temporary files"
    # an existing (generated) output file is left byte-identical
    assert main(["compile", str(EXAMPLES / "simple.yaml"), "-o", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["compile", str(spec), "-o", str(out)]) == 1
    again = capsys.readouterr()
    assert again.err == captured.err and again.out == ""
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([spec.name, out.name])


@pytest.mark.parametrize("case_id,text,line,col,pattern", CASES, ids=IDS)
def test_bad_spec_through_the_api_raises_the_same_spec_error(tmp_path, capsys, case_id, text, line, col,
                                                             pattern):
    spec = _spec(tmp_path, case_id, text)
    with pytest.raises(SpecError) as info:
        compile_file(spec)
    err = info.value
    assert re.search(pattern, err.message)
    assert str(err) == f"{spec}:{err.line}:{err.col}: error: {err.message}"
    main([str(spec)])
    assert capsys.readouterr().err.strip() == str(err)


@pytest.mark.parametrize("case_id", ["syntax_error_in_program", "unknown_name", "huge_power",
                                     "deep_parentheses", "yaml_list"])
def test_bad_spec_with_force_leaves_a_hand_written_output_alone(tmp_path, capsys, case_id):
    text = dict((c[0], c[1]) for c in CASES)[case_id]
    spec = _spec(tmp_path, case_id, text)
    out = tmp_path / "out.py"
    out.write_text("# mine\n")
    assert main(["compile", str(spec), "-o", str(out), "--force"]) == 1
    assert out.read_text() == "# mine\n"
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.parametrize("case_id", ["syntax_error_in_program", "long_sum_in_program", "deep_parentheses",
                                     "invalid_yaml", "yaml_empty_file"])
def test_bad_spec_in_a_real_process(tmp_path, case_id):
    text = dict((c[0], c[1]) for c in CASES)[case_id]
    spec = _spec(tmp_path, case_id, text)
    out = tmp_path / "out.py"
    result = run_bpcompile(spec, "-o", out)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert b"Traceback" not in result.stderr + result.stdout
    assert result.stdout == b""
    _error_line(err.rstrip("\n"), spec)
    assert not out.exists()


def test_spec_that_is_not_utf8(tmp_path, capsys):
    spec = tmp_path / "binary.yaml"
    spec.write_bytes(b"\xff\xfename: m\nexpr: x\n")
    out = tmp_path / "out.py"
    assert main([str(spec), "-o", str(out)]) == 1
    _error_line(capsys.readouterr().err, spec)
    assert not out.exists()
    with pytest.raises(SpecError):
        compile_file(spec)


# --- the API with text and SymPy --------------------------------------------------------------

@pytest.mark.parametrize("text,pattern", [
    ("foo(x) + 1", r"unknown function 'foo'"),
    ("x +* 2", r"syntax error"),
    ("x + 9**9**9**9", r"too large"),
    (DEEP_PARENS, r"nested too deeply"),
    (LONG_SUM, r"nested too deeply|too long"),
    ("a = x*2\na = x + 1\nb = a\n", r"'a' is assigned twice"),
    ("a = x*2\nc = x\nb = a\n", r"'c' is assigned but never used"),
    ("import os", r"syntax error|expected an assignment|unsupported"),
    ("__import__('os')", r"not an identifier|unknown function|only numbers"),
    ("x.real", r"unsupported syntax"),
    ("[x, x]", r"unsupported syntax"),
    ("x if x else x", r"unsupported syntax"),
    ("x // 2", r"unsupported operator"),
    ("sin(x, x)", r"takes 1 argument"),
    ("sin(x=1)", r"keyword"),
    ("", r"empty"),
])
def test_bad_text_through_the_api(text, pattern):
    with pytest.raises(SpecError) as info:
        bpcompile.compile(text)
    assert re.search(pattern, info.value.message), info.value.message
    assert str(info.value).startswith("<string>:")


def test_api_and_cli_report_the_same_message_for_the_same_expression(tmp_path, capsys):
    spec = write(tmp_path / "e.yaml", "name: m\nexpr: foo(x) + 1\n")
    main([str(spec)])
    cli_message = capsys.readouterr().err.split(": error: ", 1)[1].strip()
    with pytest.raises(SpecError) as info:
        bpcompile.compile("foo(x) + 1")
    assert info.value.message == cli_message


def test_wrt_not_an_input_through_the_api():
    with pytest.raises(SpecError, match="not an input"):
        bpcompile.compile("x*z", wrt=["w"])
    with pytest.raises(SpecError, match="keyword"):
        bpcompile.compile("x*z", inputs=["x", "z", "class"])


def test_compile_rejects_other_objects():
    with pytest.raises(SpecError):
        bpcompile.compile(42)
    with pytest.raises(SpecError):
        bpcompile.compile(["x"])


# --- nothing from the spec's text reaches the generated code ------------------------------------

MARK = "PWNED_MARKER"


def test_free_text_of_the_spec_does_not_reach_the_output(tmp_path, capsys):
    spec = write(tmp_path / "inject.yaml",
                 f"# __import__('os').system('echo {MARK}1')\n"
                 f"name: m\n"
                 f"description: \"__import__('os').system('echo {MARK}2')\"\n"
                 f"program: |\n"
                 f"  # os.system('echo {MARK}3')\n"
                 f"  a = x*2  # {MARK}4 \"\"\" '''\n"
                 f"  b = a + 1.5e-3\n"
                 f"check_at: {{x: 0.5}}\n")
    out = tmp_path / "out.py"
    assert main([str(spec), "-o", str(out)]) == 0
    source = out.read_text()
    assert MARK not in source and "__import__" not in source and "os.system" not in source
    # and what does come out is ordinary code that runs
    module = load_module(source)
    value, (dx,) = module.value_and_grad(0.5)
    assert value == pytest.approx(1.0015) and dx == pytest.approx(2.0)
    assert "0.0015" in source


def test_generated_code_contains_only_known_names_and_numbers(tmp_path):
    spec = write(tmp_path / "names.yaml",
                 "name: weird_but_legal\ninputs: [alpha, beta2]\nprogram: |\n"
                 "  gamma_ = alpha*beta2 + 2.5e-7\n  delta = tanh(gamma_)**3 - 7\n")
    source = compile_file(spec).source
    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    spec_names = {"alpha", "beta2", "gamma_", "delta"}
    generated = {n for n in names if re.fullmatch(r"(ddelta_d\w+|(gamma_|delta)_\d+|t\d+|\w+_inv)", n)}
    builtin = {"np", "cache", "seed", "grad", "shape", "full", "lead", "axes", "range", "tuple", "len",
               "enumerate", "n", "i", "value", "grads", "out", "buffers",
               "INPUTS", "WRT", "_sum_to", "forward", "backward",
               # the blocked value_and_grad and its helpers
               "_BLOCK", "_fits_blocks", "_blockwise", "_value_and_grad_block", "_write_into",
               "kernel", "inputs", "first", "a", "all", "isinstance", "ValueError", "type", "getattr",
               "zip", "array", "result", "results", "flat", "scratch", "parts", "b", "j", "r", "min",
               "list", "_", "_check_out", "any", "other", "k", "count", "given"}
    assert names - spec_names - generated - builtin == set(), names - spec_names - generated - builtin
    numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)}
    assert 2.5e-7 in numbers and 7 in numbers and 3 in numbers


def test_file_name_with_newline_and_quotes_does_not_break_the_header(tmp_path):
    weird = tmp_path / 'we"ird\nna\'me """.yaml'
    weird.write_bytes((EXAMPLES / "simple.yaml").read_bytes())
    out = tmp_path / "out.py"
    assert main(["compile", str(weird), "-o", str(out)]) == 0
    source = out.read_text()
    lines = source.splitlines()
    assert lines[0].startswith("# @generated by bpcompile")
    assert lines[1].startswith("# sha256 of the spec: ")
    assert lines[2].startswith('"""simple:')
    tree = ast.parse(source)
    assert ast.get_docstring(tree).startswith("simple:")
    module = load_module(source)
    _, (dx,) = module.value_and_grad(0.9)
    t = 0.81
    assert dx == pytest.approx(-np.sin(np.sin(t) + 3 * t) * (np.cos(t) + 3) * 1.8, rel=1e-13)
