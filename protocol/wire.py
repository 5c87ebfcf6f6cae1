"""How bytes travel on a worker connection: line framing, binary frames, and the codes for who may do what.

Standard library only (both sides use it). A connection starts in line framing: one JSON message
per line, file bytes as base64 inside the line (what clients of protocol 1 speak). A client that
sends ``hello`` with ``framing: "binary"`` gets ``capabilities.framing == "binary"`` back when the
worker speaks it; from then on a message that carries file bytes (``blob_put``, ``file_data``) is
its JSON header line with ``"payload": N`` followed at once by exactly N raw bytes on the same
connection. Every other message stays one line. An older worker answers no ``framing``, and the
client keeps to lines.

`FrameReader` is the one reader of that stream, for both ends; it is hand-written because a line
protocol with length-prefixed payloads between lines is this project's own wire format.
"""

from __future__ import annotations

import json
import mmap
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

from .errors import QUOTA_EXCEEDED  # noqa: F401  (re-exported: the shared worker's own code)

FRAMING_LINES = "lines"  # base64 inside the JSON line (protocol 1 clients)
FRAMING_BINARY = "binary"  # a JSON header line, then "payload" raw bytes
FRAMINGS = (FRAMING_LINES, FRAMING_BINARY)
PAYLOAD_FIELD = "payload"  # in a header line: how many raw bytes follow; in a decoded message: those bytes
MAX_PAYLOAD_BYTES = 16 << 20  # one frame's bytes at most (the worker's chunk is smaller)

# An unnamed upload's id (`blob_put` / `blob_status` with `upload` in place of `sha256`): the client
# sends a file before knowing its SHA-256, which the worker works out as the bytes arrive and names the
# blob by. Random, so another upload never meets it; scoped to the artist who sends it.
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")

# The name an uploaded file or folder is linked by on the worker (the name it had on the artist's machine,
# made safe): letters and digits of any script, '.', '_', '-' and spaces, starting with a letter, digit
# or '_' (not hidden, not read as an option), at most MAX_LINK_NAME_BYTES of UTF-8 (file systems allow
# 255 bytes a name; 120 Japanese characters are 360). `link_name_for` makes one from any file name.
MAX_LINK_NAME_BYTES = 200
_LINK_NAME = re.compile(r"\w[\w. -]*")
_LINK_EXTENSION_CHARS = 16  # ".png", ".tiff", ".mp4": kept whole however long the name is


def is_link_name(name: object) -> bool:
    """Whether the worker links an upload by `name` (see MAX_LINK_NAME_BYTES)."""
    return (isinstance(name, str) and _LINK_NAME.fullmatch(name) is not None
            and len(name.encode("utf-8")) <= MAX_LINK_NAME_BYTES and unicodedata.is_normalized("NFC", name))


def link_name_for(file_name: str) -> str:
    """A link name (`is_link_name`) for a file or folder called `file_name` on the artist's machine: its
    letters and digits kept (composed: macOS spells "é" as "e" and an accent), anything else '_', its
    extension kept when the rest is shortened. "Zoé (final).png" -> "Zoé__final_.png"."""
    name = unicodedata.normalize("NFC", file_name)
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
    stem, dot, extension = safe.rpartition(".")
    if not dot or not extension or len(extension) >= _LINK_EXTENSION_CHARS:
        stem, extension = safe.rstrip("."), ""
    else:
        extension = "." + extension
    stem = stem.lstrip(".-") or "input"
    room = MAX_LINK_NAME_BYTES - len(extension.encode("utf-8"))
    while len(stem.encode("utf-8")) > room:
        stem = stem[:-1]
    return stem + extension


# OpenSSL's reasons for a TLS handshake that met plain TCP at the other end (`ssl.SSLError.reason`): a worker
# started without --tls, or a client that speaks without TLS. Both ends say so in plain words.
PLAIN_PEER_REASONS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE",
                      "PACKET_LENGTH_TOO_LONG")
TLS_ONLY = ("this worker takes TLS connections only: paste the certificate fingerprint it printed into the "
            "add-on's preferences (Worker: Certificate)")


def normalize_fingerprint(text: str | None) -> str:
    """A certificate's SHA-256 fingerprint as ``AB:CD:...`` from any spelling (colons, spaces, case); "" when the
    text is none (pasted into the add-on's preferences, or given to `python -m backend jobs --fingerprint`)."""
    digits = "".join(ch for ch in (text or "") if ch not in ": \t\n").upper()
    if len(digits) != 64 or any(ch not in "0123456789ABCDEF" for ch in digits):
        return ""
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def address_text(host: str, port: int) -> str:
    """A worker's address as a person types it: ``host:port``, an IPv6 host in brackets (``[::1]:7860``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Error codes of a shared worker (with those of backend.service.jobs).
ROLE_ARTIST = "artist"
ROLE_ADMIN = "admin"  # sees and cancels every identity's jobs
ROLES = (ROLE_ARTIST, ROLE_ADMIN)


# An image sequence in transfer mode: "blobtree:<listing sha256>/<folder name>/<pattern>", the pattern
# a plain file name with one counter (%d, %04d or ####), e.g. frame_%04d.png.
SEQUENCE_TOKEN = re.compile(r"%0?\d*d|#+")
# Its files' link names are their own names (`link_name_for` changes none of them): nothing before the
# counter, or a letter, digit or '_' first.
SEQUENCE_NAME = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*)?(?:%0?\d*d|#+)[A-Za-z0-9._-]*")


def sequence_regex(pattern: str) -> re.Pattern:
    """The file names an image sequence's pattern stands for (its counter: one or more digits)."""
    token = SEQUENCE_TOKEN.search(pattern)
    return re.compile(re.escape(pattern[: token.start()]) + r"\d+" + re.escape(pattern[token.end() :]))


def request_id_of(line: str | bytes) -> Any:
    """The ``request_id`` of a line that is not a valid message (so its refusal can echo it); None if none."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    request_id = message.get("request_id")
    return request_id if isinstance(request_id, (str, int)) and not isinstance(request_id, bool) else None


def payload_size(line: bytes) -> int | None:
    """How many raw bytes follow the header `line` (None: none follow; -1: a header that names a bad size)."""
    if b'"' + PAYLOAD_FIELD.encode() + b'"' not in line:
        return None
    try:
        size = json.loads(line).get(PAYLOAD_FIELD)
    except (ValueError, RecursionError, AttributeError):
        return None
    if isinstance(size, bool) or not isinstance(size, int):
        return None
    return size if 0 <= size <= MAX_PAYLOAD_BYTES else -1


def is_payload(value: object) -> bool:
    """Whether a decoded message's `payload` holds received bytes (JSON never decodes to these)."""
    return isinstance(value, (bytes, bytearray, memoryview, mmap.mmap))


class FrameReader:
    """Bytes in, ``(line, payload)`` out: payload is None for a plain line, the raw bytes after a header
    (received in place, into a buffer from `allocate`).

    A line over `line_limit` bytes comes out as ``(None, None)`` and is skipped to its newline, never
    buffered whole. Payloads are only looked for once `binary` is set (after the hello that asked).
    """

    def __init__(self, line_limit: int, binary: bool = False, allocate: Callable[[int], Any] = bytearray):
        """`allocate(size)`: a writable buffer of `size` bytes a payload is received into
        (`direct_io.PAYLOAD_BUFFERS.take` hands out reused, page-aligned ones)."""
        self.line_limit, self.binary, self._allocate = line_limit, binary, allocate
        self._buffer = bytearray()
        self._skipping = False
        self._header: bytes | None = None  # a header whose payload is being read
        self._payload = None  # a buffer of the payload's full size, filled in place
        self._filled = 0

    @property
    def payload_left(self) -> int:
        """Bytes of the payload being read still to come (0 between messages)."""
        return len(self._payload) - self._filled if self._payload is not None else 0

    def receive(self, recv_into: Callable[[memoryview], int], buffer: bytearray):
        """Receive into `buffer` once; or, inside a payload, straight into it (no copy) until it is
        complete or `recv_into` has nothing more; (bytes received, 0 at the end, and an iterator of
        the messages completed).

        An OSError `recv_into` raises (a non-blocking socket with nothing ready) reaches the caller
        when no byte came before it; after some bytes they are returned, and the next call meets it.
        TLS hands out one 16 KiB record a call, and a call of this method for each record cost the
        receiving thread a tenth of its CPU: 64 MiB in 4 MiB frames over loopback TLS, medians of 8
        alternated in one process, 98 -> 90 ms and 107 -> 95 ms (a bare `recv_into` loop: 64, 82 ms).
        """
        if self._payload is not None:
            view, count = memoryview(self._payload), 0
            try:
                while self._filled < len(view):
                    more = recv_into(view[self._filled :])
                    if not more:
                        break
                    self._filled += more
                    count += more
            except OSError:
                if not count:
                    raise
            return count, self._completed()
        count = recv_into(memoryview(buffer))
        return count, self.feed(bytes(memoryview(buffer)[:count]))

    def _completed(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        if self._payload is not None and self._filled == len(self._payload):
            header, payload = self._header, self._payload
            self._header, self._payload = None, None
            yield header, payload

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes | None, bytes | None]]:
        """The messages `chunk` completes, one at a time (`binary` may be set between two of them)."""
        pos, end = 0, len(chunk)
        while pos < end:
            if self._payload is not None:
                take = min(end - pos, len(self._payload) - self._filled)
                self._payload[self._filled : self._filled + take] = chunk[pos : pos + take]
                self._filled += take
                pos += take
                yield from self._completed()
                continue
            newline = chunk.find(b"\n", pos)
            if newline < 0:
                self._buffer += chunk[pos:]
                if len(self._buffer) > self.line_limit:
                    if not self._skipping:
                        yield None, None
                    self._skipping, self._buffer = True, bytearray()
                return
            line = bytes(self._buffer + chunk[pos:newline]) if self._buffer else chunk[pos:newline]
            self._buffer = bytearray()
            pos = newline + 1
            if self._skipping:
                self._skipping = False
                continue
            if len(line) > self.line_limit:
                yield None, None
                continue
            size = payload_size(line) if self.binary else None
            if size is None or size < 0:
                yield line, None  # a bad size: the handler refuses the header
            elif size == 0:
                yield line, b""
            else:
                self._header, self._payload, self._filled = line, self._allocate(size), 0
