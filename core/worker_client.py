# SPDX-License-Identifier: GPL-3.0-or-later
"""Talking to the SCAIL-2 worker (``python -m backend serve``) from Blender.

(Slightly over 450 lines on purpose: one class for both transports, so the queue sees one interface.)

Standard library only and no ``bpy``: Blender polls a `WorkerClient` from a timer,
and nothing here ever blocks Blender for longer than a call's own timeout.

* ``WorkerClient.start(python, args)`` starts the worker as a subprocess in the
  add-on folder and talks JSON lines over its stdin/stdout (its stderr is kept:
  the last lines in `stderr_tail()`, everything in ``log_path`` if given).
* ``WorkerClient.connect(host, port, token, fingerprint)`` talks to a worker started
  with ``--listen`` over TCP; every request carries the token, and a dropped connection
  is re-established in the background (each (re)connection sends ``hello``). Off
  loopback (or with a ``fingerprint``) the connection is TLS and the worker's
  certificate must have the pinned SHA-256 fingerprint (`UnknownCertificate` carries
  the fingerprint seen when none is pinned, for the artist to accept once).
  An authorised connection pings the worker every minute (its idle timeout).

A reader thread parses the worker's lines into dicts (each checked against its event record,
`protocol.events`) and queues them; `poll()` returns whatever has arrived. The worker's first
line is the handshake: a worker of another protocol version gives one ``protocol_mismatch``
error and nothing it says after is read. A line that is not a protocol message becomes an
``error`` dict with code ``bad_output``; when the worker process ends unasked, an
``error`` dict with code ``worker_exited`` (and its last stderr line) is queued, and
a lost TCP connection gives ``connection_lost``. Such client-made dicts carry
``"local": True``.
"""

import collections
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time

from .. import protocol
from .transfer import Transfers
from .util import LineLog, kill_process_tree, popen_kwargs, python_env
from .worker_tls import (  # noqa: F401  (CertificateError and UnknownCertificate are this module's too)
    CertificateError,
    UnknownCertificate,
    WorkerClientError,
    check_certificate,
    client_context,
    is_loopback_host,
    normalize_fingerprint,
)

# The extension's root folder, which holds the ``backend`` package.
ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINE_BYTES = 16 << 20
READ_BYTES = 256 << 10  # one receive at most (TLS hands out one 16 KiB record at a time anyway)
WRITE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
STDERR_LINES = 200
PING_S = 60.0  # well within the worker's idle timeout (300 s by default)


def local_error(code, message, hint="", **fields):
    """An error event the client makes itself (``"local": True``); ``code`` is one of ``protocol.errors``."""
    return protocol.as_message(protocol.ErrorEvent(code=code, message=message, hint=hint, local=True, **fields))


def mismatch_error(version):
    """The one line for a worker that speaks protocol ``version`` (-1: not a version number at all)."""
    theirs = "an unknown version" if version == -1 else "version {!s}".format(version)
    return local_error(
        protocol.errors.PROTOCOL_MISMATCH,
        "the worker speaks protocol {:s} and this add-on version {:d}".format(theirs, protocol.PROTOCOL_VERSION),
        hint="use the backend that came with this add-on (Set Up Backend), or update the worker to the same release",
    )


def stopped_message(returncode):
    """How a worker process ended, in words: "the worker stopped (signal 9, SIGKILL)" or "(exit status 3)"."""
    if returncode is not None and returncode < 0:
        try:
            name = ", " + signal.Signals(-returncode).name
        except ValueError:
            name = ""
        return "the worker stopped (signal {:d}{:s})".format(-returncode, name)
    return "the worker stopped (exit status {!s})".format(returncode)


def parse_line(raw):
    """One line from the worker as a message dict; never raises."""
    try:
        return protocol.decode_message(raw)
    except protocol.ProtocolError as ex:
        return local_error("bad_output", "unexpected worker output: {:s}".format(str(ex)))


def _split_lines(read, on_line):
    """Call ``on_line(bytes)`` for every line of the raw byte source ``read(n)`` until it returns b""."""
    parts, held = [], 0  # the line so far, joined once its newline comes (a download's line is long)
    while True:
        chunk = read(65536)
        if not chunk:
            buffer = b"".join(parts)
            if buffer.strip():
                on_line(buffer)
            return
        if b"\n" not in chunk:
            parts.append(chunk)
            held += len(chunk)
        else:
            *lines, rest = b"".join([*parts, chunk]).split(b"\n")
            for line in lines:
                if line.strip():
                    on_line(line)
            parts, held = [rest], len(rest)
        if held > MAX_LINE_BYTES:
            on_line(b"<" + str(held).encode() + b" bytes without a newline>")
            parts, held = [], 0


def _read_frames(recv_into, on_message):
    """Call ``on_message(line, payload)`` for every line (and binary frame) of a worker's socket until EOF.

    Any line with a ``payload`` byte count is a frame's header: the worker sends one only on a
    connection whose hello asked for binary frames, so reading them always is safe.
    """
    frames = protocol.FrameReader(MAX_LINE_BYTES, binary=True)
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


class WorkerClient:
    """One worker, local (a subprocess) or remote (TCP). Use `start` or `connect` to make one."""

    def __init__(self):
        self._inbox = collections.deque()
        self._inbox_ready = threading.Condition()
        self._send_lock = threading.Lock()
        self._closing = threading.Event()
        self._threads = []
        self._stderr = collections.deque(maxlen=STDERR_LINES)
        self._proc = None
        self._sock = None
        self._address = None
        self._token = None
        self._tls = None  # an ssl.SSLContext for a TLS worker
        self._fingerprint = ""  # the pinned one, "AB:CD:..."
        self._io_lock = threading.Lock()  # an SSL socket is never read and written at once
        self._want_transfer = False  # hello asks for transfer mode
        self._reconnecting = False  # the next capabilities follows a reconnection
        self._handshake = None  # None until the worker's first line; then whether it speaks our protocol
        self.transfers = None  # a `transfer.Transfers` once the worker is in transfer mode
        self._reconnect = False
        self._expect_eof = False
        self._stderr_thread = None
        self.returncode = None

    # -- making one -------------------------------------------------------------------------------
    @classmethod
    def start(cls, python, args=(), cwd=None, env=None, log_path=None):
        """Start ``python -m backend serve *args`` in ``cwd`` (default: the add-on folder).

        ``env``: extra environment variables. ``log_path``: a file the worker's stderr is appended to.
        Raises WorkerClientError when the program cannot be started.
        """
        client = cls()
        command = [python, "-m", "backend", "serve", *args]
        try:
            # A session of its own: stop() reaches the worker's children too.
            client._proc = subprocess.Popen(
                command, cwd=cwd or ADDON_DIR, env=python_env(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, **popen_kwargs(),
            )
        except OSError as ex:
            raise WorkerClientError("cannot start the worker ({:s}): {:s}".format(ex.strerror or str(ex), python))
        if os.name != "nt":
            os.set_blocking(client._proc.stdin.fileno(), False)
        client._stderr_thread = client._spawn(client._read_stderr, "scail2-client-stderr", log_path)
        client._spawn(client._read_process, "scail2-client-stdout")
        return client

    @classmethod
    def connect(cls, host, port, token=None, reconnect=True, timeout=CONNECT_TIMEOUT_S, fingerprint=None, tls=None,
                transfer=None):
        """Connect to a worker serving TCP; raise WorkerClientError if it cannot be reached or refuses the token.

        ``fingerprint``: the SHA-256 fingerprint the worker printed; ``tls``: None uses TLS off
        loopback or when a fingerprint is given. A TLS worker whose certificate has another
        fingerprint is refused (`CertificateError`; `UnknownCertificate` when none is pinned).
        ``transfer``: send files over the connection (always over TLS; None: only then); the
        worker's ``capabilities.mode`` says which mode the connection is in.
        Returns once the worker has answered the ``hello`` sent on connecting (its ``capabilities``
        stay queued for `poll`).
        """
        client = cls()
        client._address, client._token = (host, int(port)), token
        client._reconnect = reconnect
        where = "{:s}:{:d}".format(host, int(port))
        client._fingerprint = normalize_fingerprint(fingerprint)
        if fingerprint and not client._fingerprint:
            raise WorkerClientError("not a SHA-256 fingerprint (64 hex digits): {!r}".format(fingerprint)[:200])
        if tls if tls is not None else (bool(fingerprint) or not is_loopback_host(host)):
            client._tls = client_context()
        client._want_transfer = bool(transfer) or (transfer is None and client._tls is not None)
        try:
            client._sock = client._open_socket(timeout)
        except CertificateError:
            raise
        except OSError as ex:
            raise WorkerClientError("cannot connect to the worker at {:s}: {:s}".format(
                where, getattr(ex, "strerror", None) or str(ex)))
        client._spawn(client._read_socket, "scail2-client-socket")
        try:
            client._hello()
            answer = client._wait_for(
                lambda m: m.get("type") == "capabilities"
                or m.get("code") in (protocol.errors.UNAUTHORIZED, protocol.errors.CONNECTION_LOST,
                                     protocol.errors.PROTOCOL_MISMATCH),
                timeout,
            )
        except WorkerClientError:
            answer = None
        if answer is None or answer.get("type") != "capabilities":
            client.close()
            if answer is not None and answer.get("code") == protocol.errors.UNAUTHORIZED:
                raise WorkerClientError("the worker at {:s} refused the token".format(where))
            if answer is not None and answer.get("code") == protocol.errors.PROTOCOL_MISMATCH:
                raise WorkerClientError("the worker at {:s}: {:s}".format(where, answer["message"]))
            raise WorkerClientError("the worker at {:s} did not answer".format(where))
        if answer.get("mode") == "transfer":
            client.transfers = Transfers(client.send, client._put,
                                         lambda: client._sock is not None and not client._closing.is_set(),
                                         client._closing)
            client.transfers.use_framing(answer)
        return client

    def _hello(self):
        # Binary frames for file bytes (protocol.wire); a worker that does not know them answers in lines.
        self.send("hello", framing=protocol.FRAMING_BINARY, **({"mode": "transfer"} if self._want_transfer else {}))

    @property
    def uses_tls(self):
        return self._tls is not None

    # -- talking ----------------------------------------------------------------------------------
    @property
    def is_alive(self):
        if self._proc is not None:
            return self._proc.poll() is None
        return self._sock is not None and not self._closing.is_set()

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    def send(self, kind, **fields):
        """Send one request; raise WorkerClientError when the worker cannot take it.

        In transfer mode a ``submit`` returns at once: its inputs are uploaded first (`transfer`).
        """
        if kind == "submit" and self.transfers is not None and not fields.get("uploaded"):
            self.transfers.submit(dict(fields, uploaded=True))
            return
        if kind == "resume" and self.transfers is not None and not fields.get("uploaded"):
            self.transfers.resume(dict(fields, uploaded=True))  # the local folder becomes the worker's
            return
        fields.pop("uploaded", None)
        if self._token is not None:
            fields.setdefault("token", self._token)
        payload = fields.pop(protocol.PAYLOAD_FIELD, None)  # file bytes, sent as a binary frame after the line
        if payload is not None:
            fields[protocol.PAYLOAD_FIELD] = len(payload)
        data = protocol.encode_message(kind, **fields).encode("utf-8")
        with self._send_lock:
            if self._proc is not None:
                self._write_process(data)
            else:
                self._write_socket(data, payload)

    def submit(self, spec, job_dir=None, **fields):
        """Queue a job (a protocol.JobSpec); the worker answers ``queued`` with the job id."""
        if job_dir is not None:
            fields["job_dir"] = os.fspath(job_dir)
        self.send("submit", job=spec.to_dict() if hasattr(spec, "to_dict") else dict(spec), **fields)

    def cancel(self, job_id):
        self.send("cancel", job=job_id)

    def cancel_upload(self, request_id):
        """Stop uploading the inputs of the submit ``request_id`` (it ends ``cancelled``); False if none is."""
        if self.transfers is None or request_id not in self.transfers.submits:
            return False
        self.transfers.cancel_upload(request_id)
        return True

    def poll(self, timeout=0.0):
        """The messages that have arrived, oldest first; waits up to ``timeout`` s for the first one."""
        with self._inbox_ready:
            if not self._inbox and timeout > 0:
                self._inbox_ready.wait(timeout)
            messages = list(self._inbox)
            self._inbox.clear()
        return messages

    def stderr_tail(self, lines=20):
        return list(self._stderr)[-lines:]

    # -- stopping ---------------------------------------------------------------------------------
    def stop(self, timeout=5.0):
        """Ask the worker to shut down, wait up to ``timeout`` s, then terminate and kill it.

        Returns the exit status of a local worker (None for a remote one). Never raises and
        never takes much longer than ``timeout`` + 2 s.
        """
        if self._proc is None:
            self._stop_remote(timeout)
            return None
        proc = self._proc
        self._closing.set()
        if proc.poll() is None:
            try:
                self.send("shutdown")
            except (WorkerClientError, protocol.ProtocolError):
                pass
        try:
            proc.stdin.close()  # EOF: the worker stops too
        except OSError:
            pass
        try:
            proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
                try:
                    proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
        self._join_threads(0.5)
        self._close_pipes()
        self.returncode = proc.poll()
        return self.returncode

    def close(self):
        """Disconnect. A local worker is stopped (see `stop`); a remote one keeps running."""
        if self._proc is not None:
            self.stop()
            return
        self._closing.set()
        self._close_socket()
        self._join_threads(0.5)

    def kill(self):
        """Kill a local worker at once (SIGKILL): no shutdown, nothing flushed."""
        if self._proc is not None:
            self._closing.set()
            self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
            self._join_threads(0.5)
            self._close_pipes()
            self.returncode = self._proc.poll()

    # -- internals --------------------------------------------------------------------------------
    def _spawn(self, target, name, *args):
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _join_threads(self, timeout):
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _close_pipes(self):
        """Close the pipes of an ended worker, unless a reader thread still uses them."""
        if any(thread.is_alive() for thread in self._threads):
            return
        for pipe in (self._proc.stdout, self._proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass

    def _put(self, message):
        with self._inbox_ready:
            self._inbox.append(message)
            self._inbox_ready.notify_all()

    def _wait_for(self, predicate, timeout):
        """The first queued message matching ``predicate`` (left in the queue), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._inbox_ready:
            while True:
                for message in self._inbox:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._inbox_ready.wait(left)

    def _on_line(self, raw, payload=None):
        if self._handshake is None:  # the first line: a worker of another version is said once, here
            version = protocol.version_mismatch(raw)
            self._handshake = version is None
            if version is not None:
                self._put(mismatch_error(version))
        if not self._handshake:
            return  # said once; the rest of a worker of another version is not read
        message = parse_line(raw)
        if payload is not None:
            message[protocol.PAYLOAD_FIELD] = payload
        if self.transfers is not None:
            if self.transfers.wants(message):
                return
            if message.get("type") == "capabilities":
                self.transfers.use_framing(message)
            if message.get("type") == "capabilities" and self._reconnecting:
                self._reconnecting = False
                self.transfers.reconnected(message)  # passed on once the mirrored jobs are fetched again
                return
        self._put(message)

    def _signal(self, sig):
        kill_process_tree(self._proc, sig)

    # local worker
    def _write_process(self, data):
        proc = self._proc
        if proc.poll() is not None or proc.stdin.closed:
            raise WorkerClientError("the worker is not running")
        fd = proc.stdin.fileno()
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WorkerClientError("the worker does not read its requests")
                    time.sleep(0.01)
        except (BrokenPipeError, ValueError, OSError) as ex:
            raise WorkerClientError("the worker is not running ({:s})".format(str(ex)))

    def _read_process(self):
        fd = self._proc.stdout.fileno()

        def read(n):
            try:
                return os.read(fd, n)
            except OSError:
                return b""

        _split_lines(read, self._on_line)
        try:
            code = self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        self.returncode = code
        if self._closing.is_set() and code == 0:
            return
        if not self._closing.is_set() or code not in (0, None):
            message = stopped_message(code)
            if code is not None and code < 0:
                # Killed from outside (out of memory, a user, a crash): its last output line is not the cause.
                self._put(local_error(protocol.errors.WORKER_EXITED, message, signal=-code))
                return
            self._stderr_thread.join(1.0)  # the worker's last words
            last = next((line for line in reversed(self._stderr) if line.strip()), "")
            self._put(local_error(protocol.errors.WORKER_EXITED, message + (": " + last if last else ""),
                                  hint=last))

    def _read_stderr(self, log_path):
        log = LineLog(log_path)
        fd = self._proc.stderr.fileno()

        def read(n):
            try:
                return os.read(fd, n)
            except OSError:
                return b""

        def on_line(raw):
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            self._stderr.append(text)
            log.write(text)

        try:
            _split_lines(read, on_line)
        finally:
            log.close()

    # remote worker
    def _open_socket(self, timeout):
        sock = socket.create_connection(self._address, timeout=timeout)
        # Requests wait for their replies: Nagle's algorithm would hold each one's tail back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock)
                check_certificate(sock, self._fingerprint, "{:s}:{:d}".format(*self._address))
            except BaseException:
                sock.close()
                raise
        sock.settimeout(WRITE_TIMEOUT_S)
        return sock

    def _write_socket(self, data, payload=None):
        sock = self._sock
        if sock is None or self._closing.is_set():
            raise WorkerClientError("not connected to the worker")
        try:
            with self._io_lock:
                sock.sendall(data)
                if payload:
                    sock.sendall(payload)
        except OSError as ex:
            self._close_socket()
            raise WorkerClientError("lost the connection to the worker ({:s})".format(ex.strerror or str(ex)))

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

    def _read_socket(self):
        attempt = 0
        while not self._closing.is_set():
            sock = self._sock
            if sock is None:
                delay = RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]
                if self._closing.wait(delay):
                    return
                attempt += 1
                try:
                    sock = self._open_socket(CONNECT_TIMEOUT_S)
                except CertificateError as ex:  # another certificate now: never talk to it
                    self._put(local_error(protocol.errors.CERTIFICATE_REFUSED, str(ex), fingerprint=ex.fingerprint))
                    self._closing.set()
                    return
                except OSError:
                    continue
                self._sock = sock
                attempt = 0
                self._reconnecting = True
                self._handshake = None  # the worker may have been replaced meanwhile
                try:
                    self._hello()  # the worker sends job events to connections that have spoken
                except WorkerClientError:
                    continue

            last_ping = [time.monotonic()]

            def read_into(view, sock=sock):
                while not self._closing.is_set():
                    if time.monotonic() - last_ping[0] > PING_S:
                        last_ping[0] = time.monotonic()
                        try:
                            self.send("ping")  # the worker closes connections it has not heard from
                        except WorkerClientError:
                            return 0
                    try:
                        buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
                        if not buffered and not select.select([sock], [], [], 0.5)[0]:
                            continue
                        with self._io_lock:
                            return sock.recv_into(view)
                    except (socket.timeout, ssl.SSLWantReadError):
                        continue
                    except (OSError, ValueError):
                        return 0
                return 0

            _read_frames(read_into, self._on_line)
            if self._closing.is_set() or self._expect_eof:
                self._closing.set()
                return
            if self._sock is sock:
                self._close_socket()
            host, port = self._address
            self._put(local_error(
                protocol.errors.CONNECTION_LOST, "lost the connection to the worker at {:s}:{:d}".format(host, port),
                hint="reconnecting" if self._reconnect else "",
            ))
            if not self._reconnect:
                self._closing.set()
                return

    def _stop_remote(self, timeout):
        if self._sock is not None and not self._closing.is_set():
            self._expect_eof = True  # the worker hangs up after its "ok": no reconnection
            try:
                self.send("shutdown")
                self._wait_for(lambda m: m.get("type") == "ok" and m.get("request") == "shutdown", timeout)
            except WorkerClientError:
                pass
        self.close()
