# Weights stored side by side (recurrent layers), and the blocked SGD update.
# Blocks separated by `# --- name` lines, like losses.py.

# --- _side_by_side
def _side_by_side(params, keys):
    """Store params[keys] as consecutive row blocks of one new array (each entry
    becomes a view of it), so that the scan can use the block itself instead of
    concatenating the gates' weights on every call.  Updates in place through
    the views change the block too."""
    block = np.concatenate([params[key] for key in keys])
    start = 0
    for key in keys:
        rows = len(params[key])
        params[key] = block[start:start + rows]
        start += rows

# --- _stacked
def _stacked(parts):
    """The parts one after another along axis 0: the block they are views of, when they
    are its consecutive row blocks in this order (as init_params stores them), else a
    new array.  Either way the caller only reads it."""
    base = parts[0].base
    if (base is not None and base.flags.c_contiguous and len(base) == sum(len(p) for p in parts)
            and all(p.base is base and p.flags.c_contiguous and p.dtype == base.dtype
                    for p in parts)):
        address = base.__array_interface__["data"][0]
        for p in parts:
            if p.__array_interface__["data"][0] != address:
                break
            address += p.nbytes
        else:
            return base
    return np.concatenate(parts)

# --- _subtract_product
def _subtract_product(W, a, b):
    """W -= a.T @ b; from few rows of a and b, about four megabytes of W's rows at a time.

    With few rows (one sentence's positions) the product costs little more
    than writing it: written to memory whole and read back by the update, a
    large weight gradient (an output layer over a vocabulary) costs a fifth
    more than subtracted block by block while each block is in cache.  Blocks
    of one megabyte (26 rows of a 10,000-wide W) took 10% longer than four
    (OpenBLAS multiplies so few rows less well).  With many rows the product
    dominates, and with a W of a few megabytes the cache holds it anyway: one
    call does it best.
    """
    if W.flags.f_contiguous and not W.flags.c_contiguous:
        W, a, b = W.T, b, a     # stored transposed (init_params): W.T -= b.T @ a, row-major
    if len(a) > 128 or W.nbytes <= 1 << 22:       # compute-bound, or W fits in cache anyway
        W -= a.T @ b
        return
    rows = max(1, (1 << 22) // max(1, W.itemsize * W[0].size))
    for start in range(0, len(W), rows):
        W[start:start + rows] -= a[:, start:start + rows].T @ b
