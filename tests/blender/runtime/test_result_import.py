"""Importing SCAIL-2 results: the maths of results.py (plain Python) and the operator in real Blender.

The maths tests load ``results.py`` on its own. The Blender tests read the
report of one child Python (``results_script.py``) that installs the built
extension with isolated user folders, builds scenes in code around the
fixture clip (65 frames at 16 fps) in 24 and 30 fps scenes, and imports jobs
written here: frames are flat colours that encode the footage frame they stand
for, so renders tell which frame Blender shows.
"""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from fractions import Fraction

import pytest

import blender_testing

from scail2.core import results, timing  # noqa: E402

pytestmark = pytest.mark.lts

FOOTAGE = os.path.realpath(blender_testing.FOOTAGE)
FOOTAGE_FRAMES = 65
FOOTAGE_FPS = 16.0
WIDTH, HEIGHT = 64, 32


# --- Writing jobs.

def write_png(path, width, height, pixel):
    """A flat-colour 8-bit PNG: RGB for 3 values, RGBA for 4."""
    color_type = {3: 2, 4: 6}[len(pixel)]
    raw = (b"\x00" + bytes(pixel) * width) * height

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)))
        fh.write(chunk(b"IDAT", zlib.compress(raw)))
        fh.write(chunk(b"IEND", b""))


def colour(source_frame):
    """The flat colour of the generated frame standing for ``source_frame``."""
    return (16 + 28 * (source_frame % 8), 16 + 28 * (source_frame // 8), 200)


def decode_colour(rgb):
    r, g, _b = rgb
    return int(round((r - 16) / 28)) + 8 * int(round((g - 16) / 28))


def make_job(folder, source_frames, source_path=FOOTAGE, alpha=False, model_fps=16.0, size=(WIDTH, HEIGHT)):
    """A job folder as the backend writes it; returns the manifest path."""
    os.makedirs(os.path.join(folder, "frames"), exist_ok=True)
    frames = []
    for k, source_frame in enumerate(source_frames):
        name = "frames/frame_{:06d}.png".format(k)
        pixel = colour(source_frame) + ((255,) if alpha else ())
        write_png(os.path.join(folder, name), size[0], size[1], pixel)
        frames.append({
            "index": k, "file": name, "source_frame": source_frame,
            "source_time": source_frame / FOOTAGE_FPS,
        })
    manifest = {
        "format": "scail2-job/1",
        "status": "done",
        "job": {"driving": source_path, "reference": "/refs/hero.png", "mode": "animate", "seed": 1234,
                "prompt": "a dancer", "driving_mask": None, "frame_start": source_frames[0], "frame_end": None},
        "seed": 1234,
        "model": {"label": "test"},
        "size": [size[1], size[0]],
        "model_fps": model_fps,
        "source": {"path": source_path, "fps": FOOTAGE_FPS, "frame_count": FOOTAGE_FRAMES},
        "frames": frames,
        "warnings": [],
    }
    path = os.path.join(folder, "manifest.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
    return path


def manifest_frames(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["frames"]


# --- Expectations, worked out here independently of results.py.

def expected_footage_frame(scene_offset, scene_fps, adjusted, version):
    """The footage frame a strip shows ``scene_offset`` scene frames after its start."""
    if not adjusted:
        return min(scene_offset, FOOTAGE_FRAMES - 1)
    position = Fraction(scene_offset) * Fraction(FOOTAGE_FPS) / Fraction(scene_fps)
    shown = math.floor(position) if version >= (5, 0) else math.floor(position + Fraction(1, 2))
    return min(shown, FOOTAGE_FRAMES - 1)


def expected_file(frames, moment):
    """The frame file whose source time is nearest to ``moment`` (earlier on ties); None outside."""
    times = [f["source_time"] for f in frames]
    if moment < times[0] - 1e-9 or moment >= times[-1] + 1 / 16.0 - 1e-9:
        return None
    best = min(range(len(times)), key=lambda i: (abs(times[i] - moment), i))
    return os.path.basename(frames[best]["file"])


def source_frame_of(frames, filename):
    for frame in frames:
        if os.path.basename(frame["file"]) == filename:
            return frame["source_frame"]
    raise KeyError(filename)


# --- Plain Python: core/results.py and core/timing.py.

def test_module_has_no_blender_imports():
    for name in ("results.py", "timing.py"):
        with open(os.path.join(blender_testing.REPO_ROOT, "core", name), encoding="utf-8") as fh:
            source = fh.read()
        assert "import bpy" not in source and "mathutils" not in source


@pytest.mark.parametrize("moment, expected", [
    (-1.0, 0), (0.0, 0), (0.03, 0), (0.0625, 1), (0.09375, 1), (0.1, 2), (5.0, 3),
])
def test_nearest_frame_ties_go_to_the_earlier(moment, expected):
    assert timing.nearest_frame([0.0, 0.0625, 0.125, 0.1875], moment) == expected


def job(tmp_path, source_frames, **kwargs):
    return results.load_result(make_job(str(tmp_path / "job"), source_frames, **kwargs))


def test_real_time_at_24_fps_repeats_frames(tmp_path):
    result = job(tmp_path, range(8))
    timed = timing.real_time_frames(result, 100, 24.0)
    assert timed.first_frame == 100
    # 16 model frames per second at 24 scene frames per second: every other frame twice.
    assert list(timed.indices) == [0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7]


def test_real_time_at_12_fps_skips_frames(tmp_path):
    result = job(tmp_path, range(8))
    timed = timing.real_time_frames(result, -3, 12.0)
    assert timed.first_frame == -3
    assert list(timed.indices) == [0, 1, 3, 4, 5, 7]  # moments 0, 1/12, 2/12 ...: frames nearest in time


def test_real_time_at_the_model_rate_is_one_to_one(tmp_path):
    result = job(tmp_path, range(10, 20))
    assert list(timing.real_time_frames(result, 1, 16.0).indices) == list(range(10))


@pytest.mark.parametrize("rounding", ['FLOOR', 'ROUND'])
def test_strip_frames_follow_the_footage_shown(tmp_path, rounding):
    result = job(tmp_path, range(FOOTAGE_FRAMES))
    rate = timing.movie_rate(97, FOOTAGE_FRAMES, 16.0, 24.0)
    playback = timing.StripPlayback(10.0, 97, rate, 0, FOOTAGE_FRAMES, FOOTAGE_FPS, rounding)
    timed = timing.strip_frames(result, playback)
    assert (timed.first_frame, timed.end_frame) == (10, 107)
    version = (5, 0) if rounding == 'FLOOR' else (4, 5)
    for f in range(10, 107):
        assert timed.indices[f - 10] == expected_footage_frame(f - 10, 24, True, version), f


def test_strip_frames_of_part_of_the_clip(tmp_path):
    result = job(tmp_path, range(10, 40))
    playback = timing.StripPlayback(10.0, 65, 1.0, 0, FOOTAGE_FRAMES, FOOTAGE_FPS)
    timed = timing.strip_frames(result, playback)
    assert (timed.first_frame, timed.end_frame) == (20, 50)
    assert list(timed.indices) == list(range(30))


def test_strip_frames_with_footage_offset(tmp_path):
    # The strip skips the clip's first 5 frames: content position 0 is footage frame 5.
    result = job(tmp_path, range(FOOTAGE_FRAMES))
    playback = timing.StripPlayback(0.0, 60, 1.0, 5, 60, FOOTAGE_FPS)
    timed = timing.strip_frames(result, playback)
    assert (timed.first_frame, timed.indices[0], timed.indices[-1]) == (0, 5, 64)


def test_strip_frames_when_nothing_overlaps(tmp_path):
    result = job(tmp_path, range(50, 60))
    assert timing.strip_frames(result, timing.StripPlayback(0.0, 40, 1.0, 0, 40, FOOTAGE_FPS)) is None


@pytest.mark.parametrize("duration, footage, media, scene, expected", [
    (97, 65, 16.0, 24.0, timing._f32(16.0 / 24.0)),  # added in the interface: real time
    (65, 65, 16.0, 24.0, 1.0),  # added from Python: one footage frame per scene frame
    (121, 65, 16.0, 30.0, timing._f32(16.0 / 30.0)),
    (65, 65, 16.0, 30.0, 1.0),
    (65, 65, 16.0, 16.0, 1.0),
    (32, 65, 16.0, 8.0, 2.0),
])
def test_movie_rate(duration, footage, media, scene, expected):
    assert timing.movie_rate(duration, footage, media, scene) == pytest.approx(expected)


def test_free_channel():
    occupied = [(2, 10, 107), (3, 40, 105), (4, 200, 265), (6, 0, 1000)]
    assert results.free_channel(occupied, 3, 10, 107) == 4
    assert results.free_channel(occupied, 3, 110, 150) == 3
    assert results.free_channel(occupied, 5, 10, 107) == 5
    assert results.free_channel(occupied, 6, 10, 107) == 7
    assert results.free_channel([], 0, 1, 2) == 1
    assert results.free_channel([(128, 0, 10)], 128, 0, 10) is None
    assert results.free_channel([], 129, 0, 10) is None


@pytest.mark.parametrize("kwargs, expected", [
    # 50 mm on a 36 mm sensor, 16:9: 36/50 of the distance across.
    (dict(sensor_fit='AUTO', resolution_x=1920, resolution_y=1080), (0.0, 0.0, 1.44, 0.81)),
    # Portrait with AUTO: the sensor width spans the (longer) height.
    (dict(sensor_fit='AUTO', resolution_x=1080, resolution_y=1920), (0.0, 0.0, 0.81, 1.44)),
    (dict(sensor_fit='VERTICAL', resolution_x=1920, resolution_y=1080), (0.0, 0.0, 1.7066667, 0.96)),
    (dict(sensor_fit='HORIZONTAL', resolution_x=1080, resolution_y=1920), (0.0, 0.0, 1.44, 2.56)),
    # Pixel aspect 2:1 makes 1000x1000 pixels a 2:1 frame.
    (dict(sensor_fit='AUTO', resolution_x=1000, resolution_y=1000, pixel_aspect_x=2.0), (0.0, 0.0, 1.44, 0.72)),
    # Shift in fitted-axis lengths.
    (dict(sensor_fit='AUTO', resolution_x=1920, resolution_y=1080, shift_x=0.5, shift_y=-0.25),
     (0.72, -0.36, 1.44, 0.81)),
    (dict(sensor_fit='AUTO', resolution_x=800, resolution_y=600, ortho=True), (0.0, 0.0, 7.0, 5.25)),
])
def test_camera_view(kwargs, expected):
    params = dict(ortho=False, lens=50.0, ortho_scale=7.0, sensor_width=36.0, sensor_height=24.0)
    params.update(kwargs)
    assert results.camera_view(2.0, **params) == pytest.approx(expected)


@pytest.mark.parametrize("aspect, mode, expected", [
    (2.0, 'FIT', (1.6, 0.8)),  # wider than the 16:9 view: full width
    (2.0, 'FILL', (1.8, 0.9)),  # full height, spilling over the sides
    (1.0, 'FIT', (0.9, 0.9)),
    (1.0, 'FILL', (1.6, 1.6)),
])
def test_plane_size(aspect, mode, expected):
    assert results.plane_size(1.6, 0.9, aspect, mode) == pytest.approx(expected)


def test_overlay_scale():
    # 2048x1080 footage cut to 64x32: scaled by 32/1080 to cover the height? No: 64/2048 covers
    # the width but 32/1080 < 64/2048 would not cover the height, so the cover scale is the larger.
    assert results.overlay_scale(2048, 1080, 64, 32) == pytest.approx(1.0 / max(32 / 1080, 64 / 2048))


def test_png_info(tmp_path):
    write_png(tmp_path / "rgb.png", 5, 3, (1, 2, 3))
    write_png(tmp_path / "rgba.png", 5, 3, (1, 2, 3, 4))
    (tmp_path / "not.png").write_bytes(b"GIF89a")
    assert results.png_info(str(tmp_path / "rgb.png")) == (5, 3, False)
    assert results.png_info(str(tmp_path / "rgba.png")) == (5, 3, True)
    assert results.png_info(str(tmp_path / "not.png")) is None
    assert results.png_info(str(tmp_path / "missing.png")) is None


def test_load_result(tmp_path):
    path = make_job(str(tmp_path / "job"), range(3, 9))
    result = results.load_result(os.path.dirname(path))  # a job folder works too
    assert result.manifest_path == path
    assert result.job_id == "job"
    assert (result.width, result.height, result.has_alpha) == (WIDTH, HEIGHT, False)
    assert result.times == [k / 16.0 for k in range(3, 9)]
    assert result.seed == 1234 and result.settings["prompt"] == "a dancer"
    assert (result.source_fps, result.source_frame_count, result.model_fps) == (16.0, 65, 16.0)
    assert result.frames_dir == str(tmp_path / "job" / "frames")


def rewrite_manifest(path, change):
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    change(manifest)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format="something/2"), "not a SCAIL-2 job manifest"),
    (lambda m: m.update(frames=[]), "lists no frames"),
    (lambda m: m["frames"].reverse(), "not in time order"),
    (lambda m: m["frames"][2].update(source_time="soon"), "not a number"),
    (lambda m: m["frames"][1].update(file="elsewhere/frame_000001.png"), "missing"),
    (lambda m: m.update(model_fps=0), "must be positive"),
])
def test_load_result_refuses(tmp_path, change, message):
    path = make_job(str(tmp_path / "job"), range(5))
    rewrite_manifest(path, change)
    with pytest.raises(results.ResultError, match=message):
        results.load_result(path)


def test_load_result_refuses_missing_frames_of_a_running_job(tmp_path):
    path = make_job(str(tmp_path / "job"), range(5))
    rewrite_manifest(path, lambda m: m.update(status="running"))
    os.remove(str(tmp_path / "job" / "frames" / "frame_000003.png"))
    with pytest.raises(results.ResultError, match=r"1 of 5 frames are missing \(the job is still running\)"):
        results.load_result(path)


def test_load_result_refuses_frames_in_two_folders(tmp_path):
    path = make_job(str(tmp_path / "job"), range(3))
    os.makedirs(str(tmp_path / "job" / "more"))
    shutil.copy(str(tmp_path / "job" / "frames" / "frame_000002.png"), str(tmp_path / "job" / "more"))
    rewrite_manifest(path, lambda m: m["frames"][2].update(file="more/frame_000002.png"))
    with pytest.raises(results.ResultError, match="2 folders"):
        results.load_result(path)


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ("[1]", "not a job manifest")])
def test_load_result_refuses_bad_json(tmp_path, text, message):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(results.ResultError, match=message):
        results.load_result(str(tmp_path))


def test_scene_rate_sequence(tmp_path):
    result = job(tmp_path, range(6))
    timed = timing.TimedFrames(40, (2, 2, 3, 5))
    first = results.ensure_scene_rate_sequence(result, timed)
    folder = os.path.dirname(first)
    assert os.path.basename(first) == "frame_000001.png"
    assert os.path.dirname(folder) == os.path.join(result.job_dir, "scene_frames")
    names = sorted(os.listdir(folder))
    assert names == ["frame_{:06d}.png".format(n) for n in range(5)]
    shown = [os.path.realpath(os.path.join(folder, name)) for name in names]
    expected = [result.frames[i].path for i in (2, 2, 2, 3, 5)]  # number 0 holds the first
    assert [os.path.basename(p) for p in shown] == [os.path.basename(p) for p in expected] or all(
        open(a, "rb").read() == open(b, "rb").read() for a, b in zip(shown, expected))
    # Nothing half-made is left, and the same timing reuses the folder.
    assert os.listdir(os.path.dirname(folder)) == [os.path.basename(folder)]
    assert results.ensure_scene_rate_sequence(result, timed) == first
    # Another timing, or a rewritten frame, gets its own folder.
    other = results.ensure_scene_rate_sequence(result, timing.TimedFrames(40, (2, 3)))
    assert os.path.dirname(other) != folder
    os.utime(result.frames[5].path, ns=(1, 1))
    assert os.path.dirname(results.ensure_scene_rate_sequence(result, timed)) != folder


def test_scene_rate_sequence_copies_when_links_fail(tmp_path, monkeypatch):
    result = job(tmp_path, range(3))

    def refuse(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(results.os, "symlink", refuse)
    monkeypatch.setattr(results.os, "link", refuse)
    first = results.ensure_scene_rate_sequence(result, timing.TimedFrames(1, (0, 1, 2)))
    assert not os.path.islink(first)
    with open(first, "rb") as a, open(result.frames[0].path, "rb") as b:
        assert a.read() == b.read()


def test_scene_rate_sequence_in_a_read_only_job(tmp_path, monkeypatch):
    result = job(tmp_path, range(3))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(results.tempfile, "mkdtemp", refuse)
    with pytest.raises(results.ResultError, match="Cannot write in the job folder"):
        results.ensure_scene_rate_sequence(result, timing.TimedFrames(1, (0, 1)))


# --- Real Blender: one child process does the work, the tests read its report.

@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    work = tmp_path_factory.mktemp("results")
    jobs = {
        "footage": FOOTAGE,
        "full": make_job(str(work / "full"), range(FOOTAGE_FRAMES)),
        "part": make_job(str(work / "part"), range(10, 40)),
        "alpha": make_job(str(work / "alpha"), range(4), alpha=True),
        "missing": make_job(str(work / "missing"), range(FOOTAGE_FRAMES)),
        # The same clip under a path that no strip shows.
        "elsewhere": make_job(str(work / "elsewhere"), range(FOOTAGE_FRAMES),
                              source_path=str(work / "elsewhere" / "dance.mp4")),
    }
    os.remove(str(work / "missing" / "frames" / "frame_000020.png"))
    (work / "other.json").write_text('{"hello": "world"}')
    jobs["not_a_manifest"] = str(work / "other.json")
    with open(work / "jobs.json", "w", encoding="utf-8") as fh:
        json.dump(jobs, fh)
    user_dir = work / "blender-user"
    user_dir.mkdir()
    report_path = work / "report.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(blender_testing.HERE, "results_script.py"),
         built_zip, str(work), str(report_path)],
        env=blender_testing.isolated_blender_env(str(user_dir)),
        cwd=str(work), capture_output=True, text=True, timeout=600,
    )
    output = "exit code {:d}\n--- stdout\n{:s}\n--- stderr\n{:s}".format(
        proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
    assert report_path.is_file(), output
    with open(report_path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["_output"] = output
    data["_jobs"] = jobs
    data["_version"] = tuple(int(v) for v in data["blender_version"].split()[0].split(".")[:2])
    return data


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}".format(name, result["detail"])
    return result["detail"]


def test_operator_is_registered_with_undo(report):
    detail = step(report, "install")
    assert detail["idname"] == "scail2.import_result"
    assert detail["options"] == ["REGISTER", "UNDO"]
    assert {"filepath", "form", "driving_strip", "frame_start", "camera", "distance", "fill_mode",
            "shading", "use_alpha"} <= set(detail["properties"])


def check_strip_timing(report, detail, job, scene_fps, adjusted):
    """Every scene frame of the strip shows the frame nearest to the footage frame shown there."""
    frames = manifest_frames(report["_jobs"][job])
    driving, strip = detail["driving"], detail["strip"]
    start = int(driving["frame_start"])
    for f in range(strip["frame_final_start"], strip["frame_final_end"]):
        shown = expected_footage_frame(f - start, scene_fps, adjusted, report["_version"])
        assert strip["files"][str(f)] == expected_file(frames, shown / FOOTAGE_FPS), f


def test_strip_24_fps_scene_ui_strip(report):
    detail = step(report, "strip_24_ui")
    # Added in the interface, the 16 fps clip plays in real time: 65 * 24 / 16 scene frames.
    assert detail["driving"]["frame_duration"] == 97
    strip = detail["strip"]
    assert strip["channel"] == 3  # first free above the driving strip (channel 2)
    assert (strip["frame_start"], strip["frame_final_start"], strip["frame_final_end"]) == (10, 10, 107)
    check_strip_timing(report, detail, "full", 24, True)
    assert strip["select"] and strip["active"]


def check_against_renders(report, detail, job):
    """What Blender really shows: the driving strip's footage frame, rendered, against the strip's file."""
    frames = manifest_frames(report["_jobs"][job])
    assert detail["shown"]
    for f, (footage_frame, error, runner_up) in detail["shown"].items():
        assert error < 0.5 * runner_up, "frame {:s}: no clear match ({:g} vs {:g})".format(f, error, runner_up)
        assert source_frame_of(frames, detail["strip"]["files"][f]) == footage_frame, f


def test_strip_24_fps_matches_rendered_footage(report):
    check_against_renders(report, step(report, "strip_24_ui"), "full")


def test_strip_30_fps_scene_ui_strip(report):
    detail = step(report, "strip_30_ui")
    assert detail["driving"]["frame_duration"] == 121
    strip = detail["strip"]
    assert strip["channel"] == 3
    assert (strip["frame_final_start"], strip["frame_final_end"]) == (10, 131)
    check_strip_timing(report, detail, "full", 30, True)
    check_against_renders(report, detail, "full")


def test_strip_24_fps_scene_python_strip(report):
    detail = step(report, "strip_24_python")
    # Added from Python, the clip plays one footage frame per scene frame.
    assert detail["driving"]["frame_duration"] == 65
    strip = detail["strip"]
    assert (strip["channel"], strip["frame_final_start"], strip["frame_final_end"]) == (3, 10, 75)
    assert [strip["files"][str(f)] for f in range(10, 75)] == ["frame_{:06d}.png".format(k) for k in range(65)]
    check_against_renders(report, detail, "full")


def test_strip_30_fps_scene_python_strip(report):
    detail = step(report, "strip_30_python")
    strip = detail["strip"]
    assert (strip["channel"], strip["frame_final_start"], strip["frame_final_end"]) == (3, 10, 75)
    check_strip_timing(report, detail, "full", 30, False)


def test_strip_of_part_of_the_clip(report):
    detail = step(report, "strip_part_of_clip")
    strip = detail["strip"]
    # Footage frames 10-39 show from the first scene frame showing footage frame 10.
    frames = manifest_frames(report["_jobs"]["part"])
    first = min(f for f in range(10, 107) if expected_footage_frame(f - 10, 24, True, report["_version"]) >= 10)
    last = max(f for f in range(10, 107) if expected_footage_frame(f - 10, 24, True, report["_version"]) <= 39)
    assert (strip["channel"], strip["frame_final_start"], strip["frame_final_end"]) == (3, first, last + 1)
    assert strip["frame_start"] == first
    check_strip_timing(report, detail, "part", 24, True)
    assert source_frame_of(frames, strip["files"][str(first)]) == 10


def test_strip_when_the_manifest_names_another_copy_of_the_clip(report):
    detail = step(report, "strip_clip_elsewhere")
    ui = step(report, "strip_24_ui")
    assert detail["strip"]["files"] == ui["strip"]["files"]
    assert detail["strip"]["channel"] == 3


def test_strip_trimmed_to_the_visible_driving_strip(report):
    detail = step(report, "strip_trimmed_driving")
    strip = detail["strip"]
    assert (strip["frame_start"], strip["frame_final_start"], strip["frame_final_end"]) == (10, 30, 60)
    check_strip_timing(report, detail, "full", 24, True)


def test_strip_channel_skips_busy_channels(report):
    detail = step(report, "strip_channels")
    # Three strips show the job's clip: the operator asks which one.
    assert "Several strips show the job's driving clip" in detail["ambiguous"]
    assert detail["strip"]["channel"] == 4  # 3 is busy over these frames, 4 only later


def test_strip_without_driving_strip_goes_above_everything(report):
    detail = step(report, "strip_without_driving")
    strip = detail["strip"]
    # Real time from frame 7: 65 frames at 16 fps cover 4.0625 s = 97.5 scene frames.
    assert (strip["channel"], strip["frame_final_start"], strip["frame_final_end"]) == (6, 7, 105)
    frames = manifest_frames(report["_jobs"]["elsewhere"])
    for f in range(7, 105):
        assert strip["files"][str(f)] == expected_file(frames, (f - 7) / 24.0), f
    assert "driving_strip" not in strip["props"]


def test_strip_without_driving_strip_starts_at_current_frame(report):
    strip = step(report, "strip_at_current_frame")["strip"]
    assert (strip["channel"], strip["frame_final_start"], strip["frame_final_end"]) == (1, 33, 131)


def test_invoke_runs_at_once_and_draws(report):
    detail = step(report, "invoke_and_draw")
    assert detail["frame_final_start"] == 12
    drawn = detail["drawn"]
    assert drawn["STRIP"] == ["form", "driving_strip", "frame_start"]
    assert drawn["PLANE"] == ["form", "frame_start", "camera", "distance", "fill_mode", "shading", "use_alpha"]
    assert drawn["BOTH"] == ["form", "driving_strip", "frame_start", "camera", "distance", "fill_mode",
                             "shading", "use_alpha"]


def test_strip_lines_up_with_the_driving_footage(report):
    detail = step(report, "strip_24_ui")
    # 2048x1080 footage fitted into 64x34; the 64x32 frames cover it at 64/2048 of its size.
    cover = max(HEIGHT / 1080, WIDTH / 2048)
    scale = detail["driving"]["scale"]
    assert detail["strip"]["fit_method_scale"] == pytest.approx([scale[0] / cover, scale[1] / cover])


def test_strip_stores_the_job(report):
    props = step(report, "strip_24_ui")["strip"]["props"]
    path = report["_jobs"]["full"]
    assert props["job_id"] == "full"
    assert props["job_dir"] == os.path.dirname(path)
    assert props["manifest"] == path
    assert props["seed"] == 1234
    assert props["driving_strip"] == "driving"
    with open(path, encoding="utf-8") as fh:
        assert json.loads(props["settings"]) == json.load(fh)["job"]


def test_plane_under_the_camera_with_image_sequence(report):
    detail = step(report, "plane_timed_to_driving")
    plane, strip = detail["plane"], detail["strip"]
    assert plane["parent"] == "Cam"
    assert plane["image_source"] == 'SEQUENCE'
    first, end = strip["frame_final_start"], strip["frame_final_end"]
    assert (plane["frame_start"], plane["frame_duration"], plane["frame_offset"]) == (first, end - first, 0)
    assert plane["use_auto_refresh"] and not plane["use_cyclic"]
    assert os.path.basename(plane["image_filepath"]) == "frame_000001.png"
    assert plane["shown_in_solid_texture_mode"]  # Solid shading with Color = Texture shows the frames
    # Number n is scene frame first + n - 1, number 0 holds the first frame.
    frames = manifest_frames(report["_jobs"]["full"])
    files = {os.path.basename(f["file"]): f for f in frames}
    sequence = {name: os.path.basename(target) for name, target in plane["sequence"].items()}
    assert len(sequence) == end - first + 1
    assert sequence["frame_000000.png"] == strip["files"][str(first)]
    for f in range(first, end):
        assert sequence["frame_{:06d}.png".format(f - first + 1)] == strip["files"][str(f)], f
    assert set(sequence.values()) <= set(files)
    assert plane["props"]["job_id"] == "full" and plane["props"]["seed"] == 1234
    assert plane["selected"] and plane["active"]
    # Emission: shows the frames as they are, casts no shadow.
    assert "TEX_IMAGE.Color->BSDF_PRINCIPLED.Emission Color" in plane["links"]
    assert not plane["visible_shadow"]


def test_plane_renders_the_frame_of_the_footage_shown(report):
    detail = step(report, "plane_timed_to_driving")
    strip = detail["strip"]
    first, end = strip["frame_final_start"], strip["frame_final_end"]
    frames = manifest_frames(report["_jobs"]["full"])
    for f, rgb in detail["colours"].items():
        f = int(f)
        if not first <= f < end:
            # Nothing before and after the job's frames, as the strip (issue 30): what is behind, no held frame.
            assert rgb[2] < 100, (f, rgb)  # every generated frame is blue 200
            continue
        expected = strip["files"][str(f)]
        assert decode_colour(rgb) == source_frame_of(frames, expected), (f, rgb)


def test_plane_reuses_its_scene_rate_frames(report):
    assert len(step(report, "plane_timed_to_driving")["folders"]) == 1


def project_bounds(projected):
    xs = [p[0] for p in projected]
    ys = [p[1] for p in projected]
    return min(xs), max(xs), min(ys), max(ys)


@pytest.mark.parametrize("name", [
    "persp_landscape_fill", "persp_landscape_fit", "persp_portrait_fit", "persp_portrait_fill",
    "persp_vertical_pixel_aspect", "persp_horizontal_shift", "ortho_fit", "ortho_shift_fill", "scaled_camera",
])
def test_plane_fills_the_camera_frame(report, name):
    detail = step(report, "plane_framing")[name]
    assert detail["parent"] == name
    tol = 1e-4
    x0, x1, y0, y1 = project_bounds(detail["projected"])
    touches_x = abs(x0) < tol and abs(x1 - 1) < tol
    touches_y = abs(y0) < tol and abs(y1 - 1) < tol
    assert touches_x or touches_y, (x0, x1, y0, y1)
    if detail["fill_mode"] == 'FIT':
        assert -tol < x0 and x1 < 1 + tol and -tol < y0 and y1 < 1 + tol, (x0, x1, y0, y1)
    else:
        assert x0 < tol and x1 > 1 - tol and y0 < tol and y1 > 1 - tol, (x0, x1, y0, y1)
    # At the chosen distance, in world units even under a scaled camera.
    for _x, _y, depth in detail["projected"]:
        assert depth == pytest.approx(detail["distance"], rel=1e-5)
    # The frames keep their aspect.
    width, height = detail["world_edges"]
    assert width / height == pytest.approx(WIDTH / HEIGHT, rel=1e-5)


@pytest.mark.parametrize("name", [
    "persp_landscape_fit", "persp_portrait_fit", "persp_vertical_pixel_aspect", "persp_horizontal_shift",
    "ortho_fit", "ortho_shift_fill",
])
def test_camera_view_maths_matches_blender(report, name):
    detail = step(report, "plane_framing")[name]
    cx, cy, width, height = results.camera_view(detail["distance"], **detail["camera"])
    view = detail["view_frame"]
    assert (cx, cy, width, height) == pytest.approx(
        (view["center_x"], view["center_y"], view["width"], view["height"]), rel=1e-5, abs=1e-6)


def test_plane_alpha(report):
    detail = step(report, "plane_alpha")
    alpha, opaque = detail["alpha"], detail["no_alpha"]
    assert "TEX_IMAGE.Alpha->BSDF_PRINCIPLED.Alpha" in alpha["links"]
    assert "TEX_IMAGE.Color->BSDF_PRINCIPLED.Base Color" in alpha["links"]  # shaded
    assert alpha["surface_render_method"] == 'DITHERED'
    assert alpha["image_alpha_mode"] != 'NONE'
    assert alpha["visible_shadow"]
    assert not [link for link in opaque["links"] if "Alpha" in link]
    assert opaque["image_alpha_mode"] == 'NONE'


@pytest.mark.parametrize("case, words", [
    ("missing_frame", "frames are missing"),
    ("no_manifest", "No job manifest"),
    ("not_a_manifest", "not a SCAIL-2 job manifest"),
    ("no_such_strip", "No strip named nope"),
    ("reversed_strip", "plays backwards"),
    ("no_free_channel", "No free channel"),
    ("not_a_camera", "NotCam is not a camera"),
    ("too_far", "clipping range"),
])
def test_failing_import_leaves_scene_unchanged(report, case, words):
    # The child compared a full snapshot of the file's data before and after each attempt.
    detail = step(report, "failures_leave_scene_unchanged")
    message = detail["errors"][case]
    assert words in message
    assert len(message.strip().splitlines()) == 1, message


def test_import_failing_half_way_removes_what_it_made(report):
    # The child checked the snapshot; the error is Python's own, not a ResultError.
    assert "broken on purpose" in step(report, "failures_leave_scene_unchanged")["errors"]["half_way"]


def test_failing_import_writes_nothing_in_the_job(report):
    assert step(report, "failures_leave_scene_unchanged")["missing_scene_frames"] is False


def test_undo_removes_the_import_in_one_step(report):
    detail = step(report, "undo_is_one_step")
    before, after = detail["before"], detail["after"]
    assert len(after["meshes"]) == len(before["meshes"]) + 1
    assert len(after["images"]) == len(before["images"]) + 1
    assert len(after["scenes"]["UNDO"]["strips"]) == len(before["scenes"]["UNDO"]["strips"]) + 1
    assert detail["undone"] == before
    assert detail["redone"] == after


def test_disables_cleanly(report):
    step(report, "disable")


def test_an_import_says_how_to_see_a_plane_in_solid_shading(report):
    detail = step(report, "viewport_hint")
    assert "set Color to Texture" in detail["solid"]
    assert detail["texture"] == detail["preview"] == ""
