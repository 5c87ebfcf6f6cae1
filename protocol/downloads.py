"""The lines `python -m backend download --json` prints, one JSON object per line, and the add-on reads.

One record, `DownloadEvent`, whose `event` says what the line is:

* ``plan``: the files chosen for the GPU (`files`: one `PlannedFile` each), why (`message`), the
  bytes still to fetch (`total_bytes`) and the free disk space (`free_bytes`);
* ``progress``: `done_bytes` of `total_bytes` over every file still to fetch, `speed_bps` (bytes
  per second, a moving average), `eta_s` (seconds left, None until known), `file` being fetched;
* ``verified``: `file` was fetched and its SHA-256 matches the hub's;
* ``done``: every file is in place; `folder` is the weights folder to use;
* ``cancelled``: stopped on request; the partial file is kept and the same command resumes it;
* ``error``: `message` is one line saying what went wrong and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from .records import Record

DOWNLOAD_EVENTS = ("plan", "progress", "verified", "done", "cancelled", "error")


@dataclass(frozen=True)
class PlannedFile(Record):
    """One file of a plan: where it lands (relative to the weights folder), from which repository, and
    whether it is already there (`present`, with `where` it was found)."""

    WHAT: ClassVar[str] = "planned file"

    path: str
    repo: str
    filename: str
    size_bytes: int
    part: str
    present: bool = False
    where: str = ""


@dataclass(frozen=True)
class DownloadEvent(Record):
    """One line of the download's JSON output (see the module doc)."""

    WHAT: ClassVar[str] = "download event"

    event: Literal["plan", "progress", "verified", "done", "cancelled", "error"]
    message: str = ""
    plan: str = ""
    file: str = ""
    folder: str = ""
    done_bytes: int = 0
    total_bytes: int = 0
    free_bytes: int | None = None
    speed_bps: float = 0.0
    eta_s: float | None = None
    memory_mode: str = ""
    files: list[PlannedFile] = field(default_factory=list)
