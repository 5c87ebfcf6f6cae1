# SPDX-License-Identifier: GPL-3.0-or-later
"""Segmentation jobs (automatic masks, mattes) as plain data: specs, finished folders, timing.

Standard library only and no ``bpy`` (tests load it without Blender, as
``core/queue.py``). ``runtime/segmentation.py`` reads the scene, calls these functions and
only then changes Blender data.

* :func:`masks_spec` / :func:`matte_spec`: the ``protocol.SegmentSpec`` of a job.
* :func:`scale_box` and :func:`refine_subjects`: Refine Masks' marked subjects
  (SAM 2 boxes, each keeping its palette number) from the boxes
  ``core.pixels.identity_boxes`` finds in a rough colour mask's frames.
* :func:`load_record`: a finished job folder (its ``segment.json``, written last
  by the backend) checked file by file, as a :class:`SegmentRecord`.
* :func:`limit_timing` and :func:`mask_elements`: which mask file each scene
  frame of the footage strip shows, from the timing an export recorded
  (``sources.ExportedClip``: ``scene_frame_start``, and ``shown`` per scene frame).
* :func:`sequence_sources`: which generated frame each file of an image plane's
  scene-rate sequence is, so a plane can be switched to the matte's RGBA frames.
"""

__all__ = (
    "SegmentError",
    "SegmentRecord",
    "limit_timing",
    "load_record",
    "mask_elements",
    "masks_spec",
    "matte_spec",
    "refine_subjects",
    "scale_box",
    "sequence_sources",
)

import hashlib
import os
from dataclasses import dataclass, field

from .. import protocol
from .util import one_line


class SegmentError(Exception):
    """A segmentation job that cannot be started or used, as one line for the artist."""


# --------------------------------------------------------------------------------------------
# Specs.

def masks_spec(source, *, prompt, mode, identities, frame_start=0, frame_end=None, still=False, subjects=()):
    """A masks job of ``source`` (a clip, or with ``still`` an image) as a checked ``protocol.SegmentSpec``.

    ``subjects``: subjects marked by hand (see ``protocol.SegmentSpec.subjects``), tracked instead of ``prompt``.
    """
    try:
        return protocol.SegmentSpec(
            task="masks", source=source, prompt=prompt.strip(), mode=mode, still=still,
            max_identities=identities, frame_start=0 if still else frame_start,
            frame_end=None if still else frame_end, subjects=[dict(s) for s in subjects],
        ).validate()
    except (protocol.ProtocolError, TypeError) as ex:
        raise SegmentError(one_line(ex)) from None


def matte_spec(job_dir, prompt):
    """``(spec, folder)``: the matte job of a generation job folder's frames, written beside them."""
    frames = os.path.join(job_dir, "frames")
    if not os.path.isdir(frames):
        raise SegmentError("The job folder has no frames: " + frames)
    try:
        spec = protocol.SegmentSpec(task="matte", source=frames, prompt=prompt.strip()).validate()
    except protocol.ProtocolError as ex:
        raise SegmentError(one_line(ex)) from None
    return spec, os.path.join(job_dir, protocol.MATTE_FOLDER)


# --------------------------------------------------------------------------------------------
# Refine Masks: a box per identity of a rough colour mask, as SAM 2's marked subjects.

def scale_box(box, mask_size, clip_size):
    """``box`` (pixels of a ``mask_size`` picture) in the pixels of a ``clip_size`` frame it covers exactly.

    Sizes are ``(width, height)``; the result is ``[x0, y0, x1, y1]`` rounded
    to hundredths of a pixel and kept inside the frame.
    """
    (mw, mh), (cw, ch) = mask_size, clip_size
    if min(mw, mh, cw, ch) <= 0:
        raise SegmentError("Cannot scale a box from {:d}x{:d} to {:d}x{:d} pixels".format(mw, mh, cw, ch))
    x0, y0, x1, y1 = box
    sx, sy = cw / mw, ch / mh
    return [round(min(max(x0 * sx, 0.0), cw), 2), round(min(max(y0 * sy, 0.0), ch), 2),
            round(min(max(x1 * sx, 0.0), cw), 2), round(min(max(y1 * sy, 0.0), ch), 2)]


def refine_subjects(frame_boxes, mask_size, clip_size):
    """``(subjects, identities)``: one marked subject per identity of a rough mask, in palette order.

    ``frame_boxes``: ``(frame, {identity: box})`` per frame of the rough mask,
    ``frame`` counted from the job's first frame, boxes in the pixels of a
    ``mask_size`` picture (see ``core.pixels.identity_boxes``). Each identity is marked
    with its box in the first frame it appears in, scaled to the clip's
    ``clip_size`` pixels. SegmentError without any identity or with more than
    SCAIL-2 binds.
    """
    first = {}
    for frame, boxes in frame_boxes:
        for identity, box in boxes.items():
            first.setdefault(identity, (frame, box))
    if not first:
        raise SegmentError("The rough mask shows no identity colour (blue, red, green, magenta, cyan, yellow)")
    if len(first) > protocol.MAX_IDENTITIES:
        raise SegmentError("The rough mask has {:d} identities; SCAIL-2 binds at most {:d}".format(
            len(first), protocol.MAX_IDENTITIES))
    identities = sorted(first)
    # Each subject keeps its palette number: the artist who coloured the rough mask decided who is who.
    subjects = [{"frame": first[i][0], "box": scale_box(first[i][1], mask_size, clip_size), "identity": i}
                for i in identities]
    return subjects, identities


# --------------------------------------------------------------------------------------------
# Finished folders.

@dataclass(frozen=True)
class SegmentRecord:
    """A finished segmentation folder, as its ``segment.json`` describes it (paths absolute)."""

    job_dir: str
    task: str  # "masks" or "matte"
    kind: str  # "video" or "image"
    source: str
    prompt: str
    mode: str
    frame_start: int  # the source frame of files[0]
    files: tuple  # one per source frame from frame_start on (a still: one)
    identities: tuple = ()  # palette numbers 1..6 painted, in identity order
    width: int = 0
    height: int = 0
    warnings: tuple = field(default_factory=tuple)

    @property
    def frame_end(self):
        return self.frame_start + len(self.files)


def _identity_number(entry):
    """The palette number (1..6) of one of the record's identities: by its colour, else its 0-based index."""
    colour = tuple(entry.colour)
    if colour in protocol.PALETTE:
        return protocol.PALETTE.index(colour) + 1
    if 0 <= entry.identity < protocol.MAX_IDENTITIES:
        return entry.identity + 1
    return None


def load_record(job_dir, task=None):
    """The finished job in ``job_dir`` (SegmentError when unfinished, of another task, or missing files)."""
    path = os.path.join(job_dir, protocol.SEGMENT_RECORD)
    if not os.path.lexists(path):
        raise SegmentError("The segmentation job left no record: " + path)
    try:
        data = protocol.read_json_file(path)
    except protocol.ProtocolError as ex:
        raise SegmentError(one_line("Cannot read {!s}".format(ex))) from None
    try:
        record = protocol.SegmentationRecord.from_dict(data)
    except protocol.ProtocolError as ex:
        raise SegmentError(one_line("Not a segmentation record: {:s} ({!s})".format(path, ex))) from None
    if record.status != "done":
        raise SegmentError("The segmentation job has not finished ({!s}): {:s}".format(record.status, path))
    if task is not None and record.task != task:
        raise SegmentError("{:s} is a {!s} job, not {:s}".format(path, record.task, task))
    if not record.files or not all(record.files):
        raise SegmentError("The segmentation record lists no files: " + path)
    files = tuple(os.path.normpath(os.path.join(job_dir, name)) for name in record.files)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise SegmentError("{:d} of {:d} files of the segmentation job are missing, first: {:s}".format(
            len(missing), len(files), missing[0]))
    numbers = [_identity_number(e) for e in record.identities]
    return SegmentRecord(
        job_dir=os.path.normpath(job_dir), task=record.task, kind=record.kind, source=record.source,
        prompt=record.prompt, mode=record.mode, frame_start=record.frame_start, files=files,
        identities=tuple(n for n in numbers if n is not None), width=record.width, height=record.height,
        warnings=tuple(record.warnings),
    )


# --------------------------------------------------------------------------------------------
# Timing: which mask each scene frame shows.

def limit_timing(frame_start, scene_frame_start, shown, first, last):
    """A clip's timing cut to scene frames ``first``..``last`` (inclusive).

    ``frame_start``: the clip's first exported frame (in its file's frames);
    ``shown``: per scene frame from ``scene_frame_start``, the exported frame it
    shows counted from ``frame_start``. Returns ``(frame_start, frame_end,
    scene_frame_start, shown)`` of the cut; SegmentError when nothing is left.
    """
    if last < first:
        raise SegmentError("The frame range {:d}-{:d} is empty".format(first, last))
    begin = max(first, scene_frame_start) - scene_frame_start
    end = min(last + 1, scene_frame_start + len(shown)) - scene_frame_start
    if end <= begin:
        raise SegmentError("Frames {:d}-{:d} are outside the footage strip (scene frames {:d}-{:d})".format(
            first, last, scene_frame_start, scene_frame_start + len(shown) - 1))
    part = list(shown[begin:end])
    low = min(part)
    return frame_start + low, frame_start + max(part) + 1, scene_frame_start + begin, [i - low for i in part]


def mask_elements(record, frame_start, scene_frame_start, shown):
    """``(first scene frame, [mask file per scene frame])`` for a footage strip with that timing.

    Each scene frame gets the mask of the footage frame it shows; the scene
    frames whose footage frame has no mask at either end are left out.
    """
    files = []
    first = None
    for offset, index in enumerate(shown):
        k = frame_start + index - record.frame_start
        if 0 <= k < len(record.files):
            if first is None:
                first = scene_frame_start + offset
            elif scene_frame_start + offset != first + len(files):
                break  # a gap: keep the first covered run
            files.append(record.files[k])
        elif first is not None:
            break
    if first is None:
        raise SegmentError("The masks (source frames {:d}-{:d}) cover no frame of the footage strip".format(
            record.frame_start, record.frame_end - 1))
    return first, files


# --------------------------------------------------------------------------------------------
# An image plane's scene-rate sequence (see results.ensure_scene_rate_sequence).

def _digest(path):
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def sequence_sources(first_path, frames_dir):
    """The name in ``frames_dir`` that each file of a scene-rate sequence shows: ``[name of number 0, 1, ...]``.

    ``first_path``: number 1 of the sequence (as the plane's image has it). The
    files are links to the frames, hard links or copies: they are matched by
    their link target, then their inode, then their contents. SegmentError when
    one matches no frame.
    """
    folder, base = os.path.split(first_path)
    stem, ext = os.path.splitext(base)
    digits = len(stem) - len(stem.rstrip("0123456789"))
    prefix = stem[:len(stem) - digits]
    if not digits or not os.path.isdir(folder):
        raise SegmentError("Not a numbered image sequence: " + first_path)
    names = sorted(n for n in os.listdir(frames_dir) if not n.startswith("."))
    by_inode = {}
    for name in names:
        stat = os.stat(os.path.join(frames_dir, name))
        by_inode[(stat.st_dev, stat.st_ino)] = name
    by_content = None
    found = []
    number = 0
    while True:
        path = os.path.join(folder, "{:s}{:0{:d}d}{:s}".format(prefix, number, digits, ext))
        if not os.path.lexists(path):
            break
        target = os.path.realpath(path)
        stat = os.stat(path)
        if os.path.dirname(target) == os.path.realpath(frames_dir) and os.path.basename(target) in names:
            found.append(os.path.basename(target))
        elif (stat.st_dev, stat.st_ino) in by_inode:
            found.append(by_inode[(stat.st_dev, stat.st_ino)])
        else:
            if by_content is None:
                by_content = {_digest(os.path.join(frames_dir, name)): name for name in names}
            name = by_content.get(_digest(path))
            if name is None:
                raise SegmentError("{:s} is none of the job's frames".format(path))
            found.append(name)
        number += 1
    if len(found) < 2:
        raise SegmentError("The image sequence has no frames: " + first_path)
    return found
