# SPDX-License-Identifier: GPL-3.0-or-later
"""The session's SCAIL-2 worker and job queue inside Blender, and the scenes jobs belong to.

One `core.queue.JobQueue` per Blender session, set up from the preferences
(:func:`get_queue`); :func:`shutdown` (add-on disabled, Blender quitting: an
``atexit`` hook) stops the worker. ``runtime.follow`` pumps the queue.
"""

__all__ = (
    "GenerateError",
    "JobRequest",
    "get_queue",
    "job_meta",
    "job_scenes",
    "scene_jobs",
    "scene_overrides",
    "close_queue",
    "synchronous",
    "windows",
    "worker_setting",
)

import os
from collections import namedtuple

import bpy

from .. import preferences, protocol
from ..core import checks
from ..core.job import LocalWorker, RemoteWorker, on_this_machine, parse_address
from ..core.queue import JobQueue

JOBS_SUBDIR = "jobs"
WORKER_LOG = "worker.log"
STOP_TIMEOUT_S = 5.0

# Tests set this to follow jobs with the timer even in background mode.
force_async = False

_queue = None


class GenerateError(Exception):
    """A job that cannot be started, as one line for the artist."""


# What a builder hands to ``runtime.follow.run_job``: the spec, the caller's meta data, the task and,
# for a matte, the folder of the result it cuts out.
JobRequest = namedtuple("JobRequest", "spec meta task job_dir", defaults=("generate", None))


def synchronous():
    """Whether a job is run to its end inside the operator (background mode) rather than followed by a timer."""
    return bpy.app.background and not force_async


# --------------------------------------------------------------------------------------------
# The worker and the queue.

def gpu_args(prefs):
    """The backend's memory and speed options for the preferences' Memory Mode and Compile Model."""
    args = {
        'FULL_BF16': ["--storage", "bf16"],
        'FP8_STORAGE': ["--storage", "fp8"],
        'FP8_COMPUTE': ["--compute", "fp8"],
        'GROUP_OFFLOAD': ["--offload", "group"],
    }.get(prefs.memory_mode, [])
    return args + (["--compile"] if getattr(prefs, "compile_model", False) else [])


OFFLINE_WORKER = ("Online access is off, so the add-on does not connect to the worker at {:s}: allow it in "
                  "Preferences > System > Network > Allow Online Access (a worker on this machine, 127.0.0.1 or an "
                  "SSH tunnel's end, needs none)")


def remote_refusal(host, port):
    """Why the add-on may not connect to the worker at ``host:port`` now (Blender's online access is off and
    the worker is not on this machine), or None. Every connection to a remote worker asks this first."""
    if bpy.app.online_access or on_this_machine(host):
        return None
    return OFFLINE_WORKER.format(protocol.wire.address_text(host, port))


def worker_setting(prefs):
    """``(LocalWorker or RemoteWorker, jobs root)`` from the preferences; GenerateError if incomplete."""
    jobs_root = os.path.join(preferences.effective_output_dir(prefs), JOBS_SUBDIR)
    if prefs.worker_location == 'REMOTE':
        try:
            host, port = parse_address(prefs.remote_address)
        except ValueError as ex:
            raise GenerateError(str(ex)) from None
        refusal = remote_refusal(host, port)
        if refusal:
            raise GenerateError(refusal)
        return RemoteWorker(host, port, prefs.remote_token.strip() or None,
                            getattr(prefs, "remote_fingerprint", "").strip()), jobs_root
    python = preferences.resolved_python(prefs)
    problem = checks.python_problem(python)
    if problem:
        raise GenerateError(problem)
    args = ["--jobs-root", jobs_root]
    if prefs.model_source == 'TINY':
        args += ["--model", "tiny"]
    else:
        weights = preferences.resolved_weights_dir(prefs)
        problem = checks.weights_problem(weights)
        if problem:
            raise GenerateError(problem)
        args += ["--weights", weights]
    sam3, sam2 = preferences.resolved_segmentation_weights(prefs)
    args += ["--sam3-weights", sam3] if sam3 else []
    args += ["--sam2-weights", sam2] if sam2 else []
    if prefs.device == 'CPU':
        args += ["--device", "cpu"]
    else:
        args += ["--device", "cuda"] + gpu_args(prefs)
    worker = LocalWorker(
        python=python, args=tuple(args), cwd=preferences.addon_dir(),
        log_path=os.path.join(preferences.data_dir(), WORKER_LOG),
    )
    return worker, jobs_root


def get_queue(context=None, create=True):
    """The session's queue, set up from the preferences (GenerateError when they are incomplete)."""
    global _queue
    if not create:
        return _queue
    worker, jobs_root = worker_setting(preferences.get_preferences(context))
    if _queue is None:
        _queue = JobQueue(worker, jobs_root)
    else:
        _queue.set_worker(worker)
        _queue.jobs_root = jobs_root
    return _queue


def scene_jobs(scene, tasks=None):
    """This session's jobs for ``scene`` (of one of ``tasks``, if given), oldest first."""
    if _queue is None:
        return []
    pointer = scene.as_pointer()
    return [job for job in _queue.jobs.values()
            if job.meta.get("scene") == scene.name and job.meta.get("scene_pointer") == pointer
            and (tasks is None or job.task in tasks)]


def close_queue(timeout=STOP_TIMEOUT_S):
    """Stop the worker and forget the queue (``runtime.follow.shutdown`` stops its timer first)."""
    global _queue
    queue, _queue = _queue, None
    if queue is not None:
        queue.shutdown(timeout)


# --------------------------------------------------------------------------------------------
# The scenes a job belongs to.

def job_meta(scene, seq_scene, import_settings, ui, label):
    """What a job carries for its finish: its scenes (name and pointer), import settings, the artist's choices."""
    return {
        "scene": scene.name,
        "scene_pointer": scene.as_pointer(),
        "seq_scene": seq_scene.name,
        "seq_scene_pointer": seq_scene.as_pointer(),
        "import": import_settings,
        "ui": ui,
        "label": label,
    }


def windows():
    try:
        return list(bpy.context.window_manager.windows)
    except AttributeError:
        return []


def _find_scene(name, pointer):
    scene = bpy.data.scenes.get(name)
    if scene is None or scene.as_pointer() != pointer:
        return None  # another file was opened meanwhile
    return scene


def _view_layer(scene):
    for window in windows():
        if window.scene == scene:
            return window.view_layer
    return scene.view_layers[0]


def scene_overrides(scene, seq_scene):
    """``temp_override`` arguments that make an operator work on ``scene`` and its sequencer scene."""
    return {"scene": scene, "view_layer": _view_layer(scene), "sequencer_scene": seq_scene}


def job_scenes(meta):
    """``(scene, sequencer scene)`` a job was started in; the scene is None when another file was opened since."""
    scene = _find_scene(meta.get("scene", ""), meta.get("scene_pointer"))
    return scene, _find_scene(meta.get("seq_scene", ""), meta.get("seq_scene_pointer")) or scene
