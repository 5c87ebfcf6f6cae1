# SPDX-License-Identifier: GPL-3.0-or-later
"""Bringing a finished SCAIL-2 job back into a scene: the manifest, placement and file work, without Blender.

Which frame each scene frame shows is `core.timing`; where the result goes (channel, scale, camera
view, plane size) is `core.placement`, whose names this module re-exports.

Standard library only and no ``bpy``. ``runtime/result_plan.py`` reads the scene and
calls these functions; ``runtime/result_create.py`` only then creates anything.

Mattes
------
A job folder may hold RGBA copies of its frames, same names, in ``frames_rgba/``
(``protocol.MATTE_FOLDER``): written by a matte job (complete once its
``segment.json`` says ``"status": "done"``) or by a generation run with
``matte`` (its manifest then names the folder: ``"matte": "frames_rgba"``).
:func:`load_result` uses them when they are complete (``JobResult.matte``).

Image sequences at the scene's rate
-----------------------------------
An image strip lists its files one element per scene frame, so repeats (16
model fps in a 24 fps scene) and skips (in a 12 fps scene) are just its element
list. An Image datablock in a material cannot: its image user plays a numbered
sequence one number per scene frame. :func:`ensure_scene_rate_sequence` therefore
writes a numbered folder, one file per scene frame, inside the job folder
(``scene_frames/<digest>/``): relative symlinks where the system allows them,
else hard links, else copies. Number 0 repeats the first frame, because the
image user asks for number 0 before its start frame.
"""

__all__ = (
    "JobResult",
    "MANIFEST_NAME",
    "ResultError",
    "ResultFrame",
    "camera_view",
    "ensure_scene_rate_sequence",
    "free_channel",
    "load_result",
    "manifest_path_for",
    "matte_frames_dir",
    "overlay_scale",
    "plane_size",
    "png_info",
)

import hashlib
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field, replace

from .. import protocol
from .placement import MAX_CHANNEL, camera_view, free_channel, overlay_scale, plane_size  # noqa: F401
from .timing import TIME_EPS
from .util import read_json

MANIFEST_NAME = protocol.MANIFEST_NAME
MATTE_FOLDER = protocol.MATTE_FOLDER
SEGMENT_RECORD = protocol.SEGMENT_RECORD
# Folder (inside the job folder) for the scene-rate sequences of image planes.
SCENE_FRAMES_DIR = "scene_frames"


class ResultError(Exception):
    """A result that cannot be imported, as one line for the artist."""


# --------------------------------------------------------------------------------------------
# Reading a job.

@dataclass(frozen=True)
class ResultFrame:
    index: int
    path: str  # absolute
    source_time: float  # seconds from the driving clip's first frame


@dataclass(frozen=True)
class JobResult:
    manifest_path: str
    job_dir: str
    job_id: str
    frames: tuple  # of ResultFrame, in time order
    width: int  # pixels of the generated frames
    height: int
    has_alpha: bool
    model_fps: float
    source_path: str
    source_fps: float
    source_frame_count: int
    seed: object  # int, or None when the manifest has none
    settings: dict
    status: str
    warnings: tuple = field(default_factory=tuple)
    matte: bool = False  # the frames are the RGBA matte (see matte_frames_dir)

    @property
    def times(self):
        return [frame.source_time for frame in self.frames]

    @property
    def frames_dir(self):
        """The folder holding every frame (image strips need one folder)."""
        return os.path.dirname(self.frames[0].path)


def manifest_path_for(path):
    """The manifest of ``path``: the file itself, or ``manifest.json`` in a job folder."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        return os.path.join(path, MANIFEST_NAME)
    return path


def png_info(path):
    """(width, height, has_alpha) of a PNG file, from its header; None for other files.

    A PNG has alpha when its colour type carries an alpha channel (4, 6) or when
    it has a tRNS chunk (a transparent colour or palette entries).
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            width = height = None
            has_alpha = False
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    break
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IHDR":
                    data = fh.read(length)
                    width, height, _depth, color_type = struct.unpack(">IIBB", data[:10])
                    has_alpha = color_type in (4, 6)
                    fh.seek(4, os.SEEK_CUR)
                    continue
                if kind == b"tRNS":
                    has_alpha = True
                if kind in (b"IDAT", b"IEND"):
                    break
                fh.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None
    if width is None:
        return None
    return width, height, has_alpha


def matte_frames_dir(job_dir, manifest=None):
    """The job's folder of finished RGBA frames, or "" when it has none (or it is unfinished).

    ``manifest``: the job's manifest data when already read.
    """
    if manifest is None:
        manifest = read_json(os.path.join(job_dir, MANIFEST_NAME))
    named = manifest.get("matte")
    if isinstance(named, str) and named and os.path.isdir(os.path.join(job_dir, named)):
        return os.path.normpath(os.path.join(job_dir, named))
    folder = os.path.join(job_dir, MATTE_FOLDER)
    record = read_json(os.path.join(folder, SEGMENT_RECORD))
    if record.get("status") == "done" and record.get("task") == "matte":
        return os.path.normpath(folder)
    return ""


def load_result(path, use_matte=True):
    """Read and check a job's manifest and frames; a ResultError says what is wrong.

    With ``use_matte`` the frames are the job's finished RGBA matte, when it has
    one with every frame (see :func:`matte_frames_dir`).

    Checks everything an import needs, so that nothing is created for a result
    that cannot be imported: the manifest is a SCAIL-2 job manifest, it lists
    frames in time order, every frame file exists and all sit in one folder.
    """
    manifest_path = manifest_path_for(path)
    if not os.path.isfile(manifest_path):
        raise ResultError("No job manifest at " + manifest_path)
    try:
        data = protocol.read_json_file(manifest_path)
    except protocol.ProtocolError as ex:
        raise ResultError("{:s} is not valid JSON: {!s}".format(manifest_path, ex)) from None
    try:
        manifest = protocol.Manifest.from_dict(data)
    except protocol.ProtocolError as ex:
        raise ResultError("{:s}: {!s}".format(manifest_path, ex)) from None

    job_dir = os.path.dirname(manifest_path)
    frames = [ResultFrame(entry.index if entry.index is not None else k,
                          os.path.normpath(os.path.join(job_dir, entry.file)), float(entry.source_time))
              for k, entry in enumerate(manifest.frames)]
    for before, after in zip(frames, frames[1:]):
        if after.source_time <= before.source_time + TIME_EPS:
            raise ResultError("The manifest's frames are not in time order ({:s} at {:g} s, then {:s} at {:g} s)"
                              .format(os.path.basename(before.path), before.source_time,
                                      os.path.basename(after.path), after.source_time))
    missing = [frame.path for frame in frames if not os.path.isfile(frame.path)]
    if missing:
        raise ResultError("{:d} of {:d} frames are missing{:s}, first: {:s}".format(
            len(missing), len(frames),
            " (the job is still {:s})".format(manifest.status) if manifest.status in ("running", "queued") else "",
            missing[0],
        ))
    folders = {os.path.dirname(frame.path) for frame in frames}
    if len(folders) != 1:
        raise ResultError("The manifest's frames are spread over {:d} folders; expected one".format(len(folders)))
    warnings = list(manifest.warnings)
    matte_dir = matte_frames_dir(job_dir, data) if use_matte else ""
    if matte_dir:
        rgba = [replace(frame, path=os.path.join(matte_dir, os.path.basename(frame.path))) for frame in frames]
        missing = [frame.path for frame in rgba if not os.path.isfile(frame.path)]
        if missing:
            warnings.append("The matte lacks {:d} of {:d} frames (first: {:s}); imported without it".format(
                len(missing), len(rgba), missing[0]))
            matte_dir = ""
        else:
            frames = rgba

    source = manifest.source or protocol.ManifestSource()
    info = png_info(frames[0].path)
    if info is not None:
        width, height, has_alpha = info
    elif len(manifest.size) == 2 and all(v > 0 for v in manifest.size):
        height, width = manifest.size
        has_alpha = False
    else:
        raise ResultError("Cannot tell the size of the generated frames: " + frames[0].path)

    return JobResult(
        manifest_path=manifest_path,
        job_dir=job_dir,
        job_id=manifest.id or os.path.basename(job_dir) or "job",
        frames=tuple(frames),
        width=int(width),
        height=int(height),
        has_alpha=has_alpha,
        model_fps=manifest.model_fps,
        source_path=source.path,
        source_fps=source.fps if source.fps is not None else manifest.model_fps,
        source_frame_count=source.frame_count,
        seed=manifest.seed,
        settings=manifest.job,
        status=manifest.status,
        warnings=tuple(warnings),
        matte=bool(matte_dir),
    )


# --------------------------------------------------------------------------------------------
# Scene-rate sequences for image planes.

def _sequence_name(number, ext):
    return "frame_{:06d}{:s}".format(number, ext)


def _link_or_copy(source, target):
    """Make ``target`` show ``source``: relative symlink, else hard link, else copy."""
    try:
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
        return
    except (OSError, NotImplementedError, ValueError):
        pass
    try:
        os.link(source, target)
        return
    except (OSError, NotImplementedError):
        pass
    shutil.copyfile(source, target)


def ensure_scene_rate_sequence(result, timed):
    """A numbered folder with one file per scene frame of ``timed``; returns the path of number 1.

    Number ``n`` (1-based) is the generated frame shown at scene frame
    ``timed.first_frame + n - 1``; number 0 repeats the first, for the image
    user's frames before its start. The folder's name is a digest of what it
    holds (order, files, their sizes and times), so an unchanged import reuses
    it and a changed one gets a new folder. It is built under a temporary name
    and renamed in one step, so a folder with the final name is always complete.
    """
    sources = [result.frames[timed.indices[0]].path] + [result.frames[i].path for i in timed.indices]
    ext = os.path.splitext(sources[0])[1].lower() or ".png"
    digest = hashlib.sha256()
    for path in sources:
        stat = os.stat(path)
        digest.update("{:s}|{:d}|{:d}\n".format(
            os.path.relpath(path, result.job_dir), stat.st_size, stat.st_mtime_ns,
        ).encode("utf-8"))
    parent = os.path.join(result.job_dir, SCENE_FRAMES_DIR)
    folder = os.path.join(parent, digest.hexdigest()[:16])
    first = os.path.join(folder, _sequence_name(1, ext))
    if os.path.isdir(folder):
        return first
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    except OSError as ex:
        raise ResultError("Cannot write in the job folder ({:s}): {:s}".format(
            ex.strerror or str(ex), parent)) from None
    try:
        for number, source in enumerate(sources):
            _link_or_copy(source, os.path.join(tmp, _sequence_name(number, ext)))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.isdir(folder):  # Not another import that got there first.
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as ex:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ResultError("Cannot write the scene-rate frames ({:s}): {:s}".format(
            ex.strerror or str(ex), folder)) from None
    return first
