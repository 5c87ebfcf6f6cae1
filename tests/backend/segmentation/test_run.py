"""Masks and matte jobs end to end with the tiny models on real footage, and the `masks`/`matte` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend import cli
from backend.pipeline.durable import write_png_atomic
from backend.pipeline.masks import BLACK, WHITE
from backend.pipeline.media import probe_clip, read_frames, read_image
from backend.pipeline.sampler import Cancelled
from backend.segmentation.run import Segmenters, run_segment_job, with_alpha, write_masks
from backend.segmentation.tracks import Tracks
from protocol import PALETTE, SEGMENT_RECORD, SegmentSpec
from scail_fixtures import FOOTAGE

pytestmark = pytest.mark.slow  # tiny SAM models track whole clips

CLIP = FOOTAGE / "scail_001_driving.mp4"
STILL = FOOTAGE / "scail_001_ref.jpg"


@pytest.fixture(scope="module")
def models():
    return Segmenters(tiny=True, device="cpu")


def colours(image):
    return {tuple(int(v) for v in c) for c in np.unique(image.reshape(-1, 3), axis=0)}


def squares_clip(frames=4, height=32, width=64):
    """Two squares moving right: `left` starts at x=4, `right` at x=40. Masks [2, T, H, W] (left first)."""
    masks = np.zeros((2, frames, height, width), bool)
    for t in range(frames):
        masks[0, t, 8:20, 4 + 2 * t:16 + 2 * t] = True
        masks[1, t, 10:26, 40 + 2 * t:52 + 2 * t] = True
    return masks


def tracks_of(masks, ids):
    """Tracks holding `masks` [N, T, H, W] as +-8 logits under instance ids `ids`."""
    n, frames, height, width = masks.shape
    tracks = Tracks(frames, height, width)
    for k, instance in enumerate(ids):
        for t in range(frames):
            tracks.add(instance, t, torch.from_numpy(np.where(masks[k, t], 8.0, -8.0)))
    return tracks


def test_identities_run_left_to_right_on_two_moving_shapes(tmp_path):
    masks = squares_clip()
    tracks = tracks_of(masks[::-1], ids=[3, 5])  # the tracker met the right square first
    spec = SegmentSpec(task="masks", source="unused.mp4")
    names = [f"mask_{t:05d}.png" for t in range(4)]
    identities, warnings = write_masks(tracks, spec, tmp_path, names)
    assert [i["instance"] for i in identities] == [1, 0] and not warnings  # instance 1 (id 5) is the left square
    assert identities[0]["box"] == [4.0, 8.0, 16.0, 20.0] and identities[0]["colour"] == list(PALETTE[0])
    for t, name in enumerate(names):
        image, _ = read_image(tmp_path / name)
        assert (image[masks[0, t]] == PALETTE[0]).all(), "identity 1 (blue) is the left square"
        assert (image[masks[1, t]] == PALETTE[1]).all(), "identity 2 (red) is the right square"
        assert (image[~masks.any(axis=0)[t]] == BLACK).all()


def test_a_matte_keeps_the_colours_and_puts_soft_coverage_in_alpha():
    frame = np.random.default_rng(1).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    tracks = Tracks(1, 8, 16)
    tracks.add(0, 0, torch.linspace(-6, 6, 8).repeat(4, 1))
    rgba = with_alpha(frame, tracks, 0)
    assert rgba.shape == (8, 16, 4) and rgba.dtype == np.uint8
    assert np.array_equal(rgba[..., :3], frame), "straight alpha: colours are not premultiplied"
    np.testing.assert_array_equal(rgba[..., 3], np.round(tracks.coverage(0, 0) * 255).astype(np.uint8))
    assert rgba[:, 0, 3].max() < 13 and rgba[:, -1, 3].min() > 242 and ((rgba[..., 3] > 25) & (rgba[..., 3] < 230)).any()


@pytest.mark.parametrize("mode, background", [("animate", BLACK), ("replace", WHITE)])
def test_tiny_masks_of_real_footage(tmp_path, models, mode, background):
    events = []
    spec = SegmentSpec(task="masks", source=str(CLIP), mode=mode, frame_start=10, frame_end=13, max_identities=3)
    record = run_segment_job(spec, tmp_path, models, events=lambda kind, **f: events.append((kind, f)))
    assert record["files"] == ["mask_00010.png", "mask_00011.png", "mask_00012.png"]
    assert (record["frame_count"], record["frame_start"], record["width"], record["height"]) == (3, 10, 2048, 1080)
    assert json.loads((tmp_path / SEGMENT_RECORD).read_text()) == record and record["status"] == "done"
    assert record["noise_only"] and "arbitrary" in record["warnings"][0]
    count = len(record["identities"])
    assert 1 <= count <= 3 and [i["colour"] for i in record["identities"]] == [list(c) for c in PALETTE[:count]]
    centres = [(i["box"][0] + i["box"][2]) / 2 for i in record["identities"]]
    assert centres == sorted(centres)
    for name in record["files"]:
        image, alpha = read_image(tmp_path / name)
        assert image.shape == (1080, 2048, 3) and alpha is None
        assert colours(image) <= set(PALETTE[:count]) | {background}
    phases = [f["phase"] for kind, f in events if kind == "progress"]
    assert events[0][0] == "started" and events[0][1]["frames"] == 3
    assert phases == ["load"] + ["segment"] * 3 + ["write"] * 3


@pytest.mark.parametrize("mode, background", [("animate", WHITE), ("replace", BLACK)])
def test_tiny_reference_mask_uses_the_reference_background(tmp_path, models, mode, background):
    spec = SegmentSpec(task="masks", source=str(STILL), still=True, mode=mode, max_identities=2)
    record = run_segment_job(spec, tmp_path, models)
    image, _ = read_image(tmp_path / "mask.png")
    assert record["files"] == ["mask.png"] and image.shape[:2] == read_image(STILL)[0].shape[:2]
    assert colours(image) <= set(PALETTE[:len(record["identities"])]) | {background}


def test_tiny_matte_of_real_footage_is_rgba_over_the_source_colours(tmp_path, models):
    record = run_segment_job(SegmentSpec(task="matte", source=str(CLIP), frame_end=2), tmp_path, models)
    assert record["files"] == ["frame_00000.png", "frame_00001.png"] and record["identities"] == []
    source = read_frames(probe_clip(CLIP), [0, 1])
    for t, name in enumerate(record["files"]):
        rgb, alpha = read_image(tmp_path / name)
        assert np.array_equal(rgb, source[t]) and alpha is not None and alpha.shape == (1080, 2048)


def test_a_cancelled_job_leaves_no_record_and_runs_again(tmp_path, models):
    spec = SegmentSpec(task="masks", source=str(CLIP), frame_end=4)
    progress = []

    def cancel_after_two():
        return len(progress) >= 2

    with pytest.raises(Cancelled):
        run_segment_job(spec, tmp_path, models, events=lambda kind, **f: progress.append(f), should_cancel=cancel_after_two)
    assert not (tmp_path / SEGMENT_RECORD).exists()
    record = run_segment_job(spec, tmp_path, models)
    stamp = (tmp_path / "mask_00003.png").stat().st_mtime_ns
    assert run_segment_job(spec, tmp_path, models) == record, "a finished job is not run twice"
    assert (tmp_path / "mask_00003.png").stat().st_mtime_ns == stamp


def test_marked_subjects_go_through_sam2_one_identity_each(tmp_path, models):
    spec = SegmentSpec(task="masks", source=str(CLIP), frame_end=3,
                       subjects=[{"frame": 1, "box": [1000, 100, 1900, 1000]}, {"frame": 0, "points": [[300, 500]]}])
    record = run_segment_job(spec, tmp_path, models)
    assert record["model"] == "tiny" and record["instances_found"] == 2
    assert [(i["identity"], i["instance"]) for i in record["identities"]] == [(0, 0), (1, 1)]  # in mark order


def test_marked_subjects_keep_the_identities_the_user_gave(tmp_path):
    masks = squares_clip()
    tracks = tracks_of(masks[::-1], ids=[0, 1])  # subject 0 is the right square, subject 1 the left one
    subjects = [{"frame": 0, "box": [40, 10, 52, 26], "identity": 1}, {"frame": 0, "box": [4, 8, 16, 20], "identity": 4}]
    spec = SegmentSpec(task="masks", source="unused.mp4", subjects=subjects)
    names = [f"mask_{t:05d}.png" for t in range(4)]
    identities, _ = write_masks(tracks, spec, tmp_path, names)
    assert [(i["identity"], i["instance"]) for i in identities] == [(0, 0), (3, 1)]
    for t, name in enumerate(names):
        image, _ = read_image(tmp_path / name)
        assert (image[masks[1, t]] == PALETTE[0]).all(), "the right square stays blue: no left-to-right reorder"
        assert (image[masks[0, t]] == PALETTE[3]).all(), "the left square is magenta, as marked"
        assert colours(image) == {PALETTE[0], PALETTE[3], BLACK}


def test_cli_masks_and_matte(tmp_path, capsys):
    assert cli.main(["masks", "--video", str(CLIP), "--model", "tiny", "--mode", "replace", "--out",
                     str(tmp_path / "m"), "--frame-end", "2", "--max-identities", "2"]) == 0
    record = json.loads((tmp_path / "m" / SEGMENT_RECORD).read_text())
    assert record["mode"] == "replace" and len(record["files"]) == 2 and len(record["identities"]) <= 2
    assert cli.main(["masks", "--video", str(CLIP), "--model", "tiny", "--out", str(tmp_path / "b"),
                     "--frame-end", "2", "--box", "10,10,500,900@1", "--point", "1500,400"]) == 0
    assert json.loads((tmp_path / "b" / SEGMENT_RECORD).read_text())["job"]["subjects"][0]["frame"] == 1
    assert cli.main(["matte", "--frames", str(tmp_path / "m"), "--model", "tiny", "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == record["files"]
    assert "2 matte frame(s)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["masks", "--image", str(STILL), "--sam3-weights", "{tmp}/nowhere"], "nowhere is not a folder: download 'facebook/sam3'"),
    (["masks", "--video", str(CLIP), "--model", "tiny", "--max-identities", "7"], "1 to 6 identities, 7 were asked for"),
    (["masks", "--video", str(CLIP), "--model", "tiny", "--pick", "0,1,2,3,4,5,6"], "7 were asked for"),
    (["masks", "--video", str(CLIP), "--model", "tiny", "--frame-end", "2", "--box", "1,1,9,9@5"], "marked on frame 5"),
    (["masks", "--video", "{tmp}/missing.mp4", "--model", "tiny"], "missing.mp4"),
    (["matte", "--frames", str(CLIP), "--model", "tiny"], "--frames needs --out"),
])
def test_cli_bad_input_is_one_line_before_any_model_runs(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = cli.main(argv + (["--out", str(tmp_path / "out")] if argv[0] == "masks" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / SEGMENT_RECORD).exists()


def folder_contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("task", ["masks", "matte"])
def test_a_folder_of_the_users_is_refused_in_one_line_before_any_model_and_nothing_in_it_changes(
        tmp_path, capsys, monkeypatch, task):
    import backend.segmentation.run

    source = tmp_path / "renders"
    assert cli.main(["masks", "--video", str(CLIP), "--model", "tiny", "--out", str(source), "--frame-end", "2"]) == 0
    monkeypatch.setattr(backend.segmentation.run.Segmenters, "text", lambda self: pytest.fail("a model was loaded"))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "mask_00000.png").write_bytes(b"a mask painted by hand")
    (out / "frame_00000.png").write_bytes(b"a frame of the user's")
    capsys.readouterr()
    argv = (["masks", "--video", str(CLIP)] if task == "masks" else ["matte", "--frames", str(source)])
    assert cli.main([*argv, "--model", "tiny", "--out", str(out), "--frame-end", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out} holds frame_00000.png, which no masks or matte job wrote; choose an empty or new "
                   "folder (nothing in it was changed)"]
    assert folder_contents(out) == {"frame_00000.png": b"a frame of the user's",
                                    "mask_00000.png": b"a mask painted by hand"}


def test_a_matte_never_writes_into_the_folder_of_the_frames_it_reads(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, frame in enumerate(read_frames(probe_clip(CLIP), [0, 1])):
        write_png_atomic(frames / f"frame_{t:05d}.png", frame)
    before = folder_contents(frames)
    assert cli.main(["matte", "--frames", str(frames), "--model", "tiny", "--out", str(frames)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: the output folder {frames} is the folder of the frames the matte reads; choose another folder"]
    assert folder_contents(frames) == before


def test_a_job_run_again_in_an_earlier_jobs_folder_replaces_only_that_jobs_files(tmp_path, models):
    out = tmp_path / "masks"
    run_segment_job(SegmentSpec(task="masks", source=str(CLIP), frame_end=4), out, models)
    record = run_segment_job(SegmentSpec(task="masks", source=str(CLIP), frame_start=1, frame_end=3), out, models)
    assert record["files"] == ["mask_00001.png", "mask_00002.png"]
    assert sorted(p.name for p in out.iterdir()) == [".scail2-segmentation", *record["files"], SEGMENT_RECORD]


def test_an_error_after_the_progress_line_starts_a_line_of_its_own(tmp_path, capsys, monkeypatch):
    import backend.segmentation.run

    def refuse(*args, **kwargs):
        raise backend.segmentation.SegmentationError("the model refused the frames")

    monkeypatch.setattr(backend.segmentation.run, "write_masks", refuse)
    assert cli.main(["masks", "--video", str(CLIP), "--model", "tiny", "--out", str(tmp_path / "m"),
                     "--frame-end", "2"]) == 2
    lines = capsys.readouterr().err.split("\n")
    assert lines[-2:] == ["error: the model refused the frames", ""], lines
    assert lines[:-2] and all("error" not in line and "\r" not in line for line in lines[:-2]), lines


def test_a_folder_that_cannot_be_made_or_written_is_one_line(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("the user's")
    masks = ["masks", "--video", str(CLIP), "--model", "tiny", "--frame-end", "2", "--out"]
    assert cli.main([*masks, str(a_file / "masks")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: the output folder {a_file / 'masks'} cannot be made: {a_file} "
                                               "is a file, not a folder")
    import errno

    import backend.pipeline.durable

    def full(path, image):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(backend.pipeline.durable, "write_png_atomic", full)
    assert cli.main([*masks, str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"\nerror: cannot write {tmp_path / 'm' / 'mask_00000.png'}: No space left on device\n"), err
