"""The worker's events as typed records: one class per event type, and the table that finds it.

Every line the worker sends is an event (`queued`, `progress`, `done`, ...); the add-on's client
also makes a few itself (`"local": True`: a worker that exited, a lost connection, an upload's
progress). The writer builds the record (or passes its fields to `encode_message`, which builds
it), the reader gets the same record back from `decode_event`: a field the record does not know is
refused on both sides, so the two cannot drift apart.

Adding an event type is one class, in any protocol module imported by `protocol/__init__.py`:

    @event_type
    @dataclass(frozen=True, kw_only=True)
    class ScoresEvent(Event):
        TYPE = "scores"
        WHAT = "scores event"
        scores: TakeScores

`event_type` registers it in `EVENT_TYPES`; nothing else lists the types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

from .errors import check_code
from .records import ProtocolError, Record

PROTOCOL_VERSION = 1

E = TypeVar("E", bound="Event")

# Event type -> its record class; filled by `event_type`.
EVENT_TYPES: dict[str, type[Event]] = {}


def event_type(cls: type[E]) -> type[E]:
    """Register an `Event` subclass under its `TYPE` (a class decorator)."""
    if not cls.TYPE or cls.TYPE in EVENT_TYPES:
        raise TypeError(f"event type {cls.TYPE!r} of {cls.__name__} is empty or already registered")
    EVENT_TYPES[cls.TYPE] = cls
    return cls


@dataclass(frozen=True, kw_only=True)
class Event(Record):
    """What every event may carry: the request it answers and whether the client made it."""

    TYPE: ClassVar[str] = ""
    request_id: Any = None  # echoed from the request it answers
    local: bool = False  # made by the add-on's client, not sent by a worker


@event_type
@dataclass(frozen=True, kw_only=True)
class Capabilities(Event):
    """The answer to `hello`: the handshake. `protocol` is the worker's protocol version."""

    TYPE = "capabilities"
    WHAT = "capabilities event"
    protocol: int
    backend: str = ""
    python: str = ""
    torch: str = ""
    cuda: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    attention_backends: Any = None
    requests: list[str] = field(default_factory=list)
    jobs_root: str = ""
    pid: int | None = None
    mode: str = "paths"  # protocol.CONNECTION_MODES
    framing: str | None = None  # protocol.FRAMINGS: how file bytes travel on this connection
    identity: str | None = None  # a shared worker: the artist this connection's token names
    admin: bool | None = None  # that artist sees and cancels every job
    shared: bool | None = None  # the worker has named tokens (several artists)
    chunk_bytes: int | None = None
    unnamed_uploads: bool | None = None  # blob_put and blob_status take `upload` (an id) in place of `sha256`


@event_type
@dataclass(frozen=True, kw_only=True)
class Queued(Event):
    TYPE = "queued"
    WHAT = "queued event"
    job: str
    job_dir: str
    position: int = 0  # jobs ahead of it
    was: str | None = None  # a resume: what the folder said ("interrupted", "failed", ...)
    worker_job_dir: str | None = None  # client-made (transfer mode): the folder on the worker; job_dir is ours
    others_ahead: int | None = None  # a shared worker: of the jobs ahead, other artists'


@event_type
@dataclass(frozen=True, kw_only=True)
class Started(Event):
    """A job has started: a generation's frames and segments, or a segmentation's frames."""

    TYPE = "started"
    WHAT = "started event"
    job: str | None = None
    job_dir: str = ""
    task: str | None = None  # a segmentation's
    frames: int = 0
    segments: int = 0
    completed_segments: int = 0
    interrupted: bool = False
    missing_frames: int = 0
    size: list[int] = field(default_factory=list)  # [height, width]
    noise_only: bool = False
    warnings: list[str] = field(default_factory=list)


@event_type
@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """A generation's phase with segment i/n and step j/m; a segmentation's (or matte's) frame i/n;
    or an upload's or download's bytes (client-made, phase "upload" / "download")."""

    TYPE = "progress"
    WHAT = "progress event"
    job: str | None = None
    phase: str
    segment: int | None = None
    segments: int | None = None
    step: int | None = None
    steps: int | None = None
    stage: str | None = None  # a matte's stage: "segment" or "write"
    frame: int | None = None
    frames: int | None = None
    bytes: int | None = None
    total: int | None = None


@event_type
@dataclass(frozen=True, kw_only=True)
class FrameReady(Event):
    TYPE = "frame_ready"
    WHAT = "frame_ready event"
    job: str | None = None
    index: int
    path: str
    source_time: float | None = None


@event_type
@dataclass(frozen=True, kw_only=True)
class Done(Event):
    """A job has finished: a generation's manifest, or a segmentation's record."""

    TYPE = "done"
    WHAT = "done event"
    job: str | None = None
    job_dir: str | None = None
    manifest: str | None = None
    task: str | None = None
    frames: int | None = None
    identities: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    record: str | None = None  # a segmentation's segment.json


@event_type
@dataclass(frozen=True, kw_only=True)
class ErrorEvent(Event):
    """A request or a job failed: a code of `protocol.errors`, one line for the artist, a hint."""

    TYPE = "error"
    WHAT = "error event"
    code: str
    message: str
    hint: str = ""
    job: str | None = None
    signal: int | None = None  # worker_exited: the signal that ended the worker
    fingerprint: str | None = None  # certificate_refused: the certificate's fingerprint seen

    def check(self) -> None:
        check_code(self.code)


@event_type
@dataclass(frozen=True, kw_only=True)
class Cancelled(Event):
    TYPE = "cancelled"
    WHAT = "cancelled event"
    job: str | None = None
    job_dir: str | None = None
    was: str | None = None  # "queued", "running", "uploading"
    completed_segments: int | None = None
    frames_written: int | None = None
    manifest: str | None = None


@event_type
@dataclass(frozen=True, kw_only=True)
class Jobs(Event):
    """The answer to `list_jobs`: one object per job (`job`, `job_dir`, `status`, `owner` and the folder's summary;
    a queued one's `position` and `others_ahead`, a running one's `started_at` (seconds since the epoch) and
    `progress`, its last progress event's fields)."""

    TYPE = "jobs"
    WHAT = "jobs event"
    jobs: list[dict[str, Any]]


@event_type
@dataclass(frozen=True, kw_only=True)
class Ok(Event):
    TYPE = "ok"
    WHAT = "ok event"
    request: str
    freed: bool | None = None
    deferred: bool | None = None


@event_type
@dataclass(frozen=True, kw_only=True)
class Blob(Event):
    """An upload's state. `upload`: an unnamed upload's id (its `sha256` is the worker's, once complete)."""

    TYPE = "blob"
    WHAT = "blob event"
    sha256: str = ""
    have: int
    complete: bool | None = None
    upload: str | None = None


@event_type
@dataclass(frozen=True, kw_only=True)
class Files(Event):
    TYPE = "files"
    WHAT = "files event"
    job_dir: str | None = None
    files: list[dict[str, Any]]


@event_type
@dataclass(frozen=True, kw_only=True)
class FileData(Event):
    TYPE = "file_data"
    WHAT = "file_data event"
    job_dir: str | None = None
    name: str
    offset: int
    size: int
    version: Any = None
    data: str | None = None  # the bytes in base64 (line framing)
    payload: int | None = None  # binary framing: the count of raw bytes that follow the line
    eof: bool


def event_fields(event: Event) -> dict[str, Any]:
    """The fields an event puts on the wire: unset optional ones (None, `local` False) are left out."""
    data = event.to_dict()
    for name in _optional_fields(type(event)):
        if data[name] is None:
            del data[name]
    if "local" in data and not data["local"]:
        del data["local"]
    return data


@lru_cache(maxsize=None)
def _optional_fields(cls: type) -> tuple[str, ...]:
    """An event class's fields that default to None (left out of the line when unset)."""
    return tuple(f.name for f in fields(cls) if f.default is None)


def encode_event(event: Event) -> str:
    """One event as a single JSON line (with the trailing newline)."""
    return json_line({"v": PROTOCOL_VERSION, "type": event.TYPE, **event_fields(event)})


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options makes one a call


def json_line(message: dict[str, Any]) -> str:
    """`message` as one compact JSON line (with the trailing newline)."""
    return _COMPACT.encode(message) + "\n"


def build_event(kind: str, data: dict[str, Any]) -> Event:
    """The record of event type `kind` from its fields; ProtocolError for an unknown type or field."""
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown event type {kind!r}"[:200])
    return cls.from_dict(data)


def decode_event(message: dict[str, Any]) -> Event:
    """The record of a decoded message dict (`{"v": 1, "type": ..., ...}`, as `decode_message` gives)."""
    if not isinstance(message, dict):
        raise ProtocolError(f"an event is a JSON object, got {type(message).__name__}")
    data = {key: value for key, value in message.items() if key not in ("v", "type")}
    return build_event(message.get("type"), data)


def as_message(event: Event) -> dict[str, Any]:
    """An event as the message dict a reader of `decode_message` sees."""
    return {"v": PROTOCOL_VERSION, "type": event.TYPE, **event_fields(event)}


def version_mismatch(line: str | bytes) -> int | None:
    """The protocol version of a worker line when it is a JSON object of another version, else None.

    The client looks at the first line of a worker this way (the handshake) before reading it as a
    message, so a worker of another version is one clear line, not one refusal per line.
    """
    try:
        message = json.loads(line)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(message, dict) or "type" not in message:
        return None
    version = message.get("protocol") if message.get("type") == "capabilities" else None
    for value in (message.get("v"), version):
        if value is not None and value != PROTOCOL_VERSION:
            return value if isinstance(value, int) else -1
    return None
