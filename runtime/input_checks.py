# SPDX-License-Identifier: GPL-3.0-or-later
"""Check Inputs in Blender: the worker checks the scene's job, the panel shows the checklist, markers point at frames.

:func:`request` builds the scene's job as Generate would (``generation.build_job``) and asks the worker to
check it (``JobQueue.check_inputs``): Blender never waits, the timer (``runtime.follow``) hands the answer
to :func:`finish`. That stores the report in the scene (``Scene.scail2_sources.input_checks``, so it is
saved with the file), replaces the scene's ``check: ...`` timeline markers with the frames the checks name
(in scene frames, through the export's frame mapping) and, when Generate asked for the check, gives the job
back to queue, or holds it for *Generate Anyway* when a check fails (:func:`held_job`).
"""

__all__ = (
    "clear_markers",
    "finish",
    "held_job",
    "peek_held",
    "place_markers",
    "request",
    "stored_report",
)

import json

import bpy

from .. import protocol
from .. import sources
from ..core import input_checks
from ..props import input_settings
from ..sources.exports import inputs_folder
from . import generation, session

# Jobs Generate holds while the artist decides (Generate Anyway / Cancel), by scene name.
_held = {}
# The report last parsed from a scene's stored JSON: (text, report); panels draw often, reports change rarely.
_parsed = [None, None]


def request(context, then_generate=False):
    """Ask the worker to check the scene's job; the `CheckRun` (GenerateError when there is no job to check).

    ``then_generate``: queue the job once the checks answer (or hold it, when one fails).
    """
    scene = context.scene
    job = generation.build_job(context)
    src = input_settings.get_settings(scene)
    src.input_checks_state = "Checking the inputs\u2026"
    _held.pop(scene.name, None)
    meta = {"scene": scene.name, "job": job if then_generate else None, "meta": job.meta}
    return session.get_queue(context).check_inputs(job.spec, meta=meta)


def stored_report(scene):
    """The scene's latest report, or None (none yet, or unreadable)."""
    text = input_settings.get_settings(scene).input_checks
    if not text:
        return None
    if _parsed[0] != text:
        try:
            report = input_checks.parse_report(json.loads(text))
        except (ValueError, protocol.ProtocolError):
            report = None
        _parsed[:] = [text, report]
    return _parsed[1]


def _driving_clip(context, scene):
    try:
        driving = sources.load_inputs(inputs_folder(context, scene)).get("driving")
    except sources.ExportError:
        return None
    return sources.ExportedClip.from_dict(driving) if driving else None


def _marker_scenes(meta):
    scene, seq_scene = session.job_scenes(meta)
    return [s for s in dict.fromkeys((seq_scene, scene)) if s is not None]


def clear_markers(scenes):
    """Remove the ``check: ...`` markers of ``scenes``; how many were removed."""
    removed = 0
    for scene in scenes:
        for marker in [m for m in scene.timeline_markers if m.name.startswith(protocol.CHECK_MARKER_PREFIX)]:
            scene.timeline_markers.remove(marker)
            removed += 1
    return removed


def place_markers(scene, report, clip):
    """Replace ``scene``'s check markers by those of ``report`` (frames through ``clip``'s mapping); their count."""
    clear_markers([scene])
    placed = input_checks.marker_frames(report, clip)
    for name, frame in placed:
        scene.timeline_markers.new(name, frame=frame)
    return len(placed)


def peek_held(scene):
    """``(JobRequest, summary)`` held for ``scene``, left held (the question is being asked), or None."""
    return _held.get(scene.name)


def held_job(scene):
    """``(JobRequest, summary)`` Generate holds for ``scene`` until the artist decides, or None; taken once."""
    return _held.pop(scene.name, None)


def finish(run, interactive):
    """A check's answer: stored, shown as markers. ``(level, message, JobRequest to queue or None)``."""
    scene = bpy.data.scenes.get(run.meta.get("scene", ""))
    job = run.meta.get("job")
    if scene is None:
        return 'WARNING', "The input checks answered, but their scene is no longer open", None
    src = input_settings.get_settings(scene)
    if run.status == "failed":
        src.input_checks_state = "The inputs could not be checked: " + run.error
        # The job would meet the same problem; queued, the worker reports it in the job's own words.
        return 'WARNING', src.input_checks_state, job
    report = run.report
    src.input_checks = json.dumps(report.to_dict())
    src.input_checks_state = ""
    clip = _driving_clip(bpy.context, scene)
    placed = 0
    if clip is not None:
        for target in _marker_scenes(run.meta.get("meta") or {"scene": scene.name}):
            placed = place_markers(target, report, clip)
    summary = input_checks.failed_summary(report)
    counts = {v: sum(1 for c in report.checks if c.verdict == v) for v in protocol.VERDICTS}
    line = "Input checks: {:d} failed, {:d} warnings, {:d} ok ({:d} markers)".format(
        counts["fail"], counts["warn"], counts["ok"], placed)
    if job is None:
        return ('WARNING' if report.verdict != "ok" else 'INFO'), line, None
    job.meta.setdefault("ui", {})["input_checks"] = report.verdict
    if summary and interactive:
        _held[scene.name] = (job, summary)
        return 'WARNING', summary, None
    return ('WARNING' if summary else 'INFO'), (summary or line), job
