"""YAML spec loading that remembers where every value came from.

Values are read with `yaml.safe_load`; positions come from the node tree of
`yaml.compose` with the safe loader, so an error can name `FILE:LINE:COL`.
"""

import yaml

from ..errors import SpecError
from ..limits import MAX_ECHO, MAX_SPEC_BYTES, MAX_YAML_NODES, shorten

echo = shorten      # what a message may quote of a user's value: at most MAX_ECHO characters


class Spec:
    """A loaded spec: the data, and positions of its values."""

    def __init__(self, text, file="<string>"):
        self.text = text
        self.file = file
        if not isinstance(text, str):
            raise SpecError(f"a spec must be text, got {type(text).__name__}", file, 1, 1)
        if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "replace")) > MAX_SPEC_BYTES:
            raise SpecError(f"spec too large (more than {MAX_SPEC_BYTES} bytes)", file, 1, 1)
        self.root, self.data = _load(text, file)
        if not isinstance(self.data, dict):
            kind = "empty" if self.data is None else type(self.data).__name__
            raise SpecError(f"a spec must be a YAML mapping of keys to values, not {kind}", file, 1, 1)
        for key in self.data:
            if not isinstance(key, str):
                raise self.error(f"keys must be strings, got {echo(key)}")

    # --- positions -------------------------------------------------------------
    def node(self, *path):
        """The YAML node at `path` (keys and list indices), or the closest parent."""
        current = self.root
        for step in path:
            child = None
            if isinstance(current, yaml.MappingNode):
                for key, value in current.value:
                    if key.value == step:
                        child = value
                        break
            elif isinstance(current, yaml.SequenceNode) and isinstance(step, int):
                if 0 <= step < len(current.value):
                    child = current.value[step]
            if child is None:
                break
            current = child
        return current

    def key_node(self, *path):
        """The YAML node of the key `path[-1]` (for 'unknown key' messages)."""
        parent = self.node(*path[:-1])
        if isinstance(parent, yaml.MappingNode):
            for key, _ in parent.value:
                if key.value == path[-1]:
                    return key
        return parent

    def where(self, *path, key=False):
        node = self.key_node(*path) if key else self.node(*path)
        return node.start_mark.line + 1, node.start_mark.column + 1

    def error(self, message, *path, key=False):
        line, col = self.where(*path, key=key) if path else (1, 1)
        return SpecError(_cap(message), self.file, line, col)

    def text_position(self, path, line, col):
        """File position of (line, col) inside the string value at `path`."""
        node = self.node(*path)
        mark = node.start_mark
        if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            lines = self.text.splitlines()
            first = mark.line + 1 + (line - 1)
            content = [s for s in lines[mark.line + 1:] if s.strip()]
            indent = len(content[0]) - len(content[0].lstrip()) if content else 0
            return first + 1, indent + col
        quote = 1 if isinstance(node, yaml.ScalarNode) and node.style in ('"', "'") else 0
        if mark.line + line > node.end_mark.line + 1:
            # escaped newlines ("a = 1\nb = 2"): the text's lines are not the file's
            return mark.line + 1, mark.column + 1
        return mark.line + line, (mark.column + quote + col if line == 1 else col)

    def relocate(self, err, *path):
        """A SpecError raised while parsing the text at `path`, placed in the file."""
        line, col = self.text_position(path, err.line, err.col)
        return err.located(self.file, line, col)

    # --- typed getters ------------------------------------------------------------
    def check_keys(self, allowed, *path):
        mapping = self.get(*path) if path else self.data
        for key in mapping:
            if key not in allowed:
                raise self.error(f"unknown key {echo(key)}; known keys: {', '.join(sorted(allowed))}",
                                 *path, key, key=True)

    def get(self, *path, default=None):
        current = self.data
        for step in path:
            if isinstance(current, dict) and step in current:
                current = current[step]
            elif isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current):
                current = current[step]
            else:
                return default
        return current

    def string(self, *path, default=None):
        value = self.get(*path, default=default)
        if value is not None and not isinstance(value, str):
            raise self.error(f"{path[-1]} must be a string, got {echo(value)}", *path)
        return value

    def string_list(self, *path):
        value = self.get(*path)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{path[-1]} must be a list of names, got {echo(value)}", *path)
        return value


def _cap(message, limit=10 * MAX_ECHO):
    """One line of bounded length, whatever a caller put into it."""
    message = " ".join(str(message).split("\n"))
    return message if len(message) <= limit else message[:limit - 3] + "..."


def _load(text, file):
    """(root node, data) of one YAML document, refusing what would take unbounded
    time or memory: alias expansion beyond MAX_YAML_NODES, recursive aliases,
    nesting deeper than the parser's stack, integers too long to convert."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root, file)
        return root, loader.construct_document(root)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError(_cap(f"invalid YAML: {problem}"), file, line, col) from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", file, 1, 1) from None
    except (ValueError, OverflowError) as err:    # an integer of more than 4300 digits
        message = "a number with too many digits" if "digits" in str(err) else str(err)
        raise SpecError(_cap(f"invalid YAML value: {message}"), file, 1, 1) from None
    finally:
        loader.dispose()


def _check_expansion(root, file):
    """Count the values the document holds once its aliases are expanded (a node
    reached twice counts twice), without expanding anything."""
    size, unique, state = {}, 0, {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        if done:
            size[key] = 1 + sum(size[id(c)] for c in children)
            state[key] = "done"
            if size[key] > MAX_YAML_NODES:
                where = node.start_mark
                raise SpecError(f"the YAML document holds more than {MAX_YAML_NODES} values once its "
                                "aliases are expanded",
                                file, where.line + 1, where.column + 1)
            continue
        if state.get(key) == "done":
            continue
        if state.get(key) == "open":
            where = node.start_mark
            raise SpecError("a YAML alias refers to the value that contains it",
                            file, where.line + 1, where.column + 1)
        state[key] = "open"
        unique += 1
        stack.append((node, True))
        stack.extend((c, False) for c in children if state.get(id(c)) != "done")
    return unique
