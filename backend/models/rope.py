"""SCAIL-2's mode-specific 3-D rotary position embedding.

SCAIL-2 lays several token chunks side by side in one sequence and tells them
apart only through RoPE start offsets (`docs/model.md`, section "RoPE"):

    [extra refs N*h*w][ref h*w][video T*h*w][driving T*(h/2)*(w/2)]

The driving chunk's rotation factors are computed on the full-resolution
(T, h, w) grid and then 2x2 average-pooled, cos and sin separately, so they are
no longer unit rotations. That matches the reference and must not be
"fixed" by renormalising.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ROPE_THETA = 10000.0
# Height offset of reference chunks in replacement mode, width offset of the
# driving chunk in both modes: large enough that they never overlap the video.
SIDE_OFFSET = 120


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs per axis (t, h, w): 22/21/21 for head_dim 128."""
    pairs = head_dim // 2
    return pairs - 2 * (pairs // 3), pairs // 3, pairs // 3


def _axis_angles(positions: torch.Tensor, num_pairs: int) -> torch.Tensor:
    """Angles [len(positions), num_pairs] in float64 for one axis."""
    dim = 2 * num_pairs
    inv_freq = ROPE_THETA ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]


def _grid_angles(head_dim, frames, height, width, start) -> torch.Tensor:
    """Angles [frames, height, width, head_dim // 2] for a grid starting at (t, h, w) = start."""
    t_pairs, h_pairs, w_pairs = axis_pairs(head_dim)
    t0, h0, w0 = start
    t = _axis_angles(torch.arange(t0, t0 + frames), t_pairs)
    h = _axis_angles(torch.arange(h0, h0 + height), h_pairs)
    w = _axis_angles(torch.arange(w0, w0 + width), w_pairs)
    shape = (frames, height, width)
    return torch.cat(
        [
            t[:, None, None, :].expand(*shape, t_pairs),
            h[None, :, None, :].expand(*shape, h_pairs),
            w[None, None, :, :].expand(*shape, w_pairs),
        ],
        dim=-1,
    )


@dataclass(frozen=True)
class TokenLayout:
    """Where each chunk sits in the sequence, for one latent grid and mode.

    `frames`, `height`, `width` are the video's patch grid (T_lat, H/16, W/16 in
    pixels); `extra_refs` is the number of extra reference views.
    """

    frames: int
    height: int
    width: int
    extra_refs: int = 0
    replace: bool = False

    @property
    def frame_tokens(self) -> int:
        return self.height * self.width

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the video chunk (extra refs and the reference)."""
        return (self.extra_refs + 1) * self.frame_tokens

    @property
    def video_tokens(self) -> int:
        return self.frames * self.frame_tokens

    @property
    def driving_tokens(self) -> int:
        return self.frames * (self.height // 2) * (self.width // 2)

    @property
    def total_tokens(self) -> int:
        return self.prefix_tokens + self.video_tokens + self.driving_tokens

    def starts(self) -> dict[str, tuple[int, int, int]]:
        """RoPE (t, h, w) start of each chunk: the table in `docs/model.md`, section "RoPE"."""
        n = self.extra_refs
        ref_h = SIDE_OFFSET if self.replace else 0
        video_t = n if self.replace else n + 1
        return {
            "extra_refs": (0, ref_h, 0),
            "ref": (n, ref_h, 0),
            "video": (video_t, 0, 0),
            "driving": (video_t, 0, SIDE_OFFSET),
        }


def rotary_factors(layout: TokenLayout, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each [total_tokens, head_dim // 2] in float64, in sequence order."""
    if layout.height % 2 or layout.width % 2:
        raise ValueError(
            f"the patch grid {layout.height}x{layout.width} must be even to pool the driving chunk"
        )
    starts = layout.starts()
    chunks = []
    if layout.extra_refs:
        chunks.append(
            _grid_angles(head_dim, layout.extra_refs, layout.height, layout.width, starts["extra_refs"])
        )
    chunks.append(_grid_angles(head_dim, 1, layout.height, layout.width, starts["ref"]))
    chunks.append(_grid_angles(head_dim, layout.frames, layout.height, layout.width, starts["video"]))
    cos = [c.cos().flatten(0, 2) for c in chunks]
    sin = [c.sin().flatten(0, 2) for c in chunks]

    driving = _grid_angles(head_dim, layout.frames, layout.height, layout.width, starts["driving"])
    for parts, fn in ((cos, torch.cos), (sin, torch.sin)):
        full = fn(driving).permute(0, 3, 1, 2)  # T, D, h, w
        pooled = F.avg_pool2d(full, kernel_size=2, stride=2).permute(0, 2, 3, 1)
        parts.append(pooled.flatten(0, 2))
    return torch.cat(cos), torch.cat(sin)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive (even, odd) pairs of x [B, S, heads, head_dim] by cos/sin [S, head_dim // 2].

    Computes in the dtype of cos/sin and returns float32, as the reference does.
    """
    pairs = x.to(cos.dtype).unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).float()


class SCAIL2RotaryEmbedding(nn.Module):
    """The rotary factors as a module (no parameters), so a context-parallel plan can split its outputs.

    `forward(layout, padding, device)` returns cos and sin, each [total_tokens + padding,
    head_dim // 2] in float32 on `device`; the `padding` rows after the sequence are the identity
    rotation (cos 1, sin 0) for the tokens that pad the sequence to a multiple of the
    context-parallel degree (their outputs are dropped; see `SCAIL2Transformer3DModel.forward`).
    """

    def __init__(self, head_dim: int):
        super().__init__()
        self.head_dim = head_dim

    def forward(self, layout: TokenLayout, padding: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rotary_factors(layout, self.head_dim)
        if padding:
            cos = F.pad(cos, (0, 0, 0, padding), value=1.0)
            sin = F.pad(sin, (0, 0, 0, padding), value=0.0)
        return cos.to(device, torch.float32), sin.to(device, torch.float32)
