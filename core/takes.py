# SPDX-License-Identifier: GPL-3.0-or-later
"""Takes of a shot, without ``bpy``: grouping and numbering, review.json, wedges, flags and changed inputs.

A take is one finished generation job. Its shot is what stays fixed while takes vary: the driving
footage (its SHA-256 as the manifest records it, else its path), the mode and the frame range. The
reference, the seed and the sampler settings are what takes of one shot try out, so a wedge over
reference stills stays one shot with v001, v002, ...

``review.json`` (``protocol.TakeReview``) lies beside the take's manifest; the backend writes it when
the take finishes, the add-on rewrites it (atomically) when the artist changes the review.
"""

__all__ = (
    "WEDGE_KINDS",
    "changed_inputs",
    "file_sha256",
    "flag_frames",
    "matches_filter",
    "next_flag",
    "next_version",
    "note_from_marker",
    "note_marker_name",
    "read_review",
    "recorded_inputs",
    "review_path",
    "shot_key",
    "take_badge",
    "take_row_text",
    "updated",
    "wedge_variations",
    "write_review",
)

import dataclasses
import hashlib
import json
import os
import tempfile

from .. import protocol
from .file_digests import file_sha256

SHOT_KEY_CHARS = 12
WEDGE_KINDS = ("SEED", "REFERENCE", "GUIDANCE", "SAMPLER", "LORA")
MAX_WEDGE = 32  # a wedge is a handful of takes to compare, not a sweep for a farm
STATUS_TEXT = {"new": "New", "approved": "Approved", "rejected": "Rejected", "on_hold": "On Hold"}


# --------------------------------------------------------------------------------------------
# Shots and versions.

def shot_key(manifest):
    """``"shot-<hex>"`` of a take's manifest (dict): driving footage (hash or path), mode and frame range."""
    job = manifest.get("job") or {}
    driving = job.get("driving") or ""
    digest = (manifest.get("inputs") or {}).get(driving) or os.path.normpath(driving)
    frames = manifest.get("frames") or []
    first = job.get("frame_start", 0)
    end = job.get("frame_end")
    if end is None and frames:
        end = first + len(frames)
    text = json.dumps([digest, job.get("mode", "animate"), first, end])
    return "shot-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:SHOT_KEY_CHARS]


def next_version(versions):
    """The version a new take of a shot gets: one past the highest of ``versions`` (v001 for the first)."""
    return max((v for v in versions if v > 0), default=0) + 1


def take_badge(status, rating, seed):
    """What tells takes of a shot apart beside their label: ``"Approved · ★★★ · seed 1234"`` (status "": left out,
    where an icon shows it)."""
    parts = [STATUS_TEXT.get(status, status), "\u2605" * rating if rating else "", "seed {:d}".format(seed)]
    return " \u00b7 ".join(part for part in parts if part)


def take_row_text(label, version, status, rating, seed):
    """One history row: ``"v003 · Dancer · Approved · ★★★ · seed 1234"``, so five takes never look alike."""
    return " \u00b7 ".join(part for part in ("v{:03d}".format(version) if version else "v---", label,
                                              take_badge(status, rating, seed)) if part)


def matches_filter(status, shown):
    """Whether a take of ``status`` shows under the filter ``shown`` (a set of statuses; empty: all)."""
    return not shown or status in shown


# --------------------------------------------------------------------------------------------
# review.json.

def review_path(job_dir):
    return os.path.join(job_dir, protocol.REVIEW_NAME)


def read_review(job_dir):
    """The take's ``protocol.TakeReview``, None when the folder has none; ProtocolError (one line) if damaged."""
    path = review_path(job_dir)
    if not os.path.isfile(path):
        return None
    return protocol.read_record(path, protocol.TakeReview, "take review")


def write_review(job_dir, review):
    """Write ``review`` as the take's review.json: a temporary file in the folder, then ``os.replace``.

    A reader (the other artist's Blender, the report) sees the old file or the new one, never half.
    """
    data = json.dumps(review.to_dict(), indent=2, sort_keys=True) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=".review-", suffix=".json.tmp", dir=job_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(temporary, review_path(job_dir))
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def updated(review, **changes):
    """``review`` with ``changes`` (a new record, checked)."""
    new = dataclasses.replace(review, **changes)
    new.check()
    return new


# --------------------------------------------------------------------------------------------
# Inputs that changed since a take was made.

def recorded_inputs(review, manifest):
    """``[(role, path, sha256)]`` a take was made from: the recipe's, else the manifest's ``inputs``."""
    if review is not None and review.recipe is not None and review.recipe.inputs:
        return [(f.role, f.path, f.sha256) for f in review.recipe.inputs if f.sha256]
    job = manifest.get("job") or {}
    roles = {job.get(key): key for key in ("driving", "reference", "driving_mask", "reference_mask") if job.get(key)}
    return [(roles.get(path, "input"), path, digest) for path, digest in sorted((manifest.get("inputs") or {}).items())]


def changed_inputs(recorded):
    """``[(role, path, why)]`` of the ``recorded`` inputs whose file is missing or whose SHA-256 differs now.

    Image-sequence folders are hashed by the backend over each frame; they are left out here (Generate
    exports them again when their source changes, see ``sources.fingerprints``).
    """
    changed = []
    for role, path, digest in recorded:
        if os.path.isdir(path):
            continue
        if not os.path.isfile(path):
            changed.append((role, path, "is missing"))
        elif file_sha256(path) != digest:
            changed.append((role, path, "changed (its SHA-256 differs)"))
    return changed


# --------------------------------------------------------------------------------------------
# Flags and notes.

def flag_frames(scores):
    """Sorted job frame indices a ``protocol.TakeScores`` flags, with their reasons: ``[(frame, "why; why")]``."""
    reasons = {}
    for flag in scores.flags if scores is not None else ():
        reasons.setdefault(flag.frame, []).append("{:s}: {:s}".format(flag.score, flag.reason))
    return [(frame, "; ".join(reasons[frame])) for frame in sorted(reasons)]


def next_flag(frames, current, forward=True):
    """The first of ``frames`` after ``current`` (before it, backwards), None when there is none."""
    if forward:
        return next((f for f in sorted(frames) if f > current), None)
    return next((f for f in sorted(frames, reverse=True) if f < current), None)


def note_marker_name(text):
    """The timeline marker's name for a note: ``protocol.NOTE_MARKER_PREFIX`` and its first line."""
    return protocol.NOTE_MARKER_PREFIX + " ".join(text.split())


def note_from_marker(name):
    """The note text of a marker name, None when the marker is not a note."""
    if not name.startswith(protocol.NOTE_MARKER_PREFIX):
        return None
    return name[len(protocol.NOTE_MARKER_PREFIX):].strip() or None


# --------------------------------------------------------------------------------------------
# Wedges.

def _numbers(text, what, low, high):
    values = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError("{:s}: {!r} is not a number (give values like 3, 4.5, 6)".format(what, part)) from None
        if not low <= value <= high:
            raise ValueError("{:s}: {:g} is outside {:g}-{:g}".format(what, value, low, high))
        values.append(value)
    return values


def wedge_variations(kind, count, text, spec):
    """``[spec overrides]``, one per take of a wedge over ``kind`` (see WEDGE_KINDS); ValueError (one line).

    SEED: ``count`` takes, seeds ``spec["seed"]``, +1, +2, ... (a random start when the spec has none);
    REFERENCE: one take per still path in ``text`` (separated by ``;`` or new lines);
    GUIDANCE: one per number in ``text``; SAMPLER: one per solver name; LORA: one per strength,
    applied to every LoRA of the job.
    """
    if kind == "SEED":
        if not 1 <= count <= MAX_WEDGE:
            raise ValueError("A wedge has 1 to {:d} takes, got {:d}".format(MAX_WEDGE, count))
        start = max(0, int(spec.get("seed", 0)))
        return [{"seed": start + k} for k in range(count)]
    if kind == "REFERENCE":
        paths = [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise ValueError("Reference still not found: " + missing[0])
        found = [{"reference": p, "reference_mask": None} for p in paths]
    elif kind == "GUIDANCE":
        found = [{"guidance": v} for v in _numbers(text, "Guidance", *protocol.GUIDANCE_RANGE)]
    elif kind == "SAMPLER":
        names = [n.strip().lower() for n in text.replace(";", ",").split(",") if n.strip()]
        unknown = [n for n in names if n not in protocol.SAMPLERS]
        if unknown:
            raise ValueError("Unknown sampler {!r} (use {:s})".format(unknown[0], ", ".join(protocol.SAMPLERS)))
        found = [{"sampler": n} for n in names]
    elif kind == "LORA":
        loras = spec.get("loras") or []
        if not loras:
            raise ValueError("This shot's jobs use no LoRA: there is no strength to vary")
        found = [{"loras": [dict(lora, strength=v) for lora in loras]}
                 for v in _numbers(text, "LoRA strength", *protocol.LORA_STRENGTH_RANGE)]
    else:
        raise ValueError("Unknown wedge {!r}".format(kind))
    if not found:
        raise ValueError("List the values to try, separated by commas")
    if len(found) > MAX_WEDGE:
        raise ValueError("A wedge has at most {:d} takes, got {:d}".format(MAX_WEDGE, len(found)))
    return found
