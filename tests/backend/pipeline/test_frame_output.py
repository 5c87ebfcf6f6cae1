"""backend/pipeline/frame_output.py: frames written off the sampling thread, the preview from memory."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from backend.pipeline import durable, frame_output, media
from backend.pipeline.frame_output import FrameOutput, PreviewEncoder


def _name(k: int) -> str:
    return f"frame_{k:05d}.png"


def _frames(n: int, start: int = 0) -> np.ndarray:
    rng = np.random.default_rng(start)
    return rng.integers(0, 256, size=(n, 32, 48, 3), dtype=np.uint8)


def _decoded(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_the_pngs_and_the_preview_hold_every_frame_in_order(tmp_path):
    first, second = _frames(5, 0), _frames(4, 1)
    output = FrameOutput(tmp_path, _name, PreviewEncoder(tmp_path / "preview.mp4", 16.0), workers=3)
    output.add(0, range(0, 5), first)
    output.add(1, range(5, 9), second)
    settled = output.settle(wait=True)
    assert [index for index, _ in settled] == [0, 1]
    assert [k for _, frames in settled for k, _ in frames] == list(range(9))
    output.close(keep_preview=True)
    for k, rgb in enumerate(np.concatenate([first, second])):
        assert np.array_equal(media.read_image(tmp_path / _name(k))[0], rgb)
    # The same file as the preview written in one go from the same frames (the encoder is deterministic).
    durable.write_preview_mp4(tmp_path / "reference.mp4", np.concatenate([first, second]), 16.0)
    streamed, whole = _decoded(tmp_path / "preview.mp4"), _decoded(tmp_path / "reference.mp4")
    assert len(streamed) == 9 and all(np.array_equal(a, b) for a, b in zip(streamed, whole))


def test_a_resumed_job_previews_the_frames_already_on_disk_first(tmp_path):
    earlier = _frames(3, 2)
    for k, rgb in enumerate(earlier):
        durable.write_png_atomic(tmp_path / _name(k), rgb)
    output = FrameOutput(tmp_path, _name, PreviewEncoder(tmp_path / "preview.mp4", 16.0))
    output.add_existing(range(3))
    output.add(1, range(3, 5), _frames(2, 3))
    output.settle(wait=True)
    output.close(keep_preview=True)
    assert len(_decoded(tmp_path / "preview.mp4")) == 5


def test_a_segment_is_settled_only_once_all_its_pngs_are_on_disk(tmp_path, monkeypatch):
    release = threading.Event()
    real_write = durable.write_png_atomic

    def slow_write(path, rgb):
        if path.name == _name(2):  # one frame of segment 0 takes its time
            release.wait(10)
        real_write(path, rgb)

    monkeypatch.setattr(frame_output.durable, "write_png_atomic", slow_write)
    output = FrameOutput(tmp_path, _name, None, workers=2)
    output.add(0, range(0, 3), _frames(3))
    output.add(1, range(3, 5), _frames(2, 5))
    assert output.settle(wait=False) == []  # segment 1 may be written, but segment 0 is not: in order
    release.set()
    assert [index for index, _ in output.settle(wait=True)] == [0, 1]
    output.close(keep_preview=False)


def test_a_failed_write_is_raised_with_its_path_and_the_preview_is_dropped(tmp_path, monkeypatch):
    def full_disk(path, rgb):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(frame_output.durable, "write_png_atomic", full_disk)
    output = FrameOutput(tmp_path, _name, PreviewEncoder(tmp_path / "preview.mp4", 16.0))
    output.add(0, range(2), _frames(2))
    with pytest.raises(OSError) as caught:
        output.settle(wait=True)
    assert caught.value.filename == str(tmp_path / _name(0))
    output.close(keep_preview=False)
    assert not (tmp_path / "preview.mp4").exists() and not list(tmp_path.glob("*.mp4"))


def test_a_preview_that_cannot_be_put_in_place_is_an_error_not_a_hang(tmp_path, monkeypatch):
    real_replace = durable._replace_durably

    def refuse(temp, path):
        if str(path).endswith(".mp4"):
            raise OSError(30, "Read-only file system")
        real_replace(temp, path)

    monkeypatch.setattr(durable, "_replace_durably", refuse)
    output = FrameOutput(tmp_path, _name, PreviewEncoder(tmp_path / "preview.mp4", 16.0))
    output.add(0, range(2), _frames(2))
    output.settle(wait=True)
    with pytest.raises(OSError, match="Read-only"):
        output.close(keep_preview=True)
    assert not list(tmp_path.glob("*.mp4"))
