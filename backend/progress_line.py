"""A command's progress as one line rewritten in place, ended before anything else is printed below it."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ProgressLine:
    """An event sink for a job's events: each `progress` event that `text(fields)` puts in words (None: not
    shown) rewrites the line (`\\r`); `end()` closes it with a newline, so an error or a summary printed next
    starts on a line of its own instead of after "step 4/4"."""

    def __init__(self, text: Callable[[dict], str | None], to_stderr: bool = False):
        self._text, self._to_stderr, self.open = text, to_stderr, False

    def __call__(self, kind: str, **fields) -> None:
        text = self._text(fields) if kind == "progress" else None
        if text:
            print(f"\r{text}", end="", file=self._stream(), flush=True)
            self.open = True

    def end(self) -> None:
        if self.open:
            print(file=self._stream(), flush=True)
            self.open = False

    def _stream(self):
        return sys.stderr if self._to_stderr else sys.stdout  # looked up each time: tests capture them
