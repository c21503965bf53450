"""The API's one rule for spec files, the constants `e` and `pi` in programs, and
syntax errors at their real line and column."""

import math
from pathlib import Path

import pytest

import bpcompile
from bpcompile import SpecError
from bpcompile.cli.main import main

from conftest import EXAMPLES, write

MLP = EXAMPLES / "mlp_digits.yaml"
SIMPLE = EXAMPLES / "simple.yaml"


# --- one rule for spec files ----------------------------------------------------------------

@pytest.mark.parametrize("as_path", [str, Path])
def test_compile_takes_a_spec_file_as_str_or_path(as_path):
    module = bpcompile.compile(as_path(MLP))
    assert set(module.PARAMS) == {"linear1.W", "linear1.b", "head.W", "head.b"}
    simple = bpcompile.compile(as_path(SIMPLE))
    x = 0.7
    _, (dx,) = simple.value_and_grad(x)
    # J = cos(sin(x**2) + 3 x**2): dJ/dx = -sin(u) (cos(t) + 3) 2x
    t = x * x
    expected = -math.sin(math.sin(t) + 3 * t) * (math.cos(t) + 3) * 2 * x
    assert dx == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("as_path", [str, Path])
def test_graph_takes_a_spec_file_as_str_or_path(as_path):
    g = bpcompile.graph(as_path(SIMPLE))
    assert g.output == "J" and list(g.inputs) == ["x"]


def test_a_yml_suffix_is_a_spec_file_too(tmp_path):
    spec = write(tmp_path / "f.yml", "name: f\nexpr: x*y\n")
    assert bpcompile.compile(spec).INPUTS == ("x", "y")
    assert bpcompile.compile(str(spec)).INPUTS == ("x", "y")
    assert list(bpcompile.graph(str(spec)).inputs) == ["x", "y"]


def test_compile_and_graph_take_a_spec_dict():
    data = {"name": "m", "expr": "x*y"}
    assert bpcompile.compile(data).INPUTS == ("x", "y")
    assert list(bpcompile.graph(data).inputs) == ["x", "y"]


@pytest.mark.parametrize("entry", [bpcompile.compile, bpcompile.graph])
def test_missing_spec_file_names_the_file(tmp_path, entry):
    for missing in (tmp_path / "nope.yaml", str(tmp_path / "nope.yml")):
        with pytest.raises(SpecError) as err:
            entry(missing)
        assert str(missing) in str(err.value) and "No such file" in str(err.value)


@pytest.mark.parametrize("entry", [bpcompile.compile, bpcompile.graph])
def test_a_path_with_another_suffix_is_refused(tmp_path, entry):
    spec = write(tmp_path / "f.txt", "name: f\nexpr: x*y\n")
    for given in (spec, Path("nope.json")):
        with pytest.raises(SpecError, match=r"\.yaml or \.yml"):
            entry(given)
    # text that names an existing file of another suffix is a file name, not an expression
    with pytest.raises(SpecError, match=r"\.yaml or \.yml"):
        entry(str(spec))


@pytest.mark.parametrize("entry", [bpcompile.compile, bpcompile.graph])
def test_expression_text_stays_text(tmp_path, entry, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_text("name: f\nexpr: y*y\n")     # a file named like the expression
    result = entry("x")
    inputs = result.INPUTS if hasattr(result, "INPUTS") else tuple(result.inputs)
    assert inputs == ("x",)


def test_options_for_text_are_refused_with_a_spec_file():
    with pytest.raises(SpecError, match="inputs"):
        bpcompile.compile(SIMPLE, inputs=["x"])
    with pytest.raises(SpecError, match="wrt"):
        bpcompile.graph(str(SIMPLE), wrt="x")


# --- e and pi ---------------------------------------------------------------------------------

def test_e_and_pi_are_constants_in_expressions():
    module = bpcompile.compile("pi*x**2 + e*x")
    assert module.INPUTS == ("x",)
    value, (dx,) = module.value_and_grad(1.5)
    assert value == pytest.approx(math.pi * 2.25 + math.e * 1.5, rel=1e-15)
    assert dx == pytest.approx(2 * math.pi * 1.5 + math.e, rel=1e-15)


def test_e_and_pi_are_constants_in_programs_and_spec_files(tmp_path):
    spec = write(tmp_path / "c.yaml", "name: c\nprogram: |\n  t = cos(pi*x)\n  J = t*e\n")
    module = bpcompile.compile(spec)
    assert module.INPUTS == ("x",)
    _, (dx,) = module.value_and_grad(0.25)
    assert dx == pytest.approx(-math.e * math.pi * math.sin(math.pi * 0.25), rel=1e-14)
    # the docstring quotes the names the user wrote
    assert "cos(pi*x)" in module.SOURCE


def test_e_listed_as_an_input_is_an_input():
    module = bpcompile.compile("e*x + pi", inputs=["x", "e"])
    assert module.INPUTS == ("x", "e")
    value, (dx, de) = module.value_and_grad(2.0, 3.0)
    assert value == pytest.approx(6.0 + math.pi) and dx == 3.0 and de == 2.0


def test_e_as_an_input_in_a_spec_file(tmp_path):
    spec = write(tmp_path / "c.yaml", "name: c\ninputs: [pi, x]\nexpr: pi*x\n")
    module = bpcompile.compile(spec)
    assert module.INPUTS == ("pi", "x")
    assert module.evaluate(2.0, 5.0) == 10.0


def test_assigning_to_e_or_pi_is_refused(tmp_path):
    spec = write(tmp_path / "c.yaml", "name: c\nprogram: |\n  t = x*2\n  pi = t + 1\n")
    with pytest.raises(SpecError) as err:
        bpcompile.compile(spec)
    assert (err.value.line, err.value.col) == (4, 3)
    assert "constant" in err.value.message and "pi" in err.value.message


def test_a_constant_only_expression_has_nothing_to_differentiate():
    with pytest.raises(SpecError, match="constant"):
        bpcompile.compile("e*pi")


# --- syntax errors at their real place ---------------------------------------------------------

@pytest.mark.parametrize("text, line, col", [
    ("x**2 +", 1, 7),                # the expression ends too early: just past its end
    ("x**2 +   ", 1, 7),
    ("sin(x", 1, 4),                 # the unclosed parenthesis
    ("x + * 2", 1, 5),
    ("  x + * 2", 1, 7),             # leading blanks count
    ("\n\n  x + * 2", 3, 7),          # and so do leading empty lines
    ("t = x**2\nJ = t +", 2, 8),     # a program with an error on its last line
    ("t = x**2 +\nJ = t", 1, 11),
])
def test_syntax_error_position(text, line, col):
    with pytest.raises(SpecError) as err:
        bpcompile.compile(text)
    assert err.value.message.startswith("syntax error")
    assert (err.value.line, err.value.col) == (line, col), str(err.value)


def test_other_errors_in_indented_text_are_placed_in_the_text():
    with pytest.raises(SpecError) as err:
        bpcompile.compile("\n  x + foo(x)")
    assert (err.value.line, err.value.col) == (2, 7) and "foo" in err.value.message


def test_cli_expr_syntax_error_position(capsys):
    assert main(["expr", "x**2 +"]) == 1
    assert capsys.readouterr().err.startswith("<string>:1:7: error: syntax error")


def test_syntax_error_at_end_of_an_expr_in_a_spec_file(tmp_path, capsys):
    spec = write(tmp_path / "s.yaml", "name: s\nexpr: x**2 +\n")
    assert main([str(spec)]) == 1
    assert capsys.readouterr().err.startswith(f"{spec}:2:13: error: syntax error")


def test_the_parser_never_evaluates_text(monkeypatch):
    # the column comes from Python's tokenizer and ast, not from running the text
    import builtins
    monkeypatch.setattr(builtins, "eval", None)
    with pytest.raises(SpecError) as err:
        bpcompile.graph("__import__('os').system('true') +")
    assert (err.value.line, err.value.col) == (1, 34)


def test_sympy_constants_become_numbers():
    import sympy as sp
    x = sp.Symbol("x")
    module = bpcompile.compile(sp.E * x + sp.pi * sp.cos(x) + sp.GoldenRatio)
    assert module.INPUTS == ("x",)
    value, (dx,) = module.value_and_grad(1.0)
    golden = (1 + math.sqrt(5)) / 2
    assert value == pytest.approx(math.e + math.pi * math.cos(1.0) + golden, rel=1e-15)
    assert dx == pytest.approx(math.e - math.pi * math.sin(1.0), rel=1e-15)
