# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker started as a subprocess in the add-on folder, spoken to in JSON lines over its stdin/stdout.

Standard library only and no ``bpy``. Its stderr is kept: the last lines in `stderr_tail()`,
everything in ``log_path`` if given. When the process ends unasked, an ``error`` with code
``worker_exited`` (and its last stderr line) goes to the client.
"""

import collections
import os
import signal
import subprocess
import time

from .. import protocol
from .transports import MAX_LINE_BYTES, WRITE_TIMEOUT_S, Transport, local_error, stopped_message
from .util import LineLog, kill_process_tree, popen_kwargs, python_env
from .worker_tls import WorkerClientError

# The extension's root folder, which holds the ``backend`` package.
ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDERR_LINES = 200


def split_lines(read, on_line):
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


def _reader(fd):
    """``read(n)`` of the pipe ``fd``: b"" once it is closed or broken."""
    def read(n):
        try:
            return os.read(fd, n)
        except OSError:
            return b""
    return read


class ProcessTransport(Transport):
    """``python -m backend serve *args`` as a child process of Blender."""

    def __init__(self, client, python, args=(), cwd=None, env=None, log_path=None):
        """Start the worker; raises WorkerClientError when the program cannot be started."""
        super().__init__(client)
        self._stderr = collections.deque(maxlen=STDERR_LINES)
        command = [python, "-m", "backend", "serve", *args]
        try:
            # A session of its own: stop() reaches the worker's children too.
            self._proc = subprocess.Popen(
                command, cwd=cwd or ADDON_DIR, env=python_env(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, **popen_kwargs(),
            )
        except OSError as ex:
            raise WorkerClientError("cannot start the worker ({:s}): {:s}".format(ex.strerror or str(ex), python))
        if os.name != "nt":
            os.set_blocking(self._proc.stdin.fileno(), False)
        self._stderr_thread = self._spawn(self._read_stderr, "scail2-client-stderr", log_path)
        self._spawn(self._read_stdout, "scail2-client-stdout")

    @property
    def is_alive(self):
        return self._proc.poll() is None

    @property
    def pid(self):
        return self._proc.pid

    def stderr_tail(self, lines):
        return list(self._stderr)[-lines:]

    def write(self, data, payload=None):
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

    # -- stopping -------------------------------------------------------------------------------------
    def stop(self, timeout):
        proc = self._proc
        self._client._closing.set()
        if proc.poll() is None:
            try:
                self._client.send("shutdown")
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
        self.stop(5.0)

    def kill(self):
        self._client._closing.set()
        self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        self._join_threads(0.5)
        self._close_pipes()
        self.returncode = self._proc.poll()

    def _signal(self, sig):
        kill_process_tree(self._proc, sig)

    def _close_pipes(self):
        """Close the pipes of an ended worker, unless a reader thread still uses them."""
        if any(thread.is_alive() for thread in self._threads):
            return
        for pipe in (self._proc.stdout, self._proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass

    # -- reading --------------------------------------------------------------------------------------
    def _read_stdout(self):
        split_lines(_reader(self._proc.stdout.fileno()), self._client._on_line)
        try:
            code = self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        self.returncode = code
        closing = self._client._closing
        if closing.is_set() and code == 0:
            return
        if not closing.is_set() or code not in (0, None):
            message = stopped_message(code)
            if code is not None and code < 0:
                # Killed from outside (out of memory, a user, a crash): its last output line is not the cause.
                self._client._put(local_error(protocol.errors.WORKER_EXITED, message, signal=-code))
                return
            self._stderr_thread.join(1.0)  # the worker's last words
            last = next((line for line in reversed(self._stderr) if line.strip()), "")
            self._client._put(local_error(protocol.errors.WORKER_EXITED, message + (": " + last if last else ""),
                                          hint=last))

    def _read_stderr(self, log_path):
        log = LineLog(log_path)

        def on_line(raw):
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            self._stderr.append(text)
            log.write(text)

        try:
            split_lines(_reader(self._proc.stderr.fileno()), on_line)
        finally:
            log.close()
