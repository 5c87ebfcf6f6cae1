# SPDX-License-Identifier: GPL-3.0-or-later
"""The session's setup work: the latest backend check, the backend's environment being set up, the weights check.

Plain Python state of this session (nothing stored in Blender data). Setting
up and the weights check run commands in the background
(``core.setup.CommandRun``); a timer redraws the preferences while they run, so
their log lines show up live, and a finished setup points the preferences at
the new environment's Python.
"""

__all__ = (
    "SetupError",
    "cancel_setup",
    "check_backend",
    "doctor_state",
    "forget",
    "last_check",
    "redraw_preferences",
    "setup_running",
    "setup_state",
    "start_setup",
    "start_weights_check",
    "weights_check_running",
)

import os
import shutil
import sys

import bpy

from .. import preferences
from ..core import checks
from ..core import setup as backend_setup

POLL_S = 0.5
SETUP_LOG = "backend-setup.log"

_last_check = None  # core.checks.BackendCheck
_setup = None  # {"run": CommandRun, "python": the new environment's Python, "cuda": one line}
_doctor = None  # {"run": CommandRun, "python": ..., "weights": ...}
_nvidia_driver = None  # whether nvidia-smi is on PATH, once looked up


class SetupError(Exception):
    """Setup work that cannot start, as one line for the artist."""


# --------------------------------------------------------------------------------------------
# The backend check.

def check_backend(prefs):
    """Run the backend check now (a few seconds at most) and remember it; the ``BackendCheck``.

    A backend that answers makes an earlier failed or cancelled setup moot: its red block goes.
    """
    global _last_check, _setup
    _last_check = checks.check_backend(preferences.resolved_python(prefs), preferences.addon_dir())
    if _last_check.ok and _setup is not None and _setup["run"].finished and _setup["run"].status != "done":
        _setup = None
    return _last_check


def last_check(python):
    """The latest check of the backend Python ``python`` in this session, or None."""
    if _last_check is not None and _last_check.python == python:
        return _last_check
    return None


# --------------------------------------------------------------------------------------------
# Setting up the environment, checking the weights.

def setup_state():
    return _setup


def doctor_state(python, weights):
    """The latest weights check for this Python and folder, or None."""
    if _doctor is not None and _doctor["python"] == python and _doctor["weights"] == weights:
        return _doctor
    return None


def nvidia_driver_found():
    """Whether this computer has NVIDIA's driver tools (``nvidia-smi`` on PATH); looked up once per session."""
    global _nvidia_driver
    if _nvidia_driver is None:
        _nvidia_driver = shutil.which("nvidia-smi") is not None
    return _nvidia_driver


def setup_running():
    return _setup is not None and not _setup["run"].finished


def weights_check_running():
    return _doctor is not None and not _doctor["run"].finished


OFFLINE_MESSAGE = ("Online access is off, so the backend cannot be downloaded: allow it in Preferences > System > "
                   "Network > Allow Online Access")


def start_setup(prefs):
    """Start creating the backend's environment; one line saying where. SetupError if it cannot start.

    It downloads PyTorch and the backend's packages: nothing runs while Blender's online access is off. The
    environment is made with the Backend Python of ``prefs`` when one is set (``core.setup.base_python``).
    """
    global _setup
    if not bpy.app.online_access:
        raise SetupError(OFFLINE_MESSAGE)
    requirements = os.path.join(preferences.addon_dir(), "requirements", "backend.txt")
    if not os.path.isfile(requirements):
        raise SetupError("The backend's requirements are missing from the extension: " + requirements)
    cuda, cuda_line = backend_setup.detect_cuda()
    venv = os.path.join(preferences.data_dir(), backend_setup.VENV_DIRNAME)
    base = backend_setup.base_python(preferences.resolved_python(prefs), venv, sys.executable)
    steps = backend_setup.setup_steps(
        base, venv, requirements, backend_setup.torch_index_tag(cuda),
        addon_dir=preferences.addon_dir(),
    )
    run = backend_setup.CommandRun.start(steps, log_path=os.path.join(preferences.data_dir(), SETUP_LOG))
    _setup = {"run": run, "python": backend_setup.venv_python(venv), "cuda": cuda_line}
    if not bpy.app.timers.is_registered(_poll_setup):
        bpy.app.timers.register(_poll_setup, first_interval=POLL_S)
    return "Setting up the backend in {:s} ({:s})".format(venv, cuda_line)


def cancel_setup():
    if setup_running():
        _setup["run"].cancel()


def start_weights_check(prefs):
    """Start ``python -m backend doctor`` on the weights folder. SetupError if the paths are not usable."""
    global _doctor
    python = preferences.resolved_python(prefs)
    weights = preferences.resolved_weights_dir(prefs)
    problem = checks.python_problem(python) or checks.weights_problem(weights)
    if problem:
        raise SetupError(problem)
    step = backend_setup.Step("Checking the weights", backend_setup.doctor_command(python, weights),
                              cwd=preferences.addon_dir(), timeout_s=backend_setup.DOCTOR_TIMEOUT_S)
    _doctor = {"run": backend_setup.CommandRun.start([step]), "python": python, "weights": weights}
    if not bpy.app.timers.is_registered(_poll_doctor):
        bpy.app.timers.register(_poll_doctor, first_interval=POLL_S)


def redraw_preferences():
    """Redraw every Preferences window (the setup, the weights check and Get Weights show live lines)."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == 'PREFERENCES':
                area.tag_redraw()


def _poll_setup():
    state = _setup
    if state is None:
        return None
    redraw_preferences()
    run = state["run"]
    if not run.finished:
        return POLL_S
    if run.status == "done" and not state.get("applied"):
        state["applied"] = True
        try:
            preferences.get_preferences().python_path = state["python"]
        except (KeyError, AttributeError):
            pass  # the add-on was disabled meanwhile
    return None


def _poll_doctor():
    state = _doctor
    redraw_preferences()
    if state is None or state["run"].finished:
        return None
    return POLL_S


def forget():
    """Stop what runs and drop the state (on unregister)."""
    global _setup, _doctor, _last_check, _nvidia_driver
    _nvidia_driver = None
    for fn in (_poll_setup, _poll_doctor):
        if bpy.app.timers.is_registered(fn):
            bpy.app.timers.unregister(fn)
    for state in (_setup, _doctor):
        if state is not None and not state["run"].finished:
            state["run"].cancel()
    _setup = _doctor = _last_check = None
