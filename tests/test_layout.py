"""layout.py breaks generated statements within the line width without changing them."""

import ast

from hypothesis import given, settings, strategies as st

from bpcompile.codegen import layout

NAMES = st.sampled_from(["a", "dJ_dlinear1_W", "lstm1_cell_saved", "x", "embedding1_E", "mask",
                         "dJ_dlstm1_bwd_W_hf", "n", "total"])


@st.composite
def expressions(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(NAMES)
    kind = draw(st.sampled_from(["call", "binary", "paren", "index"]))
    if kind == "call":
        args = draw(st.lists(expressions(depth + 1), min_size=1, max_size=12))
        keyword = draw(st.sampled_from(["", ", overwrite=True", ", axis=-1"]))
        return f"{draw(NAMES)}({', '.join(args)}{keyword})"
    if kind == "binary":
        return f"{draw(expressions(depth + 1))} {draw(st.sampled_from('+-*/@'))} {draw(expressions(depth + 1))}"
    if kind == "paren":
        return f"({draw(expressions(depth + 1))})"
    return f"{draw(NAMES)}[:, {draw(NAMES)}]"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(NAMES, min_size=1, max_size=20), expressions(),
       st.sampled_from(["", "dJ/dx += dJ/du * du/dx   (u = a very long forward statement)" * 2]),
       st.sampled_from([4, 8, 12]))
def test_a_statement_keeps_its_meaning_and_fits_where_it_can_break(targets, expr, comment, indent):
    code = f"{', '.join(targets)} = {expr}"
    lines = layout.statement(code, comment, indent)
    text = "\n".join(lines)
    assert ast.dump(ast.parse(text)) == ast.dump(ast.parse(code))
    if comment:
        assert comment.split()[0] in text
    # every unbreakable piece here (a name and a bracket) is far shorter than a line
    assert all(indent + len(line) <= layout.WIDTH for line in lines), lines


def test_short_statements_stay_on_one_line_with_their_comment():
    assert layout.statement("u = x + y", "dJ/du") == ["u = x + y  # dJ/du"]


def test_an_embedded_comment_goes_above_a_long_statement():
    code = "_subtract_product(linear1_W, dJ_dlinear1, flatten1)  # linear1_W -= dJ_dlinear1.T @ flatten1, block by block"
    lines = layout.statement(code, indent=4)
    assert lines[0].startswith("# linear1_W -=") and lines[-1].startswith("_subtract_product(")
    assert all(4 + len(line) <= layout.WIDTH for line in lines)
