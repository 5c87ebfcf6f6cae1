"""A job's progress in words, said the same way at both ends: the add-on's Queue panel (its own jobs and the
worker's list) and `python -m backend jobs` on the worker's machine."""

from __future__ import annotations

from typing import Any

PHASE_NAMES = {
    "load": "Loading the model",
    "encode": "Encoding the inputs",
    "sample": "Generating",
    "decode": "Decoding frames",
    "segment": "Segmenting",
    "write": "Writing frames",
    "matte": "Cutting out the characters",  # a generation's matte: stages segment, write
}


def progress_text(phase: str, segment: int = 0, segments: int = 0, step: int = 0, steps: int = 0, stage: str = "",
                  frame: int = 0, frames: int = 0) -> str:
    """"Generating: segment 1/2, step 3/8"; "Segmenting: frame 2/4" (a segmentation's, or a matte's, `stage`)."""
    parts = []
    if stage in ("segment", "write") and frames:
        parts.append(f"frame {min(frame, frames):d}/{frames:d}")
    elif segments and segment:
        parts.append(f"segment {segment:d}/{segments:d}")
    if phase == "sample" and steps:
        parts.append(f"step {step:d}/{steps:d}")
    text = PHASE_NAMES.get(phase, "Starting")
    return text + ": " + ", ".join(parts) if parts else text


def progress_fields_text(fields: dict[str, Any]) -> str:
    """`progress_text` of a progress event's fields (or a running job's ``progress`` in a `list_jobs` answer)."""
    phase = fields.get("phase") or ""
    return progress_text(phase, fields.get("segment") or 0, fields.get("segments") or 0, fields.get("step") or 0,
                         fields.get("steps") or 0, fields.get("stage") or phase, fields.get("frame") or 0,
                         fields.get("frames") or 0)
