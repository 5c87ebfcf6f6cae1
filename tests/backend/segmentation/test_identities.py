"""Which instances become identities and in which order (pure), and the Tracks container."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.segmentation import SegmentationError
from backend.segmentation.identities import (
    arrange_identities,
    left_to_right,
    select_instances,
)
from backend.segmentation.tracks import Tracks


def moving_squares(xs_per_instance, frames=5, height=32, width=64):
    """coverage [N, T, H, W]: instance n is a square of side `size` at x = start + 2 t."""
    cov = np.zeros((len(xs_per_instance), frames, height, width), np.float32)
    for n, (x0, size) in enumerate(xs_per_instance):
        for t in range(frames):
            cov[n, t, 4:4 + size, x0 + 2 * t:x0 + 2 * t + size] = 1.0
    return cov


def tracks_of(cov):
    """Tracks holding coverage [N, T, H, W] as +-8 logits, instance n = n."""
    n, frames, height, width = cov.shape
    tracks = Tracks(frames, height, width)
    for k in range(n):
        for t in range(frames):
            tracks.add(k, t, torch.from_numpy(np.where(cov[k, t] >= 0.5, 8.0, -8.0)))
    return tracks


def stats(cov):
    tracks = tracks_of(cov)
    return tracks.areas(), tracks.first_boxes()


def test_identity_one_is_the_left_one():
    cov = moving_squares([(40, 6), (2, 6)])  # instance 0 starts on the right
    order, warnings = arrange_identities(*stats(cov))
    assert order == [1, 0] and not warnings


def test_order_uses_first_frame_box_centre():
    # a wide instance whose left edge is further left but whose centre is right of a narrow one
    boxes = np.array([[0, 0, 40, 10], [12, 0, 16, 10]], np.float32)
    assert left_to_right(boxes) == [1, 0]
    assert left_to_right(np.array([[np.nan] * 4, [5, 0, 6, 1]])) == [1, 0]


def test_first_boxes_use_first_appearance():
    cov = np.zeros((1, 3, 8, 8), np.float32)
    cov[0, 1, 2:4, 5:7] = 1
    assert tracks_of(cov).first_boxes()[0].tolist() == [5, 2, 7, 4]


def test_more_than_six_keeps_the_six_largest_in_left_right_order():
    sizes = [2, 7, 3, 8, 4, 9, 5, 6]  # instances 0 and 2 are the two smallest
    cov = moving_squares([(2 + 7 * n, s) for n, s in enumerate(sizes)], frames=2, width=80, height=16)
    areas, boxes = stats(cov)
    keep, warnings = select_instances(areas)
    assert keep == [1, 3, 4, 5, 6, 7] and "kept the 6 largest" in warnings[0]
    assert arrange_identities(areas, boxes)[0] == [1, 3, 4, 5, 6, 7]
    assert arrange_identities(areas, boxes, max_identities=2)[0] == [3, 5]


def test_caller_picks_and_limits():
    cov = moving_squares([(2 + 8 * n, 4) for n in range(8)], frames=2, width=80, height=16)
    areas, boxes = stats(cov)
    assert arrange_identities(areas, boxes, pick=[6, 0, 3])[0] == [0, 3, 6]
    with pytest.raises(SegmentationError, match="7 were asked"):
        select_instances(areas, pick=list(range(7)))
    with pytest.raises(SegmentationError, match="7 were asked"):
        select_instances(areas, max_identities=7)
    with pytest.raises(SegmentationError, match="do not exist"):
        select_instances(areas, pick=[9])
    with pytest.raises(SegmentationError, match="repeat"):
        select_instances(areas, pick=[1, 1])


def test_tracks_upsample_logits_softly_and_store_only_frames_with_the_instance():
    tracks = Tracks(frame_count=3, height=8, width=16)
    ramp = torch.linspace(-6, 6, 8).repeat(4, 1)  # [4, 8] logits, left off, right on
    tracks.add(7, 0, ramp)
    tracks.add(7, 1, torch.full((4, 8), -3.0))  # nowhere positive: not stored
    tracks.add(9, 2, torch.full((4, 8), 5.0))
    assert tracks.instances == [7, 9] and list(tracks.logits[7]) == [0]
    soft = tracks.coverage(7, 0)
    assert soft.shape == (8, 16) and soft[:, 0].max() < 0.05 and soft[:, -1].min() > 0.95
    assert ((soft > 0.1) & (soft < 0.9)).any(), "edges stay soft"
    assert tracks.coverage(7, 1).max() == 0 and tracks.coverage(9, 2).min() > 0.99
    np.testing.assert_allclose(tracks.areas(), [0.5 / 3, 1 / 3])
    assert tracks.first_boxes()[0].tolist() == [8, 0, 16, 8]
    assert tracks.first_boxes()[1].tolist() == [0, 0, 16, 8]
    tracks.add(11, 0, torch.full((4, 8), -1.0))
    tracks.drop_empty()
    assert tracks.instances == [7, 9]
