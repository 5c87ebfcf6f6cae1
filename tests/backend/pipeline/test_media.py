"""backend.pipeline.media on real files: the footage fixtures and clips, sequences and images made here."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import cv2
import numpy as np
import pytest
import torch
from scail_fixtures import FOOTAGE

from backend.pipeline import durable, media, pixels

DRIVING = FOOTAGE / "scail_001_driving.mp4"


# --- helpers -----------------------------------------------------------------------------------
# A frame's number is coded in two channels in steps of 32, which survives lossy codecs.


def coded_frame(number: int, height: int = 48, width: int = 64) -> np.ndarray:
    """RGB frame showing `number` (0..63): R = 16 + 32 * (n % 8), G = 16 + 32 * (n // 8)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = 16 + 32 * (number % 8)
    frame[..., 1] = 16 + 32 * (number // 8)
    frame[..., 2] = 128
    return frame


def frame_number(rgb: np.ndarray) -> int:
    r, g = (float(np.median(rgb[..., c])) for c in (0, 1))
    return int(round((r - 16) / 32)) + 8 * int(round((g - 16) / 32))


def write_coded_clip(path, count: int, fps: float, fourcc: str = "mp4v") -> None:
    """`count` coded frames (numbers wrap at 64) through cv2.VideoWriter, as a user's clip."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (64, 48))
    assert writer.isOpened()
    for i in range(count):
        writer.write(cv2.cvtColor(coded_frame(i % 64), cv2.COLOR_RGB2BGR))
    writer.release()


def sequential_decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def error_line(excinfo) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "\n" not in message and message
    return message


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# --- real footage --------------------------------------------------------------------------------


def test_probe_real_footage():
    info = media.probe_clip(DRIVING)
    assert info == media.ClipInfo(str(DRIVING), "video", 65, 16.0, 2048, 1080)


def test_read_frames_equals_sequential_decoding():
    info = media.probe_clip(DRIVING)
    frames = media.read_frames(info, [0, 10, 10, 64])
    assert frames.shape == (4, 1080, 2048, 3) and frames.dtype == np.uint8
    reference = sequential_decode(DRIVING)
    assert len(reference) == 65
    for got, index in zip(frames, [0, 10, 10, 64]):
        np.testing.assert_array_equal(got, reference[index])
    # Any order, and a path instead of a ClipInfo.
    again = media.read_frames(str(DRIVING), [64, 3, 64])
    for got, index in zip(again, [64, 3, 64]):
        np.testing.assert_array_equal(got, reference[index])


def test_real_footage_resampling_is_the_identity():
    info = media.probe_clip(DRIVING)
    assert media.model_frame_times(info, 16.0) == [(i, i / 16) for i in range(65)]
    assert media.model_frame_times(info, 16.0, start=5, end=9) == [(i, i / 16) for i in range(5, 9)]


def test_real_footage_to_portrait_and_landscape():
    frame = media.read_frames(DRIVING, [0])
    assert pixels.resize_cover_crop(frame, 512, 896).shape == (1, 512, 896, 3)
    assert pixels.resize_cover_crop(frame[0], 896, 512).shape == (896, 512, 3)


# --- videos made here ---------------------------------------------------------------------------


def test_seek_lands_on_the_right_frames(tmp_path):
    clip = tmp_path / "long.mp4"
    write_coded_clip(clip, 120, 24.0)
    info = media.probe_clip(clip)
    assert (info.frame_count, info.fps, info.width, info.height) == (120, 24.0, 64, 48)
    wanted = [100, 70, 119, 100]  # first sorted index 70 is past the seek threshold
    frames = media.read_frames(info, wanted)
    assert [frame_number(f) for f in frames] == [i % 64 for i in wanted]


@pytest.mark.parametrize(
    ("fps", "count", "outputs"),
    [(24.0, 48, 32), (30.0, 60, 32)],
)
def test_model_frame_times_pick_the_frame_on_screen(tmp_path, fps, count, outputs):
    clip = tmp_path / f"clip_{int(fps)}.mp4"
    write_coded_clip(clip, count, fps)
    info = media.probe_clip(clip)
    assert (info.frame_count, info.fps) == (count, fps)
    times = media.model_frame_times(info, 16.0)
    assert len(times) == outputs
    for k, (index, seconds) in enumerate(times):
        assert seconds == pytest.approx(k / 16)
        assert index == int(k * fps // 16)  # floor(t_k * fps), exact here
        assert index / fps <= seconds < (index + 1) / fps
    frames = media.read_frames(info, [i for i, _ in times])
    assert [frame_number(f) for f in frames] == [i for i, _ in times]
    if fps == 24.0:
        assert [i for i, _ in times[:6]] == [0, 1, 3, 4, 6, 7]
    else:
        assert [i for i, _ in times[:6]] == [0, 1, 3, 5, 7, 9] and times[-1][0] == 58


def test_model_frame_times_range_and_rules():
    info = media.ClipInfo("x.mp4", "video", 48, 24.0, 64, 48)
    # [6, 30): t_k = 0.25 + k/16 while t_k < 1.25.
    times = media.model_frame_times(info, 16.0, start=6, end=30)
    assert len(times) == 16
    assert times[0] == (6, 0.25) and times[1] == (7, 0.3125) and times[-1] == (28, 0.25 + 15 / 16)
    assert media.model_frame_times(info, 16.0, start=6, end=500) == media.model_frame_times(info, 16.0, 6)
    assert media.model_frame_times(info, 16.0, start=48) == []
    # Slower source than the model: frames repeat.
    slow = media.ClipInfo("x.mp4", "video", 4, 8.0, 64, 48)
    assert [i for i, _ in media.model_frame_times(slow, 16.0)] == [0, 0, 1, 1, 2, 2, 3, 3]
    # 45 * 22.4 / 16 is 63 exactly but 62.999... in floats: the exact hit must not be lost.
    odd = media.ClipInfo("x.mp4", "video", 100, 22.4, 64, 48)
    assert media.model_frame_times(odd, 16.0)[45][0] == 63
    with pytest.raises(media.MediaError):
        media.model_frame_times(info, 0.0)
    with pytest.raises(media.MediaError):
        media.model_frame_times(info, 16.0, start=-1)


def test_frame_count_that_lies_is_corrected(tmp_path):
    whole = tmp_path / "whole.avi"
    write_coded_clip(whole, 30, 24.0, fourcc="MJPG")
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"  # the header still says 30 frames; the index at the end is gone
    cut.write_bytes(data[: int(len(data) * 0.6)])
    claimed = cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT)
    decodable = len(sequential_decode(cut))
    assert claimed == 30 and decodable < 30
    info = media.probe_clip(cut)
    assert info.frame_count == decodable
    last = media.read_frames(info, [decodable - 1])
    assert frame_number(last[0]) == decodable - 1


# --- image sequences ----------------------------------------------------------------------------


def test_folder_sequence_in_natural_order(tmp_path):
    for i in range(12):  # frame_1 ... frame_12: a plain sort would put frame_10 before frame_2
        cv2.imwrite(str(tmp_path / f"frame_{i + 1}.png"), cv2.cvtColor(coded_frame(i), cv2.COLOR_RGB2BGR))
    (tmp_path / ".frame_13.png.1234.tmp").write_bytes(b"half written")  # a writer's temp file
    (tmp_path / "notes.txt").write_text("not a frame")
    info = media.probe_clip(tmp_path)
    assert (info.kind, info.frame_count, info.fps, info.width, info.height) == ("sequence", 12, 24.0, 64, 48)
    assert media.probe_clip(tmp_path, fps=12.0).fps == 12.0
    frames = media.read_frames(info, [11, 1, 9])
    assert [frame_number(f) for f in frames] == [11, 1, 9]
    np.testing.assert_array_equal(frames[1], coded_frame(1))  # PNG is lossless


@pytest.mark.parametrize("pattern", ["img_%04d.png", "img_####.png"])
def test_pattern_sequence(tmp_path, pattern):
    for number in (1, 2, 3, 10, 11):  # starts at 1, as Blender renders; 4..9 missing hold frame 3 (issue 30)
        cv2.imwrite(str(tmp_path / f"img_{number:04d}.png"), cv2.cvtColor(coded_frame(number), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "other_0005.png"), coded_frame(5))
    info = media.probe_clip(tmp_path / pattern, fps=25.0)
    assert (info.kind, info.frame_count, info.fps) == ("sequence", 11, 25.0)
    frames = media.read_frames(info, range(11))
    assert [frame_number(f) for f in frames] == [1, 2, 3] + [3] * 6 + [10, 11]


def test_input_hash_covers_every_frame_of_a_sequence(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for number in (1, 2, 3):
        cv2.imwrite(str(frames / f"img_{number:04d}.png"), coded_frame(number))
    pattern = frames / "img_####.png"
    first = durable.input_sha256(frames)
    assert first == durable.input_sha256(pattern) and len(first) == 64
    still = frames / "img_0001.png"
    assert durable.input_sha256(still) == hashlib.sha256(still.read_bytes()).hexdigest()
    cv2.imwrite(str(frames / "img_0002.png"), coded_frame(7))  # one frame re-rendered
    changed = durable.input_sha256(frames)
    assert changed != first
    os.rename(frames / "img_0003.png", frames / "img_0004.png")  # same pixels, another frame number
    assert durable.input_sha256(frames) not in (first, changed)
    assert durable.input_sha256(tmp_path / "missing_####.png") is None
    assert durable.input_sha256(tmp_path / "missing.mp4") is None


def test_exr_sequence_is_converted_to_srgb(tmp_path):
    linear = [0.0, 0.0031308, 0.18, 0.5, 1.0, 4.0]  # 4.0: over-range light clips to white
    expected = [0, 10, 118, 188, 255, 255]  # the curve's knee: 0.0031308 * 12.92 = 0.0404
    folder = tmp_path / "exr"
    folder.mkdir()
    for i, value in enumerate(linear):
        assert cv2.imwrite(str(folder / f"f{i:03d}.exr"), np.full((8, 10, 3), value, np.float32))
    info = media.probe_clip(folder, fps=16.0)
    frames = media.read_frames(info, range(len(linear)))
    assert frames.shape == (6, 8, 10, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames[:, 0, 0, 0].astype(int), expected, atol=1)


def test_single_still_is_a_one_frame_clip(tmp_path):
    still = tmp_path / "pose.png"
    cv2.imwrite(str(still), coded_frame(7))
    info = media.probe_clip(still)
    assert (info.kind, info.frame_count) == ("sequence", 1)


# --- stills -------------------------------------------------------------------------------------


def test_read_image_returns_alpha_and_rgb(tmp_path):
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[:3, :, 3] = 255
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    rgb, alpha = media.read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb, rgba[..., :3])
    np.testing.assert_array_equal(alpha, rgba[..., 3])

    grey = np.arange(30, dtype=np.uint8).reshape(6, 5)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    rgb, alpha = media.read_image(tmp_path / "g.png")
    assert rgb.shape == (6, 5, 3) and alpha is None
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))

    deep = np.full((4, 4, 3), 65535, np.uint16)
    deep[0, 0] = (0, 257, 32896)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    rgb, _ = media.read_image(tmp_path / "d.png")
    assert rgb.dtype == np.uint8 and rgb[1, 1].tolist() == [255] * 3 and rgb[0, 0].tolist() == [128, 1, 0]


def test_read_image_of_the_real_reference():
    rgb, alpha = media.read_image(FOOTAGE / "scail_001_ref.jpg")
    assert rgb.shape == (1080, 1920, 3) and rgb.dtype == np.uint8 and alpha is None


# --- errors -------------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_media_errors(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(missing)
    assert error_line(excinfo) == f"driving clip not found: {missing}"

    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(missing, what="driving mask")
    assert error_line(excinfo) == f"driving mask not found: {missing}"

    pipe = tmp_path / "pipe.mp4"
    os.mkfifo(pipe)  # opened for decoding, it would wait for a writer
    refused = []
    prober = threading.Thread(target=lambda: refused.append(pytest.raises(media.MediaError, media.probe_clip, pipe)),
                              daemon=True)
    prober.start()
    prober.join(10)
    assert refused and error_line(refused[0]) == f"driving clip is not a file or a folder: {pipe}"

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(junk)
    assert error_line(excinfo) == f"cannot decode video: {junk}"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(empty)
    assert error_line(excinfo) == f"driving clip has no frames: {empty}"

    zero = tmp_path / "zero.avi"
    cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 24.0, (64, 48)).release()
    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(zero)
    assert error_line(excinfo) == f"driving clip has no frames: {zero}"

    odd = tmp_path / "clip.xyz"
    odd.write_bytes(b"data")
    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(odd)
    assert error_line(excinfo).startswith("unsupported file type '.xyz'")

    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(tmp_path / "renders" / "img_%04d.png")
    assert "not found" in error_line(excinfo)
    with pytest.raises(media.MediaError) as excinfo:
        media.probe_clip(tmp_path / "img_%04d.png")
    assert error_line(excinfo) == (f"driving clip: no file in {tmp_path} matches the pattern img_%04d.png: "
                                   f"{tmp_path / 'img_%04d.png'}")

    with pytest.raises(media.MediaError) as excinfo:
        media.read_image(tmp_path / "nope.png")
    assert error_line(excinfo) == f"image not found: {tmp_path / 'nope.png'}"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(media.MediaError) as excinfo:
        media.read_image(broken)
    assert error_line(excinfo) == f"cannot read image: not a PNG, JPEG, EXR, TIFF, BMP or WebP image: {broken}"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # cut short inside the header
    with pytest.raises(media.MediaError) as excinfo:
        media.read_image(broken)
    assert error_line(excinfo) == f"cannot read image: the header is cut short (truncated file?): {broken}"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x40\x00\x00\x00\x30\x08\x02\x00\x00\x00")
    with pytest.raises(media.MediaError) as excinfo:  # a whole header, no image data
        media.read_image(broken)
    assert error_line(excinfo) == f"cannot decode image: {broken}"

    with pytest.raises(media.MediaError) as excinfo:
        media.read_frames(media.probe_clip(DRIVING), [65])
    assert "outside" in error_line(excinfo)


# --- resizing and tensors -----------------------------------------------------------------------


def centroid(values: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(values > 127)
    return float(ys.mean()), float(xs.mean())


@pytest.mark.parametrize(("height", "width"), [(512, 896), (896, 512)])
@pytest.mark.parametrize("interpolation", [pixels.CUBIC, pixels.NEAREST])
def test_resize_cover_crop_keeps_the_centre(height, width, interpolation):
    frame = np.zeros((1080, 2048, 3), np.uint8)
    frame[532:548, 1016:1032] = 255  # a 16 px block centred on the frame's centre
    out = pixels.resize_cover_crop(frame, height, width, interpolation=interpolation)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    cy, cx = centroid(out[..., 0])
    assert cy == pytest.approx((height - 1) / 2, abs=1.0) and cx == pytest.approx((width - 1) / 2, abs=1.0)


def test_resize_cover_crop_shapes_and_values():
    video = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    assert pixels.resize_cover_crop(video, 64, 32).shape == (3, 64, 32, 3)
    assert pixels.resize_cover_crop(video, 45, 80).shape == (3, 45, 80, 3)  # same aspect, exact
    np.testing.assert_array_equal(pixels.resize_cover_crop(video, 90, 160), video)
    alpha = video[0, :, :, 0]
    assert pixels.resize_cover_crop(alpha, 32, 32, interpolation=pixels.NEAREST).shape == (32, 32)
    # Upscaling works too, and a flat image stays flat (no ringing past the clamp).
    flat = np.full((10, 20, 3), 77, np.uint8)
    np.testing.assert_array_equal(pixels.resize_cover_crop(flat, 64, 64), np.full((64, 64, 3), 77, np.uint8))
    # Nearest keeps only colours that were there: masks stay exact.
    mask = np.zeros((90, 160, 3), np.uint8)
    mask[:, 80:] = (0, 0, 255)
    out = pixels.resize_cover_crop(mask, 64, 96, interpolation=pixels.NEAREST)
    assert {tuple(c) for c in out.reshape(-1, 3)} == {(0, 0, 0), (0, 0, 255)}
    assert pixels.cover_size(1080, 2048, 512, 896) == (512, 970)
    assert pixels.cover_size(1080, 2048, 896, 512) == (896, 1699)


def test_model_tensor_round_trip():
    values = np.arange(256, dtype=np.uint8)
    frames = np.stack([np.broadcast_to(values[:, None, None], (256, 2, 3))] * 2)  # [2, 256, 2, 3]
    tensor = pixels.to_model_tensor(frames)
    assert tensor.shape == (3, 2, 256, 2) and tensor.dtype == torch.float32
    assert tensor.min() == -1.0 and tensor.max() == 1.0
    assert tensor[0, 0, 128, 0] == pytest.approx((128 - 127.5) / 127.5)
    np.testing.assert_array_equal(pixels.from_model_tensor(tensor), frames)
    image = pixels.to_model_tensor(frames[0])
    assert image.shape == (3, 256, 2)
    np.testing.assert_array_equal(pixels.from_model_tensor(image), frames[0])
    np.testing.assert_array_equal(pixels.from_model_tensor(tensor[None]), frames)  # batch of one
    wild = torch.tensor([-3.0, -1.0, 0.0, 1.0, 1.5]).reshape(1, 1, 1, 5).expand(3, 1, 1, 5)
    assert pixels.from_model_tensor(wild)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


# --- writing ------------------------------------------------------------------------------------


def test_write_png_atomic(tmp_path):
    rng = np.random.default_rng(1)
    umask = os.umask(0)
    os.umask(umask)
    for name, image in [
        ("rgb.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
        ("rgba.png", rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)),
        ("deep.png", rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)),
    ]:
        path = tmp_path / name
        durable.write_png_atomic(path, image)
        durable.write_png_atomic(path, image)  # replacing an existing file
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        np.testing.assert_array_equal(cv2.cvtColor(back, code), image)
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    rgb, alpha = media.read_image(tmp_path / "rgba.png")
    assert alpha is not None
    assert listing(tmp_path) == ["deep.png", "rgb.png", "rgba.png"]  # no temp files left


def test_write_preview_mp4(tmp_path):
    frames = np.stack([coded_frame(i) for i in range(10)])
    path = tmp_path / "preview.mp4"
    durable.write_preview_mp4(path, frames, 16.0)
    info = media.probe_clip(path)
    assert (info.frame_count, info.fps, info.width, info.height) == (10, 16.0, 64, 48)
    assert [frame_number(f) for f in media.read_frames(info, range(10))] == list(range(10))
    odd = tmp_path / "odd.mp4"
    durable.write_preview_mp4(odd, frames[:, :47, :63], 16.0)
    assert (media.probe_clip(odd).width, media.probe_clip(odd).height) == (64, 48)
    assert listing(tmp_path) == ["odd.mp4", "preview.mp4"]


def test_file_sha256(tmp_path):
    data = np.random.default_rng(2).bytes(3 * (1 << 20) + 17)  # several chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert durable.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert durable.file_sha256(str(DRIVING)) == hashlib.sha256(DRIVING.read_bytes()).hexdigest()


def test_exr_support_is_switched_on():
    assert os.environ["OPENCV_IO_ENABLE_OPENEXR"] == "1"


def test_the_manifest_is_strict_json(tmp_path):
    durable.write_json_atomic(tmp_path / "ok.json", {"a": [1.5, {"b": 2}]})
    (tmp_path / "state.json").write_text('{"old": 1}')
    with pytest.raises(media.MediaError) as info:
        durable.write_json_atomic(tmp_path / "state.json", {"job": {"guidance": float("nan")}, "t": 1.0})
    assert str(info.value) == f"cannot write {tmp_path / 'state.json'}: job.guidance is not a finite number"
    assert json.loads((tmp_path / "state.json").read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.json", "state.json"]


def test_a_json_file_is_synced_to_the_disk_unless_its_loss_costs_only_a_redo(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    durable.write_json_atomic(tmp_path / "state.json", {"a": 1})
    assert len(synced) == 2  # the file, then its folder (so the rename survives a crash)
    durable.write_json_atomic(tmp_path / "blob.owners", ["ann"], synced=False)
    assert len(synced) == 2 and json.loads((tmp_path / "blob.owners").read_text()) == ["ann"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.owners", "state.json"]  # no temp file left
