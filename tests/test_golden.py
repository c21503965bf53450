"""Golden files: the generated module of every example is checked in under tests/golden/,
so that every change to generated code shows as a diff.  Regenerate them with

    python3 tests/golden/regenerate.py

and review `git diff tests/golden`.
"""

import ast
import difflib
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
HINT = "run python3 tests/golden/regenerate.py and review the diff"
DIFF_LINES = 40


def _load_regenerate():
    # by path, so that tests/golden (modules named like the examples) never goes on sys.path
    spec = importlib.util.spec_from_file_location("golden_regenerate", GOLDEN / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regenerate = _load_regenerate()
EXAMPLES = regenerate.examples()
GOLDENS = regenerate.golden_files()


def short_diff(expected, actual, name):
    diff = list(difflib.unified_diff(expected.splitlines(keepends=True),
                                     actual.splitlines(keepends=True),
                                     f"tests/golden/{name} (checked in)",
                                     f"tests/golden/{name} (generated now)"))
    shown = "".join(line if line.endswith("\n") else line + "\n" for line in diff[:DIFF_LINES])
    more = f"... ({len(diff) - DIFF_LINES} more diff lines)\n" if len(diff) > DIFF_LINES else ""
    return shown + more


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: Path(p).stem)
def test_generated_module_matches_golden(example):
    path = regenerate.golden_path(example)
    if not path.exists():
        pytest.fail(f"no golden {path.relative_to(REPO)} for {example}: {HINT}", pytrace=False)
    expected = path.read_bytes().decode("utf-8")
    actual = regenerate.generate(example)
    if actual != expected:
        pytest.fail(f"the module generated from {example} differs from its golden file:\n"
                    f"{short_diff(expected, actual, path.name)}{HINT}", pytrace=False)


def test_regenerate_covers_every_example():
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "examples").glob("*.yaml")}
    assert on_disk, "no examples/*.yaml found"
    assert {Path(e).as_posix() for e in EXAMPLES} == on_disk


def test_one_golden_per_example():
    expected = {Path(e).stem + ".py.golden" for e in EXAMPLES}
    present = {p.name for p in GOLDENS}
    missing, stale = sorted(expected - present), sorted(present - expected)
    assert not missing and not stale, f"missing goldens {missing}, stale goldens {stale}: {HINT}"


def _top_level_imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, "." * node.level + (node.module or "")


@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: p.stem)
def test_golden_is_python_that_imports_only_numpy_and_stdlib(path):
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))        # a SyntaxError fails the test
    foreign = [f"{path.name}:{line}: {name}" for line, name in _top_level_imports(tree)
               if name.startswith(".")
               or name.split(".")[0] not in sys.stdlib_module_names | {"numpy"}]
    assert not foreign, "imports other than numpy and the standard library:\n" + "\n".join(foreign)


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.py.golden")),
                         ids=lambda p: p.stem)
def test_generated_lines_fit_in_100_columns(golden):
    long = [(i + 1, len(line)) for i, line in enumerate(golden.read_text().splitlines()) if len(line) > 100]
    assert not long, f"{golden.name}: lines longer than 100 characters (line, length): {long[:10]}"
