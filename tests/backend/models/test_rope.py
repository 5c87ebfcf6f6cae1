"""SCAIL-2's chunked 3-D RoPE: offsets per mode and the pooled driving factors."""

from __future__ import annotations

import torch

from backend.models.rope import SIDE_OFFSET, TokenLayout, _grid_angles, apply_rotary, axis_pairs, rotary_factors


def test_axis_split_matches_the_spec():
    assert axis_pairs(128) == (22, 21, 21)
    assert axis_pairs(24) == (4, 4, 4)


def test_chunk_starts_per_mode_with_two_extra_references():
    animate = TokenLayout(frames=3, height=4, width=6, extra_refs=2, replace=False).starts()
    replace = TokenLayout(frames=3, height=4, width=6, extra_refs=2, replace=True).starts()
    assert animate == {
        "extra_refs": (0, 0, 0), "ref": (2, 0, 0), "video": (3, 0, 0), "driving": (3, 0, SIDE_OFFSET),
    }
    assert replace == {
        "extra_refs": (0, SIDE_OFFSET, 0), "ref": (2, SIDE_OFFSET, 0), "video": (2, 0, 0),
        "driving": (2, 0, SIDE_OFFSET),
    }


def test_driving_factors_are_averaged_not_renormalised():
    layout = TokenLayout(frames=2, height=4, width=6)
    cos, sin = rotary_factors(layout, head_dim=24)
    assert cos.shape == (layout.total_tokens, 12)
    start = layout.prefix_tokens + layout.video_tokens
    driving_cos, driving_sin = cos[start:], sin[start:]
    # Full-resolution factors averaged over the 2x2 window at the top-left of frame 0.
    full = _grid_angles(24, 2, 4, 6, (1, 0, SIDE_OFFSET))
    window = full[0, :2, :2].reshape(4, 12)
    torch.testing.assert_close(driving_cos[0], window.cos().mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(driving_sin[0], window.sin().mean(0), rtol=0, atol=1e-12)
    magnitude = driving_cos**2 + driving_sin**2
    assert (magnitude < 1 - 1e-6).any()  # shrunk, as in the reference
    video = cos[: start] ** 2 + sin[: start] ** 2
    torch.testing.assert_close(video, torch.ones_like(video))


def test_rotation_equals_complex_multiplication():
    torch.manual_seed(0)
    layout = TokenLayout(frames=1, height=2, width=2)
    cos, sin = rotary_factors(layout, head_dim=24)
    x = torch.randn(1, layout.total_tokens, 2, 24, dtype=torch.float64)
    expected = torch.view_as_real(
        torch.view_as_complex(x.reshape(1, -1, 2, 12, 2)) * torch.complex(cos, sin)[None, :, None, :]
    ).flatten(3)
    torch.testing.assert_close(apply_rotary(x, cos, sin), expected.float())
