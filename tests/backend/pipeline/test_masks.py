"""The 28-channel mask encoding (exact against the reference) and palette helpers."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from scail_fixtures import PARITY

from backend.pipeline.masks import (
    PALETTE,
    encode_mask_video,
    identities_present,
    identity_indicator,
    latent_mask_size,
    paint_identities,
    to_signed_unit,
)


def test_encoding_matches_the_reference_exactly():
    case = load_file(PARITY / "mask_T9_64x96.safetensors")
    encoded = encode_mask_video(case["mask_video"])
    assert encoded.shape == (28, 3, 8, 12)
    assert torch.equal(encoded, case["expected"])


def test_threshold_is_strictly_above_225():
    frame = torch.zeros(1, 8, 16, 3, dtype=torch.uint8)
    frame[:, :, :8] = torch.tensor([225, 225, 225], dtype=torch.uint8)
    frame[:, :, 8:] = torch.tensor([226, 226, 226], dtype=torch.uint8)
    encoded = encode_mask_video(to_signed_unit(frame))
    white = encoded[0, 0]  # group position 0, indicator 0 (white)
    assert white.tolist() == [[0.0, 1.0]]


def test_identity_to_indicator_follows_the_spec():
    # blue 3, red 1, green 2, magenta 5, cyan 6, yellow 4
    assert [identity_indicator(i) for i in range(6)] == [3, 1, 2, 5, 6, 4]


def test_latent_size_rounds_up_at_each_halving():
    assert latent_mask_size(64, 96) == (8, 12)
    assert latent_mask_size(65, 97) == (9, 13)
    assert latent_mask_size(17, 9) == (3, 2)


def test_frame_count_must_be_4k_plus_1():
    with pytest.raises(ValueError, match="4k\\+1"):
        encode_mask_video(torch.zeros(3, 8, 16, 16))


@pytest.mark.parametrize(
    "mode, driving_bg, reference_bg",
    [("animate", (0, 0, 0), (255, 255, 255)), ("replace", (255, 255, 255), (0, 0, 0))],
)
def test_painted_masks_use_palette_and_mode_background(mode, driving_bg, reference_bg):
    coverage = torch.zeros(2, 4, 8)
    coverage[0, :, :2] = 1.0  # identity 0 on the left
    coverage[1, :, 6:] = 1.0  # identity 1 on the right
    driving = paint_identities(coverage, mode)
    reference = paint_identities(coverage, mode, for_reference=True)
    assert tuple(driving[0, 0].tolist()) == PALETTE[0]
    assert tuple(driving[0, 7].tolist()) == PALETTE[1]
    assert tuple(driving[0, 4].tolist()) == driving_bg
    assert tuple(reference[0, 4].tolist()) == reference_bg
    assert identities_present(driving) == [0, 1]


def test_encoded_identity_lands_in_its_indicator_channel():
    coverage = torch.zeros(4, 5, 16, 16)  # identities 0..3 over 5 frames
    coverage[2, :, :8, :8] = 1.0  # identity 2 (green) covers the top-left quarter
    video = to_signed_unit(paint_identities(coverage, "animate"))
    encoded = encode_mask_video(video)
    green = identity_indicator(2)
    assert encoded.shape == (28, 2, 2, 2)
    assert encoded[green, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    others = [c for c in range(28) if c % 7 != green]
    assert encoded[others].sum() == 0


def test_more_than_six_identities_is_refused():
    with pytest.raises(ValueError, match="at most 6"):
        paint_identities(torch.zeros(7, 4, 4), "animate")
