"""The error codes of the contract: one table, what each means, who sends it, and what follows.

An `error` event carries one of these codes. The worker sends the "worker" codes; the add-on's
client makes the "client" ones itself (a worker process that ended, a lost connection, an upload
that failed) so that the queue handles every failure the same way. Both sides take the codes from
here; `ERRORS` is the whole list and `ErrorEvent` (protocol.events) refuses a code not in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .records import ProtocolError, Record


@dataclass(frozen=True)
class ErrorCode(Record):
    """One code: `cause` "input" (the artist can fix it: the job or its files), "ours" (the worker
    or the model failed) or "link" (the way to the worker failed); `resumable`: a generation that
    ended so keeps its finished segments and can go on once the cause is fixed."""

    WHAT = "error code"
    code: str
    meaning: str
    sender: Literal["worker", "client"]
    cause: Literal["input", "ours", "link"]
    resumable: bool = False


def _code(code: str, meaning: str, sender: str, cause: str, resumable: bool = False) -> str:
    ERRORS[code] = ErrorCode(code, meaning, sender, cause, resumable)  # type: ignore[arg-type]
    return code


ERRORS: dict[str, ErrorCode] = {}

# Sent by the worker.
BAD_REQUEST = _code("bad_request", "a malformed or unknown request line, or one missing a field", "worker", "input")
UNAUTHORIZED = _code("unauthorized", "a wrong or missing token; the connection is closed", "worker", "link")
UNKNOWN_JOB = _code("unknown_job", "no queued or running job has that id", "worker", "input")
BAD_INPUT = _code("bad_input", "the job's settings, files, LoRA files or folder cannot be used; said before "
                  "the model loads", "worker", "input")
OUT_OF_MEMORY = _code("out_of_memory", "the GPU or the host ran out of memory (with a hint)", "worker", "ours")
OUTPUT_ERROR = _code("output_error", "the job's folder could not be written (disk full, read-only); the model is "
                     "kept", "worker", "input", resumable=True)
JOB_FAILED = _code("job_failed", "any other failure of the job (its first line)", "worker", "ours")
INTERNAL_ERROR = _code("internal_error", "a request the worker itself failed to answer; it keeps serving",
                       "worker", "ours")
TOO_MANY_CONNECTIONS = _code("too_many_connections", "TCP: a connection over the limit, before it is closed",
                             "worker", "link")
QUOTA_EXCEEDED = _code("quota_exceeded", "a shared worker: the artist has the most queued jobs allowed already",
                       "worker", "input")
IDLE_TIMEOUT = _code("idle_timeout", "TCP: an authorised connection silent for the idle timeout, before it is "
                     "closed", "worker", "link")

# Made by the add-on's client.
BAD_OUTPUT = _code("bad_output", "a line from the worker that is not a protocol message", "client", "ours")
PROTOCOL_MISMATCH = _code("protocol_mismatch", "the worker speaks another version of the protocol; said once, "
                          "at the handshake", "client", "ours")
WORKER_EXITED = _code("worker_exited", "the worker process ended unasked (its last stderr line)", "client", "ours",
                      resumable=True)
CONNECTION_LOST = _code("connection_lost", "the connection to a remote worker was lost", "client", "link",
                        resumable=True)
WORKER_NOT_STARTED = _code("worker_not_started", "the local worker process could not be started", "client", "link")
STOPPED = _code("stopped", "the artist stopped the worker while the job ran", "client", "input")
CERTIFICATE_REFUSED = _code("certificate_refused", "a TLS worker's certificate is not the pinned one (with the "
                            "fingerprint seen)", "client", "link")
CONNECTION_FAILED = _code("connection_failed", "the worker could not be started or reached", "client", "link")
CLIENT_FAILED = _code("client_failed", "the add-on's side of the connection failed", "client", "ours")
TRANSFER_FAILED = _code("transfer_failed", "copying a job's files to or from a remote worker failed", "client",
                        "link")
UPLOAD_FAILED = _code("upload_failed", "uploading a job's inputs to a remote worker failed", "client", "link")

# Codes after which a generation keeps its finished segments and can be resumed.
RESUMABLE = tuple(code for code, entry in ERRORS.items() if entry.resumable)
# ... because the worker or its connection ended, not the job: resumed automatically once (preferences).
WORKER_STOPPED = (WORKER_EXITED, CONNECTION_LOST)


def check_code(code: str) -> str:
    """`code` itself, or ProtocolError when the contract does not declare it."""
    if code not in ERRORS:
        raise ProtocolError(f"unknown error code {code!r}"[:200])
    return code


def is_input_error(code: str) -> bool:
    """Whether an error with `code` is the artist's to fix (the job or its files), not a failure of ours."""
    entry = ERRORS.get(code)
    return entry is not None and entry.cause == "input"
