"""The whole checklist of one job's inputs, as an `InputCheckReport`, and how it is printed.

    1. gather: the job's frames, masks and references, decoded once at the analysis size (`material`)
    2. subjects: identities against the reference, sizes, missing frames, overlaps, reference framing
    3. footage: shot cuts, camera motion, blur (over the frame and over the subjects' box)
    4. timing: length and segments, last segment, frame rate, sequence gaps

`check_inputs(spec)` prepares the inputs itself (the cheap file checks first: a file that cannot be
read is an `InputError`, one line, as for `generate`); `run_checks(inputs)` takes inputs already
prepared, as `generate` has them. Nothing here refuses a job: `refusal` says whether a report fails
(a check fails; or warns too, when strict). `check-inputs` exits 1 then; `generate` refuses only with
--strict, and Blender asks once (Generate Anyway / Cancel).
"""

from __future__ import annotations

import time

from protocol import InputCheckReport, JobSpec

from ..pipeline.inputs import InputError, PreparedInputs, prepare_inputs
from ..pipeline.probe import MediaError
from . import footage, subjects, timing
from .material import gather

ICONS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def run_checks(inputs: PreparedInputs, strict: bool = False) -> InputCheckReport:
    """Every check of prepared inputs; InputError when a frame cannot be decoded."""
    started = time.perf_counter()
    try:
        material = gather(inputs)
    except MediaError as exc:
        raise InputError(str(exc)) from None
    frames = len(material.frames)
    checks = []
    boxes = None
    if material.identities is not None:
        found = subjects.tracks(material.identities)
        checks += subjects.identities(material, found)
        checks += subjects.sizes(material, found)
        checks += subjects.overlaps(material.identities, found)
        checks += subjects.framing(material, found)
        boxes = subjects.subject_boxes(found, frames)
    else:
        checks += subjects.identities(material, {})
    cut_frames = footage.find_cuts(material)
    checks += footage.cuts(material, cut_frames)
    checks += footage.camera(material, cut_frames)
    checks += footage.blur(material, boxes, cut_frames)
    checks += timing.length(inputs)
    checks += timing.frame_rate(inputs)
    return InputCheckReport(checks=checks, seconds=round(time.perf_counter() - started, 3), strict=strict,
                            source_frames=list(material.source_frames))


def check_inputs(spec: JobSpec, strict: bool = False) -> InputCheckReport:
    """Prepare `spec`'s inputs (InputError on the first that cannot be used) and run every check."""
    return run_checks(prepare_inputs(spec), strict)


def refusal(report: InputCheckReport) -> str | None:
    """The one line that stops a job for this report (its failed checks, and warnings when strict), or None."""
    stopping = report.failed()
    if not stopping:
        return None
    names = ", ".join(dict.fromkeys(c.name for c in stopping))
    first = stopping[0]
    what = "fail or warn" if report.strict else "fail"
    return f"the input checks {what} ({names}): {first.message}"


def report_lines(report: InputCheckReport) -> list[str]:
    """The checklist as lines for a terminal: verdict, name, identity, the sentence."""
    lines = []
    for c in report.checks:
        who = f" [{c.identity}]" if c.identity is not None else ""
        lines.append(f"{ICONS[c.verdict]}  {c.name}{who}: {c.message}")
    counts = {v: sum(1 for c in report.checks if c.verdict == v) for v in ICONS}
    lines.append(f"{report.verdict.upper()}: {counts['fail']} failed, {counts['warn']} warning{'s' if counts['warn'] != 1 else ''}, {counts['ok']} ok "
                 f"({report.seconds:.1f} s)")
    return lines
