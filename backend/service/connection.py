"""One TCP connection of the worker, plain or TLS, served by a single thread.

The thread owns the socket: it does the TLS handshake, reads request lines and writes every
line queued for the connection (replies and the job thread's events), all without blocking
(an SSL socket must never be read and written by two threads at once). A connection is closed
when it makes no authorised request within the auth timeout, when it has been silent for the
idle timeout, when a request carries a wrong token (after a delay), or when it stops reading
what is sent to it.
"""

from __future__ import annotations

import collections
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import protocol
from protocol.direct_io import PAYLOAD_BUFFERS

from .guard import AUTH_FAILURE_DELAY_S, AuthGuard
from .jobs import BAD_REQUEST, IDLE_TIMEOUT, UNAUTHORIZED, log

if TYPE_CHECKING:
    from .ports import LineHandler

JOIN_BELOW = 64 << 10  # queued pieces smaller than this go out joined (one send); larger ones as they are
READ_BYTES = 256 << 10  # one receive at most (a TLS record is 16 KiB; plain TCP takes what is there)
SEND_TIMEOUT_S = 10.0  # a client that takes nothing for this long is dropped rather than stalling the jobs
MAX_QUEUED_BYTES = 64 << 20  # events waiting for a slow client at most; more and it is dropped
# A stream's frames made ready ahead of the socket at most (a reply of many files). The one thread
# that makes them also sends them, so making more ahead only holds the first byte back (8 MiB of a
# job's frames: 10 ms) and fills fresh buffers; this much still joins a job's small files into one send.
STREAM_AHEAD_BYTES = 256 << 10
POLL_S = 0.05  # how soon an event of the job thread goes out
HANDSHAKE_TIMEOUT_S = 10.0


class QueuedOutput:
    """A connection's event stream: `send` queues a whole line; the connection's thread writes it."""

    def __init__(self, name: str, mode: str, peer_host: str):
        self.name, self.mode, self.peer_host = name, mode, peer_host  # mode: "paths" | "transfer"
        self._lock = threading.Lock()
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self.broken = False
        self.authorised = False  # set by the worker once this connection made an authorised request
        self.closing = False  # close once the queue is written (after a refused token)
        self.on_auth_failure = None  # set by the connection: called before a wrong token is answered
        self.framing = protocol.FRAMING_LINES  # set by a hello that asks for binary frames (framing)
        self._streams: collections.deque[Iterator[tuple[str, bytes]]] = collections.deque()

    def send(self, line: str) -> bool:
        return self.send_frame(line, b"")

    def send_frame(self, line: str, payload: bytes) -> bool:
        """A header line and the raw bytes that follow it, queued as one (nothing can come between)."""
        header = line.encode("utf-8")
        size = len(header) + len(payload)
        with self._lock:
            if self.broken:
                return False
            if self._queued + size > MAX_QUEUED_BYTES:
                self.broken = True
                log(f"{self.name}: {self._queued} bytes wait for it; connection dropped")
                return False
            self._queue.append(header)
            if payload:
                self._queue.append(payload)
            self._queued += size
        return True

    def send_stream(self, frames: Iterator[tuple[str, bytes]]) -> None:
        """A reply of many frames ((line, payload) pairs), made as the socket takes them: `take` draws the
        next ones while less than STREAM_AHEAD_BYTES wait, so a reply of a whole job folder never sits in
        memory, and events still go out between its frames. Streams go one after the other."""
        self._streams.append(frames)

    def drop_streams(self) -> None:
        """Stop every stream (the connection closes): its frames not made yet never are."""
        while self._streams:
            self._streams.popleft().close()

    def take(self) -> bytes:
        """What is queued next, as one buffer (empty when nothing is): small lines joined, a frame's
        payload on its own (never copied). Only the connection's thread calls it (it runs the streams)."""
        while self._streams and self._queued < STREAM_AHEAD_BYTES and not self.broken:
            frame = next(self._streams[0], None)
            if frame is None:
                self._streams.popleft()
            else:
                self.send_frame(*frame)
        with self._lock:
            parts = []
            while self._queue and (not parts or len(self._queue[0]) < JOIN_BELOW):
                parts.append(self._queue.popleft())
                if len(parts[-1]) >= JOIN_BELOW:
                    break
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            self._queued -= len(data)
        return data


def serve_connection(worker: LineHandler, conn: socket.socket, peer: tuple, tls: ssl.SSLContext | None,
                     guard: AuthGuard, auth_timeout: float, idle_timeout: float, line_limit: int) -> None:
    """Serve one accepted connection until it ends; closes it. Never raises."""
    host = str(peer[0])
    name = f"client {protocol.wire.address_text(host, peer[1])}"
    try:
        # Replies are small and each one is waited for: Nagle's algorithm with delayed ACKs would hold
        # the end of every reply back by tens of milliseconds.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            conn.settimeout(min(HANDSHAKE_TIMEOUT_S, auth_timeout))
            first = _first_byte(conn)
            if first == b"{":  # a JSON line: the add-on without a fingerprint, told why in words it can read
                log(f"{name}: {handshake_failure(None)}; closed")
                conn.sendall(protocol.error_event(BAD_REQUEST, protocol.wire.TLS_ONLY).encode())
                _close_after_reading(conn)
                return
            if first is None:
                log(f"{name}: {handshake_failure(TimeoutError())}; closed")
                return
            try:
                conn = tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log(f"{name}: {handshake_failure(exc)}; closed")
                return
            log(f"{name} connected (TLS)")
        output = QueuedOutput(name, "transfer" if tls is not None else "paths", host)
        blocked = guard.blocked_for(host)
        if blocked:
            output.send(protocol.error_event(
                UNAUTHORIZED, f"too many failed authentications from {host}: try again in {blocked:.0f} s"))
            output.closing = True
        else:
            output.on_auth_failure = lambda: _auth_failed(guard, host, name)
        _Loop(worker, conn, output, auth_timeout, idle_timeout, line_limit).run()
    except Exception as exc:  # a connection's fault never reaches the accept loop
        log(f"{name}: {exc.__class__.__name__}: {exc}")
    finally:
        try:
            conn.close()
        except OSError:
            pass


def _close_after_reading(conn: socket.socket, seconds: float = 2.0) -> None:
    """Say we are done, then read what the client sent until it hangs up: a socket closed with bytes unread
    resets the connection, and the reset can reach the client before it has read the last line."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(seconds)
        for _ in range(64):
            if not conn.recv(1 << 16):
                break
    except OSError:
        pass


def _first_byte(conn: socket.socket) -> bytes | None:
    """A client's first byte, left unread (a TLS client's opens a handshake record, 0x16; a plain client's a
    JSON line); b"" when it hung up, None when it sent nothing within the handshake's time."""
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return None
    except OSError:
        return b""


def handshake_failure(exc: BaseException | None) -> str:
    """Why a TLS handshake failed, in one line (the common case said plainly: a client without TLS; None:
    one seen speaking plain lines before any handshake)."""
    reason = getattr(exc, "reason", None) or ""
    if exc is None or reason in protocol.wire.PLAIN_PEER_REASONS:
        return "not a TLS client (it spoke plain TCP to the TLS port: connect with TLS and the worker's fingerprint)"
    if isinstance(exc, TimeoutError):
        return "no TLS handshake within the time allowed"
    if isinstance(exc, (ssl.SSLEOFError, ConnectionError)) or not str(exc):
        return "hung up before the TLS handshake ended"
    return f"TLS handshake failed ({reason or exc.__class__.__name__}: {str(exc)[:120]})"


def _auth_failed(guard: AuthGuard, host: str, name: str) -> None:
    if guard.failed(host):
        log(f"{name}: repeated failed authentications: {host} is shut out for {guard.block:g} s")
    else:
        log(f"{name}: wrong or missing token")
    time.sleep(AUTH_FAILURE_DELAY_S)


class _Loop:
    """The connection thread's loop: read, answer, write, time out."""

    def __init__(self, worker: LineHandler, conn: socket.socket, output: QueuedOutput, auth_timeout: float,
                 idle_timeout: float, line_limit: int):
        self.worker, self.conn, self.output = worker, conn, output
        self.auth_timeout, self.idle_timeout = auth_timeout, idle_timeout
        # An upload's whole chunks land in pooled buffers, which the blob store's writer gives back.
        self.lines = protocol.FrameReader(line_limit, allocate=PAYLOAD_BUFFERS.take)
        self.pending = memoryview(b"")  # taken from the output, not yet written
        self._buffer = bytearray(READ_BYTES)

    def run(self) -> None:
        conn, output = self.conn, self.output
        conn.setblocking(False)
        started = last_heard = time.monotonic()
        last_written = None  # when what waits to be written last moved
        streaming = False  # the last read found bytes
        try:
            while not self.worker.stopping.is_set():
                if not self.pending:
                    self.pending = memoryview(output.take())
                if output.broken or (output.closing and not self.pending):
                    return
                now = time.monotonic()
                if not output.authorised and now - started > self.auth_timeout:
                    log(f"{output.name}: no authorised request in {self.auth_timeout:g} s; closing it")
                    self._last_words(UNAUTHORIZED, f"no authorised request within {self.auth_timeout:g} s: connection closed")
                    return
                if output.authorised and now - last_heard > self.idle_timeout:
                    log(f"{output.name}: silent for {self.idle_timeout:g} s; closing it")
                    self._last_words(IDLE_TIMEOUT, f"nothing heard for {self.idle_timeout:g} s: connection closed")
                    return
                if not self.pending:
                    last_written = None
                elif last_written is None:
                    last_written = now  # waiting to be written from now on
                elif now - last_written > SEND_TIMEOUT_S:
                    log(f"{output.name}: takes nothing sent to it; connection dropped")
                    return
                # While bytes stream in (an upload), read on without asking select first: one system
                # call per TLS record instead of two; select is asked again once a read finds nothing.
                ready = streaming or (isinstance(conn, ssl.SSLSocket) and conn.pending() > 0)
                if not ready:
                    readable, writable, _ = select.select([conn], [conn] if self.pending else [], [], POLL_S)
                    ready = bool(readable)
                    if writable and self._write():
                        last_written = time.monotonic()
                if ready:
                    count, messages = self._read()
                    streaming = bool(count) and not self.pending
                    if count is None:
                        continue
                    if not count:
                        return
                    last_heard = time.monotonic()
                    for line, payload in messages:
                        self.worker.handle_line(line, output, payload)
                        self.lines.binary = output.framing == protocol.FRAMING_BINARY
                        if output.closing or output.broken:
                            break
                    last_heard = time.monotonic()  # silence counts from the answer (a first hello takes seconds)
            self._last_words(None, "")  # the worker stops: what was answered still goes out (shutdown's ok)
        finally:
            output.drop_streams()
            self.worker.remove_output(output)
            log(f"{output.name} disconnected")

    def _read(self) -> tuple:
        """(bytes received: 0 at the end, None when none are ready yet; the messages they complete).

        A read that began a payload (an upload's chunk header and its first bytes) reads on into it at
        once (`FrameReader.receive` then reads record after record): a round of the whole loop for each
        16 KiB TLS record cost the worker's thread about a sixth of an upload's CPU (measured run for run
        in one process: 0.17 s -> 0.14-0.15 s a 64 MiB upload on the 2-core test machine).
        """
        try:
            count, messages = self.lines.receive(self.conn.recv_into, self._buffer)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return None, ()
        except OSError:
            return 0, ()
        messages = list(messages)
        if count and self.lines.payload_left:
            try:
                more, completed = self.lines.receive(self.conn.recv_into, self._buffer)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, OSError):
                return count, messages  # nothing more here now (or the end, which the next round finds)
            count += more
            messages += completed
        return count, messages

    def _write(self) -> bool:
        """Write what the socket takes now; False when it took nothing."""
        try:
            sent = self.conn.send(self.pending)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except OSError as exc:
            log(f"{self.output.name}: cannot write ({exc}); connection dropped")
            self.output.broken = True
            return False
        self.pending = self.pending[sent:]
        return sent > 0

    def _last_words(self, code: str | None, message: str) -> None:
        """What is queued and one error line (when `code`), written within a second, before closing."""
        self.output.drop_streams()
        data = bytes(self.pending) + b"".join(iter(self.output.take, b""))
        if code is not None:
            data += protocol.error_event(code, message).encode("utf-8")
        if not data:
            return
        self.conn.settimeout(1.0)
        try:
            self.conn.sendall(data)
        except OSError:
            pass
