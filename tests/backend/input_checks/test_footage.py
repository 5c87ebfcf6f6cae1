"""Cuts, camera motion and blur, each on a clip built with the defect and on the same clip without it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from check_clips import FOOTAGE, HEIGHT, WIDTH, named, spec, steady, still, verdict, window

from backend.input_checks.run import check_inputs


@pytest.fixture(scope="module")
def photo():
    return still()


def test_a_steady_clip_passes_every_footage_check(tmp_path, photo):
    report = check_inputs(spec(tmp_path, steady(photo, 16)))
    assert [verdict(report, name) for name in ("cut", "camera", "blur")] == ["ok", "ok", "ok"]
    assert report.verdict == "ok"
    assert report.source_frames == list(range(16))


def test_a_cut_made_by_joining_two_clips_fails_at_the_first_frame_of_the_second(tmp_path, photo):
    other = still("scail_001_ref.jpg")
    frames = steady(photo, 6) + steady(other, 6, seed=1)
    report = check_inputs(spec(tmp_path, frames))
    [cut] = named(report, "cut")
    assert cut.verdict == "fail" and cut.frames == [6]
    assert "0-5, 6-11" in cut.message  # where to split the job


def test_a_pan_made_by_sliding_the_window_is_named_with_its_frames(tmp_path, photo):
    # Frames 0-5 still, 6-11 each slide 10 % of the width from the one before (a fast pan), 12-15 still.
    xs = [100.0] * 6 + [100.0 + 0.10 * WIDTH * k for k in range(1, 7)] + [100.0 + 0.6 * WIDTH] * 4
    report = check_inputs(spec(tmp_path, [window(photo, x, 120) for x in xs]))
    [camera] = named(report, "camera")
    assert camera.verdict == "warn" and camera.frames == list(range(6, 12))  # the frames that moved
    assert camera.value == pytest.approx(0.10, abs=0.01)
    assert "pan" in camera.message


def test_a_whip_pan_fails(tmp_path, photo):
    xs = [60.0 + 0.2 * WIDTH * k for k in range(8)]
    report = check_inputs(spec(tmp_path, [window(photo, x, 100) for x in xs]))
    assert verdict(report, "camera") == "fail"


def test_shake_made_by_jittering_the_window(tmp_path, photo):
    rng = np.random.default_rng(3)
    offsets = rng.uniform(-0.04, 0.04, size=(20, 2)) * WIDTH
    report = check_inputs(spec(tmp_path, [window(photo, 300 + dx, 200 + dy) for dx, dy in offsets]))
    shake = [c for c in named(report, "camera") if "shakes" in c.message]
    assert shake and shake[0].verdict in ("warn", "fail") and shake[0].frames


def test_a_zoom_made_by_shrinking_the_window(tmp_path, photo):
    zooms = np.geomspace(1.0, 1.5, 16)
    cx, cy = photo.shape[1] / 2, photo.shape[0] / 2
    frames = [window(photo, cx - WIDTH / z / 2, cy - HEIGHT / z / 2, z) for z in zooms]
    report = check_inputs(spec(tmp_path, frames))
    zoom = [c for c in named(report, "camera") if "zooms" in c.message]
    assert zoom and zoom[0].verdict == "warn" and zoom[0].value == pytest.approx(1.5, abs=0.1)
    assert "zooms in" in zoom[0].message


def test_blur_made_by_a_kernel_names_exactly_the_blurred_frames(tmp_path, photo):
    frames = steady(photo, 14)
    for k in (5, 6, 7):
        frames[k] = cv2.GaussianBlur(frames[k], (0, 0), 4.0)
    report = check_inputs(spec(tmp_path, frames))
    [blur] = named(report, "blur")
    assert blur.verdict == "warn" and blur.frames == [5, 6, 7]


def test_the_real_fixtures_pass_the_footage_checks():
    from protocol import JobSpec

    for n in (1, 2):
        report = check_inputs(JobSpec(driving=str(FOOTAGE / f"scail_00{n}_driving.mp4"),
                                      reference=str(FOOTAGE / f"scail_00{n}_ref.jpg")))
        assert [verdict(report, name) for name in ("cut", "camera", "blur")] == ["ok", "ok", "ok"], n


def test_a_cut_between_the_two_real_fixtures(tmp_path):
    from check_clips import write_sequence

    from backend.pipeline import media
    from protocol import JobSpec

    first = media.read_frames(media.probe_clip(FOOTAGE / "scail_001_driving.mp4"), range(10))
    second = media.read_frames(media.probe_clip(FOOTAGE / "scail_002_driving.mp4"), range(10))
    size = first.shape[1:3]
    second = np.stack([cv2.resize(f, size[::-1]) for f in second])
    folder = write_sequence(tmp_path / "joined", list(first) + list(second))
    report = check_inputs(JobSpec(driving=str(folder), reference=str(FOOTAGE / "scail_001_ref.jpg"), driving_fps=16.0))
    [cut] = named(report, "cut")
    assert cut.verdict == "fail" and cut.frames == [10]
