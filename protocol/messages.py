"""The worker protocol's lines: requests (client -> worker) and events (worker -> client), one JSON object each.

Events are checked against their records (`protocol.events`) when written and when read, so a
field one side writes and the other does not know is refused at once, by name.
"""

from __future__ import annotations

import json
from typing import Any

from .checks import CHECK_INPUTS_REQUEST
from .errors import check_code
from .events import EVENT_TYPES, PROTOCOL_VERSION, ErrorEvent, build_event, encode_event, json_line
from .json_files import read_json_file
from .records import ProtocolError

# Client -> worker.
REQUESTS = ("hello", "submit", "cancel", "list_jobs", "resume", "free_memory", "shutdown",
            "ping", "blob_status", "blob_put", "list_files", "fetch", "fetch_files", "fetch_changed",
            CHECK_INPUTS_REQUEST)


def encode_message(kind: str, **fields: Any) -> str:
    """One protocol message as a single JSON line (with the trailing newline); an event's fields are
    checked against its record (ProtocolError for a field it does not know)."""
    if kind in EVENT_TYPES:
        return encode_event(build_event(kind, fields))
    if kind not in REQUESTS:
        raise ProtocolError(f"unknown message type {kind!r}")
    return json_line({"v": PROTOCOL_VERSION, "type": kind, **fields})


def decode_message(line: str | bytes) -> dict[str, Any]:
    """Parse one line into a message dict; ProtocolError if it is not a valid message (an event whose
    fields its record refuses included)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        raise ProtocolError(f"not a JSON message: {line.strip()[:80]!r}") from None
    except RecursionError:  # json's parser recurses once per nesting level: a line of "[" x 200000
        raise ProtocolError("not a JSON message: nested too deeply") from None
    if not isinstance(message, dict) or "type" not in message:
        raise ProtocolError("a message must be a JSON object with a 'type'")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {message.get('v')!r} is not {PROTOCOL_VERSION}")
    kind = message["type"]
    if kind in EVENT_TYPES:
        build_event(kind, {key: value for key, value in message.items() if key not in ("v", "type")})
    elif kind not in REQUESTS:
        raise ProtocolError(f"unknown message type {kind!r}")
    return message


def error_event(code: str, message: str, hint: str = "", job: str | None = None, **fields: Any) -> str:
    """An error event: a declared code (`protocol.errors`), one line for the artist, and a hint."""
    first_line = message.strip().splitlines()[0] if message.strip() else code
    return encode_event(ErrorEvent(code=check_code(code), message=first_line, hint=hint, job=job, **fields))


def load_manifest(path: str) -> dict[str, Any]:
    """A job folder's JSON file (manifest.json, state.json) as a dict; ProtocolError (one line) when damaged."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: not a JSON object")
    return data
