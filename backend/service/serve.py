"""Serving the worker: its line transport over stdin/stdout or TCP.

`python -m backend serve` (in `backend.cli`) builds the `Worker` and hands it to `serve_stdio`
or `serve_tcp`, which run until the worker stops. Over stdin/stdout, stdout carries protocol
lines only (anything else printed goes to stderr). Over TCP (`--listen HOST:PORT`) the worker
binds 127.0.0.1 unless told otherwise; any other address is served with TLS only (`tls`) and
needs a token (one is generated when none is given).

A TLS connection is in transfer mode: its client names no server paths and sends its files
over the connection. A plain connection (loopback only) uses paths, as a local worker does.

TCP faults never stop the worker: when accepting fails (no descriptors left) it logs, backs off
and keeps accepting; at most `max_connections` are served at once (more get one error line and
are closed); each connection is served by its own thread (`connection`), which closes it after
the auth timeout, the idle timeout or a wrong token. On the way out every thread started here
is stopped and joined (a thread still running torch code when the interpreter finalizes aborts
the process).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

import protocol

from .connection import serve_connection
from .guard import AuthGuard
from .jobs import MAX_LINE_BYTES, TOO_MANY_CONNECTIONS, log

if TYPE_CHECKING:
    from .ports import LineHandler

TOKEN_ENV = "SCAIL2_WORKER_TOKEN"
MAX_CONNECTIONS = 16  # Blender holds one; a farm a few: far below any descriptor limit
AUTH_TIMEOUT_S = 30.0  # a client sends its first request at once; a silent one holds a descriptor for nothing
IDLE_TIMEOUT_S = 300.0  # an authorised client pings every minute (WorkerClient); a silent one is gone
MIN_TOKEN_CHARS = 16  # shorter secrets are refused: guessable
ACCEPT_BACKOFF_S = (0.05, 2.0)  # first and longest wait after accept() fails
THREAD_JOIN_S = 5.0  # how long stopping waits for each transport thread


def read_lines(read: Callable[[int], bytes]):
    """Yield the lines (bytes, no newline) of a raw byte source until EOF.

    A line longer than MAX_LINE_BYTES is skipped up to its newline and yields None,
    so a flood without newlines can never exhaust memory.
    """
    buffer = b""
    skipping = False
    while True:
        chunk = read(65536)
        if not chunk:
            if buffer and not skipping:
                yield buffer
            return
        buffer += chunk
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > MAX_LINE_BYTES:
                    if not skipping:
                        yield None
                    skipping, buffer = True, b""
                break
            line, buffer = buffer[:newline], buffer[newline + 1 :]
            if skipping:
                skipping = False
                continue
            yield None if len(line) > MAX_LINE_BYTES else line


class Output:
    """One connection's event stream: whole lines, one writer at a time."""

    def __init__(self, write: Callable[[bytes], Any], name: str, on_broken: Callable[[], None] | None = None):
        self._write, self.name, self._on_broken = write, name, on_broken
        self._lock = threading.Lock()
        self.broken = False
        self.authorised = False  # set by the worker once this connection made an authorised request
        self.mode = "paths"  # protocol.CONNECTION_MODES

    def send(self, line: str) -> bool:
        with self._lock:
            if self.broken:
                return False
            try:
                self._write(line.encode("utf-8"))
                return True
            except (OSError, ValueError) as exc:
                self.broken = True
                log(f"{self.name}: cannot write ({exc}); connection dropped")
        if self._on_broken is not None:
            self._on_broken()
        return False


def _fd_writer(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, :PORT or PORT (host 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--listen takes HOST:PORT, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port must be 0-65535, got {number}")
    return host, number


def is_loopback(host: str) -> bool:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    try:
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except ValueError:
        return False


def serve_stdio(worker: LineHandler) -> None:
    # The protocol owns the real stdout; anything else printed (by us or a library) goes to stderr.
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    output = Output(_fd_writer(protocol_fd), "stdout", on_broken=worker.stopping.set)
    worker.add_output(output)

    def reader() -> None:
        for line in read_lines(lambda n: os.read(0, n)):
            worker.handle_line(line, output)
            if worker.stopping.is_set():
                return
        log("stdin closed: stopping")
        worker.stopping.set()

    thread = threading.Thread(target=reader, name="scail2-stdin", daemon=True)
    thread.start()
    _wait_until_stopping(worker)
    # After a `shutdown` request or the end of stdin the reader returns at once; otherwise (a broken
    # stdout, Ctrl-C) it may sit in read(), a plain C call that is harmless at exit: not waited for long.
    thread.join(1.0)


class _Connections:
    """The TCP connections being served: their count, their sockets and their threads."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self._lock = threading.Lock()
        self._open: dict[socket.socket, threading.Thread] = {}

    def add(self, conn: socket.socket, thread: threading.Thread) -> bool:
        with self._lock:
            if len(self._open) >= self.limit:
                return False
            self._open[conn] = thread
        thread.start()
        return True

    def remove(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.pop(conn, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def close_all(self) -> None:
        """Hang up every connection (their reads return at once) and wait for their threads."""
        with self._lock:
            open_now = list(self._open.items())
        for conn, _thread in open_now:
            _hang_up(conn)
        for _conn, thread in open_now:
            thread.join(THREAD_JOIN_S)


def _hang_up(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _refuse(conn: socket.socket, code: str, message: str) -> None:
    """One error line to a connection that will not be served, then close it."""
    try:
        conn.settimeout(1.0)
        conn.sendall(protocol.error_event(code, message).encode("utf-8"))
    except OSError:
        pass
    finally:
        conn.close()


def bind_tcp(host: str, port: int) -> socket.socket:
    """The worker's listening socket, bound before anything else starts (a port already taken is said at
    once, before a token is made or torch is imported). OSError when it cannot be bound: `bind_failure`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def bind_failure(host: str, port: int, exc: OSError) -> str:
    """Why `host:port` cannot be listened on, in one line ("Address already in use", not the socket
    module's retelling of the call)."""
    if exc.errno and exc.errno > 0:
        reason = os.strerror(exc.errno)
    else:  # a name the resolver does not know (its own negative codes)
        reason = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
    return f"cannot listen on {protocol.wire.address_text(host, port)}: {reason}"


def serve_tcp(worker: LineHandler, server: socket.socket, max_connections: int = MAX_CONNECTIONS,
              auth_timeout: float = AUTH_TIMEOUT_S, tls: ssl.SSLContext | None = None,
              idle_timeout: float = IDLE_TIMEOUT_S, guard: AuthGuard | None = None) -> None:
    """Serve TCP on `server` (`bind_tcp`'s) until the worker stops; with `tls`, every connection is TLS (and
    in transfer mode)."""
    server.settimeout(0.5)
    bound = server.getsockname()
    host = bound[0]
    guard = guard or AuthGuard()
    log(f"listening on {protocol.wire.address_text(host, bound[1])}" + (" with TLS" if tls else "")
        + (" (token required)" if worker.book.required else ""))
    if worker.book.named and not worker.book.names() and worker.book.shared is None:
        log(f"the tokens file {worker.book.path} names no artist yet: nobody can connect until one is added "
            f"(`python -m backend tokens --file {worker.book.path} add NAME`; read again when it changes)")
    connections = _Connections(max_connections)

    def serve_one(conn: socket.socket, address: tuple) -> None:
        try:
            serve_connection(worker, conn, address, tls, guard, auth_timeout, idle_timeout, MAX_LINE_BYTES)
        finally:
            connections.remove(conn)

    def accept_loop() -> None:
        wait = 0.0
        while not worker.stopping.is_set():
            try:
                conn, address = server.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if worker.stopping.is_set():
                    return
                # Out of descriptors (EMFILE/ENFILE) or memory: the pending client stays queued;
                # wait for connections to close rather than spin, and never stop accepting.
                if not wait:
                    log(f"cannot accept connections: {exc.strerror or exc} ({len(connections)} open); "
                        "retrying")
                wait = min(ACCEPT_BACKOFF_S[1], max(ACCEPT_BACKOFF_S[0], wait * 2))
                worker.stopping.wait(wait)
                continue
            if wait:
                log("accepting connections again")
                wait = 0.0
            peer = protocol.wire.address_text(address[0], address[1])
            thread = threading.Thread(target=serve_one, args=(conn, address), name=f"scail2-{peer}", daemon=True)
            if not connections.add(conn, thread):
                log(f"client {peer} refused: {connections.limit} connections are open")
                _refuse(conn, TOO_MANY_CONNECTIONS, f"the worker serves at most {connections.limit} connections at "
                        "once; close one or try again later")
                continue
            if tls is None:  # a TLS client is logged once its handshake is done (or failed: one line)
                log(f"client {peer} connected")

    acceptor = threading.Thread(target=accept_loop, name="scail2-accept", daemon=True)
    acceptor.start()
    try:
        _wait_until_stopping(worker)
    finally:
        acceptor.join(THREAD_JOIN_S)
        server.close()
        connections.close_all()


def _wait_until_stopping(worker: LineHandler) -> None:
    worker.start()
    try:
        while not worker.stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        log("interrupted")
    if not worker.close():
        # Its thread is still in torch code, which would abort the interpreter's exit: leave without one.
        log("stopped")
        sys.stderr.flush()
        os._exit(0)
