"""backend.pipeline.probe: sizes from file headers (every format the backend reads), the input pixel
limit before decoding, and the files a clip path names (folders, printf and '####' patterns)."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
from scail_fixtures import FOOTAGE

from backend.pipeline import media, probe


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that says width x height but holds one empty IDAT: what a decoder would allocate in full."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _turned() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees to be upright
    return exif


def exr(path, image: np.ndarray) -> None:
    assert cv2.imwrite(str(path), image.astype(np.float32) / 255.0)


WRITERS = {
    "png": lambda p, im: cv2.imwrite(str(p), im),
    "jpeg": lambda p, im: cv2.imwrite(str(p), im),
    "progressive.jpeg": lambda p, im: Image.fromarray(im).save(p, format="JPEG", progressive=True),
    "exif.jpeg": lambda p, im: Image.fromarray(im).save(p, format="JPEG", exif=_turned()),
    "exr": exr,
    "tif": lambda p, im: cv2.imwrite(str(p), im),
    "lzw.tif": lambda p, im: Image.fromarray(im).save(p, format="TIFF", compression="tiff_lzw"),
    "big.tif": lambda p, im: Image.fromarray(im).save(p, format="TIFF", big_tiff=True),
    "bmp": lambda p, im: cv2.imwrite(str(p), im),
    "grey.bmp": lambda p, im: Image.fromarray(im[..., 0]).save(p, format="BMP"),
    "lossy.webp": lambda p, im: cv2.imwrite(str(p), im, [cv2.IMWRITE_WEBP_QUALITY, 80]),
    "lossless.webp": lambda p, im: Image.fromarray(im).save(p, format="WEBP", lossless=True),
    "alpha.webp": lambda p, im: Image.fromarray(np.dstack([im, im[..., :1]])).save(p, format="WEBP", quality=80),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("height, width", [(48, 64), (31, 257), (1, 1)])
def test_header_sizes_match_what_the_decoder_gives(tmp_path, kind, height, width):
    image = np.random.default_rng(height).integers(0, 255, (height, width, 3), dtype=np.uint8)
    path = tmp_path / f"still.{kind.rsplit('.', 1)[-1].replace('jpeg', 'jpg')}"
    WRITERS[kind](path, image)
    assert probe.image_size(path) == (width, height)
    decoded, _ = media.read_image(path)
    if kind == "exif.jpeg":  # orientation 6 turns it upright: same pixels, the other way round
        assert decoded.shape[:2] == (width, height)
    else:
        assert decoded.shape[:2] == (height, width)


def test_the_footage_stills_are_sized_from_their_headers():
    assert probe.image_size(FOOTAGE / "scail_001_ref.jpg") == (1920, 1080)
    assert probe.image_size(FOOTAGE / "mimicmotion_demo1.jpg") == (1080, 1920)


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    png_header_only(big, 20000, 20000)  # 1.1 MB as a real file; decoding it took 7.4 GB
    with pytest.raises(media.MediaError) as info:
        media.read_image(big, what="reference image")
    assert str(info.value) == (f"reference image is 20000x20000 (400 MP), over the limit of 67.1 MP for inputs "
                               f"(max_input_pixels): scale it down or raise the limit: {big}")
    with pytest.raises(media.MediaError, match="over the limit of 0.001 MP"):
        media.read_image(FOOTAGE / "scail_001_ref.jpg", max_pixels=1000)
    assert media.read_image(FOOTAGE / "scail_001_ref.jpg", max_pixels=1920 * 1080)[0].shape == (1080, 1920, 3)


def test_a_video_over_the_limit_is_refused_by_its_container_size():
    with pytest.raises(media.MediaError, match=r"^driving clip is 2048x1080 \(2.21 MP\), over the limit of 2 MP"):
        media.probe_clip(FOOTAGE / "scail_001_driving.mp4", max_pixels=2_000_000)
    with pytest.raises(media.MediaError, match="^clip is 2048x1080"):
        media.check_video(FOOTAGE / "scail_001_driving.mp4", 2_000_000)
    assert media.probe_clip(FOOTAGE / "scail_001_driving.mp4", max_pixels=2048 * 1080).frame_count == 65


def test_every_sequence_frame_is_checked_before_it_is_decoded(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"frame_{i:04d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    png_header_only(tmp_path / "frame_0003.png", 20000, 20000)  # a broken render among good frames
    clip = media.probe_clip(tmp_path / "frame_%04d.png", fps=24)
    assert clip.frame_count == 4 and media.read_frames(clip, [0, 2]).shape == (2, 48, 64, 3)
    with pytest.raises(media.MediaError, match=r"^frame 3 of the driving clip is 20000x20000 \(400 MP\)"):
        media.read_frames(clip, [3])


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"GIF89a........", "not a PNG, JPEG, EXR, TIFF, BMP or WebP image"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00", "the header is cut short"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "no frame header before the end of the file"),
    (b"\xff\xd8\xff\xda\x00\x08", "image data starts before any frame header"),
    (b"\x76\x2f\x31\x01\x02\x00\x00\x00channels\x00chlist\x00", "the header is cut short"),
    (b"II*\x00\x08\x00\x00\x00\x00\x00", "a TIFF without ImageWidth and ImageLength"),
])
def test_damaged_headers_are_one_line(tmp_path, content, reason):
    path = tmp_path / "still.png"
    path.write_bytes(content)
    with pytest.raises(media.MediaError) as info:
        media.read_image(path)
    assert str(info.value).startswith(f"cannot read image: {reason}") and str(info.value).endswith(str(path))


# -- what a clip path names ----------------------------------------------------------------------


def test_printf_and_hash_patterns_name_their_frames_in_number_order(tmp_path):
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"frame_{i:04d}.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "frame_0003.png.tmp").write_bytes(b"")
    expected = [str(tmp_path / f"frame_{i:04d}.png") for i in (1, 2, 10)]
    assert probe.clip_files(str(tmp_path / "frame_%04d.png")) == expected
    assert probe.clip_files(str(tmp_path / "frame_####.png")) == expected
    assert probe.clip_files(str(tmp_path / "frame_%d.png")) == expected
    assert probe.clip_files(str(tmp_path)) == expected
    assert probe.clip_files(str(FOOTAGE / "scail_001_driving.mp4")) is None


def test_a_pattern_that_matches_nothing_says_so(tmp_path):
    with pytest.raises(media.MediaError) as info:
        probe.clip_files(str(tmp_path / "shot_####.exr"), "driving mask")
    assert str(info.value) == (f"driving mask: no file in {tmp_path} matches the pattern shot_####.exr: "
                               f"{tmp_path / 'shot_####.exr'}")
    with pytest.raises(media.MediaError, match="the folder of the pattern shot_####.exr does not exist"):
        probe.clip_files(str(tmp_path / "renders" / "shot_####.exr"))
    assert not os.listdir(tmp_path)
