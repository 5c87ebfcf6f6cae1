# SPDX-License-Identifier: GPL-3.0-or-later
"""The review of takes inside Blender: history entries kept in step with review.json, notes as markers.

A history entry (``props.job_settings.SCAIL2_JobHistoryItem``) is a take: its shot and version, status,
rating, label and frame notes live in the .blend and in ``review.json`` beside its manifest
(``core.takes``). The .blend's values are written to the file whenever the artist changes them (the
panel's property hook, the operators, undo and redo); the file's values are read back when a file is
opened and on Refresh, so a second artist working on the same folder sees the same review.
"""

__all__ = (
    "add_note",
    "apply_settings",
    "load_item",
    "redo_refusal",
    "refresh",
    "register",
    "register_take",
    "save_item",
    "scene_frame_map",
    "show_notes",
    "take_scores",
    "unregister",
)

import getpass
import json
import os
import time

import bpy

from .. import compat
from .. import protocol
from ..core import takes
from ..props import RESULT_PROP, job_settings
from ..props.input_settings import get_settings
from .session import GenerateError

COMPARE_PROP = "scail2_compare"  # on the strips a compare adds (runtime.compare): not a layout take

# Scores read from manifests: {manifest path: (mtime, TakeScores or None, error line)}.
_scores_cache = {}
_frames_cache = {}  # {manifest path: (mtime, {frame file name: job frame})}
_loading = False  # True while the file's values are copied in: the property hook must not write them back


# --------------------------------------------------------------------------------------------
# review.json <-> the history entry.

def _status(item):
    return job_settings.TAKE_STATUS[item.take_status]


def _review_of(item, existing):
    """The entry's ``TakeReview``: the .blend's review over what the file holds (its recipe is kept)."""
    notes = [protocol.Note(frame=n.frame, text=n.text, author=n.author, time=n.time) for n in item.notes]
    base = existing or protocol.TakeReview(format=protocol.REVIEW_FORMAT, job_id=item.job_id)
    return takes.updated(base, job_id=item.job_id, shot=item.shot, version=item.version, label=item.name,
                         status=_status(item), rating=item.rating, notes=notes, derived_from=item.derived_from)


def save_item(item):
    """Write ``item``'s review to its review.json; the problem as one line ("" when written or nothing to do)."""
    if _loading or not item.job_dir or not os.path.isdir(item.job_dir):
        return ""
    try:
        existing = takes.read_review(item.job_dir)
    except protocol.ProtocolError:
        existing = None  # damaged: the .blend's review replaces it (the recipe is the manifest's too)
    try:
        review = _review_of(item, existing)
        if review != existing:
            takes.write_review(item.job_dir, review)
    except (OSError, protocol.ProtocolError) as ex:
        message = "Could not save the review of {:s}: {:s}".format(item.job_id, str(ex).strip())
        print("SCAIL-2:", message)
        return message
    return ""


def load_item(item):
    """Copy the take's review.json into ``item`` (when the file has one); the problem as one line, or ""."""
    global _loading
    try:
        review = takes.read_review(item.job_dir) if item.job_dir else None
    except protocol.ProtocolError as ex:
        return str(ex)
    if review is None:
        return ""
    _loading = True
    try:
        if review.label:
            item.name = review.label
        item.shot = review.shot or item.shot
        item.version = review.version or item.version
        item.take_status = job_settings.TAKE_STATUS_ENUM.get(review.status, 'NEW')
        item.rating = review.rating
        item.derived_from = review.derived_from
        item.notes.clear()
        for note in review.notes:
            entry = item.notes.add()
            entry.frame, entry.text, entry.author, entry.time = note.frame, note.text, note.author, note.time
    finally:
        _loading = False
    return ""


def refresh(scene):
    """Read every take's review.json of ``scene`` again; the problems as lines."""
    settings = job_settings.get_job_settings(scene)
    return [problem for problem in (load_item(item) for item in settings.history) if problem]


def register_take(scene, item, derived_from=""):
    """A finished take: its shot from the manifest, its version within the shot, its review written.

    A version the folder's review.json already has (another artist numbered it) is kept.
    """
    try:
        manifest = protocol.read_json_file(item.manifest, "manifest")
    except protocol.ProtocolError:
        manifest = {}
    item.shot = takes.shot_key(manifest) if manifest else item.job_id
    load_item(item)
    if derived_from:
        item.derived_from = derived_from
    if not item.version:
        siblings = [other.version for other in job_settings.get_job_settings(scene).history
                    if other.shot == item.shot and other.as_pointer() != item.as_pointer()]
        item.version = takes.next_version(siblings)
    return save_item(item)


@bpy.app.handlers.persistent
def _on_load(_arg=None, _arg2=None):
    for scene in bpy.data.scenes:
        if len(job_settings.get_job_settings(scene).history):
            refresh(scene)


@bpy.app.handlers.persistent
def _on_undo(_arg=None, _arg2=None):
    """After undo or redo the .blend's review is the truth again: the files follow it."""
    for scene in bpy.data.scenes:
        for item in job_settings.get_job_settings(scene).history:
            save_item(item)


_HANDLERS = ((bpy.app.handlers.load_post, _on_load), (bpy.app.handlers.undo_post, _on_undo),
             (bpy.app.handlers.redo_post, _on_undo))


def register():
    job_settings.review_saver = save_item
    for handlers, function in _HANDLERS:
        if function not in handlers:
            handlers.append(function)


def unregister():
    job_settings.review_saver = None
    for handlers, function in _HANDLERS:
        if function in handlers:
            handlers.remove(function)
    _scores_cache.clear()
    _frames_cache.clear()


# --------------------------------------------------------------------------------------------
# Scores.

def take_scores(manifest):
    """``(protocol.TakeScores or None, problem line)`` of a take's manifest (cached on its modification time)."""
    path = bpy.path.abspath(manifest) if manifest else ""
    try:
        stamp = os.path.getmtime(path)
    except OSError:
        return None, ""
    cached = _scores_cache.get(path)
    if cached is None or cached[0] != stamp:
        try:
            data = protocol.read_json_file(path, "manifest").get("review")
            review = protocol.ManifestReview.from_dict(data) if data is not None else None
            cached = (stamp, review.scores if review is not None else None, "")
        except (protocol.ProtocolError, AttributeError) as ex:
            cached = (stamp, None, str(ex))
        _scores_cache[path] = cached
    return cached[1], cached[2]


# --------------------------------------------------------------------------------------------
# Frames of a take on the timeline, and notes as markers.

def layout_strips(seq_scene, job_dir=None):
    """The imported result strips of ``seq_scene`` (of ``job_dir`` only, if given), compare strips left out."""
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    found = []
    for strip in editor.strips if editor is not None else ():
        props = strip.get(RESULT_PROP)
        if props is None or COMPARE_PROP in strip:
            continue
        if job_dir is None or os.path.normpath(props.get("job_dir", "")) == os.path.normpath(job_dir):
            found.append(strip)
    return found


def _frame_indices(manifest):
    """``{frame file name: job frame}`` of a manifest (cached on its modification time: panels ask often)."""
    try:
        stamp = os.path.getmtime(manifest)
    except OSError:
        return {}
    cached = _frames_cache.get(manifest)
    if cached is None or cached[0] != stamp:
        try:
            frames = protocol.read_json_file(manifest, "manifest")["frames"]
            found = {os.path.basename(frame["file"]): int(frame["index"]) for frame in frames}
        except (protocol.ProtocolError, KeyError, TypeError, ValueError):
            found = {}
        cached = _frames_cache[manifest] = (stamp, found)
    return cached[1]


def scene_frame_map(seq_scene, item):
    """``{job frame: scene frame}`` of a take: where its strip shows each frame, else from its first frame on."""
    index_of = _frame_indices(item.manifest)
    strips = layout_strips(seq_scene, item.job_dir)
    if strips and index_of:
        strip = strips[0]
        start = int(compat.strip_content_start(strip))
        return {index_of[e.filename]: start + k for k, e in enumerate(strip.elements) if e.filename in index_of}
    try:
        first = int(json.loads(item.settings_json)["import"]["frame_start"])
    except (ValueError, KeyError, TypeError):
        first = 1
    return {k: first + k for k in range(len(index_of) or item.frames)}


def job_frame_at(frame_map, scene_frame):
    """The take's frame shown at ``scene_frame`` (the nearest one before it), None outside the take."""
    shown = [(scene, job) for job, scene in frame_map.items() if scene <= scene_frame]
    if not shown or scene_frame > max(frame_map.values()):
        return None
    return max(shown)[1]


def show_notes(scene, seq_scene, item):
    """Put ``item``'s notes on ``scene``'s timeline as markers, replacing the note markers shown before."""
    markers = scene.timeline_markers
    for marker in [m for m in markers if takes.note_from_marker(m.name) is not None]:
        markers.remove(marker)
    frame_map = scene_frame_map(seq_scene, item)
    for note in item.notes:
        if note.frame in frame_map:
            markers.new(takes.note_marker_name(note.text), frame=frame_map[note.frame])


def add_note(scene, seq_scene, item, text, scene_frame=None):
    """A note on the take's frame shown at ``scene_frame`` (the current frame): kept, shown, written to disk."""
    text = " ".join(text.split())
    if not text:
        raise GenerateError("Write the note first")
    scene_frame = scene.frame_current if scene_frame is None else scene_frame
    job_frame = job_frame_at(scene_frame_map(seq_scene, item), scene_frame)
    if job_frame is None:
        raise GenerateError("Frame {:d} is outside take {:s}".format(scene_frame, item.name))
    note = item.notes.add()
    note.frame, note.text = job_frame, text
    note.author = getpass.getuser()
    note.time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    show_notes(scene, seq_scene, item)
    return save_item(item)


# --------------------------------------------------------------------------------------------
# Redo: the inputs as they were.

def redo_refusal(item):
    """One line when an input of the take changed since it was made (Redo would make another take), else ""."""
    try:
        recorded = takes.read_review(item.job_dir) if item.job_dir else None
    except protocol.ProtocolError:
        recorded = None
    try:
        manifest = protocol.read_json_file(item.manifest, "manifest") if item.manifest else {}
    except protocol.ProtocolError:
        manifest = {}
    changed = takes.changed_inputs(takes.recorded_inputs(recorded, manifest))
    if not changed:
        return ""
    role, path, why = changed[0]
    return ("Redo refused: the {:s} {:s} {:s} since v{:03d} was made; Redo on New Input makes a new take "
            "from it").format(role.replace("_", " "), os.path.basename(path), why, item.version)


# --------------------------------------------------------------------------------------------
# Use Settings.

def apply_settings(scene, item, spec, import_settings, ui):
    """Load a take's settings and seed into the Generate panel (the seed locked, to tweak from there)."""
    settings = job_settings.get_job_settings(scene)
    sampler = {value: key for key, value in job_settings.SAMPLERS.items()}
    if ui.get("mode") in protocol.MODES:
        get_settings(scene).mode = ui["mode"]
    settings.prompt = spec.get("prompt", "")
    settings.negative_prompt = spec.get("negative_prompt", "")
    settings.preset = spec.get("preset", settings.preset)
    settings.resolution = spec.get("resolution", settings.resolution)
    settings.width, settings.height = int(spec.get("width") or 0), int(spec.get("height") or 0)
    custom = spec.get("steps") is not None
    settings.use_custom_sampling = custom
    if custom:
        settings.steps = int(spec["steps"])
        settings.guidance = float(spec.get("guidance") if spec.get("guidance") is not None else settings.guidance)
        settings.shift = float(spec.get("shift") if spec.get("shift") is not None else settings.shift)
    settings.sampler = sampler.get(spec.get("sampler") or "unipc", 'UNIPC')
    settings.use_matte = bool(spec.get("matte", False))
    if ui.get("frame_range"):
        settings.use_frame_range = True
        settings.frame_start, settings.frame_end = ui["frame_range"]
    else:
        settings.use_frame_range = False
    if import_settings.get("form") in {'STRIP', 'PLANE', 'BOTH'}:
        settings.form = import_settings["form"]
    settings.distance = float(import_settings.get("distance", settings.distance))
    settings.seed = min(item.seed, job_settings.MAX_SEED)
    settings.use_seed_lock = True
