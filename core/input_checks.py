# SPDX-License-Identifier: GPL-3.0-or-later
"""The input checks as Blender shows them: a request's state, the checklist's rows and the timeline markers.

No ``bpy``. The worker runs the checks (``check_inputs`` request, ``input_checks`` event); `CheckRun` is one
such request as the session's queue follows it. A report's frames are job frames; `marker_frames` turns them
into scene frames through the report's ``source_frames`` (job frame -> driving clip frame) and the export's
frame mapping (:class:`core.inputs.ExportedClip`), one marker at the start of each run of named frames.
"""

__all__ = (
    "CHECK_REQUEST_PREFIX",
    "CheckRun",
    "VERDICT_ICONS",
    "checklist_rows",
    "failed_summary",
    "marker_frames",
    "parse_report",
)

from dataclasses import dataclass, field

from .. import protocol

CHECK_REQUEST_PREFIX = "check-"  # request ids of check_inputs requests
VERDICT_ICONS = {"ok": 'CHECKMARK', "warn": 'ERROR', "fail": 'CANCEL'}
# Markers of one check at most: a check naming every other frame must not bury the timeline.
MAX_MARKERS_PER_CHECK = 12


@dataclass
class CheckRun:
    """One check_inputs request: ``status`` pending, done or failed; the report once done."""

    key: str
    spec: dict
    meta: dict = field(default_factory=dict)  # what to do with the answer (the scene, a job to queue after)
    status: str = "pending"
    report: object = None  # protocol.InputCheckReport
    error: str = ""

    @property
    def pending(self):
        return self.status == "pending"

    def on_message(self, message):
        """The worker's answer: ``input_checks`` (the report) or ``error`` (one line)."""
        if message.get("type") == protocol.INPUT_CHECKS_EVENT:
            try:
                self.report = parse_report(message.get("report"))
                self.status = "done"
                return
            except protocol.ProtocolError as ex:
                self.error = str(ex)
        else:
            self.error = str(message.get("message") or message.get("code") or "the checks failed")
        self.status = "failed"

    def fail(self, line):
        if self.pending:
            self.status, self.error = "failed", line


def parse_report(data):
    """A report as JSON data (an event's, a manifest's ``input_checks``, a scene's stored one); ProtocolError."""
    return protocol.InputCheckReport.from_dict(data)


def checklist_rows(report):
    """``[(icon, text)]``: one row per check, its verdict's icon, its number and its sentence."""
    rows = []
    for check in report.checks:
        number = ""
        if check.value is not None and check.verdict != "ok":
            number = "{:g} {:s}: ".format(round(check.value, 3), check.unit).replace(" :", ":")
        rows.append((VERDICT_ICONS[check.verdict], number + check.message))
    return rows


def failed_summary(report):
    """One line naming the failed checks and the first one's sentence ("" when none fails)."""
    failed = [c for c in report.checks if c.verdict == "fail"]
    if not failed:
        return ""
    names = ", ".join(dict.fromkeys(c.name for c in failed))
    return "Input checks failed ({:s}): {:s}".format(names, failed[0].message)


def _runs(frames):
    starts = []
    previous = None
    for frame in sorted(set(frames)):
        if previous is None or frame != previous + 1:
            starts.append(frame)
        previous = frame
    return starts


def marker_frames(report, clip):
    """``[(marker name, scene frame)]`` for the checks that warn or fail: the first frame of each run of the
    frames they name, in scene frames (``clip``: the exported driving clip, an ExportedClip)."""
    out = []
    seen = set()
    for check in report.checks:
        if check.verdict == "ok":
            continue
        name = protocol.CHECK_MARKER_PREFIX + check.name
        for job_frame in _runs(check.frames)[:MAX_MARKERS_PER_CHECK]:
            if not 0 <= job_frame < len(report.source_frames):
                continue
            offset = report.source_frames[job_frame] - clip.frame_start
            if 0 <= offset < len(clip.scene_frames):
                scene_frame = int(clip.scene_frames[offset])
                if (name, scene_frame) not in seen:
                    seen.add((name, scene_frame))
                    out.append((name, scene_frame))
    return out
