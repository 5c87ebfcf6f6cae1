"""A masks or matte job folder's `segment.json`, written by the backend, read by the add-on.

`backend/segmentation/run.py` builds a `SegmentationRecord` and writes `to_dict()`;
`core.segmentation.load_record` reads it back with `from_dict`. Fields after `status` are optional
so a record written by an older backend still reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .records import Record

SEGMENT_FORMAT = "scail2-segment/1"


@dataclass(frozen=True)
class SegmentIdentity(Record):
    """One identity of a masks job: its number (0-based), palette colour, the instance it is, and that
    instance's box on the first frame it was seen ([x0, y0, x1, y1], None where it was not)."""

    WHAT = "segment identity"
    identity: int
    colour: list[int]
    instance: int
    box: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class SegmentationRecord(Record):
    WHAT = "segmentation record"
    task: str  # protocol.SEGMENT_TASKS
    status: str  # "done" once every file is written
    format: str = SEGMENT_FORMAT
    job: dict[str, Any] = field(default_factory=dict)  # the SegmentSpec, as a dict
    kind: str = ""  # "video" or "image"
    source: str = ""
    prompt: str = ""
    mode: str = ""
    model: str = ""
    noise_only: bool = False
    frame_start: int = 0
    frame_count: int = 0
    fps: float | None = None
    width: int = 0
    height: int = 0
    instances_found: int = 0
    identities: list[SegmentIdentity] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # relative to the folder, one per frame
    warnings: list[str] = field(default_factory=list)
