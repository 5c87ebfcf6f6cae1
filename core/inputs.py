# SPDX-License-Identifier: GPL-3.0-or-later
"""The inputs record: what an export hands to a job, files on disk plus their timing. Standard library only.

No ``bpy``: the job side and tests use it without Blender.

Timing vocabulary
-----------------
*Exported frames* are the frames at ``path`` that a job reads:
``frame_start <= i < frame_end`` in the file's (or folder's) own frame order,
which is what :class:`protocol.JobSpec` calls ``frame_start`` / ``frame_end``.
For each of them ``scene_frames`` names the scene frame that shows it, and for
each scene frame of the exported range ``shown`` names the exported frame it
shows (``shown[0]`` is scene frame ``scene_frame_start``). A movie at 16 fps
in a 24 fps scene shows some footage frames on two scene frames; footage at 30
fps in a 24 fps scene never shows some frames: they are exported all the same
(a job needs a gapless range) and get the scene frame nearest to them.
"""

__all__ = (
    "BACKGROUND_NAMES",
    "BLACK",
    "DRIVING",
    "ExportError",
    "ExportedClip",
    "ExportedStill",
    "INPUTS_FORMAT",
    "INPUTS_NAME",
    "MAX_IDENTITIES",
    "MODES",
    "PALETTE",
    "PALETTE_NAMES",
    "REFERENCE",
    "WHITE",
    "backgrounds",
    "identity_check",
    "identity_names",
    "job_fields",
    "load_inputs",
    "save_inputs",
    "stale_inputs",
)

import json
import os
from dataclasses import asdict, dataclass, field, fields

from .. import protocol
from ..protocol import MAX_IDENTITIES, MODES, PALETTE, PALETTE_NAMES
from .util import write_json_atomic

BLACK = (0, 0, 0)
WHITE = (255, 255, 255)
BACKGROUND_NAMES = {BLACK: "black", WHITE: "white"}
# Which mask a background is for.
DRIVING = "driving"
REFERENCE = "reference"

# The file an export session writes beside its inputs, for the job that uses them.
INPUTS_NAME = "inputs.json"
INPUTS_FORMAT = "scail2-inputs/1"
# The key of inputs.json recording what each input was exported from.
MADE_FROM = "made_from"


class ExportError(Exception):
    """An export that cannot be done, as one line for the artist."""


def backgrounds(mode):
    """``(driving-mask background, reference-mask background)`` for a mode, as RGB.

    Animation takes the background from the reference: the driving mask hides
    the footage's (black) and the reference mask shows the reference's
    (white). Replacement does the opposite.
    """
    if mode not in MODES:
        raise ExportError("mode must be one of {:s}, got {!r}".format(", ".join(MODES), mode))
    return (BLACK, WHITE) if mode == "animate" else (WHITE, BLACK)


def identity_names(identities):
    """``[1, 3]`` -> ``"1 (blue), 3 (magenta)"``."""
    return ", ".join("{:d} ({:s})".format(i, PALETTE_NAMES[i - 1]) for i in sorted(identities))


@dataclass
class ExportedClip:
    """A clip written (or found) for a job, and which scene frames its frames stand for.

    ``kind``: ``'movie'`` (a video file read directly), ``'sequence'`` (a
    folder of numbered images). ``fps``: the rate of the frames at ``path`` as
    the job must read them (a movie's own rate; for a sequence, the rate to
    give the job as ``driving_fps``). ``frame_count``: frames at ``path`` in
    all; a job reads ``frame_start <= i < frame_end`` of them.
    """

    path: str
    kind: str
    fps: float
    frame_start: int
    frame_end: int
    frame_count: int
    scene_frames: list  # per exported frame: the scene frame showing it
    scene_frame_start: int  # first scene frame of the exported range
    shown: list  # per scene frame from scene_frame_start: the exported frame it shows (0-based)
    scene_fps: float
    files: list = field(default_factory=list)  # sequences: every frame file at `path`, in order
    baked: bool = False  # rendered by Blender (True) or read straight from the source (False)
    source: str = ""  # what it was made from, e.g. 'strip "dance.mp4"' or 'camera "Camera"'
    strip: str = ""  # the strip it was read from directly, if any
    note: str = ""  # one line: how it was made, and why
    identities: list = field(default_factory=list)  # masks: identities (1..6) found in it

    @property
    def count(self):
        """Number of exported frames."""
        return self.frame_end - self.frame_start

    @property
    def scene_frame_end(self):
        """The scene frame after the exported range."""
        return self.scene_frame_start + len(self.shown)

    def exported_at(self, scene_frame):
        """The exported frame (0-based) shown at ``scene_frame``, or None outside the range."""
        offset = scene_frame - self.scene_frame_start
        if 0 <= offset < len(self.shown):
            return self.shown[offset]
        return None

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class ExportedStill:
    """A reference image for a job, with its colour mask when there is one."""

    path: str
    mask_path: str = ""  # colour mask (palette on the reference background); "" = none
    has_alpha: bool = False  # the image's alpha is its mask when there is no mask file
    source: str = ""
    note: str = ""
    identities: list = field(default_factory=list)  # identities (1..6) its mask binds

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def identity_check(driving_identities, reference_identities, extra_identities=()):
    """``(ok, line)``: does every identity moving in the driving mask have a character?

    ``driving_identities``: identities (1..6) found in the driving mask;
    ``reference_identities`` / ``extra_identities``: those the reference mask and
    the extra reference views bind. One line for the artist either way.
    """
    driving = set(driving_identities)
    bound = set(reference_identities)
    for views in extra_identities:
        bound |= set(views)
    if not driving:
        return True, "The driving mask shows no identity: nothing will be animated"
    missing = driving - bound
    if len(missing) == 1:
        return False, ("Identity {:s} moves in the driving mask but is in no reference mask: "
                       "it is not bound to a character").format(identity_names(missing))
    if missing:
        return False, ("Identities {:s} move in the driving mask but are in no reference mask: "
                       "they are not bound to a character").format(identity_names(missing))
    return True, "Every identity of the driving mask ({:s}) is in the reference mask".format(identity_names(driving))


# --------------------------------------------------------------------------------------------
# inputs.json: what one export session wrote, for the job that uses it.

def load_inputs(folder):
    """The inputs recorded in ``folder`` (an empty record when there are none yet)."""
    path = os.path.join(folder, INPUTS_NAME)
    if not os.path.lexists(path):
        return {"format": INPUTS_FORMAT}
    try:
        data = protocol.read_json_file(path)
    except protocol.ProtocolError as ex:
        raise ExportError("Cannot read {:s}".format(str(ex))) from None
    if not isinstance(data, dict) or data.get("format") != INPUTS_FORMAT:
        raise ExportError("Not a SCAIL-2 inputs file: " + path)
    return data


def save_inputs(folder, made_from=None, **entries):
    """Record ``entries`` (ExportedClip / ExportedStill / plain values; None removes) in ``folder``.

    ``made_from``: ``{entry: fingerprint}`` of what entries were exported from (see :func:`stale_inputs`);
    an entry removed loses its fingerprint too.
    """
    data = load_inputs(folder)
    recorded = data.setdefault(MADE_FROM, {})
    for key, value in entries.items():
        if value is None:
            data.pop(key, None)
            recorded.pop(key, None)
        elif isinstance(value, (ExportedClip, ExportedStill)):
            data[key] = value.to_dict()
        else:
            data[key] = value
    recorded.update(json.loads(json.dumps(made_from or {})))
    write_json_atomic(os.path.join(folder, INPUTS_NAME), data)
    return data


def stale_inputs(inputs, current):
    """The entries of ``current`` (``{entry: fingerprint of its source now}``) to export again: not exported
    yet, or exported from something else (another file, a moved strip, another camera or frame range)."""
    recorded = inputs.get(MADE_FROM) or {}
    return [key for key, fingerprint in current.items()
            if not inputs.get(key) or recorded.get(key) != json.loads(json.dumps(fingerprint))]


def job_fields(inputs):
    """The :class:`protocol.JobSpec` fields the recorded inputs fill in (a dict).

    ``inputs``: what :func:`load_inputs` returns. Keys absent from it are left
    out, so the caller's own settings stay.
    """
    out = {}
    driving = inputs.get("driving")
    if driving:
        clip = ExportedClip.from_dict(driving)
        out["driving"] = clip.path
        out["driving_fps"] = clip.fps if clip.kind == "sequence" else None
        out["frame_start"] = clip.frame_start
        out["frame_end"] = clip.frame_end
    if inputs.get("driving_mask"):
        out["driving_mask"] = ExportedClip.from_dict(inputs["driving_mask"]).path
    reference = inputs.get("reference")
    if reference:
        still = ExportedStill.from_dict(reference)
        out["reference"] = still.path
        out["reference_mask"] = still.mask_path or None
    if inputs.get("mode") in MODES:
        out["mode"] = inputs["mode"]
    views = inputs.get("extra_references") or []  # core.extra_views.EXTRA_VIEWS: each view with its mask
    if views:
        out["extra_references"] = [ExportedStill.from_dict(view).path for view in views]
        out["extra_reference_masks"] = [ExportedStill.from_dict(view).mask_path for view in views]
    return out
