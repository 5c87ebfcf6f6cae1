"""A generation job folder's `manifest.json` as a typed record, written by the backend, read by the add-on.

`backend/pipeline/generate.py` builds a `Manifest` and writes `to_dict()`; the add-on
(`core.results.load_result`), the worker and the job folder read it back with
`read_record(path, Manifest)`. A field the record does not know is refused on both sides.
Fields after `frames` are optional so that a manifest written by an older backend (or a hand-made
one) still reads; `input_checks` and `review` are filled by the input checks and the take review.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .checks import InputCheckReport
from .records import ProtocolError, Record
from .review import ManifestReview

MANIFEST_FORMAT = "scail2-job/1"  # a job folder's manifest.json, written by the backend
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT_PREFIX = MANIFEST_FORMAT.rpartition("/")[0] + "/"  # any version of the job manifest
MODEL_FPS = 16.0
JOB_STATUSES = ("new", "queued", "running", "done", "failed", "cancelled")
JobStatus = Literal["new", "queued", "running", "done", "failed", "cancelled"]


@dataclass(frozen=True)
class ManifestFrame(Record):
    """One generated frame: its file (relative to the job folder) and the driving clip's moment it shows."""

    WHAT = "manifest frame"
    file: str
    source_time: Any  # seconds from the driving clip's first frame; checked below (a clearer line than a type)
    index: int | None = None
    source_frame: int | None = None

    def check(self) -> None:
        if not self.file:
            raise ProtocolError("The manifest has a frame without a file")
        value = self.source_time
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError(f"The manifest's source_time of {self.file} is not a number: {value!r}"[:200])


@dataclass(frozen=True)
class ManifestSegment(Record):
    """Model-rate frames [start, end) of one segment; its first `history` frames come from the one before."""

    WHAT = "manifest segment"
    index: int
    start: int
    end: int
    history: int


@dataclass(frozen=True)
class ManifestModel(Record):
    """The model the job ran with: its label, files, LoRAs and how the transformer stores its weights."""

    WHAT = "manifest model"
    label: str = ""
    noise_only: bool = False
    files: Any = None
    loras: list[str] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestSource(Record):
    """The driving clip the frames' `source_time` counts from."""

    WHAT = "manifest source"
    path: str = ""
    fps: float | None = None  # a variable-rate clip's average rate
    frame_count: int = 0
    variable_rate: bool = False  # frames timed by their own timestamps (backend/pipeline/clip_timing.py)


@dataclass(frozen=True)
class Manifest(Record):
    """`manifest.json` of a generation job folder."""

    WHAT = "manifest"
    format: str
    frames: list[ManifestFrame]
    id: str = ""
    status: JobStatus | Literal[""] = ""
    job: dict[str, Any] = field(default_factory=dict)  # the JobSpec, as a dict
    seed: int | None = None
    model: ManifestModel | None = None
    sampler: dict[str, Any] = field(default_factory=dict)
    numerics: dict[str, str] = field(default_factory=dict)
    size: list[int] = field(default_factory=list)  # [height, width]
    model_fps: float = MODEL_FPS
    source: ManifestSource | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # input path -> SHA-256
    segments: list[ManifestSegment] = field(default_factory=list)
    preview: str | None = None
    matte: str | None = None  # the folder of RGBA frames, when the job made a matte
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    warnings: list[str] = field(default_factory=list)
    input_checks: InputCheckReport | None = None
    review: ManifestReview | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """The manifest, after its format: a file that is no job manifest at all is said so, not field by field."""
        if not isinstance(data, dict):
            raise ProtocolError("not a job manifest")
        fmt = data.get("format")
        if not (isinstance(fmt, str) and fmt.startswith(MANIFEST_FORMAT_PREFIX)):
            raise ProtocolError(f"not a SCAIL-2 job manifest (format {fmt!r})"[:200])
        return super().from_dict(data)

    def check(self) -> None:
        if not self.frames:
            raise ProtocolError("The manifest lists no frames")
        if self.model_fps <= 0:
            raise ProtocolError(f"The manifest's model_fps must be positive, got {self.model_fps!r}")
        if self.source is not None and self.source.fps is not None and self.source.fps <= 0:
            raise ProtocolError(f"The manifest's source fps must be positive, got {self.source.fps!r}")
