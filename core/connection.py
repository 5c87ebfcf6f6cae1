# SPDX-License-Identifier: GPL-3.0-or-later
"""The life of a `core.queue.JobQueue`'s connection to its worker: which worker, starting, connecting, stopping.

Standard library only and no ``bpy``. A `core.job.LocalWorker` is started at once as a
subprocess (`worker_client.WorkerClient.start`); a `core.job.RemoteWorker` is connected to in a
thread (connecting can take seconds), its outcome collected by `WorkerConnection.connected`.
What a worker says, and what becomes of the jobs, stays with the queue.
"""

import threading

from . import worker_client
from .job import LocalWorker


class WorkerConnection:
    """The one worker a queue uses (``worker``) and the client talking to it (``client``, None when none)."""

    def __init__(self, worker):
        self.worker = worker  # LocalWorker or RemoteWorker
        self.client = None
        self._connecting = None  # the thread connecting to a remote worker
        self._connect_result = None
        self._lock = threading.Lock()

    @property
    def alive(self):
        return self.client is not None and self.client.is_alive

    @property
    def connecting(self):
        """A remote worker is being connected to."""
        return self._connecting is not None

    def is_local(self):
        return isinstance(self.worker, LocalWorker)

    def start_local(self):
        """Start the local worker; raises WorkerClientError when it cannot be started."""
        worker = self.worker
        self.client = worker_client.WorkerClient.start(
            worker.python, list(worker.args), cwd=worker.cwd, env=dict(worker.env) or None,
            log_path=worker.log_path)

    def start_connecting(self):
        """Begin connecting to the remote worker in a thread; `connected` says how it went."""
        worker = self.worker

        def connect():
            try:
                result = worker_client.WorkerClient.connect(worker.host, worker.port, worker.token,
                                                            fingerprint=getattr(worker, "fingerprint", "") or None)
            except worker_client.WorkerClientError as ex:
                result = ex
            with self._lock:
                self._connect_result = result

        self._connect_result = None
        self._connecting = threading.Thread(target=connect, name="scail2-connect", daemon=True)
        self._connecting.start()

    def connected(self):
        """None while connecting; then the new client (now ``client``) or the WorkerClientError, once."""
        with self._lock:
            result = self._connect_result
        if result is None:
            return None
        self._connecting = None
        if not isinstance(result, Exception):
            self.client = result
        return result

    def drop(self, timeout=5.0):
        """Let the client go: a local worker is stopped (up to ``timeout`` s), a remote one disconnected."""
        client, self.client = self.client, None
        if client is not None:
            try:
                client.stop(timeout=timeout) if self.is_local() else client.close()
            except Exception:
                pass
