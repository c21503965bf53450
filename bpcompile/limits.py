"""Every size limit on input, in one place.

A spec up to MAX_SPEC_BYTES gives a module or a one-line located error in
bounded time and memory.  Each error message that enforces one of these limits
states the limit.  The README's "Bad input" section lists them.
"""

MAX_SPEC_BYTES = 1_000_000        # bytes of one spec file or spec text
MAX_YAML_NODES = 100_000          # YAML nodes after alias expansion (billion laughs)
MAX_ECHO = 80                     # characters of a user value quoted in an error message

MAX_TEXT = 20_000                 # characters in one expression or program
MAX_DEPTH = 100                   # nesting of operations in one expression
MAX_NODES = 20_000                # operations and operands in one expression or program
MAX_CONSTANT = 1e300              # magnitude of a folded constant

MAX_LAYERS = 1_000                # entries of `layers:` (after expanding stacked layers)
MAX_PARAMETERS = 100_000_000      # total trainable parameters of a layer spec
MAX_LAYER_DEPTH = 32              # `layers:` option of rnn/lstm (stacked layers)


def shorten(value, limit=MAX_ECHO):
    """repr(value), or its first `limit` characters and "...": what an error message
    may quote of a user's value.  Containers are summarised before repr runs, so a
    huge value costs no more than a small one."""
    import reprlib
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    short.maxlevel = 3
    try:
        text = short.repr(value)
    except (ValueError, RecursionError):      # an int too long for str(), a deep structure
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text, limit=2 * MAX_ECHO):
    """`text` (a file name, say) cut to `limit` characters, without quotes."""
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."
