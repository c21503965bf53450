"""The `bpcompile` command.

    bpcompile SPEC.yaml -o model.py   (see `bpcompile --help`)
"""

from .main import main

__all__ = ["main"]
