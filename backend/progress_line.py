"""A command's progress as one line rewritten in place, ended before anything else is printed below it."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ProgressLine:
    """An event sink for a job's events: each `progress` event that `text(fields)` puts in words (None: not
    shown) rewrites the line (`\\r`) on a terminal; `end()` closes it with a newline, so an error or a summary
    printed next starts on a line of its own instead of after "step 4/4". Into a file or a pipe (a farm
    task's log, `| tee`) each update is a line of its own: a log viewer shows them, not one line of them all."""

    def __init__(self, text: Callable[[dict], str | None], to_stderr: bool = False):
        self._text, self._to_stderr, self.open = text, to_stderr, False

    def __call__(self, kind: str, **fields) -> None:
        text = self._text(fields) if kind == "progress" else None
        if not text:
            return
        stream = self._stream()
        if _is_terminal(stream):
            print(f"\r{text}", end="", file=stream, flush=True)
            self.open = True
        else:
            print(text, file=stream, flush=True)

    def end(self) -> None:
        if self.open:
            print(file=self._stream(), flush=True)
            self.open = False

    def _stream(self):
        return sys.stderr if self._to_stderr else sys.stdout  # looked up each time: tests capture them


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stream without one, or closed
        return False
