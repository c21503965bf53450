"""The core compiler: the graph, the primitive and loss tables, the safe parser, the
scheduler (forward and adjoint statements) and the symbol table."""
