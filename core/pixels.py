# SPDX-License-Identifier: GPL-3.0-or-later
"""Pixel work for masks without numpy: thresholds, palette counts, PNG writing. Standard library only.

Pixels come as flat float sequences (``array('f')`` filled by
``Image.pixels.foreach_get``): RGBA, rows bottom-up, as Blender stores them.
The per-pixel loops run inside ``bytes(map(...))`` and ``bytes.translate``, so
a 896x504 frame takes tens of milliseconds, not seconds.
"""

__all__ = (
    "CHANNEL_ON",
    "classify",
    "compose_layers",
    "coverage",
    "fill",
    "identity_boxes",
    "interleave",
    "write_png",
)

import operator
import struct
import zlib

from ..protocol import PALETTE
from .util import write_bytes_atomic

# A channel is "on" above 225 of 255, as the backend reads masks (backend/pipeline/masks.py);
# the half step keeps 225 itself off whatever float rounding the pixels went through.
CHANNEL_ON = 225.5 / 255.0
# Colour codes are R*4 + G*2 + B with each channel on/off.
_CODE_OF_IDENTITY = tuple((r > 127) * 4 + (g > 127) * 2 + (b > 127) for r, g, b in PALETTE)
_TIMES = {k: bytes(min(v * k, 255) for v in range(256)) for k in (2, 4)}


def _bits(values, threshold):
    """bytes: 1 where a value is above ``threshold``, else 0."""
    return bytes(map(float(threshold).__lt__, values))


def coverage(pixels, channels=4, threshold=0.5):
    """bytes, one per pixel: 1 where the first channel is above ``threshold``."""
    return _bits(pixels[0::channels], threshold)


def _colour_codes(pixels, channels):
    """bytes, one per pixel: its colour code (a channel is on above 225 of 255, as the backend reads masks)."""
    r = _bits(pixels[0::channels], CHANNEL_ON).translate(_TIMES[4])
    g = _bits(pixels[1::channels], CHANNEL_ON).translate(_TIMES[2])
    b = _bits(pixels[2::channels], CHANNEL_ON)
    return bytes(map(operator.or_, bytes(map(operator.or_, r, g)), b))


def classify(pixels, channels=4):
    """Count the mask colours of an image: ``{'identities': {1: n, ...}, 'black': n, 'white': n, 'exact': bool}``.

    A pixel counts for the colour whose channels it has on (above 225 of 255,
    as the backend reads them); ``exact`` is True when every RGB value is
    exactly 0 or 1 (no anti-aliased edge, no dithering).
    """
    code = _colour_codes(pixels, channels)
    counts = [code.count(bytes((k,))) for k in range(8)]
    values = set(pixels[0::channels]) | set(pixels[1::channels]) | set(pixels[2::channels])
    return {
        "identities": {i + 1: counts[c] for i, c in enumerate(_CODE_OF_IDENTITY) if counts[c]},
        "black": counts[0],
        "white": counts[7],
        "exact": values <= {0.0, 1.0},
    }


def identity_boxes(pixels, width, height, channels=4):
    """``{identity: (x0, y0, x1, y1)}``: the box of each palette colour (identities 1..6) painted in a picture.

    Boxes are in pixels from the picture's top-left corner, ``x1`` and ``y1``
    past the last pixel (one pixel at the corner is ``(0, 0, 1, 1)``).
    Colours are read as :func:`classify` reads them; identities not painted are left out.
    """
    if len(pixels) != width * height * channels:
        raise ValueError("the picture has {:d} values, not {:d}x{:d}x{:d}".format(
            len(pixels), width, height, channels))
    code = _colour_codes(pixels, channels)
    boxes = {}
    for identity, value in enumerate(_CODE_OF_IDENTITY, start=1):
        mark = bytes((value,))
        if mark not in code:
            continue
        x0, x1, rows = width, 0, []
        for row in range(height):
            line = code[row * width:(row + 1) * width]
            first = line.find(mark)
            if first >= 0:
                x0, x1 = min(x0, first), max(x1, line.rfind(mark) + 1)
                rows.append(row)
        # Rows are bottom-up: row r is y = height - 1 - r from the top.
        boxes[identity] = (x0, height - 1 - rows[-1], x1, height - rows[0])
    return boxes


def compose_layers(layers, pixel_count):
    """One identity number per pixel (bytes, 0 = background) from per-identity coverages.

    ``layers``: ``[(identity, coverage bytes), ...]``; where coverages overlap
    the higher identity wins.
    """
    out = bytes(pixel_count)
    for identity, bits in layers:
        table = bytes((0, identity)) + bytes(254)
        out = bytes(map(max, out, bits.translate(table)))
    return out


def fill(identity_per_pixel, background):
    """``(r, g, b)`` planes (bytes) colouring identity numbers with the palette on ``background``."""
    planes = []
    for channel in range(3):
        table = bytes([background[channel]] + [colour[channel] for colour in PALETTE]) + bytes(256 - 7)
        planes.append(identity_per_pixel.translate(table))
    return tuple(planes)


def interleave(planes):
    """Interleave equal-length channel planes into one pixel buffer (bytearray)."""
    count = len(planes)
    out = bytearray(len(planes[0]) * count)
    for i, plane in enumerate(planes):
        out[i::count] = plane
    return out


def _chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(path, width, height, data, channels=3, bottom_up=True):
    """Write 8-bit RGB (``channels`` 3) or RGBA (4) pixels as a PNG, atomically.

    ``data``: ``width * height * channels`` bytes, rows bottom-up (Blender's
    order) unless ``bottom_up`` is False.
    """
    stride = width * channels
    if len(data) != stride * height:
        raise ValueError("expected {:d} bytes, got {:d}".format(stride * height, len(data)))
    rows = range(height - 1, -1, -1) if bottom_up else range(height)
    raw = b"".join(b"\x00" + bytes(data[y * stride:(y + 1) * stride]) for y in rows)
    colour_type = {3: 2, 4: 6}[channels]
    png = b"".join((
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)),
        _chunk(b"IDAT", zlib.compress(raw, 6)),
        _chunk(b"IEND", b""),
    ))
    write_bytes_atomic(path, png)
