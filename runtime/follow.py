# SPDX-License-Identifier: GPL-3.0-or-later
"""Following the session's jobs: queueing them, the timer pumping the queue, progress, and each task's finish.

* interactively, a ``bpy.app.timers`` callback (:func:`tick`) polls the queue
  a few times a second: it updates the panels, the status bar and the preview
  Image (``SCAIL Preview``, reloaded on every new frame), and when a job is
  done it hands it to its task's finisher (:data:`FINISHERS`). A failed or
  cancelled job changes nothing in the scene: its error (one line and a hint)
  is reported and shown in the panel; its frames stay on disk;
* in background mode (``blender -b``: render farms, tests) :func:`run_job`
  pumps the queue itself until its job has ended, then finishes it;
* Generate checks the inputs first (:func:`generate_checked`): the worker answers
  a ``check_inputs`` request, ``runtime.input_checks.finish`` shows it, and the job
  is queued, or held for Generate Anyway / Cancel when a check fails.

:func:`shutdown` (add-on disabled, Blender quitting: an ``atexit`` hook) stops
the timer and the worker.
"""

__all__ = (
    "FINISHERS",
    "PREVIEW_IMAGE",
    "apply_changes",
    "check_inputs",
    "follow_queue",
    "generate_checked",
    "redraw_job_panels",
    "register",
    "resume_job",
    "run_job",
    "shutdown",
    "status_line",
    "tick",
    "unregister",
)

import atexit
import os
import traceback

import bpy

from .. import preferences
from ..core.job import WORKER_STOPPED
from . import generation
from . import input_checks
from . import segmentation
from . import session
from . import take_finish

PREVIEW_IMAGE = "SCAIL Preview"
TICK_S = 0.25
# While nothing changes, the timer waits a step longer every few ticks, up to this.
MAX_TICK_S = 1.0
IDLE_TICKS_PER_STEP = 4

# How a done job of each task comes into the scene: ``finish(job, interactive) -> (level, message)``.
FINISHERS = {
    "generate": take_finish.finish_take,
    "masks": segmentation.finish_job,
    "matte": segmentation.finish_job,
}

_status_shown = None  # the status bar text this module shows, or None
_idle_ticks = 0  # ticks in a row in which nothing changed


def run_job(context, spec, meta, task="generate", job_dir=None, resume=False):
    """Queue a job (the fields of a ``session.JobRequest``). Returns ``(job, level, message)``: at once, or at
    its end in background mode.

    ``task``: a generation, or a segmentation (``spec`` a protocol.SegmentSpec); :data:`FINISHERS` finish it.
    """
    queue = session.get_queue(context)
    job = queue.submit(spec, job_dir=job_dir, meta=meta, task=task, resume=resume)
    if not session.synchronous():
        if job.status == "failed":  # refused before reaching a worker: the operator reports it
            apply_changes([change for change in queue.poll() if change.job is not job], interactive=True)
            return job, 'ERROR', job.error.text()
        _ensure_timer()
        return job, 'INFO', "SCAIL-2 job queued: {:s}".format(meta.get("label", ""))[:200]
    print("SCAIL-2: job {:s} started in {:s}".format(job.key, job.job_dir), flush=True)
    queue.wait(job, on_change=lambda changes: apply_changes(changes, interactive=False))
    apply_changes(queue.poll(), interactive=False)
    while job.meta.get("resumed_as") in queue.jobs:  # resumed automatically: follow it to its end
        job = queue.jobs[job.meta["resumed_as"]]
        queue.wait(job, on_change=lambda changes: apply_changes(changes, interactive=False))
        apply_changes(queue.poll(), interactive=False)
    level, message = job.meta.get("outcome") or _outcome(job)
    return job, level, message


def check_inputs(context):
    """Ask the worker to check the scene's job (Check Inputs); ``(None, level, message)`` at once, or when it
    has answered in background mode."""
    run = input_checks.request(context)
    return _follow_check(context, run, "Checking the inputs")


def generate_checked(context):
    """Generate: the inputs checked first, then the job queued (held for Generate Anyway when a check fails;
    in background mode nobody can be asked: the failure is reported and the job runs, its manifest keeping
    the checks). ``(job or None, level, message)`` as :func:`run_job`."""
    run = input_checks.request(context, then_generate=True)
    return _follow_check(context, run, "Checking the inputs before the job")


def _follow_check(context, run, text):
    if not session.synchronous():
        _ensure_timer()
        redraw_job_panels()
        return None, 'INFO', text
    queue = session.get_queue(context)
    while run.pending:
        apply_changes(queue.poll(timeout=0.1), interactive=False)
    apply_changes(queue.poll(), interactive=False)
    return run.meta.get("outcome") or (None, 'INFO', "The inputs were checked")


def _finish_check(run, interactive):
    """A check's answer shown; Generate's job queued (or held, and the artist asked)."""
    level, message, job = input_checks.finish(run, interactive)
    _notify(level, message, interactive)
    outcome = (None, level, message)
    if job is not None:
        outcome = run_job(bpy.context, *job)
        if interactive and outcome[1] == 'ERROR':
            _notify(*outcome[1:], interactive)
    elif run.meta.get("job") is not None and interactive:
        run.meta["asked"] = _ask_generate_anyway(run.meta["scene"])
    run.meta["outcome"] = outcome


def _ask_generate_anyway(scene_name):
    """Ask the artist Generate Anyway / Cancel for the job held for ``scene_name``; whether the question was
    put. Blender without a UI (background, tests) would answer yes by itself: the job stays held there."""
    if bpy.app.background:
        return False
    windows = session.windows()
    try:
        with bpy.context.temp_override(**({"window": windows[0]} if windows else {})):
            bpy.ops.scail2.generate_anyway('INVOKE_DEFAULT', scene=scene_name)
    except (RuntimeError, AttributeError, TypeError):
        traceback.print_exc()
        return False
    return True


def resume_job(context, job):
    """Continue the ended generation ``job`` in its folder; ``(new job, level, message)`` as :func:`run_job`."""
    return run_job(context, job.spec, dict(job.meta, resumed_from=job.key), job_dir=job.job_dir, resume=True)


def _resume_automatically(job):
    """Resume ``job`` once when the artist allows it (preferences) and its worker stopped; the new job or None."""
    try:
        allowed = preferences.get_preferences().resume_automatically
    except (KeyError, AttributeError):
        return None
    stopped = job.error is not None and job.error.code in WORKER_STOPPED  # a full disk would fail again
    if not allowed or not job.resumable or not stopped or "resumed_from" in job.meta:
        return None
    queue = session.get_queue(create=False)
    again = queue.resume(job)
    job.meta["resumed_as"] = again.key
    return again


def _outcome(job):
    if job.status == "failed":
        return 'ERROR', job.error.text() if job.error else "The job failed"
    if job.status == "cancelled" and job.task != "generate":
        return 'WARNING', "The {:s} job was cancelled; the scene is unchanged".format(
            "Auto Masks" if job.task == "masks" else "Matte")
    if job.status == "cancelled" and not job.frames_ready:
        return 'WARNING', "The job was cancelled before its first frame; nothing was imported"
    if job.status == "cancelled":
        return 'WARNING', ("The job was cancelled; nothing was imported (its {:d} frames so far are kept in {:s})"
                           .format(job.frames_ready, job.job_dir))
    return 'INFO', "The job finished"


def follow_queue():
    """Keep the timer polling while the queue is busy (an operator that asked the worker something)."""
    _ensure_timer()


def _ensure_timer():
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S, persistent=True)


def tick():
    """The timer: pump the queue, show progress, import finished jobs. Never raises.

    It redraws only the panels that show jobs, only when the queue changed, and polls less often
    while nothing happens (a long denoising step), so Blender stays as light as when idle.
    """
    global _idle_ticks
    queue = session.get_queue(create=False)
    if queue is None:
        _set_status(None)
        return None
    changes = []
    try:
        changes = queue.poll()
        apply_changes(changes, interactive=True)
    except Exception:
        traceback.print_exc()
    busy = queue.busy
    shown = _set_status(status_line(queue) if busy else None)
    if changes or shown:
        _idle_ticks = 0
        redraw_job_panels(preview=any(change.kind == "frame" for change in changes))
    else:
        _idle_ticks += 1
    if not busy:
        return None
    return min(MAX_TICK_S, TICK_S * (1 + _idle_ticks // IDLE_TICKS_PER_STEP))


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
        elif change.kind == "checked":
            _finish_check(job, interactive)
        elif change.kind == "done":
            level, message = FINISHERS[job.task](job, interactive)
            job.meta["outcome"] = (level, message)
            _notify(level, message, interactive)
        elif change.kind in ("failed", "cancelled"):
            level, message = _outcome(job)
            if change.kind == "cancelled":
                generation.record_cancelled(job)
            if change.kind == "failed" and _resume_automatically(job) is not None:
                level, message = 'WARNING', "{:s}; resuming it once, in its folder".format(message)
            job.meta["outcome"] = (level, message)
            _notify(level, message, interactive)
        elif not interactive and change.kind in ("queued", "started", "progress"):
            _print_progress(job)
    if latest_frame and interactive:
        update_preview(latest_frame)


def _print_progress(job):
    """One line per change of what the job is doing (a terminal or a farm's log has no panel)."""
    eta = " (about {:s} left)".format(job.eta_text()) if job.eta_s is not None else ""
    line = "SCAIL-2: {:s}{:s}".format(job.phase_text(), eta)
    if line != job.meta.get("printed"):
        job.meta["printed"] = line
        print(line, flush=True)


def notify(level, message):
    """Tell the artist ``(level, message)`` from a timer: the status bar and Info editor, or the console."""
    _notify(level, message, not bpy.app.background or session.force_async)


def _notify(level, message, interactive):
    if not interactive:
        print(message if message.startswith("SCAIL-2") else "SCAIL-2: " + message, flush=True)
        return
    # An operator's report reaches the status bar and the Info editor, also from a timer
    # (which has no window of its own).
    windows = session.windows()
    try:
        with bpy.context.temp_override(**({"window": windows[0]} if windows else {})):
            bpy.ops.scail2.job_report(level=level, message=message)
    except (RuntimeError, AttributeError, TypeError):
        pass  # an ERROR report raises here too, once shown


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
    """Show ``text`` in the status bar (None: clear it); whether that changed what is shown."""
    global _status_shown
    if text == _status_shown:
        return False
    for window in session.windows():
        workspace = window.workspace
        if workspace is None:
            continue
        # The status bar text belongs to a window: a timer has none in its context.
        with bpy.context.temp_override(window=window):
            workspace.status_text_set(text)
    _status_shown = text
    return True


def redraw_job_panels(preview=False):
    """Redraw the sidebars that hold the SCAIL panels (and, for a new ``preview`` frame, image editors)."""
    for window in session.windows():
        for area in window.screen.areas:
            if area.type in {'SEQUENCE_EDITOR', 'VIEW_3D'}:
                for region in area.regions:
                    if region.type == 'UI':
                        region.tag_redraw()
            elif preview and area.type == 'IMAGE_EDITOR':
                area.tag_redraw()


# --------------------------------------------------------------------------------------------
# The add-on's lifetime.

def shutdown(timeout=session.STOP_TIMEOUT_S):
    """Stop the timer and the worker (the add-on is disabled or Blender quits)."""
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    session.close_queue(timeout)
    _set_status(None)


def _at_exit():
    session.close_queue()


def register():
    atexit.register(_at_exit)


def unregister():
    atexit.unregister(_at_exit)
    shutdown()
