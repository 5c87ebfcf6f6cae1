"""Serving the worker: its line transport over stdin/stdout or TCP.

`python -m backend serve` (in `backend.cli`) builds the `Worker` and hands it to `serve_stdio`
or `serve_tcp`, which run until the worker stops. Over stdin/stdout, stdout carries protocol
lines only (anything else printed goes to stderr). Over TCP (`--listen HOST:PORT`) the worker
binds 127.0.0.1 unless told otherwise, and any other address requires a token that every
request must carry.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

from .jobs import MAX_LINE_BYTES, log

if TYPE_CHECKING:
    from .worker import Worker

TOKEN_ENV = "SCAIL2_WORKER_TOKEN"
SEND_TIMEOUT_S = 10.0  # a TCP client that stops reading is dropped rather than stalling the jobs


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


def serve_stdio(worker: Worker) -> None:
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

    threading.Thread(target=reader, name="scail2-stdin", daemon=True).start()
    _wait_until_stopping(worker)


def serve_tcp(worker: Worker, host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.create_server((host, port), family=family)
    server.settimeout(0.5)
    bound = server.getsockname()
    log(f"listening on {host}:{bound[1]}" + (" (token required)" if worker.token else ""))

    def serve_connection(conn: socket.socket, peer: str) -> None:
        conn.settimeout(SEND_TIMEOUT_S)

        def read(n: int) -> bytes:
            while True:
                try:
                    return conn.recv(n)
                except TimeoutError:
                    if worker.stopping.is_set():
                        return b""
                except OSError:
                    return b""

        def hang_up() -> None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        output = Output(conn.sendall, f"client {peer}", on_broken=hang_up)
        try:
            for line in read_lines(read):
                worker.handle_line(line, output)
                if worker.stopping.is_set() or output.broken:
                    break
        finally:
            worker.remove_output(output)
            try:
                conn.close()
            except OSError:
                pass
            log(f"client {peer} disconnected")

    def accept_loop() -> None:
        while not worker.stopping.is_set():
            try:
                conn, address = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            peer = f"{address[0]}:{address[1]}"
            log(f"client {peer} connected")
            threading.Thread(target=serve_connection, args=(conn, peer), name=f"scail2-{peer}", daemon=True).start()

    threading.Thread(target=accept_loop, name="scail2-accept", daemon=True).start()
    try:
        _wait_until_stopping(worker)
    finally:
        server.close()


def _wait_until_stopping(worker: Worker) -> None:
    worker.start()
    try:
        while not worker.stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        log("interrupted")
    worker.close()
