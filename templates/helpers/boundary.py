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

# --- _float_ids_hint
def _float_ids_hint(y):
    """The end of the message refusing float labels where class ids are expected: a
    float 3.0 may be a class or a target, so converting it is the caller's choice."""
    if isinstance(y, np.ndarray) and y.dtype.kind == "f":
        return "; pass integer class ids (y.astype(int) if they are whole numbers)"
    return ""
