# What the generated layer modules accept at their boundary beyond arrays.
# Blocks separated by `# --- name` lines, like losses.py.

# --- _as_array
def _as_array(name, value):
    """A list, tuple or number as an array (np.asarray); any other value as it is, for
    the caller's checks to refuse.  A ragged list raises ValueError naming `name`."""
    if not isinstance(value, (list, tuple, int, float, np.generic)):
        return value
    try:
        return np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{name}: cannot make one array of this {type(value).__name__} "
                         f"({error})") from None

# --- _batch_size
def _batch_size(batch_size):
    """sgd_epoch's batch_size, a positive integer (a bool or a float is refused)."""
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    return int(batch_size)

# --- _float_ids_hint
def _float_ids_hint(y):
    """The end of the message refusing float labels where class ids are expected: a
    float 3.0 may be a class or a target, so converting it is the caller's choice."""
    if isinstance(y, np.ndarray) and y.dtype.kind == "f":
        return "; pass integer class ids (y.astype(int) if they are whole numbers)"
    return ""

# --- _output_adjoint
def _output_adjoint(seed, shape):
    """The seed of backward in a module without a loss (loss: none): the adjoint of
    forward's output, an array of its shape, cast to DTYPE from another number dtype."""
    seed = _as_array("seed", seed)
    if isinstance(seed, np.ndarray) and seed.dtype != DTYPE and seed.dtype.kind in "biuf":
        seed = seed.astype(DTYPE)
    if not isinstance(seed, np.ndarray) or seed.shape != shape or seed.dtype != DTYPE:
        raise ValueError(f"seed: expected the adjoint of the output, a {DTYPE} array of shape "
                         f"{shape}, got {_describe(seed)}")
    return seed
