"""Names in generated code: one symbol table per module owns every one of them.

A generated module holds two kinds of names.  User names come from the spec
(a program's variables, a cell's equations, the bases of layer names); they
are bound once and kept as written when they can be.  Generated names
(intermediates `u_1`, adjoints `dJ_dv`, a layer's variables `linear1_W`,
buffers) are minted fresh.  The table guarantees that no two of them are
equal and that none equals a name the module's own code relies on: a Python
keyword or builtin, NumPy's `np`, a function or constant the templates
define, or a fixed local of a template function (`params`, `lr`, `cache`).
"""

import builtins
import keyword

PYTHON_NAMES = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)

# What every generated module defines or imports at its top level (helper and
# kernel functions are added by the code generator, which knows those files).
MODULE_GLOBALS = frozenset({
    "np", "math", "numba",
    # program modules
    "INPUTS", "WRT", "evaluate", "_sum_to", "_BLOCK", "_fits_blocks", "_blockwise",
    "_write_into", "_check_out",
    "_value_and_grad_block",
    # layer modules
    "DTYPE", "INPUT_SHAPE", "OUTPUTS", "LOSS", "SEQUENCE", "VOCAB", "PARAMS", "init_params",
    "forward", "backward", "value_and_grad", "predict", "sgd_step", "sgd_epoch", "_check",
    "_initial_state", "STATE_KEYS", "_describe", "_glorot", "_ndarray", "_sgd_step_one",
    "_ONE_EXAMPLE_BUFFERS", "_allocate_one_example",
    # layer modules with a train/eval mode, and those without a loss (loss: none)
    "BUFFERS", "_RNG", "OUTPUT_SHAPE", "vjp", "_output_adjoint",
    # the numba target
    "os", "sys", "types", "_CACHE", "_sgd_epoch_one", "_sgd_epoch_compiled", "_subtract_outer",
    "_vdot", "_maximum", "_minimum",
    # set on loaded modules by bpcompile.compile
    "SOURCE", "GRAPH",
})

# Fixed locals of the template functions that also hold user-derived names.
PROGRAM_LOCALS = frozenset({"cache", "seed", "value", "grads"})
LAYER_LOCALS = frozenset({"params", "x", "y", "lr", "mask", "state", "cache", "consume", "x_row",
                          "J", "grads", "logits", "one_example", "prediction",
                          "train", "rng", "update_buffers", "seed", "output", "dx",
                          "X", "Y", "n", "total"})     # the last: the numba target's epoch loop


class SymbolTable:
    """Every name of one generated module: reserved, bound (user) and minted."""

    def __init__(self, reserved=(), builtins_free=False):
        # builtins_free: the module's functions call no builtin where user names live
        # (a program's), so user names such as `sum` may be used as written
        python = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) if builtins_free \
            else PYTHON_NAMES
        self.reserved = set(python) | set(MODULE_GLOBALS) | set(reserved)
        self.issued = {}        # name -> "user" | "generated"
        self.bound = {}         # user name -> its variable

    @classmethod
    def holding(cls, names):
        """A table in which `names` (a graph built by hand) are already issued as given."""
        table = cls()
        table.issued.update(dict.fromkeys(names, "user"))
        return table

    def taken(self, name):
        return name in self.reserved or name in self.issued

    def bind(self, user):
        """The variable of a user name: the name itself unless the module needs it
        (then the first free `name_1`, `name_2`, ...).  Binding again returns it."""
        if user not in self.bound:
            var = self._first_free(user)
            self.bound[user] = var
            self.issued[var] = "user"
        return self.bound[user]

    def fresh(self, base, suffixes=()):
        """A new generated name from `base`; `suffixes` are derived names
        (`fn_forward`) that must be free as well, and are reserved with it."""
        name = self._first_free(base, suffixes)
        self.issued[name] = "generated"
        for suffix in suffixes:
            self.issued[name + suffix] = "generated"
        return name

    def claim(self, name):
        """Issue `name` exactly as given (a name another part of the same plan chose
        from this table, or a user name); an error if something else holds it."""
        if self.issued.get(name) is None and name in self.reserved:
            raise ValueError(f"{name!r} is reserved")
        self.issued.setdefault(name, "generated")
        return name

    def intermediate(self, target, counter):
        """The k-th intermediate value of the assignment `target = ...`: `target_k`."""
        return self.fresh(f"{target}_{counter}")

    def adjoint(self, output, name):
        """The adjoint variable dJ/dv, named as the lecture writes it: `dJ_dv`."""
        return self.fresh(f"d{output}_d{name}")

    def _first_free(self, base, suffixes=()):
        def free(name):
            return not self.taken(name) and not any(self.taken(name + s) for s in suffixes)
        if free(base):
            return base
        k = 1
        while not free(f"{base}_{k}"):
            k += 1
        return f"{base}_{k}"
