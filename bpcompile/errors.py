"""The one exception users see: a spec error with a file position."""


class SpecError(Exception):
    """Bad input: printed by the CLI as `FILE:LINE:COL: error: MESSAGE`."""

    def __init__(self, message, file="<input>", line=1, col=1, field=None):
        super().__init__(message)
        self.field = field   # the spec key this error is about, when not a text position
        self.message = message
        self.file = file
        self.line = line
        self.col = col

    def located(self, file=None, line=None, col=None):
        """A copy of this error placed in `file` at (line, col)."""
        return SpecError(self.message,
                         self.file if file is None else file,
                         self.line if line is None else line,
                         self.col if col is None else col, self.field)

    def __str__(self):
        return f"{self.file}:{self.line}:{self.col}: error: {self.message}"
