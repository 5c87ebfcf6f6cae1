"""Each score where the truth is known: a take that is the driving clip itself, the same frames frozen
or shuffled, a background shifted by known pixels, a face pasted and then removed. Every test also
scores the take without the defect, so it fails if the score cannot tell them apart."""

from __future__ import annotations

import numpy as np
import pytest
from review_fixtures import SIZE, face_crop, grating_background, real_clip

from backend.review.flags import score_flags
from backend.review.flow import TakeFlows
from backend.review.scores import background, faces, identity, motion, temporal
from backend.review.scoring import score_take
from backend.review.take import Take, identity_masks
from protocol import PALETTE, Score


def flagged(scores, name: str) -> set[int]:
    return {f.frame for f in scores.flags if f.score == name}


@pytest.fixture(scope="module")
def driving_as_take():
    clip = real_clip()
    return score_take(Take(clip.copy(), driving=clip, reference=clip[0]))


def test_the_driving_clip_itself_has_perfect_motion_fidelity_and_no_flags(driving_as_take):
    assert driving_as_take.score("motion").value == 1.0
    assert all(v == 1.0 for v in driving_as_take.score("motion").per_frame[1:])
    assert driving_as_take.score("faces").value == 1.0
    assert driving_as_take.flags == []
    for score in driving_as_take.scores:
        assert score.what and score.limits
    assert "hands are not checked" in driving_as_take.score("faces").limits


def test_frozen_frames_lower_motion_fidelity_and_are_flagged_where_frozen(driving_as_take):
    clip = real_clip()
    take = clip.copy()
    take[30:40] = clip[29]  # frames 30-39 hold frame 29; frame 40 pops back
    scores = score_take(Take(take, driving=clip, reference=clip[0]))
    assert scores.score("motion").value < driving_as_take.score("motion").value - 0.05
    assert set(range(30, 40)) <= flagged(scores, "motion") <= set(range(30, 41))
    assert flagged(driving_as_take, "motion") == set()


def test_shuffled_frames_are_flagged_at_the_frames_out_of_order(driving_as_take):
    clip = real_clip()
    order = np.arange(len(clip))
    order[20:30] = np.random.default_rng(7).permutation(np.arange(20, 30))
    scores = score_take(Take(clip[order], driving=clip, reference=clip[0]))
    # Temporal stability sees a pair of take frames that are not neighbours in the source; motion
    # fidelity sees a pair that moves otherwise than the driving pair at the same frames.
    expected = {"temporal": {k for k in range(1, len(order)) if order[k] != order[k - 1] + 1},
                "motion": {k for k in range(1, len(order)) if (order[k - 1], order[k]) != (k - 1, k)}}
    assert expected["temporal"]  # the permutation moved something
    for name, wrong in expected.items():
        found = flagged(scores, name)
        assert found <= wrong, name
        assert len(found) >= 0.8 * len(wrong), (name, sorted(found), sorted(wrong))
    assert scores.score("temporal").value < driving_as_take.score("temporal").value
    assert flagged(driving_as_take, "temporal") == set()


def _replace_take(shift: int, frames: range):
    """Replacement mode: a character (a noise block, different in the take) crossing a striped
    background; the take's background is shifted by `shift` pixels on `frames`."""
    count, rng = 24, np.random.default_rng(0)
    plate = grating_background()
    driving = np.repeat(plate[None], count, axis=0)
    take = driving.copy()
    mask = np.full((count, *SIZE, 3), 255, np.uint8)  # replacement: white is background
    for k in range(count):
        x = 40 + 8 * k
        driving[k, 80:200, x:x + 60] = rng.integers(0, 255, (120, 60, 3))
        take[k, 80:200, x:x + 60] = rng.integers(0, 255, (120, 60, 3))  # the generated character differs
        mask[k, 80:200, x:x + 60] = PALETTE[0]
        if k in frames:
            character = np.all(mask[k] == PALETTE[0], axis=-1, keepdims=True)
            take[k] = np.where(character, take[k], np.roll(plate, shift, axis=1))
    return Take(take, "replace", driving, identity_masks(mask))


@pytest.mark.parametrize("shift", [2, 4])
def test_a_background_shifted_by_known_pixels_loses_the_expected_psnr(shift):
    scored = background.measure(TakeFlows(_replace_take(shift, range(10, 16))))
    psnr = scored.details["psnr_db"]
    # 128 + A sin(2 pi x / P) against itself shifted by d: MSE = 2 A^2 sin^2(pi d / P)
    expected = 10 * np.log10(255 ** 2 / (2 * 60 ** 2 * np.sin(np.pi * shift / 16) ** 2))
    for k in range(24):
        if k in range(10, 16):
            assert psnr[k] == pytest.approx(expected, abs=0.3), k
            assert scored.per_frame[k] < 0.9
        else:
            assert psnr[k] == 100.0 and scored.per_frame[k] == 1.0  # the character differs, the background not
    assert {f.frame for f in score_flags(scored)} == set(range(10, 16))


def test_a_larger_shift_costs_more_background_score():
    two, four = (background.measure(TakeFlows(_replace_take(s, range(10, 16)))) for s in (2, 4))
    assert four.value < two.value < 1.0


def _face_clip(missing: range) -> tuple[np.ndarray, np.ndarray]:
    """(driving, take): a face drifting across a still background; the take loses it on `missing`."""
    face = face_crop()
    plate = np.asarray(real_clip("scail_001_driving.mp4")[0] // 2 + 64)  # a real wall, no face at this size
    driving = np.repeat(plate[None], 40, axis=0)
    for k in range(40):
        y, x = 60, 100 + 3 * k
        driving[k, y:y + face.shape[0], x:x + face.shape[1]] = face
    take = driving.copy()
    take[list(missing)] = plate
    return driving, take


def test_a_face_pasted_then_removed_is_flagged_lost_on_those_frames():
    driving, take = _face_clip(range(18, 30))
    scores = score_take(Take(take, driving=driving, reference=driving[0]))
    lost = flagged(scores, "faces")
    assert set(range(19, 29)) <= lost <= set(range(17, 31)), sorted(lost)
    assert all("face lost" in f.reason for f in scores.flags if f.score == "faces")
    clean = faces.measure(TakeFlows(Take(driving.copy(), driving=driving)))
    assert clean.value == 1.0 and not score_flags(clean)


def test_faces_are_looked_for_around_the_characters_masks_only():
    """The detector scans each frame's box around the identities' masks (grown by a margin): a face inside
    a mask is found as in the whole frame (and the wall's false finds outside the box are not), one
    outside every mask is not counted, an empty mask scans nothing."""
    driving, take = _face_clip(range(18, 30))
    face_h, face_w = face_crop().shape[:2]
    on_face = np.zeros(driving.shape[:3], bool)
    elsewhere = np.zeros(driving.shape[:3], bool)
    for k in range(len(driving)):
        x = 100 + 3 * k
        on_face[k, 60 + face_h // 3: 60 + face_h, x + face_w // 4: x + face_w - face_w // 4] = True  # the body
        elsewhere[k, -40:, :60] = True  # a character far from the face
    elsewhere[5] = False
    boxes = faces.character_boxes(on_face, faces._margin(driving.shape[1:3]))
    boxed, whole = faces.face_counts(driving, boxes), faces.face_counts(driving)
    assert [min(c, 1) for c in boxed] == [min(c, 1) for c in whole] and min(boxed) >= 1
    assert sum(boxed) <= sum(whole)  # the plate's false detections outside the box are gone
    far_boxes = faces.character_boxes(elsewhere, faces._margin(driving.shape[1:3]))
    assert far_boxes[5] is None and sum(faces.face_counts(driving, far_boxes)) == 0
    assert "around the characters' masks" in faces.LIMITS


@pytest.mark.parametrize("clip", ["scail_001_driving.mp4", "scail_002_driving.mp4"])
def test_the_face_check_names_nothing_on_a_lightly_degraded_real_clip(clip):
    """The tuning's truth: the Haar counts flicker on real footage, a take that only blurs and brightens
    the driving clip must not be flagged."""
    import cv2

    frames = real_clip(clip)
    take = np.stack([np.clip(cv2.GaussianBlur(f, (5, 5), 1.2).astype(np.int16) + 12, 0, 255).astype(np.uint8)
                     for f in frames])
    driving_counts, take_counts = faces.face_counts(frames), faces.face_counts(take)
    assert sum(driving_counts) > 10  # the clip does show a face to the detector
    assert faces.disagreements(driving_counts, take_counts) == []
    # As a real job scores it: only around the dancer's mask (keyed off the plain wall here).
    wall = np.median(frames[:, :, 0].reshape(-1, 3), axis=0).astype(np.int16)
    dancer = np.abs(frames.astype(np.int16) - wall).max(axis=-1) > 60
    masked = faces.measure(TakeFlows(Take(take, driving=frames, masks={0: dancer}, reference=frames[0])))
    assert sum(masked.details["driving_counts"]) > 10 and masked.value == 1.0, masked.details["frame_reasons"]


def test_flags_need_a_frame_far_below_the_takes_own_median():
    steady = Score("motion", 0.9, "w", "l", [None] + [0.9 + 0.01 * (k % 3) for k in range(40)])
    assert score_flags(steady) == []
    dipped = Score("motion", 0.9, "w", "l", [None] + [0.9 + 0.01 * (k % 3) for k in range(40)])
    dipped.per_frame[12] = 0.4
    assert [f.frame for f in score_flags(dipped)] == [12]
    assert "median" in score_flags(dipped)[0].reason


def test_segment_boundaries_report_their_jump():
    clip = real_clip()
    take = clip.copy()
    take[33:] = np.clip(take[33:].astype(np.int16) + 40, 0, 255).astype(np.uint8)  # a segment that pops
    scored = temporal.measure(TakeFlows(Take(take, driving=clip, segment_starts=[33])))
    (jump,) = scored.details["segment_boundaries"]
    assert jump["frame"] == 33 and jump["times_median"] > 3
    smooth = temporal.measure(TakeFlows(Take(clip.copy(), driving=clip, segment_starts=[33])))
    assert smooth.details["segment_boundaries"][0]["times_median"] < 3


def test_motion_agreement_reads_direction():
    still = np.zeros((2, 8, 8, 2), np.float32)
    right = still.copy()
    right[1, ..., 0] = 3.0
    masks = {0: np.ones((2, 8, 8), bool)}
    same = motion.per_frame_agreement(right, right, masks)
    opposite = motion.per_frame_agreement(-right, right, masks)
    frozen = motion.per_frame_agreement(still, right, masks)
    assert same["agreement"][1] == 1.0 and same["direction_cosine"][1] == pytest.approx(1.0)
    # 1 - 6 / (3 + 3 + 0.5): the noise floor keeps it off exactly 0
    assert opposite["agreement"][1] == pytest.approx(1 - 6 / 6.5, abs=1e-3)
    assert opposite["direction_cosine"][1] == pytest.approx(-1.0)
    assert frozen["agreement"][1] == pytest.approx(1 - 3 / 3.5, abs=1e-3) and frozen["magnitude_ratio"][1] == 0.0


def test_clip_similarity_runs_on_the_models_own_image_encoder():
    """The embedder the worker passes with real weights, here on the tiny profile's (random) CLIP tower:
    a take whose frames are the reference itself is at 1, another clip below it."""
    from backend.models.tiny import tiny_encoders
    from backend.review.finish import clip_embedder

    embed = clip_embedder(tiny_encoders().image)
    reference = real_clip("scail_002_driving.mp4")[0]
    same = identity.measure(TakeFlows(Take(np.repeat(reference[None], 9, axis=0), reference=reference)), embed)
    other = identity.measure(TakeFlows(Take(real_clip()[:9].copy(), reference=reference)), embed)
    assert set(same.details["clip_similarity"]) == {"0", "4", "8"}
    assert all(v == pytest.approx(1.0, abs=1e-4) for v in same.details["clip_similarity"].values())
    assert all(v < 0.999 for v in other.details["clip_similarity"].values())
    assert "CLIP vision tower" in same.limits
    assert "no CLIP" in identity.measure(TakeFlows(Take(real_clip()[:9].copy(), reference=reference))).limits


def test_a_long_take_is_scored_within_the_pixel_budget():
    from backend.review.take import PIXEL_BUDGET, scored_size

    assert scored_size(81, 512, 896) == (512, 896)  # a 512p segment as it is
    height, width = scored_size(2000, 1088, 1920)  # a long 1080p take: scaled, aspect kept
    assert 2000 * height * width <= PIXEL_BUDGET * 1.02 and abs(width / height - 1920 / 1088) < 0.02


def test_a_shots_next_take_reuses_the_driving_clips_flows_and_face_counts():
    """A wedge's takes share one driving clip: what scoring measures of it alone is kept from the last take
    scored, and measured again once the driving clip or the masks differ."""
    from backend.review import flow

    driving, take = _face_clip(range(18, 30))
    mask = np.zeros(driving.shape[:3], bool)
    mask[:, 40:, 80:] = True
    first = TakeFlows(Take(take, driving=driving, masks={0: mask}))
    flows_first = first.driving_flows
    second = TakeFlows(Take(driving.copy(), driving=driving.copy(), masks={0: mask.copy()}))
    assert second.driving_flows is flows_first  # equal content: not measured again
    assert faces.measure(second).details["driving_counts"] == faces.measure(first).details["driving_counts"]
    other_mask = mask.copy()
    other_mask[:, :10] = True
    third = TakeFlows(Take(take, driving=driving, masks={0: other_mask}))
    assert third.driving_flows is not flows_first and np.array_equal(third.driving_flows, flows_first)
    shifted = np.roll(driving, 1, axis=2)
    assert TakeFlows(Take(take, driving=shifted, masks={0: mask})).driving_flows is not third.driving_flows
    assert flow._last_shot["key"] is not None
