"""What the loaders say when a file cannot be used: `CheckpointError`, and one-line reasons."""

from __future__ import annotations

from ..errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded as SCAIL-2; the message is one line for the user."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def few(names: list[str], count: int = 3) -> str:
    """The first `count` names, comma-separated, with ", ..." when there are more."""
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")
