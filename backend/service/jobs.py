"""What the worker's parts share: the job record, error replies, the log, job folders.

The error codes are the contract's (`protocol.errors`, re-exported here for the worker's parts);
`requests` raises `ProtocolFailure` for a request that gets an error reply, and `worker` maps a
job's failures to codes.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import protocol
from protocol.errors import (  # noqa: F401  (the worker's parts take the codes from here)
    BAD_INPUT,
    BAD_REQUEST,
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    JOB_FAILED,
    OUT_OF_MEMORY,
    OUTPUT_ERROR,
    TOO_MANY_CONNECTIONS,
    UNAUTHORIZED,
    UNKNOWN_JOB,
)

OOM_HINT = "lower the resolution, use fp8 storage or group offload"
MAX_LINE_BYTES = 1 << 20  # a job spec is a few kB; anything longer is refused, not buffered
SHUTDOWN_GRACE_S = 30.0  # how long shutdown waits for the running job to stop at a step boundary

OUTPUT_HINT = "free space or choose a writable folder, then resume: the finished segments are kept"


def log(message: str) -> None:
    """One line on stderr (stdout belongs to the protocol)."""
    print(f"[scail2 worker] {message}", file=sys.stderr, flush=True)


def default_jobs_root() -> Path:
    """Where job folders go when a submit names none."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "scail2" / "jobs"


@dataclass
class Job:
    """One job of the worker: its spec as a dict, its folder, and where it stands."""

    id: str
    spec: dict
    job_dir: Path
    task: str = "generate"  # protocol.TASKS
    status: str = "queued"  # queued -> running -> done | failed | cancelled
    cancel: threading.Event = field(default_factory=threading.Event)
    blobs: tuple = ()  # uploaded blobs the job reads (held in the store until it ends)
    owner: str = ""  # the identity that submitted it (identities.Identity.name)
    postponed: bool = False  # stopped with the worker, kept in its queue file (`kept_queue`) for the next start
    started_at: float | None = None  # when it started running (seconds since the epoch)
    progress: dict = field(default_factory=dict)  # its last progress event's fields (phase, segment, step...)


class ProtocolFailure(Exception):
    """A request that gets an error reply: code and one line."""

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code, self.hint = code, hint


def error_line(code: str, message: str, hint: str = "", job: str | None = None, request_id: Any = None) -> str:
    """protocol.error_event, with the request's `request_id` when it gave one."""
    return protocol.error_event(code, message, hint=hint, job=job, request_id=request_id)


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when it is missing, damaged or not an object."""
    try:
        data = protocol.read_json_file(path)
    except protocol.ProtocolError:
        return None
    return data if isinstance(data, dict) else None


def frames_written(job_dir: Path) -> int:
    """How many frame PNGs a generation job folder holds."""
    try:
        return sum(1 for p in (job_dir / "frames").iterdir() if p.name.startswith("frame_") and p.suffix == ".png")
    except OSError:
        return 0


def folder_summary(folder: Path) -> dict:
    """What a job folder says about itself ({} when it holds no job).

    `state` is state.json's status, except "interrupted" for a job whose state says "running"
    while no live run holds the folder (the worker or command writing it was killed).
    """
    from ..pipeline.job_folder import folder_state

    manifest = read_json(folder / protocol.MANIFEST_NAME)
    if manifest is None:
        return {}
    try:
        completed = protocol.read_record(folder / protocol.STATE_NAME, protocol.JobState).completed_segments
    except protocol.ProtocolError:
        completed = 0
    return {
        "state": folder_state(folder) or manifest.get("status"),
        "completed_segments": completed,
        "segments": len(manifest.get("segments", [])),
        "frames": len(manifest.get("frames", [])),
        "frames_written": frames_written(folder),
    }


def is_finished(summary: dict) -> bool:
    """Done, with every frame still on disk (a job whose frames were deleted is resumed, not skipped)."""
    return summary.get("state") == "done" and summary.get("frames_written", 0) >= summary.get("frames", 0)
