# SPDX-License-Identifier: GPL-3.0-or-later
"""Talking to the SCAIL-2 worker (``python -m backend serve``) from Blender.

Standard library only and no ``bpy``: Blender polls a `WorkerClient` from a timer,
and nothing here ever blocks Blender for longer than a call's own timeout. The client keeps
the protocol (handshake, inbox, token, transfer mode); how bytes reach the worker is a
`transports.Transport`: `process_transport.ProcessTransport` or `socket_transport.SocketTransport`.

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
import threading
import time

from .. import protocol

TOKEN_REFUSED_HINT = ("ask whoever runs the worker for a token of your own and paste it as Token in the add-on's "
                      "preferences; this one is not tried again")
from .process_transport import ADDON_DIR, ProcessTransport  # noqa: F401  (ADDON_DIR: where workers start)
from .socket_transport import CONNECT_TIMEOUT_S, SocketTransport
from .transfer import Transfers
from .transports import local_error, stopped_message  # noqa: F401  (the queue uses them as this module's)
from .worker_tls import (  # noqa: F401  (CertificateError and UnknownCertificate are this module's too)
    CertificateError,
    UnknownCertificate,
    WorkerClientError,
    is_loopback_host,
    normalize_fingerprint,
)


def mismatch_error(version):
    """The one line for a worker that speaks protocol ``version`` (-1: not a version number at all)."""
    theirs = "an unknown version" if version == -1 else "version {!s}".format(version)
    return local_error(
        protocol.errors.PROTOCOL_MISMATCH,
        "the worker speaks protocol {:s} and this add-on version {:d}".format(theirs, protocol.PROTOCOL_VERSION),
        hint="use the backend that came with this add-on (Set Up Backend), or update the worker to the same release",
    )


def parse_line(raw):
    """One line from the worker as a message dict; never raises."""
    try:
        return protocol.decode_message(raw)
    except protocol.ProtocolError as ex:
        return local_error("bad_output", "unexpected worker output: {:s}".format(str(ex)))


class WorkerClient:
    """One worker, local (a subprocess) or remote (TCP). Use `start` or `connect` to make one."""

    def __init__(self):
        self._inbox = collections.deque()
        self._inbox_ready = threading.Condition()
        self._send_lock = threading.Lock()
        self._closing = threading.Event()
        self._transport = None  # a `transports.Transport`
        self._token = None
        self._want_transfer = False  # hello asks for transfer mode
        self._reconnecting = False  # the next capabilities follows a reconnection
        self.refused = False  # the worker refused the token: no reconnection (a new client, a new token)
        self._handshake = None  # None until the worker's first line; then whether it speaks our protocol
        self.transfers = None  # a `transfer.Transfers` once the worker is in transfer mode

    # -- making one -------------------------------------------------------------------------------
    @classmethod
    def start(cls, python, args=(), cwd=None, env=None, log_path=None):
        """Start ``python -m backend serve *args`` in ``cwd`` (default: the add-on folder).

        ``env``: extra environment variables. ``log_path``: a file the worker's stderr is appended to.
        Raises WorkerClientError when the program cannot be started.
        """
        client = cls()
        client._transport = ProcessTransport(client, python, args, cwd=cwd, env=env, log_path=log_path)
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
        client._token = token
        where = protocol.wire.address_text(host, int(port))
        pinned = normalize_fingerprint(fingerprint)
        if fingerprint and not pinned:
            raise WorkerClientError("not a SHA-256 fingerprint (64 hex digits): {!r}".format(fingerprint)[:200])
        use_tls = tls if tls is not None else (bool(fingerprint) or not is_loopback_host(host))
        client._transport = SocketTransport(client, (host, int(port)), pinned, bool(use_tls), reconnect)
        client._want_transfer = bool(transfer) or (transfer is None and client.uses_tls)
        try:
            client._transport.open(timeout)
        except CertificateError:
            raise
        except OSError as ex:
            raise WorkerClientError("cannot connect to the worker at {:s}: {:s}".format(
                where, getattr(ex, "strerror", None) or str(ex)))
        try:
            client._hello()
            answer = client._wait_for(
                lambda m: m.get("type") == "capabilities"
                or m.get("code") in (protocol.errors.UNAUTHORIZED, protocol.errors.CONNECTION_LOST,
                                     protocol.errors.PROTOCOL_MISMATCH, protocol.errors.BAD_REQUEST),
                timeout,
            )
        except WorkerClientError:
            answer = None
        if answer is None or answer.get("type") != "capabilities":
            client.close()
            if answer is not None and answer.get("code") == protocol.errors.UNAUTHORIZED:
                raise WorkerClientError("the worker at {:s} refused the token".format(where))
            if answer is not None and answer.get("code") in (protocol.errors.PROTOCOL_MISMATCH,
                                                             protocol.errors.BAD_REQUEST):  # e.g. TLS only
                raise WorkerClientError("the worker at {:s}: {:s}".format(where, answer["message"]))
            raise WorkerClientError("the worker at {:s} did not answer".format(where))
        if answer.get("mode") == "transfer":
            client.transfers = Transfers(client.send, client._put, lambda: client.is_alive, client._closing)
            client.transfers.use_framing(answer)
        return client

    def _hello(self):
        # Binary frames for file bytes (protocol.wire); a worker that does not know them answers in lines.
        self.send("hello", framing=protocol.FRAMING_BINARY, **({"mode": "transfer"} if self._want_transfer else {}))

    def _reconnected(self):
        """A new connection to the (maybe replaced) worker: its first line is a handshake again; say hello."""
        self._reconnecting = True
        self._handshake = None
        self._hello()

    @property
    def uses_tls(self):
        return self._transport.uses_tls

    # -- talking ----------------------------------------------------------------------------------
    @property
    def is_alive(self):
        return self._transport.is_alive

    @property
    def pid(self):
        return self._transport.pid

    @property
    def returncode(self):
        """A local worker's exit status once it has ended (None before, and for a remote one)."""
        return self._transport.returncode

    def send(self, kind, **fields):
        """Send one request; raise WorkerClientError when the worker cannot take it.

        In transfer mode a ``submit`` (and a ``check_inputs``) returns at once: its inputs are uploaded first
        (`transfer`).
        """
        if kind == "submit" and self.transfers is not None and not fields.get("uploaded"):
            self.transfers.submit(dict(fields, uploaded=True))
            return
        if kind == protocol.CHECK_INPUTS_REQUEST and self.transfers is not None and not fields.get("uploaded"):
            self.transfers.check_inputs(dict(fields, uploaded=True))  # the worker checks what it would run
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
            self._transport.write(data, payload)

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
        return self._transport.stderr_tail(lines)

    # -- stopping ---------------------------------------------------------------------------------
    def stop(self, timeout=5.0):
        """Ask the worker to shut down, wait up to ``timeout`` s, then terminate and kill it.

        Returns the exit status of a local worker (None for a remote one). Never raises and
        never takes much longer than ``timeout`` + 2 s.
        """
        return self._transport.stop(timeout)

    def close(self):
        """Disconnect. A local worker is stopped (see `stop`); a remote one keeps running."""
        self._transport.close()

    def kill(self):
        """Kill a local worker at once (SIGKILL): no shutdown, nothing flushed."""
        self._transport.kill()

    # -- internals --------------------------------------------------------------------------------
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
        refused = message.get("type") == "error" and message.get("code") == protocol.errors.UNAUTHORIZED
        if refused:
            # The token is refused (revoked, or a worker restarted with others): the worker hangs up, and
            # reconnecting would only be refused again, every second, until it shut this machine out.
            self.refused = True
            if not message.get("hint"):
                message["hint"] = TOKEN_REFUSED_HINT
        if self.transfers is not None:
            if self.transfers.wants(message):
                if refused:
                    # It answered a transfer (which fails with it): the queue learns the connection ended too.
                    self._put({key: value for key, value in message.items() if key != "request_id"})
                return
            if message.get("type") == "capabilities":
                self.transfers.use_framing(message)
            if message.get("type") == "capabilities" and self._reconnecting:
                self._reconnecting = False
                self.transfers.reconnected(message)  # passed on once the mirrored jobs are fetched again
                return
        self._put(message)
