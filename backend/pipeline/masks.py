"""SCAIL-2's colour-coded masks and their 28-channel latent encoding.

`docs/model.md`, sections "Masks and identities" and "Mask channels".

A mask is an RGB image: black hides the background, white shows it, and a
palette colour binds one character of the reference to one moving subject of
the driving video. Identity i (0-based) always has colour PALETTE[i].
"""

from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn.functional as F

from protocol import MAX_IDENTITIES, PALETTE  # identity order: blue, red, green, magenta, cyan, yellow

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
