"""Before anything is decoded: which files a clip path names, an image's size from its header,
and the input pixel limit.

`clip_files` lists an image sequence's frames (a folder, a printf `%04d` or Blender `####`
pattern, a single still) or says the path is a video, and says in one line when a path names
nothing or a pattern matches no file.

A decoder allocates the whole image before it reads a row: a 1.1 MB PNG that says 20000 x 20000
cost 7.4 GB. `image_size` reads only the header (at most a few small reads, whatever the file's
size) and `check_pixels` refuses what is over the job's limit (`protocol.JobSpec.max_input_pixels`)
in one line, so no decoder ever sees it. Video sizes come from the container (`media`), which
OpenCV reads without decoding frames.

Formats are told by their first bytes, never by the file name: PNG (the IHDR chunk), JPEG (the
first SOFn segment), OpenEXR (the first part's dataWindow), TIFF and BigTIFF (ImageWidth and
ImageLength of the first IFD), BMP (the DIB header) and WebP (VP8, VP8L or VP8X). Anything else,
or a header cut short, is refused as one line: it could not be checked, and OpenCV would not
read it either.
"""

from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO

from protocol import DEFAULT_MAX_INPUT_PIXELS

from ..errors import UserError

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp"})
FORMATS = "PNG, JPEG, EXR, TIFF, BMP or WebP"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXR_MAGIC = b"\x76\x2f\x31\x01"
# JPEG markers that start a frame (SOF0..SOF15 without DHT C4, JPG C8 and DAC CC), and those
# that stand alone without a length (TEM, RST0..7, SOI, EOI).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JPEG_SOS = 0xDA
_EXR_MAX_HEADER = 1 << 20  # attribute bytes read before giving up on finding dataWindow


class MediaError(UserError):
    """A media input that cannot be used, as one line naming the file (`media` raises it too)."""


class HeaderError(MediaError):
    """A header that cannot be read."""


class LimitError(MediaError):
    """An input over the pixel limit."""


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header; HeaderError if it cannot be read.

    The size as stored: a JPEG's EXIF orientation may turn it (same pixel count).
    """
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(_PNG_SIGNATURE):
            return _png_size(head)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(f)
        if head.startswith(_EXR_MAGIC):
            return _exr_size(f)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_size(f, head)
        if head.startswith(b"BM"):
            return _bmp_size(head)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(head)
    if not head:
        raise HeaderError("the file is empty")
    raise HeaderError(f"not a {FORMATS} image")


def check_pixels(width: int, height: int, limit: int, what: str, path: str) -> None:
    """Refuse a `width` x `height` input over `limit` pixels, naming the setting that raises it."""
    if width * height > limit:
        raise LimitError(
            f"{what} is {width}x{height} ({width * height / 1e6:.3g} MP), over the limit of "
            f"{limit / 1e6:.3g} MP for inputs (max_input_pixels): scale it down or raise the limit: {path}"
        )


def check_image(path: str, limit: int = DEFAULT_MAX_INPUT_PIXELS, what: str = "image") -> tuple[int, int]:
    """(width, height) of the image at `path`, refused (HeaderError, LimitError) before any decoding
    when its header cannot be read or it is over `limit` pixels."""
    try:
        width, height = image_size(path)
    except HeaderError as exc:
        raise HeaderError(f"cannot read {what}: {exc}: {path}") from None
    except OSError as exc:
        raise HeaderError(f"cannot read {what}: {exc.strerror or exc}: {path}") from None
    if width <= 0 or height <= 0:
        raise HeaderError(f"{what} has no pixels ({width}x{height}) in its header: {path}")
    check_pixels(width, height, limit, what, path)
    return width, height


def _need(data: bytes, size: int) -> bytes:
    if len(data) < size:
        raise HeaderError("the header is cut short (truncated file?)")
    return data


def _png_size(head: bytes) -> tuple[int, int]:
    # Signature, then the IHDR chunk first: length (13), b"IHDR", width, height (big-endian).
    _need(head, 24)
    if head[12:16] != b"IHDR":
        raise HeaderError("a PNG whose first chunk is not IHDR")
    return struct.unpack(">II", head[16:24])


def _jpeg_size(f: BinaryIO) -> tuple[int, int]:
    """Walk the segments after SOI to the first SOFn: length, precision, height, width."""
    f.seek(2)
    while True:
        byte = f.read(1)
        if not byte:
            raise HeaderError("no frame header before the end of the file (truncated JPEG?)")
        if byte != b"\xff":
            raise HeaderError("a JPEG segment does not start with 0xFF (damaged file?)")
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            raise HeaderError("the header is cut short (truncated file?)")
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        if code == _JPEG_SOS:
            raise HeaderError("image data starts before any frame header (damaged JPEG?)")
        length = struct.unpack(">H", _need(f.read(2), 2))[0]
        if length < 2:
            raise HeaderError("a JPEG segment length below 2 (damaged file?)")
        if code in _JPEG_SOF:
            segment = _need(f.read(5), 5)
            height, width = struct.unpack(">HH", segment[1:5])
            if height == 0:  # the height comes later, in a DNL segment: rare, and not worth reading
                raise HeaderError("a JPEG whose height is only given after the image data (DNL)")
            return width, height
        f.seek(length - 2, os.SEEK_CUR)


def _exr_size(f: BinaryIO) -> tuple[int, int]:
    """The first part's dataWindow (box2i: xMin, yMin, xMax, yMax, little-endian int32).

    After the magic and the version field, a header is a list of attributes (name NUL, type NUL,
    int32 size, value) ended by an empty name; a multi-part file's first header is its first part.
    """
    f.seek(8)
    data = f.read(_EXR_MAX_HEADER)
    pos = 0
    while True:
        end = data.find(b"\x00", pos)
        if end < 0:
            raise HeaderError("the header is cut short (truncated file?)")
        name = data[pos:end]
        if not name:
            raise HeaderError("an EXR header without a dataWindow")
        type_end = data.find(b"\x00", end + 1)
        if type_end < 0 or type_end + 5 > len(data):
            raise HeaderError("the header is cut short (truncated file?)")
        kind = data[end + 1 : type_end]
        size = struct.unpack("<i", data[type_end + 1 : type_end + 5])[0]
        value = data[type_end + 5 : type_end + 5 + size]
        if size < 0 or len(value) < size:
            raise HeaderError("the header is cut short (truncated file?)")
        if name == b"dataWindow":
            if kind != b"box2i" or size != 16:
                raise HeaderError(f"an EXR dataWindow of type {kind.decode('ascii', 'replace')}")
            x_min, y_min, x_max, y_max = struct.unpack("<4i", value)
            return x_max - x_min + 1, y_max - y_min + 1
        pos = type_end + 5 + size


def _tiff_size(f: BinaryIO, head: bytes) -> tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first IFD, classic TIFF or BigTIFF."""
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    if big:
        offset = struct.unpack(order + "Q", _need(head, 16)[8:16])[0]
        count_format, entry_size, count_size = "Q", 20, 8
    else:
        offset = struct.unpack(order + "I", _need(head, 8)[4:8])[0]
        count_format, entry_size, count_size = "H", 12, 2
    f.seek(offset)
    count = struct.unpack(order + count_format, _need(f.read(count_size), count_size))[0]
    entries = _need(f.read(count * entry_size), count * entry_size)
    found = {}
    value_format = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    for k in range(count):
        entry = entries[k * entry_size : (k + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257) and kind in value_format:
            start = 4 + (8 if big else 4)  # after tag, type and the count
            width = struct.calcsize(value_format[kind])
            found[tag] = struct.unpack(order + value_format[kind], entry[start : start + width])[0]
    if 256 not in found or 257 not in found:
        raise HeaderError("a TIFF without ImageWidth and ImageLength")
    return found[256], found[257]


def _bmp_size(head: bytes) -> tuple[int, int]:
    _need(head, 26)
    dib_size = struct.unpack("<I", head[14:18])[0]
    if dib_size == 12:  # BITMAPCOREHEADER: unsigned 16-bit
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return width, abs(height)  # a negative height means rows from the top


def _webp_size(head: bytes) -> tuple[int, int]:
    _need(head, 30)
    chunk = head[12:16]
    if chunk == b"VP8X":  # canvas width - 1 and height - 1, 24 bits each
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L":  # signature 0x2F, then 14 bits width - 1, 14 bits height - 1
        if head[20] != 0x2F:
            raise HeaderError("a lossless WebP without its signature byte")
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # frame tag (3 bytes), start code 9D 01 2A, then 14-bit width, height
        if head[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("a lossy WebP without its start code")
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise HeaderError("a WebP without a VP8, VP8L or VP8X chunk")


# ---------------------------------------------------------------------------------------------
# What a clip path names: a video file, or the frame files of an image sequence


def clip_files(path: str | os.PathLike, what: str = "driving clip") -> list[str] | None:
    """The frame files of an image sequence (folder, pattern or still) in playback order, None for a
    video file; MediaError when `path` names nothing or a pattern matches no file. Decodes nothing."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _folder_frames(path, what)
    if _pattern_regex(os.path.basename(path)) is not None and not os.path.exists(path):
        return _pattern_frames(path, what)
    if not os.path.exists(path):
        raise MediaError(f"{what} not found: {path}")
    if not os.path.isfile(path):  # a FIFO or a device: decoding it would wait on it, maybe forever
        raise MediaError(f"{what} is not a file or a folder: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return None
    if ext in IMAGE_EXTENSIONS:
        return [path]
    raise MediaError(f"unsupported file type '{ext or os.path.basename(path)}': {path}")


_NUMBER = re.compile(r"(\d+)")


def _natural_key(name: str) -> list:
    # re.split with a capture group alternates text and digits, so positions never mix types.
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(_NUMBER.split(name))]


def _folder_frames(folder: str, what: str) -> list[str]:
    """Image files of a folder in natural order (img_2 before img_10); hidden files skipped,
    which also skips the temporary files of write_png_atomic."""
    names = [
        n for n in os.listdir(folder)
        if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
        and os.path.isfile(os.path.join(folder, n))
    ]
    if not names:
        raise MediaError(f"{what} has no frames: {folder}")
    kinds = {os.path.splitext(n)[1].lower().replace(".jpeg", ".jpg").replace(".tiff", ".tif") for n in names}
    if len(kinds) > 1:
        raise MediaError(f"{what} folder mixes image types ({', '.join(sorted(kinds))}): {folder}")
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


_PRINTF = re.compile(r"%(0?)(\d*)d")
_HASHES = re.compile(r"#+")


def _pattern_regex(name: str) -> re.Pattern | None:
    """A regex with one number group for a printf ('%04d', '%d') or Blender ('####') file
    name, or None if the name has no (or more than one) frame-number placeholder."""
    found = [(m, "printf") for m in _PRINTF.finditer(name)] + [(m, "hash") for m in _HASHES.finditer(name)]
    if len(found) != 1:
        return None
    match, style = found[0]
    if style == "printf":
        width = int(match.group(2)) if match.group(1) and match.group(2) else 1
    else:
        width = len(match.group(0))
    # Padding is a minimum width: %04d prints 12345 with five digits.
    number = rf"(\d{{{width},}})"
    return re.compile(re.escape(name[: match.start()]) + number + re.escape(name[match.end():]) + r"\Z")


def _pattern_frames(pattern: str, what: str) -> list[str]:
    """Files matching a frame-number pattern, in number order. Missing numbers are not closed up here:
    `clip_timing.sequence_timeline` lays the files out by their numbers (a gap holds a frame)."""
    folder, name = os.path.split(pattern)
    folder = folder or "."
    if not os.path.isdir(folder):
        raise MediaError(f"{what} not found: the folder of the pattern {name} does not exist: {pattern}")
    regex = _pattern_regex(name)
    numbered = []
    for entry in os.listdir(folder):
        m = regex.match(entry)
        if m and os.path.isfile(os.path.join(folder, entry)):
            numbered.append((int(m.group(1)), entry))
    if not numbered:
        raise MediaError(f"{what}: no file in {folder} matches the pattern {name}: {pattern}")
    return [os.path.join(folder, entry) for _, entry in sorted(numbered)]
