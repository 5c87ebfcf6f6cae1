# SPDX-License-Identifier: GPL-3.0-or-later
"""What a `worker_client.WorkerClient` needs from the way it reaches its worker, and what both ways share.

Standard library only and no ``bpy``. Two transports implement `Transport`:
`process_transport.ProcessTransport` (a worker subprocess, JSON lines over its stdin/stdout)
and `socket_transport.SocketTransport` (a worker serving TCP, TLS off loopback, reconnecting).
A transport moves bytes and keeps the worker's life; the client above it keeps the protocol
(handshake, inbox, token, transfer mode). A transport calls back into its client for:
``client._closing`` (the client is going away), ``client._on_line(raw, payload=None)`` (a line
arrived), ``client._put(message)`` (a client-made event), ``client.send(kind)`` (``shutdown``,
``ping``), ``client._wait_for(predicate, timeout)`` and ``client._reconnected()`` (a new connection
must say ``hello`` again).
"""

import signal
import threading

from .. import protocol

MAX_LINE_BYTES = 16 << 20
WRITE_TIMEOUT_S = 5.0


def local_error(code, message, hint="", **fields):
    """An error event the client makes itself (``"local": True``); ``code`` is one of ``protocol.errors``."""
    return protocol.as_message(protocol.ErrorEvent(code=code, message=message, hint=hint, local=True, **fields))


def stopped_message(returncode):
    """How a worker process ended, in words: "the worker stopped (signal 9, SIGKILL)" or "(exit status 3)"."""
    if returncode is not None and returncode < 0:
        try:
            name = ", " + signal.Signals(-returncode).name
        except ValueError:
            name = ""
        return "the worker stopped (signal {:d}{:s})".format(-returncode, name)
    return "the worker stopped (exit status {!s})".format(returncode)


class Transport:
    """One way of reaching a worker; subclasses fill in the methods below."""

    pid = None  # a local worker's process id
    returncode = None  # a local worker's exit status once it has ended
    uses_tls = False

    def __init__(self, client):
        self._client = client
        self._threads = []

    @property
    def is_alive(self):
        raise NotImplementedError

    def write(self, data, payload=None):
        """Send ``data`` (one encoded line) and then ``payload`` bytes; raise WorkerClientError when it cannot."""
        raise NotImplementedError

    def stop(self, timeout):
        """Ask the worker to shut down (see `WorkerClient.stop`); the exit status of a local worker, else None."""
        raise NotImplementedError

    def close(self):
        """Disconnect (a local worker is stopped)."""
        raise NotImplementedError

    def kill(self):
        """Kill a local worker at once; nothing for a remote one."""

    def stderr_tail(self, lines):
        return []

    # -- reader threads -------------------------------------------------------------------------------
    def _spawn(self, target, name, *args):
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _join_threads(self, timeout):
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
