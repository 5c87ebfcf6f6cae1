"""Segmentation jobs on the add-on side without Blender: core/segmentation.py, the queue's tasks, mattes in core/results.py.

Plain Python (no bpy): specs, finished folders as the backend writes them
(``segment.json`` last), which mask each scene frame shows, the scene-rate
sequences of image planes, and the queue following a masks job's events.
Marked ``lts``: quick, and the same code runs in every Blender.
"""

import json
import os
import shutil
import struct
import zlib

import pytest

import blender_testing
from scail2 import protocol
from scail2.core import job as jobs
from scail2.core import queue as job_queue
from scail2.core import results
from scail2.core import segmentation as segment_jobs
from scail2.core.segmentation import SegmentError

pytestmark = pytest.mark.lts


def write_png(path, width, height, pixel):
    """A flat-colour 8-bit PNG: RGB for 3 values, RGBA for 4."""
    raw = (b"\x00" + bytes(pixel) * width) * height

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, {3: 2, 4: 6}[len(pixel)], 0, 0, 0)))
        fh.write(chunk(b"IDAT", zlib.compress(raw)))
        fh.write(chunk(b"IEND", b""))


def masks_folder(folder, frame_start, count, status="done", task="masks", identities=((0, 0, 255), (255, 0, 0))):
    """A masks job folder as the backend leaves it."""
    os.makedirs(folder, exist_ok=True)
    files = []
    for i in range(count):
        name = "mask_{:05d}.png".format(i)
        write_png(os.path.join(folder, name), 8, 4, (0, 0, 255))
        files.append(name)
    record = {"task": task, "kind": "video", "source": "/clips/dance.mp4", "prompt": "person", "mode": "animate",
              "model": "tiny", "frame_start": frame_start, "frame_count": count, "fps": 16.0, "width": 8,
              "height": 4, "instances_found": 3, "files": files, "warnings": ["one instance left out"],
              "identities": [{"identity": i, "colour": list(c), "instance": i, "box": [0, 0, 1, 1]}
                             for i, c in enumerate(identities)],
              "status": status}
    with open(os.path.join(folder, protocol.SEGMENT_RECORD), "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    return record


def test_module_has_no_blender_imports():
    with open(os.path.join(blender_testing.REPO_ROOT, "core", "segmentation.py"), encoding="utf-8") as fh:
        source = fh.read()
    assert "import bpy" not in source and "mathutils" not in source


# --- Specs.

def test_masks_spec_of_a_clip_range():
    spec = segment_jobs.masks_spec("/clips/dance.mp4", prompt=" dog ", mode="replace", identities=2,
                                   frame_start=40, frame_end=44)
    assert spec.to_dict() == dict(protocol.SegmentSpec("masks", "/clips/dance.mp4").to_dict(), prompt="dog",
                                  mode="replace", max_identities=2, frame_start=40, frame_end=44)
    message = {"type": "submit", "task": "masks", "job": spec.to_dict()}
    assert protocol.spec_from_submit(message) == spec


def test_masks_spec_of_a_still_ignores_the_range():
    spec = segment_jobs.masks_spec("/refs/hero.png", prompt="person", mode="animate", identities=1,
                                   frame_start=5, frame_end=9, still=True)
    assert spec.still and (spec.frame_start, spec.frame_end) == (0, None)


@pytest.mark.parametrize("changes, words", [
    (dict(identities=7), "1 to 6 identities, 7 were asked for"),
    (dict(identities=0), "0 were asked for"),
    (dict(prompt="   "), "give a text prompt"),
    (dict(frame_start=9, frame_end=9), "holds no frame"),
])
def test_masks_spec_refuses(changes, words):
    settings = dict(prompt="person", mode="animate", identities=1, frame_start=0, frame_end=4)
    settings.update(changes)
    with pytest.raises(SegmentError, match=words):
        segment_jobs.masks_spec("/clips/dance.mp4", **settings)


def test_matte_spec_of_a_job_folder(tmp_path):
    (tmp_path / "frames").mkdir()
    spec, folder = segment_jobs.matte_spec(str(tmp_path), "person")
    assert (spec.task, spec.source, spec.prompt) == ("matte", str(tmp_path / "frames"), "person")
    assert folder == str(tmp_path / protocol.MATTE_FOLDER)
    with pytest.raises(SegmentError, match="has no frames"):
        segment_jobs.matte_spec(str(tmp_path / "gone"), "person")


# --- Refine Masks: boxes of a rough mask's identities, scaled to the clip.

def test_scale_box_to_the_clips_pixels():
    # A 64x36 rough mask of a 1280x720 clip: 20 clip pixels per mask pixel.
    assert segment_jobs.scale_box((8, 4, 24, 30), (64, 36), (1280, 720)) == [160.0, 80.0, 480.0, 600.0]
    # Aspects that differ by rounding (64x34 over 1000x540) scale each axis on its own.
    assert segment_jobs.scale_box((0, 0, 64, 34), (64, 34), (1000, 540)) == [0.0, 0.0, 1000.0, 540.0]
    assert segment_jobs.scale_box((1, 1, 2, 2), (3, 3), (10, 10)) == [3.33, 3.33, 6.67, 6.67]
    with pytest.raises(SegmentError, match="Cannot scale"):
        segment_jobs.scale_box((0, 0, 1, 1), (0, 36), (1280, 720))


def test_refine_subjects_mark_each_identity_where_it_first_appears():
    frames = [
        (0, {2: (32, 4, 48, 30)}),  # red first, on frame 0
        (1, {2: (30, 4, 46, 30), 1: (4, 8, 20, 36)}),  # blue enters on frame 1
        (2, {1: (0, 0, 10, 10), 2: (0, 0, 5, 5), 3: (50, 0, 60, 10)}),  # green on frame 2
    ]
    subjects, identities = segment_jobs.refine_subjects(frames, (64, 36), (1280, 720))
    assert identities == [1, 2, 3]  # each subject keeps its palette number, whatever its place
    assert subjects == [
        {"frame": 1, "box": [80.0, 160.0, 400.0, 720.0], "identity": 1},
        {"frame": 0, "box": [640.0, 80.0, 960.0, 600.0], "identity": 2},
        {"frame": 2, "box": [1000.0, 0.0, 1200.0, 200.0], "identity": 3},
    ]
    spec = segment_jobs.masks_spec("/clips/dance.mp4", prompt="", mode="animate", identities=len(subjects),
                                   frame_start=40, frame_end=44, subjects=subjects)
    assert spec.subjects == subjects and spec.max_identities == 3 and spec.prompt == ""
    assert protocol.spec_from_submit({"task": "masks", "job": spec.to_dict()}) == spec


def test_refine_subjects_refuse_no_identity_and_more_than_six():
    with pytest.raises(SegmentError, match="shows no identity colour"):
        segment_jobs.refine_subjects([(0, {}), (1, {})], (64, 36), (1280, 720))
    seven = {i: (0, 0, 1, 1) for i in range(1, 8)}
    with pytest.raises(SegmentError, match="has 7 identities; SCAIL-2 binds at most 6"):
        segment_jobs.refine_subjects([(0, seven)], (64, 36), (1280, 720))


# --- Finished folders.

def test_load_record(tmp_path):
    masks_folder(str(tmp_path), 40, 4, identities=((255, 0, 0), (0, 0, 255), (9, 9, 9)))
    record = segment_jobs.load_record(str(tmp_path), "masks")
    assert record.files == tuple(str(tmp_path / "mask_{:05d}.png".format(i)) for i in range(4))
    assert (record.frame_start, record.frame_end, record.mode, record.prompt) == (40, 44, "animate", "person")
    # Palette numbers by colour (red is identity 2); an unknown colour falls back to its 0-based index.
    assert record.identities == (2, 1, 3)
    assert record.warnings == ("one instance left out",)


@pytest.mark.parametrize("change, words", [
    ("running", r"has not finished \(running\)"),
    ("matte", "is a matte job, not masks"),
    ("missing", "1 of 4 files of the segmentation job are missing"),
    ("none", "left no record"),
    ("junk", "Cannot read"),
])
def test_load_record_refuses(tmp_path, change, words):
    masks_folder(str(tmp_path), 0, 4, status="running" if change == "running" else "done",
                 task="matte" if change == "matte" else "masks")
    record = tmp_path / protocol.SEGMENT_RECORD
    if change == "missing":
        (tmp_path / "mask_00002.png").unlink()
    elif change == "none":
        record.unlink()
    elif change == "junk":
        record.write_text("{")
    with pytest.raises(SegmentError, match=words):
        segment_jobs.load_record(str(tmp_path), "masks")


# --- Which mask each scene frame shows.

def test_masks_follow_the_footage_the_strip_shows(tmp_path):
    """16 fps footage from frame 40 on, played one footage frame per 1.5 scene frames from scene frame 10."""
    masks_folder(str(tmp_path), 40, 4)
    record = segment_jobs.load_record(str(tmp_path), "masks")
    shown = [0, 0, 1, 2, 2, 3]  # per scene frame 10..15, the footage frame from 40 on
    first, files = segment_jobs.mask_elements(record, 40, 10, shown)
    assert first == 10
    assert [os.path.basename(f) for f in files] == ["mask_00000.png", "mask_00000.png", "mask_00001.png",
                                                    "mask_00002.png", "mask_00002.png", "mask_00003.png"]


def test_masks_cover_part_of_the_strip(tmp_path):
    masks_folder(str(tmp_path), 42, 2)
    record = segment_jobs.load_record(str(tmp_path), "masks")
    first, files = segment_jobs.mask_elements(record, 40, 10, [0, 1, 2, 3, 4, 5])
    assert first == 12 and [os.path.basename(f) for f in files] == ["mask_00000.png", "mask_00001.png"]
    with pytest.raises(SegmentError, match="cover no frame"):
        segment_jobs.mask_elements(record, 0, 10, [0, 1, 2])


def test_limit_timing_to_the_generate_frame_range():
    # Scene frames 10..15 show footage frames 40 + [0, 0, 1, 2, 2, 3].
    assert segment_jobs.limit_timing(40, 10, [0, 0, 1, 2, 2, 3], 12, 14) == (41, 43, 12, [0, 1, 1])
    assert segment_jobs.limit_timing(40, 10, [0, 0, 1, 2, 2, 3], 1, 100) == (40, 44, 10, [0, 0, 1, 2, 2, 3])
    with pytest.raises(SegmentError, match="outside the footage strip"):
        segment_jobs.limit_timing(40, 10, [0, 1], 20, 30)
    with pytest.raises(SegmentError, match="is empty"):
        segment_jobs.limit_timing(40, 10, [0, 1], 12, 11)


# --- Scene-rate sequences of image planes.

def _frames(tmp_path, count=3):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(count):
        write_png(str(frames / "frame_{:06d}.png".format(i)), 4, 2, (10 * i, 0, 0))
    return frames


@pytest.mark.parametrize("link", ["symlink", "hardlink", "copy"])
def test_sequence_sources(tmp_path, link):
    frames = _frames(tmp_path)
    folder = tmp_path / "scene_frames" / "abc"
    folder.mkdir(parents=True)
    order = [0, 0, 1, 1, 2, 2]  # number 0 repeats the first
    for number, index in enumerate(order):
        source, target = frames / "frame_{:06d}.png".format(index), folder / "frame_{:06d}.png".format(number)
        if link == "symlink":
            os.symlink(os.path.relpath(source, folder), target)
        elif link == "hardlink":
            os.link(source, target)
        else:
            shutil.copyfile(source, target)
    names = segment_jobs.sequence_sources(str(folder / "frame_000001.png"), str(frames))
    assert names == ["frame_{:06d}.png".format(i) for i in order]


def test_sequence_sources_refuses_strangers(tmp_path):
    frames = _frames(tmp_path)
    folder = tmp_path / "seq"
    folder.mkdir()
    for number in range(3):
        write_png(str(folder / "frame_{:06d}.png".format(number)), 4, 2, (99, 99, 99))
    with pytest.raises(SegmentError, match="none of the job's frames"):
        segment_jobs.sequence_sources(str(folder / "frame_000001.png"), str(frames))


# --- Mattes in results.load_result.

def result_job(folder, count=3, matte=None):
    """A generation job folder; ``matte``: None, "record" (a matte job's), "manifest" (generated with matte)."""
    os.makedirs(os.path.join(folder, "frames"))
    entries = []
    for i in range(count):
        write_png(os.path.join(folder, "frames", "frame_{:06d}.png".format(i)), 8, 4, (50, 60, 70))
        entries.append({"index": i, "file": "frames/frame_{:06d}.png".format(i), "source_time": i / 16.0})
    manifest = {"format": "scail2-job/1", "status": "done", "frames": entries, "model_fps": 16.0}
    if matte:
        rgba = os.path.join(folder, protocol.MATTE_FOLDER)
        os.makedirs(rgba)
        for i in range(count):
            write_png(os.path.join(rgba, "frame_{:06d}.png".format(i)), 8, 4, (50, 60, 70, 128))
        if matte == "manifest":
            manifest["matte"] = protocol.MATTE_FOLDER
        else:
            with open(os.path.join(rgba, protocol.SEGMENT_RECORD), "w", encoding="utf-8") as fh:
                json.dump({"task": "matte", "status": "running" if matte == "running" else "done"}, fh)
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    return os.path.join(folder, "manifest.json")


@pytest.mark.parametrize("how", ["record", "manifest"])
def test_load_result_uses_a_finished_matte(tmp_path, how):
    path = result_job(str(tmp_path), matte=how)
    result = results.load_result(path)
    assert result.matte and result.has_alpha
    assert result.frames_dir == str(tmp_path / protocol.MATTE_FOLDER)
    assert [os.path.basename(f.path) for f in result.frames] == ["frame_{:06d}.png".format(i) for i in range(3)]
    plain = results.load_result(path, use_matte=False)
    assert not plain.matte and not plain.has_alpha and plain.frames_dir == str(tmp_path / "frames")


def test_load_result_ignores_an_unfinished_or_incomplete_matte(tmp_path):
    running = results.load_result(result_job(str(tmp_path / "a"), matte="running"))
    assert not running.matte and running.frames_dir == str(tmp_path / "a" / "frames")
    path = result_job(str(tmp_path / "b"), matte="record")
    os.remove(str(tmp_path / "b" / protocol.MATTE_FOLDER / "frame_000001.png"))
    incomplete = results.load_result(path)
    assert not incomplete.matte and not incomplete.has_alpha
    assert any("The matte lacks 1 of 3 frames" in w for w in incomplete.warnings)
    assert results.matte_frames_dir(str(tmp_path / "b"))  # its record says done all the same


# --- The queue follows a segmentation job's events.

def test_queue_refuses_a_bad_segmentation_without_a_worker(tmp_path):
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), str(tmp_path))
    spec = dict(protocol.SegmentSpec("masks", "/clips/dance.mp4").to_dict(), max_identities=7)
    job = queue.submit(spec, task="masks")
    assert job.status == "failed" and job.error.code == "bad_input" and job.task == "masks"
    assert "7 were asked for" in job.error.message
    job = queue.submit(protocol.SegmentSpec("masks", "/clips/dance.mp4"), task="generate")
    assert job.status == "failed" and "unknown job settings" in job.error.message
    assert queue.client is None


def test_queue_follows_a_masks_job(tmp_path):
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), str(tmp_path))
    job = jobs.Job(key="k", spec={}, task="masks", id="w1", status="queued", sent=True, job_dir=str(tmp_path))
    queue.jobs[job.key] = job

    def event(kind, **fields):
        queue._handle(dict(v=1, type=kind, job="w1", **fields))

    event("started", task="masks", frames=4, job_dir=str(tmp_path))
    event("progress", phase="load", frame=0, frames=4)
    assert job.phase_text() == "Loading the model" and job.progress() == 0.0
    event("progress", phase="segment", frame=2, frames=4)  # frames finished
    assert job.phase_text() == "Segmenting: frame 2/4" and job.progress() == pytest.approx(0.45)
    event("progress", phase="write", frame=4, frames=4)
    assert job.phase_text() == "Writing frames: frame 4/4" and job.progress() == pytest.approx(1.0)
    event("done", task="masks", frames=4, identities=[{"identity": 0}], warnings=["w"], job_dir=str(tmp_path))
    assert job.status == "done" and job.record == str(tmp_path / protocol.SEGMENT_RECORD)
    assert job.frames_ready == 4 and job.warnings == ["w"]
    assert job.phase_text() == "Done: 4 frames"
    assert [c.kind for c in queue.poll()] == ["started", "progress", "progress", "progress", "done"]


def test_reconnected_queue_finds_a_finished_segmentation(tmp_path):
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), str(tmp_path))
    done = jobs.Job(key="a", spec={}, task="matte", id="w1", status="running", sent=True,
                    job_dir=str(tmp_path / "a"))
    lost = jobs.Job(key="b", spec={}, task="masks", id="w2", status="running", sent=True,
                    job_dir=str(tmp_path / "b"))
    queue.jobs.update(a=done, b=lost)
    masks_folder(done.job_dir, 0, 2, task="matte")
    queue._reconcile([])
    assert done.status == "done" and done.record.endswith(protocol.SEGMENT_RECORD)
    assert lost.status == "failed" and lost.error.code == "connection_lost"


def test_queue_follows_the_matte_phase_of_a_generation():
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), "/tmp/jobs")
    job = jobs.Job(key="k", spec={}, id="w1", status="queued", sent=True)
    queue.jobs[job.key] = job

    def event(kind, **fields):
        queue._handle(dict(v=1, type=kind, job="w1", **fields))

    event("started", frames=4, segments=1)
    event("progress", phase="decode", segment=1, segments=1)
    assert job.progress() == pytest.approx(0.9)
    event("progress", phase="matte", stage="segment", frame=2, frames=4)
    assert job.phase_text() == "Cutting out the characters: frame 2/4"
    assert job.progress() == pytest.approx(0.9 + 0.1 * 0.45) and job.eta_s is None
    event("progress", phase="matte", stage="write", frame=4, frames=4)
    assert job.progress() == pytest.approx(1.0)
    event("done", manifest="/jobs/a/manifest.json", job_dir="/jobs/a")
    assert job.manifest == "/jobs/a/manifest.json" and job.record == "" and job.phase_text() == "Done: 4 frames"
