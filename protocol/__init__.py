"""What the add-on and the SCAIL-2 backend say to each other. Standard library only.

Over 450 lines on purpose: `JobSpec` and the limits it is checked against are one rule set, read together;
the other records have modules of their own beside this one.

Both worlds import this one package: Blender's Python (as part of the add-on
package) and the backend environment (as a top-level package beside `backend/`).
Here: the job specifications and the rules on them (`JobSpec`, `SegmentSpec`,
`same_job`); in modules of their own, the typed records of everything else that
crosses (`records` the base, `events` the worker's events, `messages` the lines,
`manifest`, `state`, `segmentation` the job folders' files, `errors` the error codes,
`seeds` the seed rule, `checks` and `review`) and the one JSON file reader
(`json_files`). Nothing here touches bpy, torch or the file system beyond reading
JSON files, and writing a transfer's bytes (`direct_io`, for both ends of a transfer).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .downloads import DOWNLOAD_EVENTS, DownloadEvent, PlannedFile  # noqa: F401  (`backend download` lines)
from .json_files import parse_json_bytes, read_json_file, read_record  # noqa: F401  (the contract's file reader)
from .records import ProtocolError, Record  # noqa: F401  (the base of every record)
from . import errors  # noqa: F401  (the error codes: protocol.errors.BAD_INPUT, ...)
from .errors import ERRORS, ErrorCode  # noqa: F401
from .seeds import PICK_SEED, PICKED_SEED_LIMIT, SEED_LIMIT, is_seed, pick_seed  # noqa: F401
from .manifest import (  # noqa: F401
    JOB_STATUSES, MANIFEST_FORMAT, MANIFEST_FORMAT_PREFIX, MANIFEST_NAME, MODEL_FPS, Manifest, ManifestFrame,
    ManifestModel, ManifestSegment, ManifestSource,
)
from .state import STATE_NAME, JobState  # noqa: F401
from .segmentation import SEGMENT_FORMAT, SegmentationRecord, SegmentIdentity  # noqa: F401
from .events import (  # noqa: F401
    EVENT_TYPES, PROTOCOL_VERSION, Blob, Cancelled, Capabilities, Done, ErrorEvent, Event, FileData, Files,
    FrameReady, Jobs, Ok, Progress, Queued, Started, as_message, build_event, decode_event, encode_event,
    event_fields, event_type, version_mismatch,
)
from .checks import (  # noqa: F401
    CHECK_INPUTS_REQUEST, CHECK_MARKER_PREFIX, INPUT_CHECKS_EVENT, VERDICTS, CheckInputsRequest, InputCheck,
    InputCheckReport, InputChecksEvent,
)
from .review import (  # noqa: F401
    MAX_RATING, NOTE_MARKER_PREFIX, REVIEW_FORMAT, REVIEW_NAME, TAKE_STATUSES, Flag, ManifestReview, Note, Recipe,
    RecipeFile, Score, TakeReview, TakeScores,
)
from .wire import (  # noqa: F401  (framing of a connection, a shared worker's roles and codes)
    FRAMING_BINARY,
    FRAMING_LINES,
    FRAMINGS,
    MAX_LINK_NAME_BYTES,
    MAX_PAYLOAD_BYTES,
    UPLOAD_ID,
    PAYLOAD_FIELD,
    QUOTA_EXCEEDED,
    ROLE_ADMIN,
    ROLE_ARTIST,
    ROLES,
    SEQUENCE_NAME,
    SEQUENCE_TOKEN,
    FrameReader,
    is_link_name,
    is_payload,
    link_name_for,
    request_id_of,
    sequence_regex,
)

MODES = ("animate", "replace")
PRESETS = ("quality", "fast")
RESOLUTIONS = {  # tier -> (short side, long side) in pixels
    "512p": (512, 896),
    "704p": (704, 1280),
}
MAX_IDENTITIES = 6
# The model itself sets no hard limit: each view is one more latent frame in front of the reference
# (docs/model.md, "Token layout" and "RoPE": time positions 0..N-1). But each view adds a reference's
# worth of tokens to every step of every segment (1,792 at 512p, 3,600 at 704p, beside 48,832 for an
# 81-frame 512p segment), and attention grows with the square of the sequence. Eight views (one every
# 45 degrees around the character) already make a 512p segment's sequence 29% longer, its attention
# about 67% dearer; more views add cost and memory, not sides of the character.
MAX_EXTRA_VIEWS = 8
# Mask colour of identity 1..6 (8-bit RGB), in the order of the SCAIL-2 release.
PALETTE = ((0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 0))
PALETTE_NAMES = ("blue", "red", "green", "magenta", "cyan", "yellow")
SEGMENT_FRAMES = 81
SEGMENT_OVERLAP = 5
DEFAULT_SEGMENT_PROMPT = "person"  # what a mask or matte looks for unless told
# Solvers: UniPC (the official default), DPM++ (the official wan-scail2 alternative), Euler (the SAT path).
SAMPLERS = ("unipc", "dpm++", "euler")

# Limits every job is checked against (`JobSpec.validate`), so the add-on, the CLI and the worker
# refuse the same settings, in one line, before any file is read or any model is loaded.
# A job's own size: each side at most MAX_JOB_SIDE pixels. The model is trained at 512p and 704p
# (long side 896 / 1280); 2048 leaves room for 1080p and keeps a segment's tensors in the GBs
# (32000 x 32000 was OOM-killed at 19.7 GB before any message).
MAX_JOB_SIDE = 2048
# Every input frame or still is checked from its file header before it is decoded: at most
# `JobSpec.max_input_pixels` pixels (width x height). The default, 2**26 (8192 x 8192, 67 MP),
# takes 8K footage and the stills of a 61 MP camera; decoding it costs about 1.5 GB. OpenCV
# itself refuses images over 2**30 pixels, the highest limit a job may set.
DEFAULT_MAX_INPUT_PIXELS = 1 << 26
MAX_INPUT_PIXELS_LIMIT = 1 << 30
# Sampler numbers (`docs/model.md`, sections "Sampler settings" and "Matching the official code").
# Guidance g gives uncond + g (cond - uncond) at every value, as the official SAT sampler and ComfyUI:
# 1 is the conditional prediction alone (one pass), 0 the unconditional one, values between mix
# the two; Wan 2.1's recipes use 1 to 6. Shift must be positive (the flow-shifted sigmas
# s*x/(1+(s-1)*x) leave [0, 1] otherwise); the recipes use 1 to 12, and at shift 0 the Euler
# schedule divides by zero. Above 20 either one only saturates the frames.
GUIDANCE_RANGE = (0.0, 20.0)
SHIFT_RANGE = (0.1, 20.0)
# Steps: the recipes use 8 and 40; a schedule of 10**12 steps would not even fit in memory.
MAX_STEPS = 10_000
# Frame rates (the model's, and an image sequence's): outside this range a rate comes from a typo
# or broken metadata (a 90 kHz time base), not from footage.
FPS_RANGE = (0.1, 1000.0)
LORA_STRENGTH_RANGE = (-10.0, 10.0)  # merged as weight + strength * delta; 0..2 is usual


def preset_sampling(preset: str, short_side: int) -> dict[str, Any]:
    """What `preset` uses for the steps, guidance and shift a job leaves unset (`docs/model.md`,
    section "Sampler settings"): the backend samples with it and the add-on shows it.

    quality: the official defaults, 40 steps, guidance 5, shift 3 at 512p and 5 above.
    fast: the official step-distilled recipe (LightX2V LoRA), 8 steps, no guidance, shift 1.
    """
    if preset == "fast":
        return {"steps": 8, "guidance": 1.0, "shift": 1.0}
    return {"steps": 40, "guidance": 5.0, "shift": 3.0 if short_side <= 512 else 5.0}


def output_size(resolution: str, height: int | None, width: int | None,
                reference_shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of a job's frames: the explicit size when both sides are given, else the tier's size in
    the orientation of the reference (`reference_shape` is its (H, W)).

    As the official SAT sampler: landscape only when the reference is wider than tall, so a square
    reference gives portrait (896 x 512 at 512p).
    """
    if height and width:
        return height, width
    short, long = RESOLUTIONS[resolution]
    ref_h, ref_w = reference_shape
    return (short, long) if ref_w > ref_h else (long, short)


# The types JobSpec's annotations name, as isinstance checks (bool is never an int or float here).
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),),
          "list[str]": (list, str), "list[dict]": (list, dict), "list[int]": (list, int)}


def _accepts(annotation: str, value: Any) -> bool:
    for name in (part.strip() for part in annotation.split("|")):
        kinds = _TYPES[name]
        if isinstance(value, bool) and name != "bool":
            continue
        if name.startswith("list["):
            if isinstance(value, list) and all(isinstance(item, kinds[1]) and not isinstance(item, bool)
                                               for item in value):
                return True
        elif isinstance(value, kinds):
            return True
    return False


def _check_frame_range(start: int, end: int | None) -> None:
    """A job's frames [start, end) of its clip (end None: to the clip's end) must hold at least one frame."""
    if start < 0:
        raise ProtocolError(f"the frame range starts at frame 0 or later, not {start}")
    if end is not None and end <= start:
        raise ProtocolError(f"the frame range ends at frame {end}, not after its start ({start}): it holds no frame")


@dataclass
class JobSpec:
    """Everything a generation needs, as plain data (paths are strings).

    `steps`, `guidance` and `shift` left as None take the preset's values;
    `seed` -1 means "pick one and record it"; `height`/`width` of 0 mean "from
    the resolution tier and the reference's orientation".
    """

    driving: str
    reference: str
    mode: str = "animate"
    driving_mask: str | None = None
    reference_mask: str | None = None
    extra_references: list[str] = field(default_factory=list)
    extra_reference_masks: list[str] = field(default_factory=list)
    prompt: str = ""
    negative_prompt: str = ""
    preset: str = "quality"
    resolution: str = "512p"
    height: int = 0
    width: int = 0
    steps: int | None = None
    guidance: float | None = None
    shift: float | None = None
    sampler: str | None = None
    seed: int = -1
    model_fps: float = MODEL_FPS
    driving_fps: float | None = None  # only for image sequences, which carry no rate
    frame_start: int = 0
    frame_end: int | None = None  # exclusive; None = to the end of the clip
    color_match: bool = True
    loras: list[dict] = field(default_factory=list)  # {"path": str, "strength": float}
    pose_driven: bool = False
    matte: bool = False  # also write RGBA frames (MATTE_FOLDER) with the generated character's alpha
    matte_prompt: str = DEFAULT_SEGMENT_PROMPT  # what the matte keeps (SAM 3 text prompt)
    # The most pixels (width x height) an input frame or still may have, checked from its file
    # header before it is decoded; a safety limit, not part of the result.
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS

    def validate(self) -> JobSpec:
        """Raise ProtocolError on values no run could accept; return self.

        Beyond the types: every number finite and in the range a run can use (the constants
        above say why each range), paths without NUL bytes, the size within MAX_JOB_SIDE, the
        seed -1 or 64 bits, each LoRA a path and a strength.
        """
        _check_types(self)
        _check_floats(self)
        if not self.driving.strip():
            raise ProtocolError("no driving clip given")
        if not self.reference.strip():
            raise ProtocolError("no reference image given")
        for name, path in self._paths():
            _check_path(name, path)
        if self.mode not in MODES:
            raise ProtocolError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.preset not in PRESETS:
            raise ProtocolError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.resolution not in RESOLUTIONS:
            raise ProtocolError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {self.resolution!r}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ProtocolError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if (self.height or self.width) and (self.height % 32 or self.width % 32 or self.height <= 0 or self.width <= 0):
            raise ProtocolError(f"height and width must be positive multiples of 32, got {self.height}x{self.width}")
        if self.height > MAX_JOB_SIDE or self.width > MAX_JOB_SIDE:
            raise ProtocolError(f"size {self.height}x{self.width} is over the limit of {MAX_JOB_SIDE} pixels a side "
                                f"(the model is trained at 512p and 704p)")
        if not 1 <= self.max_input_pixels <= MAX_INPUT_PIXELS_LIMIT:
            raise ProtocolError(f"max_input_pixels must be 1 to {MAX_INPUT_PIXELS_LIMIT} (OpenCV's own limit), "
                                f"got {self.max_input_pixels}")
        if len(self.extra_references) != len(self.extra_reference_masks) and self.extra_reference_masks:
            raise ProtocolError("give one mask per extra reference view, or none")
        if len(self.extra_references) > MAX_EXTRA_VIEWS:
            raise ProtocolError(f"a job takes at most {MAX_EXTRA_VIEWS} extra reference views, got "
                                f"{len(self.extra_references)}")
        _check_frame_range(self.frame_start, self.frame_end)
        if self.matte and not self.matte_prompt.strip():
            raise ProtocolError("a matte needs a text prompt saying what to keep, such as 'person'")
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise ProtocolError(f"steps must be at least 1 and at most {MAX_STEPS}, got {self.steps}")
        if self.seed != PICK_SEED and not is_seed(self.seed):
            raise ProtocolError(f"seed must be -1 (pick one) or 0 to 2**64 - 1, got {self.seed}"[:200])
        for lora in self.loras:
            _check_lora(lora)
        return self

    def _paths(self) -> list[tuple[str, str | None]]:
        paths = [("driving", self.driving), ("reference", self.reference), ("driving_mask", self.driving_mask),
                 ("reference_mask", self.reference_mask)]
        paths += [("extra_references", p) for p in self.extra_references]
        paths += [("extra_reference_masks", p) for p in self.extra_reference_masks]
        return paths

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return _from_dict(cls, data)


# Settings that guard a run without changing its result: a job folder written under one limit
# is the same job under another (a rerun with a raised limit resumes it).
_SAFETY_SETTINGS = ("max_input_pixels",)


def same_job(recorded: dict[str, Any], spec: JobSpec | dict[str, Any]) -> bool:
    """Whether a job folder's recorded `job` (its manifest's) and `spec` ask for the same result.

    Both sides are read as JobSpecs, so a manifest written before a setting existed still matches
    a spec that leaves it at its default; safety limits (`max_input_pixels`) do not count. A
    recorded job that is no longer a valid JobSpec matches nothing.
    """
    try:
        old = JobSpec.from_dict(dict(recorded)).to_dict()
        new = (spec if isinstance(spec, JobSpec) else JobSpec.from_dict(dict(spec))).to_dict()
    except (ProtocolError, TypeError, ValueError):
        return False
    for name in _SAFETY_SETTINGS:
        old.pop(name), new.pop(name)
    return old == new


def _check_types(spec: Any) -> None:
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if not _accepts(f.type, value):
            raise ProtocolError(f"{f.name} must be {f.type}, got {type(value).__name__} {value!r}"[:200])


# JobSpec's float settings: (the range a run can use, what it is called in a message).
_FLOAT_RANGES = {
    "guidance": (GUIDANCE_RANGE, "guidance"),
    "shift": (SHIFT_RANGE, "shift"),
    "model_fps": (FPS_RANGE, "model frame rate"),
    "driving_fps": (FPS_RANGE, "driving frame rate"),
}


def _check_floats(spec: JobSpec) -> None:
    """Every float setting finite and in its range (None keeps the default)."""
    for name, ((low, high), what) in _FLOAT_RANGES.items():
        value = getattr(spec, name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ProtocolError(f"{what} must be a finite number, got {value}")
        if not low <= value <= high:
            raise ProtocolError(f"{what} must be {low:g} to {high:g}, got {value:g}")


def _check_path(name: str, path: str | None) -> None:
    if path is not None and "\x00" in path:
        raise ProtocolError(f"{name} holds a NUL character: {path!r}"[:200])


def _check_lora(lora: dict) -> None:
    """{"path": FILE, "strength": NUMBER}: a path, and a finite strength in LORA_STRENGTH_RANGE."""
    unknown = sorted(set(lora) - {"path", "strength"})
    if unknown:
        raise ProtocolError(f"unknown LoRA settings: {', '.join(map(str, unknown))}"[:200])
    path, strength = lora.get("path"), lora.get("strength", 1.0)
    if not isinstance(path, str) or not path.strip():
        raise ProtocolError('each LoRA must be {"path": FILE, "strength": NUMBER}')
    _check_path("a LoRA path", path)
    low, high = LORA_STRENGTH_RANGE
    if not _is_number(strength) or not math.isfinite(strength) or not low <= strength <= high:
        raise ProtocolError(f"LoRA strength must be a number from {low:g} to {high:g}, got {strength!r}: {path}"[:200])


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ProtocolError(f"unknown job settings: {', '.join(unknown)}")
    try:
        return cls(**data).validate()
    except TypeError as exc:  # a required field is missing
        raise ProtocolError(f"incomplete job: {exc}") from None


# What a submit asks for: a generation (JobSpec), or a segmentation (SegmentSpec).
TASKS = ("generate", "masks", "matte")
SEGMENT_TASKS = ("masks", "matte")
SEGMENT_RECORD = "segment.json"  # a masks or matte job folder's record, written by the backend
MATTE_FOLDER = "frames_rgba"  # a generation job's RGBA frames, beside `frames/`


@dataclass
class SegmentSpec:
    """A segmentation job, as plain data.

    task "masks": SCAIL-2 colour masks of a clip (mask_%05d.png) or, with `still`, of
    one image (mask.png), painted on the mode's background in left-to-right identity order.
    task "matte": straight-alpha RGBA copies of a clip's frames (frame_%05d.png), the alpha
    being the soft coverage of every instance of `prompt`.
    `subjects` marks subjects by hand instead of the text prompt (SAM 2): each is
    {"frame": int, "box": [x0, y0, x1, y1]} or {"frame": int, "points": [[x, y], ...],
    "labels": [1 | 0, ...]} in source pixels (frame counted from `frame_start`), with an
    optional "identity": 1..6, the palette number it is painted with (default: its position
    in the list + 1). The user who marks subjects decides who is who: no left-to-right order.
    """

    task: str
    source: str  # video file, frame folder, printf pattern, or (with `still`) an image
    prompt: str = DEFAULT_SEGMENT_PROMPT
    mode: str = "animate"
    still: bool = False
    max_identities: int = MAX_IDENTITIES
    pick: list[int] | None = None  # instance indices to keep instead of the largest
    subjects: list[dict] = field(default_factory=list)
    frame_start: int = 0
    frame_end: int | None = None  # exclusive; None = to the end of the clip

    def validate(self) -> SegmentSpec:
        """Raise ProtocolError on values no run could accept; return self."""
        _check_types(self)
        if not self.source.strip():
            raise ProtocolError("no source clip or image given")
        _check_path("source", self.source)
        if self.task not in SEGMENT_TASKS:
            raise ProtocolError(f"task must be one of {', '.join(SEGMENT_TASKS)}, got {self.task!r}")
        if self.mode not in MODES:
            raise ProtocolError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.prompt.strip() and not self.subjects:
            raise ProtocolError("give a text prompt (such as 'person') or mark the subjects")
        if self.still and self.task == "matte":
            raise ProtocolError("a matte is made of a clip's frames, not of a still")
        if self.task == "masks":  # a matte keeps every instance it finds
            asked = len(self.pick) if self.pick is not None else len(self.subjects) or self.max_identities
            if not 1 <= asked <= MAX_IDENTITIES:
                raise ProtocolError(f"SCAIL-2 binds 1 to {MAX_IDENTITIES} identities, {asked} were asked for")
        if self.pick is not None and any(index < 0 for index in self.pick):
            raise ProtocolError(f"picked instance indices count from 0, got {self.pick}"[:200])
        for subject in self.subjects:
            _check_subject(subject)
        numbers = [subject.get("identity", k + 1) for k, subject in enumerate(self.subjects)]
        if len(set(numbers)) != len(numbers):
            raise ProtocolError(f"two marked subjects share an identity: {numbers}")
        _check_frame_range(self.frame_start, self.frame_end)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentSpec:
        return _from_dict(cls, data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _check_subject(subject: dict) -> None:
    identity = subject.get("identity", 1)
    if not isinstance(identity, int) or isinstance(identity, bool) or not 1 <= identity <= MAX_IDENTITIES:
        raise ProtocolError(f"a marked subject's identity is 1 to {MAX_IDENTITIES}, got {identity!r}")
    if not isinstance(subject.get("frame", 0), int) or subject.get("frame", 0) < 0:
        raise ProtocolError(f"a marked subject's frame must be a frame index, got {subject.get('frame')!r}")
    box, points = subject.get("box"), subject.get("points")
    if (box is None) == (points is None):
        raise ProtocolError("mark each subject with either a box or points")
    if box is not None:
        if not (isinstance(box, list) and len(box) == 4 and all(map(_is_finite, box))
                and box[2] > box[0] and box[3] > box[1]):
            raise ProtocolError(f"a subject box is [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {box!r}"[:200])
        return
    labels = subject.get("labels", [1] * len(points) if isinstance(points, list) else None)
    if not (isinstance(points, list) and points
            and all(isinstance(p, list) and len(p) == 2 and all(map(_is_finite, p)) for p in points)):
        raise ProtocolError(f"subject points are [[x, y], ...], got {points!r}"[:200])
    if not (isinstance(labels, list) and len(labels) == len(points) and all(v in (0, 1) for v in labels)):
        raise ProtocolError("subject point labels are 1 (on the subject) or 0 (not), one per point")


def spec_from_submit(message: dict[str, Any]) -> JobSpec | SegmentSpec:
    """The job a submit message carries: {"task": "generate" (default) | "masks" | "matte", "job": {...}}."""
    task = message.get("task", "generate")
    if task not in TASKS:
        raise ProtocolError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    data = message.get("job")
    if not isinstance(data, dict):
        raise ProtocolError("submit needs 'job': a job specification object")
    if task == "generate":
        return JobSpec.from_dict(data)
    if data.get("task", task) != task:
        raise ProtocolError(f"the submit's task {task!r} and its job's task {data.get('task')!r} differ")
    return SegmentSpec.from_dict({**data, "task": task})


# Connections (`capabilities.mode`): "paths" (the worker reads and writes the client's own paths: a
# local worker) or "transfer" (the client names no worker paths: inputs are uploaded blobs, named
# in a job by `blob_ref`, and results are fetched from the job's folder on the worker).
CONNECTION_MODES = ("paths", "transfer")
BLOB_PREFIX = "blob:"  # a job's input in transfer mode: "blob:<sha256 hex>/<file name>"
# A folder (an image sequence) in transfer mode: "blobtree:<sha256 of its listing>/<folder name>", the
# listing being an uploaded blob of JSON {"files": [{"name": FILE NAME, "sha256": HEX}, ...]}.
BLOB_TREE_PREFIX = "blobtree:"


def blob_ref(sha256: str, name: str) -> str:
    """How a job names an uploaded file: its SHA-256 and the name (extension) it had on the client."""
    return f"{BLOB_PREFIX}{sha256}/{name}"


def blob_tree_ref(listing_sha256: str, name: str) -> str:
    """How a job names an uploaded folder: the SHA-256 of its listing blob and the folder's name."""
    return f"{BLOB_TREE_PREFIX}{listing_sha256}/{name}"


def parse_blob_ref(text: Any, prefix: str = BLOB_PREFIX) -> tuple[str, str] | None:
    """(sha256, name) of a blob reference (`prefix` BLOB_TREE_PREFIX: of a folder's); None when `text` is not one."""
    if not isinstance(text, str) or not text.startswith(prefix):
        return None
    sha, sep, name = text[len(prefix):].partition("/")
    return (sha, name) if sep else None


from .messages import REQUESTS, decode_message, encode_message, error_event, load_manifest  # noqa: E402,F401
