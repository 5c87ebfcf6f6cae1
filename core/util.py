# SPDX-License-Identifier: GPL-3.0-or-later
"""Small helpers every ``core`` module shares: one-line messages, JSON files, child processes.

Standard library only. Each helper exists once here; the modules above import it.
"""

__all__ = (
    "LineLog",
    "MAX_LINE",
    "first_line",
    "kill_process_tree",
    "last_line",
    "one_line",
    "operator_error_line",
    "popen_kwargs",
    "python_env",
    "read_json",
    "with_warnings",
    "write_bytes_atomic",
    "write_json_atomic",
)

import json
import os
import signal
import subprocess
import tempfile

from .. import protocol

# Longest message handed to the interface; the rest is cut with an ellipsis.
MAX_LINE = 200

# Variables that would point another Python at the wrong standard library or
# packages (Blender's own, or the virtual environment Blender was started from).
_PYTHON_ENV_DROP = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONNOUSERSITE",
                    "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


# --------------------------------------------------------------------------------------------
# Lines for the artist.

def one_line(text, limit=MAX_LINE):
    """Collapse whitespace (newlines included) and cut ``text`` to ``limit`` characters.

    The middle goes, not the end: errors say what failed first and why last ("...libpython3.11.so: cannot
    open shared object file: No such file or directory").
    """
    text = " ".join(str(text or "").split())
    if len(text) > limit:
        tail = limit // 3
        text = text[:limit - tail - 1].rstrip() + "\u2026" + text[len(text) - tail:]
    return text


def first_line(text):
    """The first non-blank line of ``text``, stripped ("" if none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def last_line(text):
    """The last non-blank line of ``text``, stripped ("" if none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def operator_error_line(ex):
    """The artist's line from an operator's RuntimeError: its last line, without "Error: "."""
    line = last_line(str(ex)) or type(ex).__name__
    for prefix in ("Error: ", "Warning: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
    return one_line(line)


def with_warnings(message, warnings):
    """``(level, line)`` for an operator's report: INFO, or WARNING with the ``warnings`` after ``message``."""
    if not warnings:
        return 'INFO', message
    return 'WARNING', "{:s} ({:s})".format(message, "; ".join(warnings))


# --------------------------------------------------------------------------------------------
# Files: a reader sees the old file or the whole new one, never a part.

def read_json(path):
    """The JSON object in ``path``; ``{}`` when it is missing, unreadable or not an object."""
    try:
        data = protocol.read_json_file(path)
    except protocol.ProtocolError:
        return {}
    return data if isinstance(data, dict) else {}


def write_bytes_atomic(path, data):
    """Write ``data`` to ``path`` through a hidden temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(handle, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.remove(temp)
        except OSError:
            pass
        raise


def write_json_atomic(path, data):
    """Write ``data`` as indented, key-sorted JSON, atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


class LineLog:
    """A text file that lines are appended to as they come. Never raises: a log must not stop the work."""

    def __init__(self, path):
        self._fh = None
        if path:
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                self._fh = open(path, "a", encoding="utf-8")
            except OSError:
                self._fh = None

    def write(self, line):
        if self._fh is not None:
            try:
                self._fh.write(line + "\n")
                self._fh.flush()
            except OSError:
                pass

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# --------------------------------------------------------------------------------------------
# Child processes (the backend's Python, pip, nvidia-smi).

def python_env(extra=None):
    """The environment for another Python: Blender's Python variables removed, UTF-8 unbuffered output."""
    env = {key: value for key, value in os.environ.items() if key not in _PYTHON_ENV_DROP}
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    # The extension folder may be read-only and is replaced on every update:
    # keep ``__pycache__`` folders out of it.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def popen_kwargs():
    """``subprocess.Popen`` arguments: no console window on Windows; elsewhere a session of the child's own,
    so :func:`kill_process_tree` reaches its children too."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


def kill_process_tree(proc, sig=signal.SIGKILL):
    """Send ``sig`` to ``proc`` and, on POSIX, to everything it started (started with :func:`popen_kwargs`).

    On Windows SIGTERM terminates and anything else kills. A process that has ended is left alone.
    """
    if proc.poll() is not None:
        return
    if os.name != "nt":
        try:
            os.killpg(proc.pid, sig)
            return
        except OSError:
            pass  # not a session leader after all: the process alone
    try:
        proc.terminate() if sig == signal.SIGTERM else proc.kill()
    except OSError:
        pass
