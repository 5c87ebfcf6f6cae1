"""Segmentation jobs: SCAIL-2 colour masks of a clip or still, and RGBA mattes of frames.

`run_segment_job` is what the `masks` and `matte` commands, the worker's masks/matte jobs
and a generation's `matte` option all call. A job folder is complete when its
segment.json says "done": every frame is written atomically before it, so a cancelled or
failed job is simply run again. A job writes only into a new or empty folder or one an earlier
masks or matte job wrote (it holds their segment.json, or the hidden mark each one leaves before its
first frame): a folder of the user's is refused before any model loads, so no file of theirs (their own
mask_00000.png, or the frames a matte reads) is ever written over. What an earlier job there listed
and this one did not write again is removed once this one is done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import protocol
from protocol import MATTE_FOLDER, PALETTE, SEGMENT_RECORD, SegmentSpec

from ..errors import unusable_folder
from ..pipeline.durable import TEMP_NAME, write_bytes_atomic, write_json_atomic
from . import SegmentationError
from .identities import arrange_identities, paint
from .tracks import Tracks

EventSink = Callable[..., None]
SEGMENT_MARK = ".scail2-segmentation"  # left in a folder before a job's first frame: its files are a job's


@dataclass
class Segmenters:
    """The segmentation models of a worker or command, loaded on first use and kept.

    `tiny` builds random tiny models (arbitrary masks, for tests); otherwise weights come
    from the given folders or the Hugging Face hub cache.
    """

    tiny: bool = False
    sam3_weights: Path | None = None
    sam2_weights: Path | None = None
    device: str | None = None
    _loaded: dict = field(default_factory=dict, repr=False)

    def _device(self) -> str:
        from ..loaders.devices import resolve_device

        return resolve_device(self.device)

    def text(self):
        """SAM 3, for text prompts."""
        if "sam3" not in self._loaded:
            from .sam3 import Sam3Segmenter

            self._loaded["sam3"] = (Sam3Segmenter.tiny(self._device()) if self.tiny
                                    else Sam3Segmenter.load(self.sam3_weights, self._device()))
        return self._loaded["sam3"]

    def marks(self):
        """SAM 2, for subjects marked by hand."""
        if "sam2" not in self._loaded:
            from .sam2 import Sam2Tracker

            self._loaded["sam2"] = (Sam2Tracker.tiny(self._device()) if self.tiny
                                    else Sam2Tracker.load(self.sam2_weights, self._device()))
        return self._loaded["sam2"]

    def check(self, marks: bool = False) -> None:
        """Raise SegmentationError now if the weights a job will need are missing (before any model time)."""
        if self.tiny:
            return
        from .weights import SAM2_REPO, SAM3_REPO, resolve_weights

        resolve_weights(*((self.sam2_weights, SAM2_REPO) if marks else (self.sam3_weights, SAM3_REPO)))

    def unload(self) -> None:
        self._loaded.clear()

    def matte_generation(self, job_dir: Path, prompt: str, events: EventSink | None = None,
                         should_cancel: Callable[[], bool] | None = None) -> dict:
        """RGBA copies of a generation job's frames in job_dir/frames_rgba (its `matte` option).

        `pipeline.generate.GenerationJob` calls this on the segmenters it is given, so the
        pipeline never imports segmentation.
        """
        spec = SegmentSpec(task="matte", source=str(Path(job_dir) / "frames"), prompt=prompt)
        return run_segment_job(spec, Path(job_dir) / MATTE_FOLDER, self, events, should_cancel)


def finished_record(out: Path, spec: SegmentSpec) -> dict | None:
    """segment.json of a finished job of the same spec in `out`, else None."""
    try:
        record = protocol.read_json_file(Path(out) / SEGMENT_RECORD)
    except protocol.ProtocolError:
        return None
    if isinstance(record, dict) and record.get("status") == "done" and record.get("job") == spec.to_dict():
        return record
    return None


def run_segment_job(spec: SegmentSpec, out: Path, models: Segmenters, events: EventSink | None = None,
                    should_cancel: Callable[[], bool] | None = None) -> dict:
    """Run a masks or matte job into `out`; return its segment.json record.

    Events: started {job_dir, task, frames}, then progress {phase: "load" | "segment" | "write",
    frame, frames}. Raises pipeline.sampler.Cancelled when `should_cancel()` turns true, and
    SegmentationError or MediaError on bad input (before any model runs).
    """
    from ..pipeline.media import iter_frames, probe_clip, read_image
    from ..pipeline.sampler import Cancelled

    spec.validate()
    out = Path(out)
    done = finished_record(out, spec)
    if done is not None:
        return done
    check_output_folder(out, spec)
    models.check(marks=bool(spec.subjects))  # missing weights: one line now, not after the frames are read
    events = events or (lambda kind, **fields: None)
    cancelled = should_cancel or (lambda: False)

    if spec.still:
        image, _ = read_image(spec.source)
        frames_in, count, (height, width), fps, names = iter([image]), 1, image.shape[:2], None, ["mask.png"]
        indices, clip_warnings = [0], []
    else:
        info = probe_clip(spec.source, what="clip")
        stop = info.frame_count if spec.frame_end is None else min(spec.frame_end, info.frame_count)
        indices = list(range(spec.frame_start, stop))
        if not indices:
            raise SegmentationError(f"frames [{spec.frame_start}, {spec.frame_end}) are outside the clip's "
                                    f"{info.frame_count} frames: {spec.source}")
        count, height, width, fps = len(indices), info.height, info.width, info.fps
        frames_in = iter_frames(info, indices)
        clip_warnings = list(info.warnings)  # a variable frame rate, gaps in a sequence
        names = [_frame_name(spec.task, info, i) for i in indices]
    for subject in spec.subjects:
        if subject.get("frame", 0) >= count:
            raise SegmentationError(f"a subject is marked on frame {subject['frame']}, but the job has {count} frames")

    events("started", job_dir=str(out), task=spec.task, frames=count, warnings=[])

    def on_frame(t: int) -> None:
        if cancelled():
            raise Cancelled()
        events("progress", phase="segment", frame=t + 1, frames=count)

    events("progress", phase="load", frame=0, frames=count)
    if cancelled():
        raise Cancelled()
    if spec.subjects:
        model = models.marks()
        frames = np.stack(list(frames_in))
        tracks = model.track(frames, spec.subjects, on_frame)
    elif spec.still:
        model = models.text()
        tracks = model.segment_still(image, spec.prompt)
    else:
        model = models.text()
        tracks = model.track(frames_in, count, height, width, spec.prompt, on_frame)

    out.mkdir(parents=True, exist_ok=True)
    if not (out / SEGMENT_MARK).exists():
        write_bytes_atomic(out / SEGMENT_MARK, b"")
    earlier_files = _listed_files(out)
    (out / SEGMENT_RECORD).unlink(missing_ok=True)
    progress = _write_progress(events, cancelled, count)
    warnings = clip_warnings + (["the tiny segmentation profile has random weights: its masks are arbitrary"]
                                if model.noise_only else [])
    if spec.task == "matte":
        write_matte(tracks, iter_frames(info, indices), out, names, progress)
        identities = []
    else:
        identities, chosen = write_masks(tracks, spec, out, names, progress)
        warnings += chosen
    record = protocol.SegmentationRecord.from_dict({
        "format": protocol.SEGMENT_FORMAT, "task": spec.task, "job": spec.to_dict(), "status": "done",
        "kind": "image" if spec.still else "video", "source": spec.source, "prompt": spec.prompt, "mode": spec.mode,
        "model": model.name, "noise_only": model.noise_only, "frame_start": indices[0], "frame_count": count,
        "fps": fps, "width": int(width), "height": int(height), "instances_found": len(tracks.instances),
        "identities": identities, "files": names, "warnings": warnings,
    }).to_dict()  # checked as the add-on reads it
    write_json_atomic(out / SEGMENT_RECORD, record)
    for name in sorted(set(earlier_files) - set(names)):  # an earlier job's, not written again: stale now
        (out / name).unlink(missing_ok=True)
    return record


def check_output_folder(out: Path, spec: SegmentSpec) -> None:
    """Raise SegmentationError (one line; nothing changed) unless `out` may take a job's files: missing,
    empty, or an earlier masks or matte job's folder (its record or mark there), and not the folder the
    job reads its frames from."""
    problem = unusable_folder(out)
    if problem:
        raise SegmentationError(f"the output folder {out} {problem}")
    if not out.exists():
        return
    source = Path(spec.source)
    if source.is_dir() and source.resolve() == out.resolve():
        raise SegmentationError(f"the output folder {out} is the folder of the frames the {spec.task} reads; "
                                "choose another folder")
    if (out / SEGMENT_RECORD).is_file() or (out / SEGMENT_MARK).is_file():
        return
    foreign = sorted(entry.name for entry in os.scandir(out) if not TEMP_NAME.fullmatch(entry.name))
    if foreign:
        raise SegmentationError(f"{out} holds {foreign[0]}, which no masks or matte job wrote; choose an empty "
                                "or new folder (nothing in it was changed)")


def _listed_files(out: Path) -> list[str]:
    """The files the record in `out` lists (an earlier job's, of any spec); none without a readable record."""
    try:
        files = protocol.read_json_file(out / SEGMENT_RECORD).get("files")
    except (protocol.ProtocolError, AttributeError):
        return []
    return [name for name in files if protocol.is_link_name(name) and name != SEGMENT_RECORD] if isinstance(
        files, list) else []


def _frame_name(task: str, info, index: int) -> str:
    """masks: mask_<source frame>.png; matte: the source file's name as PNG (frame_<index>.png for videos)."""
    if task == "masks":
        return f"mask_{index:05d}.png"
    if info.kind == "sequence":
        return Path(info.names[index]).with_suffix(".png").name
    return f"frame_{index:05d}.png"


def write_masks(tracks: Tracks, spec: SegmentSpec, out: Path, names: list[str],
                progress: Callable[[int], None] = lambda t: None) -> tuple[list[dict], list[str]]:
    """Paint frame t of the kept identities into out/names[t]; return (identities for the record, warnings)."""
    from ..pipeline.durable import write_png_atomic

    boxes = tracks.first_boxes()
    if spec.subjects:  # marked by hand: subject k is painted with the identity the user gave it
        numbers, warnings = [s.get("identity", k + 1) - 1 for k, s in enumerate(spec.subjects)], []
        slots = [None] * (max(numbers) + 1)
        for instance, number in enumerate(numbers):
            slots[number] = instance
    else:
        order, warnings = arrange_identities(tracks.areas(), boxes, spec.max_identities, spec.pick)
        slots = list(order)
        if not tracks.instances:
            warnings.append(f"no instance of '{spec.prompt}' found: the mask is background only")
    ids = [None if i is None else tracks.instances[i] for i in slots]
    for t, name in enumerate(names):
        write_png_atomic(out / name, paint(tracks.frame_coverage(t, ids), spec.mode, for_reference=spec.still))
        progress(t)
    identities = [{"identity": k, "colour": list(PALETTE[k]), "instance": int(i),
                   "box": [None if np.isnan(v) else round(float(v), 2) for v in boxes[i]]}
                  for k, i in enumerate(slots) if i is not None]
    return identities, warnings


def write_matte(tracks: Tracks, frames: Iterable[np.ndarray], out: Path, names: list[str],
                progress: Callable[[int], None] = lambda t: None) -> None:
    """Frame t as straight-alpha RGBA in out/names[t]: colours untouched, alpha the soft union of all instances."""
    from ..pipeline.durable import write_png_atomic

    for t, (name, frame) in enumerate(zip(names, frames)):
        write_png_atomic(out / name, with_alpha(frame, tracks, t))
        progress(t)


def with_alpha(frame: np.ndarray, tracks: Tracks, t: int) -> np.ndarray:
    """Straight-alpha RGBA: the frame's colours untouched, alpha = soft union of every instance."""
    coverage = tracks.frame_coverage(t, tracks.instances)
    alpha = coverage.max(axis=0) if len(coverage) else np.zeros(frame.shape[:2], np.float32)
    return np.dstack([frame, np.round(alpha * 255).astype(np.uint8)])


def _write_progress(events: EventSink, cancelled: Callable[[], bool], count: int) -> Callable[[int], None]:
    def written(t: int) -> None:
        events("progress", phase="write", frame=t + 1, frames=count)
        if cancelled():
            from ..pipeline.sampler import Cancelled

            raise Cancelled()

    return written


def record_summary(record: dict[str, Any]) -> str:
    what = "matte frame(s)" if record["task"] == "matte" else "mask frame(s)"
    extra = "" if record["task"] == "matte" else f", {len(record['identities'])} identities"
    return f"{record['frame_count']} {what}{extra}"
