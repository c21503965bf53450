"""The version of bpcompile (a leaf module: the code generator writes it into every header)."""

__version__ = "0.1.0"
