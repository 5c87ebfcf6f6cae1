# SPDX-License-Identifier: GPL-3.0-or-later
"""Setting up the SCAIL-2 backend from Blender: a virtual environment in the extension's user folder.

Standard library only and no ``bpy`` (tests drive it without Blender). The
"Set Up Backend" button of the preferences:

1. creates a virtual environment (``python -m venv``) with the Backend Python of
   the preferences when one is set, else Blender's own (:func:`base_python`), in
   the add-on's user data folder, never in the extension folder;
2. installs PyTorch from the wheel index matching the machine's CUDA version,
   read from ``nvidia-smi`` (:func:`torch_index_tag`: CUDA 12.8+ ``cu128``,
   12.6 ``cu126``, 12.4 ``cu124``, anything else ``cpu``);
3. installs the backend's pinned requirements (``requirements/backend.txt``,
   shipped with the extension); the CUDA build of torch already satisfies its
   ``torch==`` pin;
4. checks that the new Python runs the backend (``python -m backend --version``).

It needs internet access on the artist's machine. :class:`CommandRun` runs the
steps one after the other in a thread, never blocking Blender; its log lines
are shown in the preferences while it runs. The same class runs ``python -m
backend doctor --weights DIR`` for the weights check (with a time limit).
"""

__all__ = (
    "CommandRun",
    "Step",
    "TORCH_INDEX_URL",
    "VENV_DIRNAME",
    "base_python",
    "cuda_version",
    "detect_cuda",
    "doctor_command",
    "doctor_findings",
    "parse_cuda_version",
    "pinned_requirement",
    "setup_steps",
    "torch_index_tag",
    "torch_index_url",
    "venv_python",
)

import collections
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass

from .util import LineLog, kill_process_tree, popen_kwargs, python_env

TORCH_INDEX_URL = "https://download.pytorch.org/whl/"
VENV_DIRNAME = "backend-venv"
NVIDIA_SMI_TIMEOUT_S = 10.0
DOCTOR_TIMEOUT_S = 180.0
LOG_LINES = 400
_CUDA_RE = re.compile(r"CUDA Version\s*:\s*(\d+)\.(\d+)")


# --------------------------------------------------------------------------------------------
# CUDA and the torch wheel index.

def parse_cuda_version(text):
    """``(major, minor)`` of the "CUDA Version: 12.8" in ``nvidia-smi`` output, or None."""
    match = _CUDA_RE.search(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def torch_index_tag(cuda):
    """The PyTorch wheel index for a driver's CUDA version (``(12, 8)``) or None (no NVIDIA GPU)."""
    if cuda is None:
        return "cpu"
    if cuda >= (12, 8):
        return "cu128"
    if cuda >= (12, 6):
        return "cu126"
    if cuda >= (12, 4):
        return "cu124"
    return "cpu"


def torch_index_url(tag):
    return TORCH_INDEX_URL + tag


def detect_cuda(nvidia_smi="nvidia-smi", timeout=NVIDIA_SMI_TIMEOUT_S):
    """``(cuda version or None, one line)`` from running ``nvidia-smi``; never raises."""
    try:
        proc = subprocess.run([nvidia_smi], capture_output=True, text=True, timeout=timeout,
                              **popen_kwargs())
    except FileNotFoundError:
        return None, "No NVIDIA driver found (nvidia-smi is missing): PyTorch for the CPU"
    except (OSError, subprocess.TimeoutExpired) as ex:
        return None, "nvidia-smi did not answer ({:s}): PyTorch for the CPU".format(str(ex).splitlines()[0])
    version = parse_cuda_version(proc.stdout)
    if proc.returncode != 0 or version is None:
        return None, "nvidia-smi found no usable GPU: PyTorch for the CPU"
    return version, "NVIDIA driver for CUDA {:d}.{:d}: PyTorch {:s}".format(
        version[0], version[1], torch_index_tag(version))


def cuda_version(nvidia_smi="nvidia-smi"):
    return detect_cuda(nvidia_smi)[0]


# --------------------------------------------------------------------------------------------
# The steps.

@dataclass(frozen=True)
class Step:
    """One command of a run: what it does (for the artist) and its command line."""

    label: str
    argv: tuple
    cwd: str = None
    timeout_s: float = None


# Failures whose last line does not say what to do: (text in the command's output, what to say instead).
KNOWN_FAILURES = (
    ("ensurepip is not available",
     "this Python cannot create environments (no ensurepip): install python3-venv "
     "(sudo apt install python3-venv), or set Backend Python to a Python 3.11+ that has it"),
    ("No module named ensurepip",
     "this Python cannot create environments (no ensurepip): set Backend Python to a Python 3.11+ that has "
     "venv and ensurepip"),
    ("No space left on device", "the disk is full: free some space (the backend needs about 8 GB) and run it again"),
)
# A command's own last line can be a whole pip resolver report: it is cut there, never an explanation above.
DETAIL_CHARS = 200


def explain_failure(lines):
    """What to say of a failed command whose output was ``lines``, or None when its last line says it."""
    output = " ".join(" ".join(lines).split())  # the messages are wrapped over lines
    for text, explanation in KNOWN_FAILURES:
        if text in output:
            return explanation
    return None


def venv_python(venv_dir):
    """The Python program of the virtual environment at ``venv_dir``."""
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def base_python(chosen, venv_dir, blender_python):
    """The Python that creates the environment at ``venv_dir``: the Backend Python the artist chose, else Blender's.

    A distribution's Blender runs a Python without ``venv`` (Debian's 3.14), so the chosen one must be used. When
    the chosen one is the very environment being made again (a second Set Up), the Python it was made from is
    used (``executable`` in its ``pyvenv.cfg``), or Blender's when that is not recorded.
    """
    if not chosen:
        return blender_python
    venv_dir = os.path.abspath(venv_dir)
    if os.path.commonpath([os.path.abspath(chosen), venv_dir]) != venv_dir:
        return chosen
    try:
        with open(os.path.join(venv_dir, "pyvenv.cfg"), encoding="utf-8") as fh:
            values = {key.strip(): value.strip() for key, value in
                      (line.split("=", 1) for line in fh.read().splitlines() if "=" in line)}
    except OSError:
        return blender_python
    recorded = values.get("executable", "")
    return recorded if recorded and os.path.isfile(recorded) else blender_python


def pinned_requirement(requirements, name):
    """The line pinning ``name`` (e.g. ``torch==2.13.0``) in a requirements file, or None."""
    pattern = re.compile(r"^\s*{:s}\s*(?:[=<>!~]=|===|\[|$)".format(re.escape(name)), re.IGNORECASE)
    try:
        with open(requirements, encoding="utf-8") as fh:
            for line in fh:
                line = line.split("#", 1)[0].strip()
                if line and pattern.match(line):
                    return line
    except OSError:
        return None
    return None


def _pip(python, *args):
    return (python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args)


def setup_steps(base_python, venv_dir, requirements, index_tag, addon_dir=None, extra_pip_args=()):
    """The commands setting up the backend environment at ``venv_dir``, as a list of `Step`.

    ``base_python``: the Python creating the environment (`base_python`).
    ``index_tag``: ``cu128``, ``cu126``, ``cu124`` or ``cpu`` (see `torch_index_tag`).
    ``addon_dir``: the folder holding ``backend``; when given, a last step checks that it runs.
    ``extra_pip_args``: added to every pip command (e.g. ``--no-index --find-links DIR`` offline).
    """
    python = venv_python(venv_dir)
    extra = tuple(extra_pip_args)
    steps = [Step("Creating the environment", (base_python, "-m", "venv", venv_dir))]
    torch = pinned_requirement(requirements, "torch")
    if torch is not None:
        steps.append(Step(
            "Installing PyTorch ({:s})".format(index_tag),
            _pip(python, torch, "--index-url", torch_index_url(index_tag), *extra),
        ))
    steps.append(Step("Installing the backend's packages", _pip(python, "-r", requirements, *extra)))
    if addon_dir:
        steps.append(Step("Checking the backend", (python, "-m", "backend", "--version"), cwd=addon_dir,
                          timeout_s=60.0))
    return steps


def doctor_command(python, weights_dir):
    """``python -m backend doctor --weights DIR``: what the backend finds in a weights folder."""
    return (python, "-m", "backend", "doctor", "--weights", weights_dir)


def doctor_findings(lines):
    """The lines of a doctor report that matter to the artist: GPU, weights, and what to do."""
    keep, todo = [], False
    for line in lines:
        text = line.rstrip()
        stripped = text.strip()
        if not stripped:
            continue
        if stripped == "to do:":
            todo = True
            keep.append("To do:")
            continue
        if todo or stripped.startswith(("GPU", "torch", "weights", "transformer:", "encoders:")):
            keep.append(stripped)
    return keep


# --------------------------------------------------------------------------------------------
# Running steps without blocking.

def command_env(extra=None):
    """The environment of a setup step: another Python's (``util.python_env``), pip quiet about its version."""
    return python_env(dict({"PIP_DISABLE_PIP_VERSION_CHECK": "1"}, **(extra or {})))


class CommandRun:
    """Steps run one after another in a thread; poll `status`, `lines` and `message` from a timer.

    ``status``: ``running``, ``done``, ``failed`` or ``cancelled``. ``message``: one line
    saying how it ended (or what runs now). Every output line goes to ``lines`` (the latest
    `LOG_LINES`) and, when given, to ``log_path``.
    """

    def __init__(self, steps, env=None, log_path=None):
        self.steps = list(steps)
        self.status = "running"
        self.step_index = 0
        self.message = self.steps[0].label if self.steps else ""
        self.returncode = None
        self.started_at = time.monotonic()
        self.finished_at = None
        self._lines = collections.deque(maxlen=LOG_LINES)
        self._lock = threading.Lock()
        self._proc = None
        self._cancel = threading.Event()
        self._env = command_env(env)
        self._log_path = log_path
        self._thread = threading.Thread(target=self._run, name="scail2-setup", daemon=True)

    @classmethod
    def start(cls, steps, env=None, log_path=None):
        run = cls(steps, env, log_path)
        run._thread.start()
        return run

    @property
    def finished(self):
        return self.status != "running"

    @property
    def step(self):
        return self.steps[min(self.step_index, len(self.steps) - 1)] if self.steps else None

    def lines(self, count=None):
        with self._lock:
            lines = list(self._lines)
        return lines if count is None else lines[-count:]

    def wait(self, timeout=None):
        self._thread.join(timeout)
        return self.finished

    def cancel(self):
        self._cancel.set()
        self._kill()

    # -- the thread ------------------------------------------------------------------------------
    def _add(self, line, log):
        with self._lock:
            self._lines.append(line)
        log.write(line)

    def _kill(self):
        if self._proc is not None:
            kill_process_tree(self._proc)

    def _run(self):
        log = LineLog(self._log_path)
        try:
            for index, step in enumerate(self.steps):
                self.step_index = index
                self.message = step.label
                if self._cancel.is_set():
                    self._end("cancelled", "Cancelled")
                    return
                self._add("$ " + " ".join(step.argv), log)
                ok, detail = self._run_step(step, log)
                if self._cancel.is_set():
                    self._end("cancelled", "Cancelled during: " + step.label)
                    return
                if not ok:
                    self._end("failed", "{:s} failed: {:s}".format(step.label, detail))
                    return
            self._end("done", "Done")
        except Exception as ex:  # never lose the thread silently
            self._end("failed", "Setup failed: {:s}".format(str(ex).splitlines()[0] if str(ex) else type(ex).__name__))
        finally:
            log.close()

    def _run_step(self, step, log):
        try:
            self._proc = subprocess.Popen(
                list(step.argv), cwd=step.cwd, env=self._env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen_kwargs(),
            )
        except OSError as ex:
            return False, "cannot run {:s} ({:s})".format(step.argv[0], ex.strerror or str(ex))
        timer = None
        timed_out = threading.Event()
        if step.timeout_s:
            def expire():
                timed_out.set()
                self._kill()
            timer = threading.Timer(step.timeout_s, expire)
            timer.daemon = True
            timer.start()
        seen = []
        try:
            for raw in iter(self._proc.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line.strip():
                    seen.append(line.strip())
                    self._add(line, log)
        finally:
            self._proc.stdout.close()
            self.returncode = self._proc.wait()
            if timer is not None:
                timer.cancel()
        if timed_out.is_set():
            return False, "no answer within {:g} s".format(step.timeout_s)
        last = seen[-1][:DETAIL_CHARS] if seen else ""
        if self.returncode != 0:
            return False, explain_failure(seen) or last or "exit status {:d}".format(self.returncode)
        return True, last

    def _end(self, status, message):
        self.message = " ".join(message.split())
        self.finished_at = time.monotonic()
        self.status = status
