"""SCAIL-2's colour-coded masks and their 28-channel latent encoding.

`docs/model.md`, sections "Masks and identities" and "Mask channels".

A mask is an RGB image: black hides the background, white shows it, and a
palette colour binds one character of the reference to one moving subject of
the driving video. Identity i (0-based) always has colour PALETTE[i].
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F

from protocol import MAX_IDENTITIES, PALETTE, PALETTE_NAMES  # identity order: blue, red, green, magenta, cyan, yellow

from ..errors import UserError

BLACK = (0, 0, 0)
WHITE = (255, 255, 255)

# A channel is "on" strictly above 225 (so 225 is off, 226 is on).
CHANNEL_ON_THRESHOLD = (225 - 127.5) / 127.5
# Order of the seven indicator maps inside each group of the 28 channels.
INDICATOR_COLOURS = ("white", "red", "green", "blue", "yellow", "magenta", "cyan")
_INDICATOR_RGB = {  # which of R, G, B are on for each indicator
    "white": (1, 1, 1),
    "red": (1, 0, 0),
    "green": (0, 1, 0),
    "blue": (0, 0, 1),
    "yellow": (1, 1, 0),
    "magenta": (1, 0, 1),
    "cyan": (0, 1, 1),
}
TEMPORAL_STRIDE = 4
SPATIAL_HALVINGS = 3  # the VAE's 8x spatial stride


class Mode(str, Enum):
    """Where the output's background comes from."""

    ANIMATE = "animate"  # from the reference image
    REPLACE = "replace"  # from the driving video


def backgrounds(mode: Mode | str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(driving-mask background, reference-mask background) for a mode.

    Animation hides the driving video's background (black) and shows the
    reference's (white); replacement does the opposite.
    """
    mode = Mode(mode)
    return (BLACK, WHITE) if mode is Mode.ANIMATE else (WHITE, BLACK)


def identity_indicator(identity: int) -> int:
    """Index k (0..6) of the indicator map that identity `identity` (0-based) lights."""
    r, g, b = (int(c > 225) for c in PALETTE[identity])
    return [_INDICATOR_RGB[name] for name in INDICATOR_COLOURS].index((r, g, b))


def latent_mask_size(height: int, width: int) -> tuple[int, int]:
    """Pixel size halved three times, rounding up each time."""
    for _ in range(SPATIAL_HALVINGS):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


def latent_frames(frames: int) -> int:
    """Latent frames for a 4k+1-frame clip."""
    if frames < 1 or (frames - 1) % TEMPORAL_STRIDE:
        raise ValueError(f"a mask video needs 4k+1 frames, got {frames}")
    return (frames - 1) // TEMPORAL_STRIDE + 1


def encode_mask_video(video: torch.Tensor) -> torch.Tensor:
    """RGB mask video [3, T, H, W] in [-1, 1] -> latent mask [28, T_lat, H_l, W_l] in [0, 1].

    Seven colour indicators per frame are area-averaged to the latent grid, the
    first frame is repeated to fill the VAE's first temporal group, and each
    group of 4 frames is stacked as 4 x 7 channels (frame in group major).
    """
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"mask video must be [3, T, H, W], got {tuple(video.shape)}")
    frames, height, width = video.shape[1:]
    t_lat = latent_frames(frames)
    on = video > CHANNEL_ON_THRESHOLD  # [3, T, H, W] bool
    r, g, b = on
    indicators = []
    for name in INDICATOR_COLOURS:
        want = _INDICATOR_RGB[name]
        indicators.append((r if want[0] else ~r) & (g if want[1] else ~g) & (b if want[2] else ~b))
    maps = torch.stack(indicators, dim=1).to(torch.float32)  # [T, 7, H, W]
    maps = F.interpolate(maps, size=latent_mask_size(height, width), mode="area")

    padded = torch.cat([maps[:1].expand(TEMPORAL_STRIDE - 1, -1, -1, -1), maps])  # [T+3, 7, h, w]
    grouped = padded.reshape(t_lat, TEMPORAL_STRIDE * len(INDICATOR_COLOURS), *padded.shape[-2:])
    return grouped.transpose(0, 1).contiguous()


def paint_identities(
    identity_masks: torch.Tensor, mode: Mode | str, for_reference: bool = False
) -> torch.Tensor:
    """Per-identity coverage [N, ..., H, W] in [0, 1] -> uint8 RGB mask [..., H, W, 3].

    Identity i is painted PALETTE[i] where its coverage is at least 0.5; where
    several overlap, the lower identity wins (it is painted last). The
    background is the mode's colour for the driving mask, or for the reference
    mask when `for_reference` is set.
    """
    count = identity_masks.shape[0]
    if count > MAX_IDENTITIES:
        raise ValueError(f"SCAIL-2 binds at most {MAX_IDENTITIES} identities, got {count}")
    driving_bg, reference_bg = backgrounds(mode)
    background = reference_bg if for_reference else driving_bg
    out = torch.empty(*identity_masks.shape[1:], 3, dtype=torch.uint8)
    out[...] = torch.tensor(background, dtype=torch.uint8)
    for identity in reversed(range(count)):
        out[identity_masks[identity] >= 0.5] = torch.tensor(PALETTE[identity], dtype=torch.uint8)
    return out


def identities_present(rgb_mask: torch.Tensor, min_pixels: int = 1) -> list[int]:
    """Identities (0-based) whose palette colour covers at least `min_pixels` of a uint8 [..., 3] mask."""
    flat = rgb_mask.reshape(-1, 3).to(torch.int16)
    present = []
    for identity, colour in enumerate(PALETTE):
        on = (flat > 225) == torch.tensor([c > 225 for c in colour])
        if int(on.all(dim=1).sum()) >= min_pixels:
            present.append(identity)
    return present


def to_signed_unit(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [..., H, W, 3] -> float [3, ..., H, W] in [-1, 1] as (u - 127.5) / 127.5."""
    x = rgb_uint8.to(torch.float32).movedim(-1, 0)
    return (x - 127.5) / 127.5


# -- checking a mask before it is used ------------------------------------------------------------
#
# The encoding reads every pixel as one of eight colours (each channel on above 225), so a colour
# off the palette is not refused by the model: it silently becomes another identity or the
# background (purple (128, 0, 255) is read as identity 1, orange (255, 165, 0) as identity 2, a
# seventh identity in any extra colour merges into one of the six). `check_mask` finds such
# colours and says what they are read as. The decision, and why:
#
# * A channel is clearly off at or below CLEAR_OFF (64) and on above 225; a pixel with any channel
#   in 65..225 is off the palette: the encoding reads it, but not as anything the artist painted.
# * Antialiased edges, resizing, JPEG and video compression put such values along every border.
#   Those are not counted: an off-palette pixel counts only inside a flat region, where its whole
#   5 x 5 neighbourhood is off the palette and no channel varies by more than FLAT_RANGE (12) in
#   it. A painted region is flat; an edge or a feather narrower than ~85 pixels is not.
# * Counted pixels over WARN_SHARE (0.05 % of the mask, about a 15 x 15 patch at 512 x 896) are
#   a warning in the job (its manifest and the add-on's panel). Over REFUSE_SHARE (1 %, about a
#   70 x 70 patch: the size of a subject) the job is refused: a subject would be bound to the
#   wrong character or to none, and the result would be wrong.
# * A mask whose background is the other mode's (white where `animate` wants black in the driving
#   mask, and so on) is a warning: a mask made for the other mode shows or hides the wrong
#   background. It is counted when the mode's own background covers under 1 % of the mask and
#   the other one over a fifth of it.

CLEAR_OFF = 64
FLAT_RANGE = 12
FLAT_WINDOW = 5
WARN_SHARE = 0.0005
REFUSE_SHARE = 0.01
OTHER_BACKGROUND_SHARE = 0.2
OWN_BACKGROUND_SHARE = 0.01


class MaskError(UserError):
    """A mask that would be read wrongly, as one line naming it."""


def read_as(colour) -> str:
    """What the encoding reads an RGB colour as: an identity, or which background."""
    bits = tuple(int(c > 225) for c in colour)
    if bits == (1, 1, 1):
        return "white (background shown)"
    if bits == (0, 0, 0):
        return "black (background hidden)"
    for identity, palette_colour in enumerate(PALETTE):
        if tuple(int(c > 225) for c in palette_colour) == bits:
            return f"identity {identity + 1} ({PALETTE_NAMES[identity]})"
    raise AssertionError(bits)  # the six palette colours and black and white are all eight


def off_palette(mask) -> tuple[float, tuple[int, int, int] | None]:
    """(share of the pixels in flat off-palette regions, their most common colour) of a uint8
    [H, W, 3] mask; see the rules above."""
    x = torch.from_numpy(np.ascontiguousarray(mask)) if isinstance(mask, np.ndarray) else torch.as_tensor(mask)
    if x.dim() != 3 or x.shape[-1] != 3:
        raise ValueError(f"a mask is [H, W, 3], got {tuple(x.shape)}")
    x = x.to(torch.int16)
    off = ((x > CLEAR_OFF) & (x <= 225)).any(dim=-1)
    if not bool(off.any()):
        return 0.0, None
    pad = FLAT_WINDOW // 2
    channels = x.permute(2, 0, 1)[None].float()
    spread = F.max_pool2d(channels, FLAT_WINDOW, 1, pad) + F.max_pool2d(-channels, FLAT_WINDOW, 1, pad)
    flat = (spread <= FLAT_RANGE).all(dim=1)[0]
    inside = -F.max_pool2d(-off[None, None].float(), FLAT_WINDOW, 1, pad)[0, 0] > 0.5  # erosion
    counted = off & flat & inside
    share = float(counted.float().mean())
    if share == 0.0:
        return 0.0, None
    colours, counts = torch.unique(x[counted], dim=0, return_counts=True)
    return share, tuple(int(c) for c in colours[int(counts.argmax())])


def check_mask(mask, what: str, mode: Mode | str, for_reference: bool = False) -> list[str]:
    """Warnings for a uint8 [H, W, 3] colour mask of `mode` (a reference mask with
    `for_reference`); MaskError when colours off the palette cover a subject's worth of it (the
    rules above)."""
    warnings = []
    share, colour = off_palette(mask)
    if share > WARN_SHARE:
        line = (f"{share:.1%} of the {what} is not a palette colour, e.g. {colour}, which is read as "
                f"{read_as(colour)}; paint identities only in {', '.join(PALETTE_NAMES)} (0 or 255 in each "
                f"channel) on black or white")
        if share > REFUSE_SHARE:
            raise MaskError(f"{line}, saved losslessly (PNG)")
        warnings.append(line)
    mode = Mode(mode)
    background = backgrounds(mode)[1 if for_reference else 0]
    x = torch.from_numpy(np.ascontiguousarray(mask)) if isinstance(mask, np.ndarray) else torch.as_tensor(mask)
    on = (x > 225).reshape(-1, 3)
    white, black = float(on.all(dim=1).float().mean()), float((~on).all(dim=1).float().mean())
    own, other = (white, black) if background == WHITE else (black, white)
    if own < OWN_BACKGROUND_SHARE and other > OTHER_BACKGROUND_SHARE:
        wanted, found = ("white", "black") if background == WHITE else ("black", "white")
        other_mode = Mode.REPLACE if mode is Mode.ANIMATE else Mode.ANIMATE
        warnings.append(f"the {what}'s background is {found}, but in {mode.value} mode it must be {wanted}: "
                        f"was it made for {other_mode.value} mode?")
    return warnings
