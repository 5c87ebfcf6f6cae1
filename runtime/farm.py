# SPDX-License-Identifier: GPL-3.0-or-later
"""Send to Farm: the scene's generation written as a render-farm bundle, and its history entry.

The job is built as Generate builds it (:func:`runtime.generation.build_job`, after the
same exports); the backend's own command line (``python -m backend farm bundle``, run
as a subprocess: the add-on never imports the backend) writes the bundle into a farm
folder with its OpenJD template and Flamenco job. The history entry added then names
the bundle's job folder, where the farm's frames land; *Import Again* brings them in
as it does a local job's, with the import settings and timing of a local job.

Interactively the bundling runs while a timer waits for it (copying footage to
another disk can take a while); in background mode it runs to its end at once.
"""

__all__ = (
    "FARM_SUBDIR",
    "add_history_entry",
    "farm_status",
    "unfinished_line",
    "bundle_command",
    "farm_target",
    "send_to_farm",
)

import json
import os
import re
import subprocess
import time

import bpy

from .. import preferences
from .. import protocol
from ..core import checks
from ..core.util import one_line
from ..props import job_settings
from . import follow
from . import generation
from . import session
from .session import GenerateError

FARM_SUBDIR = "farm"
BUNDLE_TIMEOUT_S = 3600.0
STATUS_TIMEOUT_S = 30.0
POLL_S = 0.25

_pending = []  # [(Popen, meta, spec dict, started)], bundles being written


def _safe(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-") or "shot"


def farm_target(context, scene, directory=""):
    """``(farm folder, bundle name)``: the chosen farm folder (several shots sent there make one farm job), else a
    new one in the output folder's ``farm/``; the bundle is named after the file, the scene and the time."""
    blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "untitled"
    name = "{:s}_{:s}_{:s}".format(_safe(blend), _safe(scene.name), time.strftime("%Y%m%d-%H%M%S"))[-64:].lstrip("._-")
    if not directory.strip():
        root = os.path.join(preferences.effective_output_dir(preferences.get_preferences(context)), FARM_SUBDIR)
        return os.path.join(root, name), name
    farm_dir = os.path.normpath(bpy.path.abspath(directory.strip()))
    taken, number = name, 1
    while os.path.exists(os.path.join(farm_dir, taken)):  # sent twice within a second
        number += 1
        taken = "{:s}-{:d}".format(name[:60], number)
    return farm_dir, taken


def bundle_command(prefs, farm_dir, name):
    """``(argv, cwd)`` of the backend writing one bundle from the spec on its stdin; GenerateError if unset."""
    python = preferences.resolved_python(prefs)
    problem = checks.python_problem(python)
    if problem:
        raise GenerateError(problem)
    argv = [python, "-m", "backend", "farm", "bundle", "-", "--name", name, "--out", farm_dir, "--json"]
    if prefs.model_source == 'TINY':
        argv += ["--model", "tiny"]
    else:
        argv += ["--weights", preferences.resolved_weights_dir(prefs)]
    if prefs.device == 'CPU':
        argv += ["--device", "cpu"]
    else:
        argv += ["--device", "cuda"] + farm_gpu_args(session.gpu_args(prefs))
    return argv, preferences.addon_dir()


def farm_gpu_args(args):
    """The worker's memory and speed options as `farm bundle` takes them: --storage and --offload as
    its own options, the others (--compute, --compile) in its --extra line."""
    direct, extra, i = [], [], 0
    while i < len(args):
        if args[i] in ("--storage", "--offload"):
            direct += args[i:i + 2]
            i += 2
        else:
            extra.append(args[i])
            i += 1
    return direct + (["--extra", " ".join(extra)] if extra else [])


def send_to_farm(context, directory=""):
    """Bundle the scene's generation for the farm. Returns ``(None, level, message)`` as ``run_job`` does
    (``operators.common.start_job``); GenerateError when the job cannot be built."""
    scene = context.scene
    request = generation.build_job(context, scene)
    farm_dir, name = farm_target(context, scene, directory)
    argv, cwd = bundle_command(preferences.get_preferences(context), farm_dir, name)
    spec = request.spec.to_dict()
    try:
        process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, encoding="utf-8")
        process.stdin.write(json.dumps(spec))  # small: fits the pipe's buffer, so this never waits
        process.stdin.close()
        process.stdin = None  # given in full: communicate() then only reads
    except OSError as ex:
        raise GenerateError("Could not run the backend to write the farm bundle: {:s}".format(
            ex.strerror or str(ex))) from None
    if session.synchronous():
        return (None,) + _finish(process, request.meta, spec, timeout=BUNDLE_TIMEOUT_S)
    _pending.append((process, request.meta, spec, time.monotonic()))
    if not bpy.app.timers.is_registered(_poll):
        bpy.app.timers.register(_poll, first_interval=POLL_S)
    return None, 'INFO', "Writing the farm bundle {:s}".format(name)


def _finish(process, meta, spec, timeout=None):
    """The ended (or ending) bundling: its history entry. ``(level, message)``."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return 'ERROR', "Writing the farm bundle took too long and was stopped"
    if process.returncode != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else "the backend exited with code {:d}".format(
            process.returncode)
        return 'ERROR', one_line("Could not write the farm bundle: " + reason)
    try:
        written = json.loads(out.strip().splitlines()[-1])
        bundle = written["bundles"][0]
    except (ValueError, KeyError, IndexError):
        return 'ERROR', "The backend wrote the farm bundle but did not say where: " + one_line(out)
    scene, _seq_scene = session.job_scenes(meta)
    if scene is None:
        return 'WARNING', ("The farm bundle {:s} was written, but its scene is no longer open: import its frames "
                           "with Import Result").format(bundle["job_dir"])
    add_history_entry(scene, meta, spec, bundle, written)
    failed = _failed_checks(bundle.get("input_checks"))
    note = " (input checks failed: {:s})".format(failed) if failed else ""
    return ('WARNING' if failed else 'INFO'), "Farm bundle written{:s}: submit {:s} (OpenJD) or {:s} (Flamenco)".format(
        note, written.get("openjd", ""), written.get("flamenco", ""))


def _failed_checks(report):
    """The names of a bundle's failed input checks (its bundle.json keeps them all), "" when none failed."""
    checks = report.get("checks") if isinstance(report, dict) else None
    if not isinstance(checks, list):
        return ""
    failed = [str(c.get("name")) for c in checks if isinstance(c, dict) and c.get("verdict") == "fail"]
    return ", ".join(dict.fromkeys(failed))


def add_history_entry(scene, meta, spec, bundle, written):
    """The scene's history entry of a job sent to the farm: its folder is the bundle's job folder, so Import
    Again imports the farm's frames as a local job's (same import settings, same timing)."""
    settings = job_settings.get_job_settings(scene)
    item = settings.history.add()
    item.name = one_line(meta.get("label") or bundle["name"], 60)
    item.job_id = bundle["name"]
    item.job_dir = bundle["job_dir"]
    item.manifest = os.path.join(bundle["job_dir"], protocol.MANIFEST_NAME)
    item.seed = max(0, int(spec.get("seed", 0)))  # Send to Farm's spec always has its seed (as Generate's)
    item.frames = 0
    item.created = time.strftime("%Y-%m-%d %H:%M")
    item.settings_json = json.dumps({
        "spec": spec, "import": meta.get("import", {}), "ui": meta.get("ui", {}),
        "farm": {"bundle": bundle["folder"], "farm_dir": written.get("farm_dir", ""),
                 "openjd": written.get("openjd", ""), "flamenco": written.get("flamenco", ""),
                 "input_checks_failed": _failed_checks(bundle.get("input_checks"))},
    }, sort_keys=True)
    item.status = 'DONE'
    item.note = "sent to the render farm; press Import Again when its frames are in"
    settings.active_history_index = len(settings.history) - 1
    return item


def farm_status(python, farm_dir, name):
    """What ``python -m backend farm status FARM_DIR`` says of the bundle ``name`` ("running", "not started",
    ...), or None when it cannot tell."""
    if checks.python_problem(python):
        return None
    try:
        proc = subprocess.run([python, "-m", "backend", "farm", "status", farm_dir], cwd=preferences.addon_dir(),
                              capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=STATUS_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in proc.stdout.splitlines():
        bundle, _, state = line.partition(": ")
        if bundle == name and state:
            return state.strip()
    return None


def unfinished_line(item):
    """One line for a history entry sent to the farm whose job has not written its manifest yet: that the farm
    has not finished, and how far it is (``farm status`` and the frames written so far); None otherwise."""
    try:
        farm = json.loads(item.settings_json).get("farm")
    except (ValueError, AttributeError):
        return None
    if not isinstance(farm, dict):
        return None
    state = farm_status(preferences.resolved_python(preferences.get_preferences()), farm.get("farm_dir", ""),
                        item.job_id)
    try:
        frames = sum(name.endswith(".png") for name in os.listdir(os.path.join(item.job_dir, "frames")))
    except OSError:
        frames = 0
    return ("The farm has not finished {:s} yet (farm status: {:s}; {:d} frames written so far): Import Again "
            "when it is done").format(item.job_id, state or "unknown", frames)


def _poll():
    """The timer: finish the bundlings that ended; stop when none is left. Never raises."""
    for entry in list(_pending):
        process, meta, spec, started = entry
        if process.poll() is None and time.monotonic() - started < BUNDLE_TIMEOUT_S:
            continue
        _pending.remove(entry)
        try:
            level, message = _finish(process, meta, spec, timeout=0 if process.poll() is None else None)
        except Exception as ex:  # a timer must not raise
            level, message = 'ERROR', "Could not finish the farm bundle: {!s}".format(ex)
        follow.notify(level, message)
    return POLL_S if _pending else None
