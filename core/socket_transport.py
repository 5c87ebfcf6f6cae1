# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker started with ``--listen``, reached over TCP (TLS off loopback or with a pinned fingerprint).

Standard library only and no ``bpy``. A dropped connection is re-established in the background
(the client says ``hello`` again on each); a lost one gives ``connection_lost``, and a worker that
comes back with another certificate gives ``certificate_refused`` and is never talked to. An
authorised connection pings the worker every minute (its idle timeout).
"""

import select
import socket
import ssl
import threading
import time

from .. import protocol
from ..protocol.direct_io import PAYLOAD_BUFFERS
from .transports import MAX_LINE_BYTES, WRITE_TIMEOUT_S, Transport, local_error
from .worker_tls import CertificateError, WorkerClientError, check_certificate, client_context

READ_BYTES = 256 << 10  # one receive at most (TLS hands out one 16 KiB record at a time anyway)
CONNECT_TIMEOUT_S = 10.0
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
PING_S = 60.0  # well within the worker's idle timeout (300 s by default)


def read_frames(recv_into, on_message):
    """Call ``on_message(line, payload)`` for every line (and binary frame) of a worker's socket until EOF.

    Any line with a ``payload`` byte count is a frame's header: the worker sends one only on a
    connection whose hello asked for binary frames, so reading them always is safe.
    """
    # Whole chunks land in the pooled buffers the downloads' writer gives back once they are written.
    frames = protocol.FrameReader(MAX_LINE_BYTES, binary=True, allocate=PAYLOAD_BUFFERS.take)
    buffer = bytearray(READ_BYTES)
    while True:
        count, messages = frames.receive(recv_into, buffer)
        if not count:
            return
        for line, payload in messages:
            if line is None:
                on_message(b"<a line of more than " + str(MAX_LINE_BYTES).encode() + b" bytes>")
            elif line.strip():
                on_message(line, payload)


class SocketTransport(Transport):
    """One TCP (or TLS) connection to a worker at ``address``, reconnecting when ``reconnect``."""

    def __init__(self, client, address, fingerprint, use_tls, reconnect):
        super().__init__(client)
        self._address = address
        self._fingerprint = fingerprint  # the pinned one, "AB:CD:..."
        self._tls = client_context() if use_tls else None  # an ssl.SSLContext for a TLS worker
        self._reconnect = reconnect
        self._sock = None
        self._io_lock = threading.Lock()  # an SSL socket is never read and written at once
        self._expect_eof = False

    def open(self, timeout):
        """Connect and start reading; raises CertificateError or OSError."""
        self._sock = self._open_socket(timeout)
        self._spawn(self._read, "scail2-client-socket")

    @property
    def uses_tls(self):
        return self._tls is not None

    @property
    def is_alive(self):
        return self._sock is not None and not self._client._closing.is_set()

    def write(self, data, payload=None):
        sock = self._sock
        if sock is None or self._client._closing.is_set():
            raise WorkerClientError("not connected to the worker")
        try:
            self._send_all(sock, data)
            if payload:
                self._send_all(sock, payload)
        except OSError as ex:
            self._close_socket()
            raise WorkerClientError("lost the connection to the worker ({:s})".format(ex.strerror or str(ex)))

    def _send_all(self, sock, data):
        """Send all of ``data`` on the non-blocking socket; the lock is let go while the socket is full (so
        the reading thread drains the worker's replies meanwhile); socket.timeout after WRITE_TIMEOUT_S
        without progress. No other message comes between: `WorkerClient.send` writes one at a time."""
        view = memoryview(data).cast("B")
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while len(view):
            with self._io_lock:
                try:
                    sent = sock.send(view)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    sent = 0
            if sent:
                view, deadline = view[sent:], time.monotonic() + WRITE_TIMEOUT_S
            elif time.monotonic() > deadline:
                raise socket.timeout("the worker takes nothing sent to it")
            else:
                try:
                    select.select([], [sock], [], 0.05)
                except ValueError:  # closed meanwhile (by the reading thread, on a lost connection)
                    raise ConnectionAbortedError("the connection was closed") from None

    # -- stopping -------------------------------------------------------------------------------------
    def stop(self, timeout):
        client = self._client
        if self._sock is not None and not client._closing.is_set():
            self._expect_eof = True  # the worker hangs up after its "ok": no reconnection
            try:
                client.send("shutdown")
                client._wait_for(lambda m: m.get("type") == "ok" and m.get("request") == "shutdown", timeout)
            except WorkerClientError:
                pass
        self.close()
        return None

    def close(self):
        self._client._closing.set()
        self._close_socket()
        self._join_threads(0.5)

    # -- the connection -------------------------------------------------------------------------------
    def _open_socket(self, timeout):
        sock = socket.create_connection(self._address, timeout=timeout)
        # Requests wait for their replies: Nagle's algorithm would hold each one's tail back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock)
                check_certificate(sock, self._fingerprint, protocol.wire.address_text(*self._address))
            except ssl.SSLError as ex:
                sock.close()
                if getattr(ex, "reason", None) not in protocol.wire.PLAIN_PEER_REASONS:
                    raise
                raise ConnectionError(  # a reconnection tries again, as for a worker not there
                    "it answers without TLS: a worker started without --tls serves its own machine only; there (or "
                    "through an SSH tunnel) clear the Certificate in the preferences, else start it with --tls"
                ) from None
            except BaseException:
                sock.close()
                raise
        sock.setblocking(False)  # reads and writes wait in select, never holding the socket's lock
        return sock

    def _close_socket(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def _reopen(self, closing):
        """One reconnection attempt: the new socket, None to try again, or False to give up for good."""
        try:
            sock = self._open_socket(CONNECT_TIMEOUT_S)
        except CertificateError as ex:  # another certificate now: never talk to it
            self._client._put(local_error(protocol.errors.CERTIFICATE_REFUSED, str(ex), fingerprint=ex.fingerprint))
            closing.set()
            return False
        except OSError:
            return None
        self._sock = sock
        return sock

    def _read(self):
        client = self._client
        closing = client._closing
        attempt = 0
        while not closing.is_set():
            sock = self._sock
            if sock is None:
                delay = RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]
                if closing.wait(delay):
                    return
                attempt += 1
                sock = self._reopen(closing)
                if sock is False:
                    return
                if sock is None:
                    continue
                attempt = 0
                try:
                    client._reconnected()  # the worker sends job events to connections that have spoken
                except WorkerClientError:
                    continue

            read_frames(self._receiver(sock), client._on_line)
            if closing.is_set() or self._expect_eof or client.refused:  # refused: said once, by the worker
                closing.set()
                return
            if self._sock is sock:
                self._close_socket()
            where = protocol.wire.address_text(*self._address)
            client._put(local_error(
                protocol.errors.CONNECTION_LOST, "lost the connection to the worker at " + where,
                hint="reconnecting" if self._reconnect else "",
            ))
            if not self._reconnect:
                closing.set()
                return

    def _receiver(self, sock):
        """``recv_into(view)`` for `read_frames` on ``sock``: pings the worker while it is quiet; 0 at the end.

        The socket does not block: a receive is tried first and select asked only once one finds nothing.
        A TLS receive hands out one 16 KiB record; asking select before each one cost the reading thread
        a fifth of a fetch's CPU (a 512p result: 1551 records)."""
        closing = self._client._closing
        last_ping = [time.monotonic()]

        def read_into(view):
            while not closing.is_set():
                try:
                    with self._io_lock:
                        return sock.recv_into(view)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except (OSError, ValueError):
                    return 0
                if time.monotonic() - last_ping[0] > PING_S:
                    last_ping[0] = time.monotonic()
                    try:
                        self._client.send("ping")  # the worker closes connections it has not heard from
                    except WorkerClientError:
                        return 0
                try:
                    select.select([sock], [], [], 0.5)
                except (OSError, ValueError):
                    return 0
            return 0

        return read_into
