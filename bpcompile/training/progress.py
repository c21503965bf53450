"""Progress bars for training and scoring, drawn by tqdm.

On a terminal a live bar (examples/s, ETA, running loss) is redrawn in place
and cleared at the end of the epoch, whose summary line goes to stdout. When
the stream is not a terminal (``bpcompile train ... 2>&1 | tee log``), a bar
redrawn with carriage returns would pile up in the log, so a plain line is
printed instead, at most once every ``LOG_INTERVAL`` seconds: a short epoch
prints nothing, a long one shows that it is alive.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar", "LOG_INTERVAL", "NoProgress"]

LOG_INTERVAL = 5.0      # seconds between two progress lines in a log
TERMINAL_INTERVAL = 0.1


class _LossBar(tqdm):
    """A tqdm bar whose postfix is the running mean loss.

    The loss is formatted only when the bar is drawn, not at every batch.
    """

    def __init__(self, *args, **kwargs):
        self.loss_sum = 0.0
        self.loss_count = 0
        super().__init__(*args, **kwargs)

    def add_loss(self, loss: float, examples: int) -> None:
        self.loss_sum += loss * examples
        self.loss_count += examples
        self.update(examples)

    @property
    def format_dict(self):
        d = super().format_dict
        if self.loss_count:
            d["postfix"] = f"loss {self.loss_sum / self.loss_count:.4f}"
        return d


class _LogLineBar(_LossBar):
    """The same bar written as whole lines: nothing before the first example and
    nothing when it closes (the caller prints the epoch's summary)."""

    def display(self, msg=None, pos=None):
        if msg is not None or self.n == 0:
            return False        # tqdm writes its own '\r' after a clearing display that reports True
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        return True


class NoProgress:
    """What :func:`progress_bar` returns when progress is off: it ignores everything."""

    def update(self, n=1):
        pass

    def add_loss(self, loss, examples):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def progress_bar(total: int, desc: str, enabled: bool = True, stream=None, unit: str = "ex",
                 interval: float = None):
    """A bar over `total` units (examples, tokens) on `stream` (default stderr).

    `interval` overrides the seconds between redraws (tests use 0).
    """
    if not enabled:
        return NoProgress()
    stream = sys.stderr if stream is None else stream
    terminal = _is_terminal(stream)
    kind = _LossBar if terminal else _LogLineBar
    if interval is None:
        interval = TERMINAL_INTERVAL if terminal else LOG_INTERVAL
    return kind(total=total, desc=desc, unit=" " + unit, file=stream, leave=False,
                mininterval=interval, miniters=1 if not terminal else None, dynamic_ncols=terminal,
                ascii=not terminal)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
