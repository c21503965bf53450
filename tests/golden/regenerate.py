#!/usr/bin/env python3
"""Regenerate the golden modules: tests/golden/<stem>.py.golden for every examples/<stem>.yaml.

(The `.golden` ending keeps code-scanning tools from taking them for the project's code.)

Run from anywhere (the README's form is from the repo root):

    python3 tests/golden/regenerate.py

then review `git diff tests/golden` -- every change to generated code shows there --
and commit the goldens together with the change that caused them.

The goldens do not depend on the machine or the clone location: the generated header
names only the spec's file name (codegen.source_label), its sha256 and the bpcompile
version, and the examples are compiled by their path relative to the repo root.
Goldens whose example is gone are deleted. tests/test_golden.py compares them.
"""

import os
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent
REPO = GOLDEN.parent.parent
EXAMPLES = REPO / "examples"
SCRIPT_NAMES = {"regenerate.py"}        # files in tests/golden that are not goldens


def examples():
    """The example specs, as paths relative to the repo root, sorted: examples/*.yaml."""
    return sorted(p.relative_to(REPO) for p in EXAMPLES.glob("*.yaml"))


def golden_path(example):
    return GOLDEN / f"{Path(example).stem}.py.golden"


def golden_files():
    """The golden modules now in tests/golden (this script excluded)."""
    return sorted(p for p in GOLDEN.glob("*.py.golden") if p.name not in SCRIPT_NAMES)


def generate(example):
    """The generated source of one example (a path relative to the repo root)."""
    from bpcompile.compiler import compile_file
    cwd = os.getcwd()
    os.chdir(REPO)          # compile by the relative path, whatever the caller's cwd
    try:
        return compile_file(Path(example).as_posix()).source
    finally:
        os.chdir(cwd)


def write_exact(path, text):
    """Write text byte for byte (no newline translation), only when it changed."""
    if path.exists() and path.read_bytes() == text.encode("utf-8"):
        return False
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return True


def _use_this_checkout():
    # The script's own folder holds modules named like the examples (a future
    # `examples/token.yaml` would shadow the standard library), so import from the
    # repo root instead: the bpcompile of this checkout, not an installed one.
    here = str(GOLDEN)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, str(REPO))


def main():
    _use_this_checkout()
    wanted = {golden_path(e): e for e in examples()}
    changed = []
    for path, example in wanted.items():
        if write_exact(path, generate(example)):
            changed.append(f"wrote   {path.relative_to(REPO)}")
    for path in golden_files():
        if path not in wanted:
            path.unlink()
            changed.append(f"deleted {path.relative_to(REPO)} (no examples/{path.stem}.yaml)")
    print("\n".join(changed) if changed else "goldens up to date")
    print(f"{len(wanted)} goldens in {GOLDEN.relative_to(REPO)}; review with: git diff tests/golden")
    return 0


if __name__ == "__main__":
    sys.exit(main())
