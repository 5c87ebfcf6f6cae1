"""How a connection's replies carry file bytes: base64 in the line, or a binary frame after it.

A connection starts in line framing (`protocol.wire`); a `hello` asking for `framing: "binary"`
switches a TCP connection to binary frames, whose chunks are larger too (no base64 line to keep
under the line limit). The handlers of `transfer` put raw bytes in a reply's `payload` field and
read them from a request's; `send_reply` writes them the way the connection speaks.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import protocol

from .blobs import CHUNK_BYTES
from .jobs import BAD_REQUEST, ProtocolFailure

if TYPE_CHECKING:
    from .serve import Output

BINARY_CHUNK_BYTES = 4 << 20  # one frame's bytes: few enough requests that their round trips vanish


def framing_of(output: Output) -> str:
    return getattr(output, "framing", protocol.FRAMING_LINES)


def chunk_bytes(output: Output) -> int:
    return BINARY_CHUNK_BYTES if framing_of(output) == protocol.FRAMING_BINARY else CHUNK_BYTES


def negotiate_framing(message: dict, output: Output) -> dict:
    """The framing a `hello` asked for, where the connection can speak it; capabilities' fields."""
    if message.get("framing") == protocol.FRAMING_BINARY and hasattr(output, "send_frame"):
        output.framing = protocol.FRAMING_BINARY
    return {"framing": framing_of(output), "chunk_bytes": chunk_bytes(output)}


def payload_of(message: dict) -> bytes:
    """A request's file bytes: its binary frame's, or its base64 `data`; bad_request when neither is."""
    payload = message.get(protocol.PAYLOAD_FIELD)
    if protocol.is_payload(payload):
        return payload
    if payload is not None:
        raise ProtocolFailure(BAD_REQUEST, f"'{protocol.PAYLOAD_FIELD}' must be a byte count of at most "
                              f"{protocol.MAX_PAYLOAD_BYTES} on a connection with binary framing")
    try:
        return base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ProtocolFailure(BAD_REQUEST, "'data' must be base64") from None


def send_reply(output: Output, kind: str, fields: dict[str, Any]) -> None:
    """One reply; its `payload` (bytes) as a binary frame or as base64 `data`, as the connection speaks."""
    line, payload = encode_reply(output, kind, fields)
    if payload:
        output.send_frame(line, payload)
    else:
        output.send(line)


def encode_reply(output: Output, kind: str, fields: dict[str, Any]) -> tuple[str, bytes]:
    """A reply as (its line, the raw bytes that follow it: empty but for a binary frame's payload)."""
    payload = fields.pop(protocol.PAYLOAD_FIELD, None)
    if payload is None:
        return protocol.encode_message(kind, **fields), b""
    if framing_of(output) == protocol.FRAMING_BINARY:
        return protocol.encode_message(kind, **fields, **{protocol.PAYLOAD_FIELD: len(payload)}), payload
    return protocol.encode_message(kind, **fields, data=base64.b64encode(payload).decode("ascii")), b""


def encode_file_data(output: Output, data: bytes, **fields: Any) -> tuple[str, bytes]:
    """A file_data reply made from its record's constructor (a stream of a job's frames makes one a file;
    checking a dict of the worker's own fields against the record again was 5 % of its CPU in a fetch):
    (its line, its payload: the bytes themselves with binary framing, else empty and base64 in the line)."""
    if framing_of(output) == protocol.FRAMING_BINARY:
        return protocol.encode_event(protocol.FileData(**fields, payload=len(data))), data
    return protocol.encode_event(protocol.FileData(**fields, data=base64.b64encode(data).decode("ascii"))), b""
