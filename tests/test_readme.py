"""The README's commands and excerpts, checked against what bpcompile does today.

Every `bpcompile ...` line in the README's shell blocks runs on a copy of the
shipped examples (the Quickstart is run by .ci/run itself), and the backward
pass the README quotes is the one the compiler generates.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bpcompile.compiler import compile_file

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _fenced_blocks(text):
    """(language, lines) of every ``` block."""
    return [(m.group(1), m.group(2).splitlines())
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def _without_quickstart(text):
    start = text.index("## Quickstart")
    return text[:start] + text[text.index("\n## ", start + 5):]


def _command_blocks():
    """The README's runnable bpcompile commands, block by block (the commands of one
    block run in order, in one folder: a later one may read what an earlier one
    wrote). A line that shows a synopsis, with SPEC or [options], is usage."""
    blocks = []
    for _, lines in _fenced_blocks(_without_quickstart(README)):
        commands = [line.split("  #")[0].strip() for line in lines]
        commands = [c for c in commands if c.startswith(("bpcompile ", "mpirun "))
                    and not re.search(r"\[|\bSPEC\b|\.\.\.", c)]
        if commands:
            blocks.append(commands)
    return blocks


def test_the_readme_shows_commands():
    assert sum(map(len, _command_blocks())) >= 8


@pytest.mark.parametrize("commands", _command_blocks(), ids=lambda block: block[0][:60])
def test_readme_commands_run(commands, tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1")
    if shutil.which("bpcompile", path=env["PATH"]) is None:
        pytest.skip("the bpcompile script is not installed")
    if any(c.startswith("mpirun ") for c in commands) and shutil.which("mpirun", path=env["PATH"]) is None:
        pytest.skip("mpirun is not installed (pip install '.[mpi]')")
    for command in commands:
        run = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
        for word in shlex.split(command):
            if word.endswith((".py", ".dot", ".png", ".svg", ".npz", ".csv", ".json")) and not (
                    word.startswith("examples/")):
                assert (tmp_path / word).is_file() and (tmp_path / word).stat().st_size > 0, word


def test_the_quoted_backward_pass_is_the_generated_one():
    marker = "This is the backward pass generated for `simple.yaml`"
    after = README[README.index(marker):]
    _, quoted = _fenced_blocks(after)[0]
    source = compile_file(str(REPO / "examples" / "simple.yaml")).source
    generated = [line.rstrip() for line in source.splitlines()]
    quoted = [line.rstrip() for line in quoted]
    starts = [i for i, line in enumerate(generated) if line == quoted[0]]
    assert any(generated[i:i + len(quoted)] == quoted for i in starts), (
        "the README's backward pass differs from the generated one:\n" + "\n".join(quoted))
