# SPDX-License-Identifier: GPL-3.0-or-later
"""The session's SCAIL-2 jobs inside Blender: one `jobs.JobQueue`, the timer pumping it, imports, history.

`operators/generate.py` stays thin; this module turns the scene's settings and
exported inputs into a job (:func:`build_job`), hands it to the queue
(:func:`run_job`) and follows it:

* interactively, a ``bpy.app.timers`` callback (:func:`tick`) polls the queue
  a few times a second: it updates the panels, the status bar and the preview
  Image (``SCAIL Preview``, reloaded on every new frame), and when a job is
  done it imports the result into the job's scene (strip, plane or both) and
  adds a history entry. A failed or cancelled job changes nothing in the
  scene: its error (one line and a hint) is reported and shown in the panel;
  its frames stay on disk;
* in background mode (``blender -b``: render farms, tests) the operator pumps
  the queue itself until its job has ended, then imports.

:func:`shutdown` (add-on disabled, Blender quitting: an ``atexit`` hook) stops
the timer and the worker.
"""

__all__ = (
    "GenerateError",
    "PREVIEW_IMAGE",
    "build_job",
    "get_queue",
    "history_entry_settings",
    "job_scenes",
    "run_job",
    "scene_jobs",
    "scene_overrides",
    "shutdown",
    "tick",
    "worker_setting",
)

import atexit
import json
import os
import random
import time
import traceback

import bpy

from . import compat
from . import jobs
from . import job_settings
from . import preferences
from . import protocol
from . import sources
from .operators import backend_check
from .operators import export_inputs

PREVIEW_IMAGE = "SCAIL Preview"
TICK_S = 0.25
JOBS_SUBDIR = "jobs"
WORKER_LOG = "worker.log"
STOP_TIMEOUT_S = 5.0

# Tests set this to follow jobs with the timer even in background mode.
force_async = False

_queue = None
_status_shown = False


class GenerateError(Exception):
    """A job that cannot be started, as one line for the artist."""


def synchronous():
    """Whether a job is run to its end inside the operator (background mode) rather than followed by a timer."""
    return bpy.app.background and not force_async


# --------------------------------------------------------------------------------------------
# The worker and the queue.

def _memory_args(mode):
    return {
        'FULL_BF16': ["--storage", "bf16"],
        'FP8_STORAGE': ["--storage", "fp8"],
        'GROUP_OFFLOAD': ["--offload", "group"],
    }.get(mode, [])


def worker_setting(prefs):
    """``(jobs.LocalWorker or jobs.RemoteWorker, jobs root)`` from the preferences; GenerateError if incomplete."""
    jobs_root = os.path.join(preferences.effective_output_dir(prefs), JOBS_SUBDIR)
    if prefs.worker_location == 'REMOTE':
        try:
            host, port = jobs.parse_address(prefs.remote_address)
        except ValueError as ex:
            raise GenerateError(str(ex)) from None
        return jobs.RemoteWorker(host, port, prefs.remote_token.strip() or None), jobs_root
    python = preferences.resolved_python(prefs)
    problem = backend_check.python_problem(python)
    if problem:
        raise GenerateError(problem)
    args = ["--jobs-root", jobs_root]
    if prefs.model_source == 'TINY':
        args += ["--model", "tiny"]
    else:
        weights = preferences.resolved_weights_dir(prefs)
        problem = backend_check.weights_problem(weights)
        if problem:
            raise GenerateError(problem)
        args += ["--weights", weights]
    sam3, sam2 = preferences.resolved_segmentation_weights(prefs)
    args += ["--sam3-weights", sam3] if sam3 else []
    args += ["--sam2-weights", sam2] if sam2 else []
    if prefs.device == 'CPU':
        args += ["--device", "cpu"]
    else:
        args += ["--device", "cuda"] + _memory_args(prefs.memory_mode)
    worker = jobs.LocalWorker(
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
        _queue = jobs.JobQueue(worker, jobs_root)
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


def shutdown(timeout=STOP_TIMEOUT_S):
    """Stop the timer and the worker (the add-on is disabled or Blender quits)."""
    global _queue
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    queue, _queue = _queue, None
    if queue is not None:
        queue.shutdown(timeout)
    _set_status(None)


def _at_exit():
    queue = _queue
    if queue is not None:
        queue.shutdown(STOP_TIMEOUT_S)


def register():
    atexit.register(_at_exit)


def unregister():
    atexit.unregister(_at_exit)
    shutdown()


# --------------------------------------------------------------------------------------------
# Building a job from the scene.

def _frame_range(settings, clip):
    """``(frame_start, frame_end)`` of the job in the exported footage's own frames."""
    if not settings.use_frame_range:
        return clip.frame_start, clip.frame_end
    first, last = settings.frame_start, settings.frame_end
    if last < first:
        raise GenerateError("The frame range {:d}-{:d} is empty".format(first, last))
    inside = [f for f in range(max(first, clip.scene_frame_start), min(last, clip.scene_frame_end - 1) + 1)]
    if not inside:
        raise GenerateError("Frames {:d}-{:d} are outside the exported driving footage (scene frames {:d}-{:d})".format(
            first, last, clip.scene_frame_start, clip.scene_frame_end - 1))
    start = clip.exported_at(inside[0])
    end = clip.exported_at(inside[-1])
    return clip.frame_start + start, clip.frame_start + end + 1


def _scene_frame_of(clip, index):
    """The scene frame showing exported frame ``index`` (in the footage's own frames)."""
    offset = index - clip.frame_start
    if 0 <= offset < len(clip.scene_frames):
        return int(clip.scene_frames[offset])
    return int(clip.scene_frame_start)


def ui_settings(settings, sources_settings):
    """The artist's choices, for the history (plain data)."""
    return {
        "mode": sources_settings.mode,
        "prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "preset": settings.preset,
        "resolution": settings.resolution,
        "width": settings.width,
        "height": settings.height,
        "steps": settings.steps,
        "guidance": settings.guidance,
        "seed_locked": settings.use_seed_lock,
        "matte": settings.use_matte,
        "frame_range": [settings.frame_start, settings.frame_end] if settings.use_frame_range else None,
    }


def build_job(context, scene=None):
    """``(protocol.JobSpec, meta)`` from ``scene``'s settings and exported inputs; GenerateError if incomplete."""
    scene = scene or context.scene
    settings = job_settings.get_job_settings(scene)
    src = sources.get_settings(scene)
    folder = export_inputs.inputs_folder(context, scene)
    try:
        inputs = sources.load_inputs(folder)
    except sources.ExportError as ex:
        raise GenerateError(str(ex)) from None
    if not inputs.get("driving"):
        raise GenerateError("Export the driving footage first (SCAIL tab, Inputs)")
    if not inputs.get("reference"):
        raise GenerateError("Export the reference image first (SCAIL tab, Inputs)")
    mode = src.mode
    for key, what in (("driving_mask_mode", "driving mask"), ("reference_mask_mode", "reference mask")):
        made_for = inputs.get(key)
        if made_for and made_for != mode:
            raise GenerateError("The {:s} was exported for {:s} mode; export it again for {:s} mode".format(
                what, made_for, mode))
    fields = sources.job_fields(inputs)
    fields["mode"] = mode
    clip = sources.ExportedClip.from_dict(inputs["driving"])
    fields["frame_start"], fields["frame_end"] = _frame_range(settings, clip)

    if bool(settings.width) != bool(settings.height):
        raise GenerateError("Set both the width and the height, or neither")
    if settings.width % 32 or settings.height % 32:
        raise GenerateError("Width and height must be multiples of 32, got {:d}x{:d}".format(
            settings.width, settings.height))
    seed = settings.seed if settings.use_seed_lock else random.SystemRandom().randrange(0, job_settings.MAX_SEED)
    try:
        spec = protocol.JobSpec(
            **fields,
            prompt=settings.prompt,
            negative_prompt=settings.negative_prompt,
            preset=settings.preset,
            resolution=settings.resolution,
            height=settings.height,
            width=settings.width,
            steps=settings.steps or None,
            guidance=settings.guidance or None,
            seed=seed,
            matte=settings.use_matte,
            matte_prompt=src.auto_mask_prompt.strip() or protocol.DEFAULT_SEGMENT_PROMPT,
        ).validate()
    except (protocol.ProtocolError, TypeError) as ex:
        raise GenerateError(str(ex)) from None

    seq_scene = compat.sequencer_scene(context) or scene
    editor = seq_scene.sequence_editor
    driving_strip = clip.strip if clip.strip and editor is not None and clip.strip in editor.strips else ""
    camera = settings.camera or scene.camera
    import_settings = {
        "form": settings.form,
        "driving_strip": driving_strip,
        "frame_start": _scene_frame_of(clip, spec.frame_start),
        "camera": camera.name if camera is not None else "",
        "distance": settings.distance,
    }
    meta = job_meta(scene, seq_scene, import_settings, ui_settings(settings, src),
                    label=settings.prompt.strip() or clip.source or os.path.basename(clip.path))
    return spec, meta


def job_meta(scene, seq_scene, import_settings, ui, label):
    return {
        "scene": scene.name,
        "scene_pointer": scene.as_pointer(),
        "seq_scene": seq_scene.name,
        "seq_scene_pointer": seq_scene.as_pointer(),
        "import": import_settings,
        "ui": ui,
        "label": label,
    }


def history_entry_settings(item):
    """``(spec dict, import settings, ui settings)`` stored in a history entry; GenerateError if unreadable."""
    try:
        data = json.loads(item.settings_json)
        return dict(data["spec"]), dict(data["import"]), dict(data.get("ui") or {})
    except (ValueError, KeyError, TypeError):
        raise GenerateError("The history entry {:s} has no readable settings".format(item.name)) from None


# --------------------------------------------------------------------------------------------
# Running and following jobs.

def run_job(context, spec, meta, task="generate", job_dir=None):
    """Queue a job. Returns ``(job, level, message)``: at once, or at its end in background mode.

    ``task``: a generation, or a segmentation (``spec`` a protocol.SegmentSpec) that
    ``segment_runtime`` finishes.
    """
    queue = get_queue(context)
    job = queue.submit(spec, job_dir=job_dir, meta=meta, task=task)
    if not synchronous():
        if job.status == "failed":  # refused before reaching a worker: the operator reports it
            apply_changes([change for change in queue.poll() if change.job is not job], interactive=True)
            return job, 'ERROR', job.error.text()
        _ensure_timer()
        return job, 'INFO', "SCAIL-2 job queued: {:s}".format(meta.get("label", ""))[:200]
    print("SCAIL-2: job {:s} started in {:s}".format(job.key, job.job_dir), flush=True)
    queue.wait(job, on_change=lambda changes: apply_changes(changes, interactive=False))
    apply_changes(queue.poll(), interactive=False)
    level, message = job.meta.get("outcome") or _outcome(job)
    return job, level, message


def _outcome(job):
    if job.status == "failed":
        return 'ERROR', job.error.text() if job.error else "The job failed"
    if job.status == "cancelled" and job.task != "generate":
        return 'WARNING', "The {:s} job was cancelled; the scene is unchanged".format(
            "Auto Masks" if job.task == "masks" else "Matte")
    if job.status == "cancelled":
        return 'WARNING', "The job was cancelled; nothing was imported (its frames are kept in {:s})".format(
            job.job_dir)
    return 'INFO', "The job finished"


def _ensure_timer():
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S, persistent=True)


def tick():
    """The timer: pump the queue, show progress, import finished jobs. Never raises."""
    queue = _queue
    if queue is None:
        _set_status(None)
        return None
    try:
        apply_changes(queue.poll(), interactive=True)
    except Exception:
        traceback.print_exc()
    busy = queue.busy
    _set_status(status_line(queue) if busy else None)
    _redraw()
    return TICK_S if busy else None


def status_line(queue):
    """One line for the status bar: the running job's phase, step and ETA, and how many wait."""
    running = queue.running_job() or next(iter(queue.active_jobs()), None)
    if running is None:
        return ""
    text = "SCAIL-2: " + running.phase_text()
    if running.eta_s is not None:
        text += " \u2013 about {:s} left".format(running.eta_text())
    waiting = sum(1 for job in queue.active_jobs() if job is not running)
    if waiting:
        text += " ({:d} more queued)".format(waiting)
    return text


def apply_changes(changes, interactive):
    """Act on the queue's changes: preview, progress output, import and history, error reports."""
    latest_frame = None
    for change in changes:
        job = change.job
        if change.kind == "frame":
            latest_frame = job.preview
        elif change.kind == "done":
            if job.task == "generate":
                level, message = finish_job(job, interactive)
            else:
                from . import segment_runtime  # it builds on this module

                level, message = segment_runtime.finish_job(job, interactive)
            job.meta["outcome"] = (level, message)
            _notify(level, message, interactive)
        elif change.kind in ("failed", "cancelled"):
            level, message = _outcome(job)
            job.meta["outcome"] = (level, message)
            _notify(level, message, interactive)
        elif not interactive and change.kind in ("queued", "started", "progress"):
            eta = " (about {:s} left)".format(job.eta_text()) if job.eta_s is not None else ""
            print("SCAIL-2: {:s}{:s}".format(job.phase_text(), eta), flush=True)
    if latest_frame and interactive:
        update_preview(latest_frame)


def _windows():
    try:
        return list(bpy.context.window_manager.windows)
    except AttributeError:
        return []


def _notify(level, message, interactive):
    if not interactive:
        print("SCAIL-2: {:s}".format(message), flush=True)
        return
    # An operator's report reaches the status bar and the Info editor, also from a timer
    # (which has no window of its own).
    windows = _windows()
    try:
        with bpy.context.temp_override(**({"window": windows[0]} if windows else {})):
            bpy.ops.scail2.job_report(level=level, message=message)
    except (RuntimeError, AttributeError, TypeError):
        pass  # an ERROR report raises here too, once shown


def _find_scene(name, pointer):
    scene = bpy.data.scenes.get(name)
    if scene is None or scene.as_pointer() != pointer:
        return None  # another file was opened meanwhile
    return scene


def _view_layer(scene):
    for window in _windows():
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


def import_job(scene, seq_scene, manifest, import_settings, undo=False):
    """Run ``scail2.import_result`` for ``manifest`` in ``scene``; raises RuntimeError with its message."""
    overrides = scene_overrides(scene, seq_scene)
    camera = import_settings.get("camera") or ""
    if camera and bpy.data.objects.get(camera) is None:
        camera = ""
    with bpy.context.temp_override(**overrides):
        return bpy.ops.scail2.import_result(
            'EXEC_DEFAULT', undo,
            filepath=manifest,
            form=import_settings.get("form", 'STRIP'),
            driving_strip=import_settings.get("driving_strip", ""),
            frame_start=int(import_settings.get("frame_start", scene.frame_current)),
            camera=camera,
            distance=float(import_settings.get("distance", 10.0)),
        )




def finish_job(job, interactive):
    """A done job: add it to its scene's history and import it. Returns ``(level, message)``."""
    meta = job.meta
    scene, seq_scene = job_scenes(meta)
    job_id = os.path.basename(os.path.normpath(job.job_dir)) or job.id
    if scene is None:
        return 'WARNING', ("SCAIL-2 job {:s} finished, but its scene is no longer open; "
                           "import {:s} with Import Result").format(job_id, job.manifest)
    settings = job_settings.get_job_settings(scene)
    item = settings.history.add()
    item.name = backend_check.one_line(meta.get("label") or job_id, 60)
    item.job_id = job_id
    item.job_dir = job.job_dir
    item.manifest = job.manifest
    item.seed = int(job.spec.get("seed", 0)) if int(job.spec.get("seed", -1)) >= 0 else 0
    item.frames = job.frames_ready or job.frames
    item.thumbnail = job.first_frame or _first_frame(job.manifest)
    item.created = time.strftime("%Y-%m-%d %H:%M")
    item.settings_json = json.dumps(
        {"spec": job.spec, "import": meta.get("import", {}), "ui": meta.get("ui", {})}, sort_keys=True)
    settings.active_history_index = len(settings.history) - 1
    try:
        import_job(scene, seq_scene, job.manifest, meta.get("import", {}), undo=interactive)
    except RuntimeError as ex:
        item.status = 'DONE'
        item.note = backend_check.operator_error_line(ex)
        return 'ERROR', "SCAIL-2 job {:s} finished but was not imported: {:s}".format(job_id, item.note)
    item.status = 'IMPORTED'
    return 'INFO', "SCAIL-2 job {:s} finished and was imported ({:d} frames)".format(job_id, item.frames)


def _first_frame(manifest):
    try:
        data = protocol.load_manifest(manifest)
        return os.path.join(os.path.dirname(manifest), data["frames"][0]["file"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return ""


# --------------------------------------------------------------------------------------------
# What the artist sees while a job runs.

def update_preview(path):
    """Show ``path`` in the ``SCAIL Preview`` image (created on first use)."""
    if not path or not os.path.isfile(path):
        return
    image = bpy.data.images.get(PREVIEW_IMAGE)
    try:
        if image is None:
            image = bpy.data.images.load(path, check_existing=False)
            image.name = PREVIEW_IMAGE
        elif bpy.path.abspath(image.filepath) != path:
            image.filepath = path
            image.reload()
        else:
            image.reload()
        preview = image.preview_ensure()
        if preview is not None:
            preview.reload()
    except (RuntimeError, ReferenceError):
        pass


def _set_status(text):
    global _status_shown
    if text is None and not _status_shown:
        return
    for window in _windows():
        workspace = window.workspace
        if workspace is None:
            continue
        # The status bar text belongs to a window: a timer has none in its context.
        with bpy.context.temp_override(window=window):
            workspace.status_text_set(text)
    _status_shown = text is not None


def _redraw():
    for window in _windows():
        for area in window.screen.areas:
            if area.type in {'SEQUENCE_EDITOR', 'VIEW_3D', 'PREFERENCES', 'IMAGE_EDITOR'}:
                area.tag_redraw()
