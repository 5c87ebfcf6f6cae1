"""Worker processes a test starts end with it, whatever fails (issue 30, item 9).

Shared by both test worlds (`tests/conftest.py` puts this folder on sys.path). A process started with
`start` gets the kernel's parent-death signal on Linux, so it ends even when pytest itself is killed;
`end` stops one (SIGTERM, then SIGKILL) and `end_all`, run when the session finishes, stops every one
a failed setup or test left running. Nothing else is touched: only processes started here.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

_started = []
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _end_with_parent():
    """Runs in the child between fork and exec: SIGTERM when the thread that started it (pytest's) ends."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start(argv, **popen):
    """subprocess.Popen(argv, **popen) for a worker (or any helper process) that must not outlive the tests."""
    if _prctl is not None:
        popen.setdefault("preexec_fn", _end_with_parent)
    proc = subprocess.Popen(argv, **popen)
    _started.append(proc)
    return proc


def end(proc, timeout=30.0):
    """Stop `proc` if it still runs (SIGTERM, then SIGKILL after `timeout` s); its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def serving_children():
    """PIDs of this process's children that run `backend serve` (the add-on's WorkerClient starts local
    workers itself, so they are found by their command line, on Linux)."""
    found = []
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open("/proc/{:d}/stat".format(pid), "rb") as fh:
                parent = int(fh.read().rsplit(b")", 1)[1].split()[1])
            with open("/proc/{:d}/cmdline".format(pid), "rb") as fh:
                argv = fh.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"backend" in argv and b"serve" in argv:
            found.append(pid)
    return found


def end_all():
    """End every process `start` started and every `backend serve` child still running; how many there were."""
    left = [proc for proc in _started if proc.poll() is None]
    for proc in left:
        end(proc, timeout=10.0)
    strays = serving_children()
    for pid in strays:
        os.kill(pid, signal.SIGTERM)
    running, deadline = strays, time.monotonic() + 10.0
    while running and time.monotonic() < deadline:
        running = [pid for pid in running if os.waitpid(pid, os.WNOHANG) == (0, 0)]
        time.sleep(0.1)
    for pid in running:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return len(left) + len(strays)
