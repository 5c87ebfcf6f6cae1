"""Subjects, identities, reference framing and timing, on masks drawn with known boxes and sequences with
known numbering; each defect next to the same job without it."""

from __future__ import annotations

import av
import numpy as np
import pytest
from check_clips import HEIGHT, WIDTH, named, spec, steady, still, verdict, write_sequence

from backend.input_checks.run import check_inputs
from protocol import JobSpec


@pytest.fixture(scope="module")
def frames():
    return steady(still(), 12)


TALL = (80, 40, 176, 420)  # x0, y0, x1, y1: 380 of 448 rows, 85 % of the frame's height


def test_a_large_subject_bound_by_the_reference_passes(tmp_path, frames):
    report = check_inputs(spec(tmp_path, frames, masks=[{1: TALL}] * 12, reference_boxes={1: TALL}))
    assert verdict(report, "identities") == "ok"
    [size] = named(report, "subject_size", 1)
    assert size.verdict == "ok" and size.value == pytest.approx(380 / HEIGHT, abs=0.01)
    assert not named(report, "subject_missing") and verdict(report, "reference_framing") == "ok"


def test_a_subject_an_eighth_of_the_frame_tall_fails(tmp_path, frames):
    small = (100, 200, 124, 256)  # 56 rows: 1/8 of 448
    report = check_inputs(spec(tmp_path, frames, masks=[{1: small}] * 12, reference_boxes={1: small}))
    [size] = named(report, "subject_size", 1)
    assert size.verdict == "fail" and size.value == pytest.approx(0.125, abs=0.01)
    assert size.frames == list(range(12)) and "crop closer" in size.message


def test_two_subjects_against_a_one_identity_reference_fail_on_every_frame_not_the_first(tmp_path, frames):
    # Identity 2 walks in at frame 7: a check of the first frame would miss it.
    masks = [{1: TALL}] * 7 + [{1: TALL, 2: (190, 60, 250, 400)}] * 5
    report = check_inputs(spec(tmp_path, frames, masks=masks, reference_boxes={1: TALL}))
    [stray] = named(report, "identities", 2)
    assert stray.verdict == "fail" and stray.frames == list(range(7, 12))
    [missing] = named(report, "subject_missing", 2)
    assert missing.frames == list(range(7)) and missing.verdict == "fail"  # 7 of 12 frames


def test_a_reference_identity_without_a_subject_warns(tmp_path, frames):
    report = check_inputs(spec(tmp_path, frames, masks=[{1: TALL}] * 12,
                               reference_boxes={1: (10, 40, 120, 420), 2: (130, 40, 250, 420)}))
    [unused] = named(report, "identities", 2)
    assert unused.verdict == "warn" and "will not appear" in unused.message
    assert [c.identity for c in named(report, "identities")] == [2]  # identity 1 has its subject


def test_overlap_drawn_on_known_frames(tmp_path, frames):
    apart = {1: (10, 40, 110, 420), 2: (150, 40, 250, 420)}
    # Frames 4-7: identity 2 moves over identity 1 (painted after it, so identity 1 is hidden there).
    together = {2: (40, 40, 140, 420), 1: (10, 40, 110, 420)}
    masks = [apart] * 4 + [together] * 4 + [apart] * 4
    report = check_inputs(spec(tmp_path, frames, masks=masks, reference_boxes=apart))
    [overlap] = named(report, "overlap")
    assert overlap.verdict == "warn" and overlap.frames == [4, 5, 6, 7]
    clean = check_inputs(spec(tmp_path / "apart", frames, masks=[apart] * 12, reference_boxes=apart))
    assert verdict(clean, "overlap") == "ok"


def test_replace_mode_reference_framed_larger_warns_with_the_expected_scale(tmp_path, frames):
    driving_box = (80, 150, 176, 350)  # 200 rows
    reference_box = (60, 40, 200, 380)  # 340 rows: 1.7x
    report = check_inputs(spec(tmp_path, frames, masks=[{1: driving_box}] * 12, reference_boxes={1: reference_box},
                               mode="replace"))
    [framing] = [c for c in named(report, "reference_framing", 1) if "height" in c.message]
    assert framing.verdict == "warn" and framing.value == pytest.approx(1.7, abs=0.05)
    assert "too large" in framing.message and "0.59" in framing.message
    same = check_inputs(spec(tmp_path / "same", frames, masks=[{1: driving_box}] * 12,
                             reference_boxes={1: driving_box}, mode="replace"))
    assert verdict(same, "reference_framing") == "ok"


def test_length_and_segments(tmp_path):
    frames = steady(still(), 1)
    report = check_inputs(spec(tmp_path, frames * 84))
    [length] = named(report, "length")
    assert length.value == 84 and "2 segments" in length.message
    [last] = named(report, "last_segment")  # 81 + 3 new frames: a pass for 3 frames
    assert last.verdict == "warn" and last.value == 3 and last.frames == [81, 82, 83]
    one = check_inputs(spec(tmp_path / "one", frames * 81))
    assert "1 segment" in named(one, "length")[0].message and not named(one, "last_segment")
    assert named(one, "length")[0].verdict == "ok"


@pytest.mark.parametrize("count, verdict", [(1, "warn"), (4, "warn"), (5, "ok")])
def test_a_driving_clip_of_a_few_frames_warns_that_the_take_is_a_still(tmp_path, count, verdict):
    [length] = named(check_inputs(spec(tmp_path, steady(still(), 1) * count)), "length")
    assert (length.verdict, length.value) == (verdict, count)
    assert ("a still, not an animation" in length.message) == (verdict == "warn")
    assert length.message.startswith(f"{count} frame{'s' if count > 1 else ''} at 16 fps")


def test_gaps_in_an_image_sequence(tmp_path):
    frames = steady(still(), 10)
    folder = write_sequence(tmp_path / "gappy", frames[:5])
    write_sequence(folder, frames[5:], start=8)  # numbers 5, 6, 7 missing
    reference = str(folder / "frame_0000.png")
    report = check_inputs(JobSpec(driving=str(folder), reference=reference, driving_fps=16.0))
    [gaps] = named(report, "sequence_gaps")
    # The gap is held (frames 5-7 show file 4, issue 30): the motion jumps at job frame 8, file 8.
    assert gaps.verdict == "warn" and gaps.value == 3 and gaps.frames == [8]
    whole = check_inputs(JobSpec(driving=str(write_sequence(tmp_path / "whole", frames)), reference=reference,
                                 driving_fps=16.0))
    assert verdict(whole, "sequence_gaps") == "ok"


def _video(path, frames, times):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = stream.time_base = __import__("fractions").Fraction(1, 1000)
        for frame, t in zip(frames, times):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = int(t * 1000)
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_variable_frame_rate(tmp_path):
    frames = steady(still(), 20)
    even = [k / 30 for k in range(20)]
    uneven = [k / 30 + (0.05 if k >= 10 else 0.0) for k in range(20)]  # one 83 ms step among 33 ms ones
    reference = str(write_sequence(tmp_path / "ref", frames[:1]) / "frame_0000.png")
    vfr = check_inputs(JobSpec(driving=str(_video(tmp_path / "vfr.mp4", frames, uneven)), reference=reference))
    cfr = check_inputs(JobSpec(driving=str(_video(tmp_path / "cfr.mp4", frames, even)), reference=reference))
    assert verdict(vfr, "frame_rate") == "warn" and named(vfr, "frame_rate")[0].value > 2
    assert verdict(cfr, "frame_rate") == "ok"


def test_footage_slower_than_the_model(tmp_path):
    report = check_inputs(spec(tmp_path, steady(still(), 8), driving_fps=8.0))
    assert verdict(report, "source_rate") == "warn"
    assert verdict(check_inputs(spec(tmp_path / "fast", steady(still(), 8), driving_fps=24.0)), "source_rate") == "ok"
