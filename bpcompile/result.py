"""What compiling produces, and loading it: the one module both the compiler and
its users (the CLI, training, tests) import, so that nothing imports back up."""

import importlib.abc
import importlib.util
from dataclasses import dataclass


@dataclass
class Compiled:
    """What compiling produced: the graph, the statements and the module text."""

    name: str
    graph: object
    schedule: object
    source: str
    spec: object = None
    source_path: str = None
    model: object = None      # a layer spec's facts (layers.LayerCompiler), else None


class _SourceLoader(importlib.abc.SourceLoader):
    def __init__(self, name, source):
        self.name, self.source = name, source

    def get_filename(self, fullname):
        return f"<bpcompile {self.name}>"

    def get_data(self, path):
        return self.source.encode("utf-8")


def load_module(source, name="generated"):
    """Import generated source as a fresh module object (not put in sys.modules)."""
    loader = _SourceLoader(name, source)
    spec = importlib.util.spec_from_loader(f"bpcompile_generated_{name}", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.SOURCE = source
    return module
