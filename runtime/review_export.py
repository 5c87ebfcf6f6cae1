# SPDX-License-Identifier: GPL-3.0-or-later
"""Export Review: the backend writes the HTML review page; Blender starts it and follows it from a timer.

``python -m backend report --out FILE.html JOB_DIR ...`` runs in the backend Python (its page needs
the backend's image tools), in its own process: Blender never waits on it. A timer polls the process;
when it ends, the page's path is reported (and printed), or the command's last line of error.
"""

__all__ = (
    "Export",
    "current",
    "start",
    "unregister",
)

import os
import subprocess
import tempfile

import bpy

from .. import preferences
from ..core import checks
from .session import GenerateError

POLL_S = 0.25
_current = None


class Export:
    """One report being written: the process, where its page goes, and how it ended."""

    def __init__(self, process, out, log, on_end):
        self.process, self.out, self.log, self.on_end = process, out, log, on_end
        self.returncode = None
        self.message = ""

    @property
    def running(self):
        return self.returncode is None

    def poll(self):
        """Whether it ended now (then ``message`` says how, ``returncode`` is set)."""
        if self.returncode is not None or self.process.poll() is None:
            return False
        self.returncode = self.process.returncode
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        self.log.close()
        if self.returncode == 0 and os.path.isfile(self.out):
            self.message = "Review written: " + self.out
        else:
            self.message = "Export Review failed: " + (lines[-1] if lines else "exit code {:d}".format(self.returncode))
        return True


def current():
    return _current


def start(prefs, out, job_dirs, on_end=None):
    """Start writing the review page ``out`` of ``job_dirs``; GenerateError (one line) when it cannot start."""
    global _current
    if _current is not None and _current.running:
        raise GenerateError("A review is being exported already")
    if not job_dirs:
        raise GenerateError("No take to put in the review")
    python = preferences.resolved_python(prefs)
    problem = checks.python_problem(python)
    if problem:
        raise GenerateError(problem)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    log = tempfile.TemporaryFile()
    try:
        process = subprocess.Popen([python, "-m", "backend", "report", "--out", out, *job_dirs],
                                   cwd=preferences.addon_dir(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
    except OSError as ex:
        log.close()
        raise GenerateError("Cannot start the backend: {:s}".format(str(ex))) from None
    _current = Export(process, out, log, on_end)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_S)
    return _current


def _tick():
    export = _current
    if export is None:
        return None
    if not export.poll():
        return POLL_S
    print("SCAIL-2:", export.message, flush=True)
    if export.on_end is not None:
        export.on_end(export)
    return None


def unregister():
    global _current
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    if _current is not None and _current.running:
        _current.process.terminate()
    _current = None
