# SPDX-License-Identifier: GPL-3.0-or-later
"""Get Weights in this session: the plan shown before anything starts, the download, what happens when it ends.

Both run ``python -m backend download`` in the background (``core.setup.CommandRun``); a timer
redraws the preferences while they run. The plan (``--dry-run``) touches no network. The download
does, so it refuses to start while Blender's online access is off. When it is done, the Weights
field points at the folder, Memory Mode at the plan's (where the add-on has it), and Check Weights
runs by itself. Cancel stops the process; its partial file is kept, and Get Weights resumes it.
"""

__all__ = (
    "WeightsError",
    "cancel_download",
    "download_folder",
    "download_running",
    "download_state",
    "forget",
    "latest_state",
    "plan_running",
    "start_download",
    "start_plan",
)

import os

import bpy

from .. import preferences
from ..core import checks
from ..core import setup as backend_setup
from ..core import weights_download
from . import setup

POLL_S = 0.5
DOWNLOAD_LOG = "weights-download.log"
WEIGHTS_SUBDIR = "weights"
SAM3_SUBDIR = "sam3"  # where `backend download --with sam3` puts facebook/sam3, inside the weights folder
PLAN_TIMEOUT_S = 180.0

_plan = None  # {"run": CommandRun, "folder": ..., "plan": ...}
_download = None  # {"run": CommandRun, "folder": ..., "applied": bool}


class WeightsError(Exception):
    """Get Weights cannot start, as one line for the artist."""


def download_folder(prefs):
    """Where the weights go: the Weights field's folder, else ``weights`` in the add-on's user folder."""
    return preferences.resolved_weights_dir(prefs) or os.path.join(preferences.data_dir(), WEIGHTS_SUBDIR)


def download_state():
    return _download


def latest_state():
    """The plan or the download, whichever was started last (what the preferences show), or None."""
    states = [state for state in (_plan, _download) if state is not None]
    return max(states, key=lambda state: state["run"].started_at) if states else None


def plan_running():
    return _plan is not None and not _plan["run"].finished


def download_running():
    return _download is not None and not _download["run"].finished


def _command(prefs, dry_run):
    python = preferences.resolved_python(prefs)
    problem = checks.python_problem(python)
    if problem:
        raise WeightsError(problem)
    folder = download_folder(prefs)
    extras = tuple(name for name, wanted in (("dpo", prefs.weights_with_dpo), ("sam3", prefs.weights_with_sam3))
                   if wanted)
    argv = weights_download.download_command(python, folder, prefs.weights_plan.lower().replace("_", "-"),
                                             prefs.weights_gpu_memory, dry_run=dry_run, extras=extras)
    return argv, folder


def _start_timer():
    if not bpy.app.timers.is_registered(_poll):
        bpy.app.timers.register(_poll, first_interval=POLL_S)


def start_plan(prefs):
    """Show what Get Weights would fetch (sizes, free space): offline, a few seconds."""
    global _plan
    argv, folder = _command(prefs, dry_run=True)
    step = backend_setup.Step("Planning the weights", argv, cwd=preferences.addon_dir(), timeout_s=PLAN_TIMEOUT_S)
    _plan = {"run": backend_setup.CommandRun.start([step]), "folder": folder}
    _start_timer()


def start_download(prefs):
    """Start fetching the weights; WeightsError (one line) when online access is off or the paths are unusable."""
    global _download
    if not bpy.app.online_access:
        raise WeightsError(weights_download.ONLINE_ACCESS_OFF)
    argv, folder = _command(prefs, dry_run=False)
    step = backend_setup.Step("Getting the weights", argv, cwd=preferences.addon_dir())
    run = backend_setup.CommandRun.start([step], env=weights_download.download_env(prefs.hf_token),
                                         log_path=os.path.join(preferences.data_dir(), DOWNLOAD_LOG))
    _download = {"run": run, "folder": folder, "applied": False}
    _start_timer()
    return "Getting the weights into " + folder


def cancel_download():
    if download_running():
        _download["run"].cancel()


def apply_finished(prefs):
    """After a finished download: Weights field (and SAM 3 Weights when fetched), Memory Mode, and Check
    Weights. True when applied now."""
    state = _download
    if state is None or state["applied"] or state["run"].status != "done":
        return False
    state["applied"] = True
    view = weights_download.DownloadView(state["run"].lines())
    folder = view.end.folder if view.end is not None and view.end.folder else state["folder"]
    prefs.weights_dir = folder
    sam3 = os.path.join(folder, SAM3_SUBDIR)
    if os.path.isfile(os.path.join(sam3, "config.json")) and not prefs.sam3_weights_dir.strip():
        prefs.sam3_weights_dir = sam3
    mode = view.plan.memory_mode if view.plan is not None else ""
    if mode:
        prefs.memory_mode = mode
    try:
        setup.start_weights_check(prefs)
    except setup.SetupError:
        pass  # the preferences show why (no backend Python); the folder is set all the same
    return True


def _poll():
    setup.redraw_preferences()
    if download_running() or plan_running():
        return POLL_S
    try:
        apply_finished(preferences.get_preferences())
    except (KeyError, AttributeError):
        pass  # the add-on was disabled meanwhile
    return None


def forget():
    """Stop what runs and drop the state (on unregister); a cancelled download keeps its part file."""
    global _plan, _download
    if bpy.app.timers.is_registered(_poll):
        bpy.app.timers.unregister(_poll)
    for state in (_plan, _download):
        if state is not None and not state["run"].finished:
            state["run"].cancel()
    _plan = _download = None
