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


# -- checking masks before use (issue 14, item 9) -------------------------------------------------


def test_every_colour_is_read_as_an_identity_or_a_background():
    from backend.pipeline.masks import read_as

    assert read_as((128, 0, 255)) == "identity 1 (blue)"  # purple
    assert read_as((255, 165, 0)) == "identity 2 (red)"  # orange
    assert read_as((255, 0, 255)) == "identity 4 (magenta)"
    assert read_as((200, 200, 200)) == "black (background hidden)"  # a light grey is below the threshold
    assert read_as((226, 226, 226)) == "white (background shown)"


def _six_subjects_and(seventh):
    import numpy as np

    mask = np.zeros((128, 224, 3), np.uint8)
    for k, colour in enumerate([*PALETTE, seventh]):
        mask[20:100, 4 + 30 * k : 28 + 30 * k] = colour
    return mask


def test_a_seventh_identity_is_refused_and_names_the_one_it_would_merge_into():
    from backend.pipeline.masks import MaskError, check_mask, off_palette

    assert off_palette(_six_subjects_and((0, 0, 0)))[0] == 0.0  # six palette identities on black: clean
    with pytest.raises(MaskError, match=r"of the driving mask is not a palette colour, e.g. \(128, 128, 255\), which "
                                        r"is read as identity 1 \(blue\)"):
        check_mask(_six_subjects_and((128, 128, 255)), "driving mask", "animate")


def test_edges_and_compression_are_not_counted_but_flat_off_colours_are():
    import cv2
    import numpy as np

    from backend.pipeline.masks import check_mask, off_palette

    mask = np.zeros((256, 448, 3), np.uint8)
    cv2.circle(mask, (120, 128), 90, PALETTE[0], -1, lineType=cv2.LINE_AA)
    cv2.ellipse(mask, (330, 128), (50, 110), 20, 0, 360, PALETTE[5], -1, lineType=cv2.LINE_AA)
    assert off_palette(mask) == (0.0, None)
    blurred = cv2.GaussianBlur(mask, (0, 0), 3)  # a soft, feathered mask
    assert off_palette(blurred) == (0.0, None)
    ok, jpeg = cv2.imencode(".jpg", mask, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert off_palette(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))[0] < 0.0005
    assert check_mask(mask, "driving mask", "animate") == []
    patch = mask.copy()
    patch[10:30, 400:420] = (90, 90, 90)  # 400 px of grey: read as black
    share, colour = off_palette(patch)
    assert colour == (90, 90, 90) and 0.0005 < share < 0.01
    assert check_mask(patch, "driving mask", "animate")[0].startswith(
        "0.2% of the driving mask is not a palette colour, e.g. (90, 90, 90), which is read as black (background hidden)")


def test_a_mask_of_the_other_mode_is_a_warning():
    from backend.pipeline.masks import check_mask

    white_background = _six_subjects_and((255, 255, 255))
    white_background[white_background.sum(axis=-1) == 0] = 255
    assert check_mask(white_background, "reference mask", "animate", for_reference=True) == []
    assert check_mask(white_background, "driving mask", "animate") == [
        "the driving mask's background is white, but in animate mode it must be black: was it made for replace mode?"]
    assert check_mask(white_background, "driving mask", "replace") == []
