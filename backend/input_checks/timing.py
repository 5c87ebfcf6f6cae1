"""Length and timing: frames, the segments the job takes, the last segment, the frame rate, sequence gaps.

The segments are `pipeline.segments.plan_segments` with protocol's SEGMENT_FRAMES / SEGMENT_OVERLAP,
exactly what the job will run. A video's frame timestamps are read with PyAV from the packets alone
(demuxing, no decoding); an image sequence's gaps come from its frame numbers, which the media reader
closes up (a render with a frame step plays at the given rate).
"""

from __future__ import annotations

import os
import re

import numpy as np

from protocol import SEGMENT_FRAMES, SEGMENT_OVERLAP, InputCheck

from ..pipeline.inputs import PreparedInputs
from ..pipeline.segments import plan_segments
from .checklist import check, frames_text, passed
from .thresholds import LIMITS

_NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last number in a file name


def length(inputs: PreparedInputs) -> list[InputCheck]:
    """How many frames the job makes and in how many segments; a very short last segment."""
    frames = len(inputs.frame_times)
    fps = inputs.spec.model_fps
    segments = plan_segments(frames, SEGMENT_FRAMES, SEGMENT_OVERLAP)
    counted = f"{frames} frame{'s' if frames != 1 else ''} at {fps:g} fps ({frames / fps:.1f} s)"
    out = [check("length", "length", frames, f"{counted}: a still, not an animation (the VAE packs 4 frames into "
                 "one after the first); if the driving slot holds the reference by mistake, give it the clip."
                 if LIMITS["length"].verdict(frames) != "ok" else f"{counted}: {len(segments)} segment"
                 f"{'s' if len(segments) > 1 else ''} of up to {SEGMENT_FRAMES} frames.")]
    if len(segments) > 1:
        last = segments[-1]
        new = len(last.new_frames)
        full_end = segments[-2].end
        out.append(check("last_segment", "last_segment", new,
                         f"The last segment makes {new} new frames (job frames {last.start + last.history}-"
                         f"{last.end - 1}, past the last full segment): "
                         + ("a whole model pass for a few frames; trim them or extend the range."
                            if new < 12 else "fine."), list(range(full_end, frames)) if new < 12 else []))
    return out


def _packet_times(path: str) -> np.ndarray | None:
    """A video's frame timestamps in seconds (sorted), from its packets; None when they cannot be read."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None]
    except (av.error.FFmpegError, IndexError, OSError):
        return None
    return np.sort(np.array(times)) if len(times) >= 3 else None


def frame_rate(inputs: PreparedInputs) -> list[InputCheck]:
    """A variable frame rate (videos), and footage slower than the model's rate."""
    driving = inputs.driving
    out = []
    if driving.kind == "video":
        times = _packet_times(driving.path)
        if times is not None:
            steps = np.diff(times)
            steps = steps[steps > 0]
            median = float(np.median(steps)) if len(steps) else 0.0
            spread = float(steps.max() / median) if median > 0 else 1.0
            uneven = np.flatnonzero(np.abs(steps / median - 1) > 0.5) + 1 if median > 0 else []
            job = _job_frames_of(inputs, [int(i) for i in uneven])
            verdict_check = check("frame_rate", "frame_rate", spread,
                                  f"Variable frame rate: frame steps vary up to {spread:.1f}x the usual one (at "
                                  f"{frames_text(job) if job else 'frames outside the job'}): the resampled motion "
                                  "stutters; convert the clip to a constant rate first." if spread > 1.5 else
                                  f"Constant frame rate ({driving.fps:g} fps).", job if spread > 1.5 else [])
            out.append(verdict_check)
    ratio = driving.fps / inputs.spec.model_fps
    out.append(check("source_rate", "source_rate", ratio,
                     f"The footage is {driving.fps:g} fps, below the model's {inputs.spec.model_fps:g}: frames are "
                     "shown twice and the motion stutters; use footage shot at the model's rate or faster."
                     if ratio < 1 else f"The footage is {driving.fps:g} fps, resampled to the model's "
                     f"{inputs.spec.model_fps:g}."))
    if driving.kind == "sequence":
        out.append(sequence_gaps(inputs))
    return out


def _job_frames_of(inputs: PreparedInputs, source: list[int]) -> list[int]:
    """The job frames showing (or first after) each source frame in `source`."""
    shown = [src for src, _t in inputs.frame_times]
    out = []
    for frame in source:
        later = [k for k, src in enumerate(shown) if src >= frame]
        if later and (not out or out[-1] != later[0]):
            out.append(later[0])
    return out


def sequence_gaps(inputs: PreparedInputs) -> InputCheck:
    """Missing numbers between an image sequence's frame files."""
    numbers = []
    for path in inputs.driving.files:
        match = _NUMBER.search(os.path.basename(path))
        if match is None:
            return passed("sequence_gaps", "The sequence's files are not numbered: no gaps to check.")
        numbers.append(int(match.group(1)))
    steps = np.diff(numbers)
    usual = int(np.median(steps)) if len(steps) else 1
    gaps = [(i + 1, int(step // max(usual, 1)) - 1) for i, step in enumerate(steps) if usual > 0 and step > usual]
    missing = sum(count for _i, count in gaps)
    if not missing:
        return passed("sequence_gaps", f"{len(numbers)} numbered frame{'s' if len(numbers) != 1 else ''} without "
                      "gaps.", 0.0, "missing frames")
    job = _job_frames_of(inputs, [i for i, _n in gaps])
    first = numbers[gaps[0][0] - 1]
    return check("sequence_gaps", "sequence_gaps", missing,
                 f"{missing} frame{'s are' if missing > 1 else ' is'} missing from the sequence (the first after file "
                 f"number {first}), at {frames_text(job) if job else 'frames outside the job'}: the motion jumps "
                 "there; render or restore the missing frames.", job)
