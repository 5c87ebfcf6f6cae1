"""Issue 30, items 1-3: a clip's frames at their true moments, and a driving mask that binds nobody.

A variable-frame-rate mp4 is written here with PyAV at chosen timestamps; image sequences with a gap
and an all-black driving mask are written as PNGs. Jobs run through `python -m backend generate`
(in-process `cli.main`, tiny model on the CPU).
"""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
from scail_fixtures import FOOTAGE
from test_inputs import palette_mask, sequence, write_rgb
from test_media import coded_frame, frame_number

from backend import cli
from backend.pipeline import media
from backend.segmentation.run import run_segment_job

REFERENCE = FOOTAGE / "scail_001_ref.jpg"
# Frames on screen at these milliseconds: bursts and pauses, as a phone records (average ~10 fps).
VFR_MS = [0, 100, 133, 400, 433, 466, 500, 800]


def write_vfr_clip(path, times_ms=VFR_MS, size=(48, 64)) -> str:
    """An mp4 whose frame i (showing the coded number i) is stamped times_ms[i] milliseconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=1000)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(coded_frame(i, *size), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def run_generate(capsys, tmp_path, driving, *extra) -> tuple[int, str, dict]:
    status = cli.main(["generate", "--model", "tiny", "--device", "cpu", "--driving", str(driving),
                       "--reference", str(REFERENCE), "--height", "64", "--width", "128", "--steps", "1",
                       "--seed", "3", "--out", str(tmp_path / "job"), *map(str, extra)])
    captured = capsys.readouterr()
    manifest_path = tmp_path / "job" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return status, captured.out + captured.err, manifest


# -- 1. variable frame rate ----------------------------------------------------------------------


def test_a_variable_rate_clip_is_timed_by_its_own_timestamps(tmp_path):
    info = media.probe_clip(write_vfr_clip(tmp_path / "phone.mp4"))
    assert info.variable_rate and info.frame_count == 8
    assert info.times == pytest.approx([ms / 1000 for ms in VFR_MS], abs=1e-3)
    # Model frames every 1/16 s over frames [0, 4), which end when frame 4 shows (0.433 s): each shows
    # the frame on screen at its moment. The average rate gave [0, 0, 1, 2, 2, 3].
    pairs = media.model_frame_times(info, 16.0, 0, 4)
    assert [source for source, _ in pairs] == [0, 0, 1, 2, 2, 2, 2]
    assert [t for _, t in pairs] == pytest.approx([k / 16 for k in range(7)])
    # From frame 3 on, time starts at frame 3's own moment.
    later = media.model_frame_times(info, 16.0, 3)
    assert later[0] == (3, pytest.approx(0.4)) and [s for s, _ in later][:4] == [3, 4, 6, 6]  # 0.4625 s shows 4, 0.525 s shows 6
    assert all(info.times[s] <= t + 1e-9 for s, t in later)
    # The frames decoded are the ones named (in presentation order), also after a seek.
    frames = media.read_frames(info, [7, 3, 0])
    assert [frame_number(f) for f in frames] == [7, 3, 0]


def test_a_constant_rate_clip_keeps_its_rate_and_no_warning():
    info = media.probe_clip(FOOTAGE / "scail_001_driving.mp4")
    assert not info.variable_rate and info.fps == 16.0 and info.warnings == ()
    assert media.model_frame_times(info, 16.0, 0, 4) == [(k, k / 16) for k in range(4)]


@pytest.mark.slow
def test_a_variable_rate_job_says_so_once_and_its_manifest_maps_true_times(tmp_path, capsys):
    clip = write_vfr_clip(tmp_path / "phone.mp4")
    status, out, manifest = run_generate(capsys, tmp_path, clip, "--end", "4")
    assert status == 0, out
    lines = [line for line in out.splitlines() if "variable frame rate" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: the driving clip has a variable frame rate")
    assert manifest["source"]["variable_rate"] is True
    assert [f["source_frame"] for f in manifest["frames"]] == [0, 0, 1, 2, 2, 2, 2]
    for entry in manifest["frames"]:
        assert VFR_MS[entry["source_frame"]] / 1000 <= entry["source_time"] + 1e-3
        assert entry["source_time"] < VFR_MS[entry["source_frame"] + 1] / 1000


@pytest.mark.slow
def test_a_masks_job_on_a_variable_rate_clip_names_every_frame_and_warns(tmp_path):
    from backend.segmentation.run import Segmenters
    from protocol import SegmentSpec

    clip = write_vfr_clip(tmp_path / "phone.mp4")
    spec = SegmentSpec(task="masks", source=clip, prompt="person")
    record = run_segment_job(spec, tmp_path / "masks", Segmenters(tiny=True, device="cpu"))
    assert any("variable frame rate" in w for w in record["warnings"])
    assert len(list((tmp_path / "masks").glob("*.png"))) == 8


# -- 2. image sequences with gaps -----------------------------------------------------------------


def test_a_gap_in_a_sequence_holds_the_frame_before_it(tmp_path):
    for number in (0, 1, 2, 5):
        write_rgb(tmp_path / f"img_{number:04d}.png", coded_frame(number))
    for clip in (tmp_path, tmp_path / "img_%04d.png", tmp_path / "img_####.png"):
        info = media.probe_clip(clip, fps=10.0)
        assert info.frame_count == 6
        assert [frame_number(f) for f in media.read_frames(info, range(6))] == [0, 1, 2, 2, 2, 5]
        assert info.warnings == ("the driving clip has no file for frames 3, 4: the frame before each gap is held, "
                                 "so no later frame moves in time",)
    # Frame 5 stays at 0.5 s: it is not shifted to where frame 3 would be.
    assert media.model_frame_times(info, 10.0)[5] == (5, 0.5)


def test_a_render_with_a_frame_step_plays_one_file_per_frame(tmp_path):
    for number in (1, 3, 5, 7):
        write_rgb(tmp_path / f"img_{number:04d}.png", coded_frame(number))
    info = media.probe_clip(tmp_path)
    assert info.frame_count == 4 and info.warnings == ()
    assert [frame_number(f) for f in media.read_frames(info, range(4))] == [1, 3, 5, 7]


@pytest.mark.slow
def test_a_job_on_a_sequence_with_a_gap_warns_and_keeps_later_frames_in_place(tmp_path, capsys):
    shot = tmp_path / "shot"
    shot.mkdir()
    for number in (1, 2, 3, 6):
        write_rgb(shot / f"frame_{number:04d}.png", np.full((64, 128, 3), 40 * number, np.uint8))
    status, out, manifest = run_generate(capsys, tmp_path, shot / "frame_####.png", "--driving-fps", "16")
    assert status == 0, out
    assert "warning: the driving clip has no file for frames 4, 5" in out
    assert [f["source_frame"] for f in manifest["frames"]] == [0, 1, 2, 3, 4, 5]
    assert manifest["frames"][5]["source_time"] == pytest.approx(5 / 16)


# -- 3. a driving mask with no identity ------------------------------------------------------------


@pytest.mark.slow
def test_an_all_black_driving_mask_is_a_clear_warning(tmp_path, capsys):
    sequence(tmp_path / "shot", 3, size=(64, 128))
    sequence(tmp_path / "masks", 3, size=(64, 128), frames=lambda i: np.zeros((64, 128, 3), np.uint8))
    status, out, manifest = run_generate(capsys, tmp_path, tmp_path / "shot", "--driving-mask",
                                         tmp_path / "masks", "--driving-fps", "16")
    assert status == 0, out
    line = next(w for w in manifest["warnings"] if "no identity" in w)
    assert line.startswith("the driving mask shows no identity on any of the job's 3 frames")
    assert f"warning: {line}" in out


@pytest.mark.slow
def test_a_mask_with_an_identity_on_an_unsampled_frame_gives_no_such_warning(tmp_path, capsys):
    sequence(tmp_path / "shot", 5, size=(64, 128))
    black = np.zeros((64, 128, 3), np.uint8)
    sequence(tmp_path / "masks", 5, size=(64, 128),
             frames=lambda i: palette_mask(64, 128, background=(0, 0, 0)) if i == 1 else black)
    status, out, manifest = run_generate(capsys, tmp_path, tmp_path / "shot", "--driving-mask",
                                         tmp_path / "masks", "--driving-fps", "16")
    assert status == 0, out
    assert not any("no identity" in w for w in manifest["warnings"])
