"""Names in generated code: one place owns them and keeps them unique.

User names are kept as written; intermediates of an assignment `u = ...` are
`u_1, u_2, ...`; the adjoint of `v` with respect to output `J` is `dJ_dv`, as
in the lecture's dJ/dv.
"""


class Namer:
    def __init__(self, taken=()):
        self.taken = set(taken)

    def claim(self, name):
        """Reserve a name that must appear exactly as given."""
        self.taken.add(name)
        return name

    def fresh(self, base):
        """`base` if free, else `base_1`, `base_2`, ... (first free)."""
        if base not in self.taken:
            return self.claim(base)
        k = 1
        while f"{base}_{k}" in self.taken:
            k += 1
        return self.claim(f"{base}_{k}")

    def intermediate(self, target, counter):
        """The k-th intermediate of assignment `target`."""
        name = f"{target}_{counter}"
        return self.fresh(name)

    def adjoint(self, output, name):
        return self.fresh(f"d{output}_d{name}")
