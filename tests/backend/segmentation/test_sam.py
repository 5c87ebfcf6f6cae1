"""SAM 3 and SAM 2 through transformers: tiny random configs, and the real loading code on tiny checkpoints
saved in the layouts users have (a folder of facebook/sam3 files, the Hugging Face hub cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.segmentation import SegmentationError
from backend.segmentation.sam2 import Sam2Tracker, tiny_video_config as tiny_sam2_config
from backend.segmentation.sam3 import Sam3Segmenter, tiny_tokenizer, tiny_video_config
from backend.segmentation.weights import resolve_weights

pytestmark = pytest.mark.slow  # tiny SAM models built and run

FRAMES = np.random.default_rng(0).integers(0, 256, (4, 40, 72, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sam3():
    return Sam3Segmenter.tiny()


def save_sam3(folder, seed=0):
    """A tiny checkpoint laid out as the facebook/sam3 repository is: config, safetensors, tokenizer, processor."""
    from transformers import Sam3VideoModel

    torch.manual_seed(seed)
    Sam3VideoModel(tiny_video_config()).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return folder


def use_hub_cache(monkeypatch, folder):
    """Point huggingface_hub at `folder` (it reads HF_HUB_CACHE once, at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))


def test_tiny_sam3_tracks_a_clip_into_sparse_tracks(sam3):
    seen = []
    tracks = sam3.track(iter(FRAMES), 4, 40, 72, "person", on_frame=seen.append)
    assert seen == [0, 1, 2, 3]
    assert 1 <= len(tracks.instances) <= 8  # the tiny config caps the tracker at 8 objects
    assert (tracks.frame_count, tracks.height, tracks.width) == (4, 40, 72)
    for frames in tracks.logits.values():
        assert frames and set(frames) <= {0, 1, 2, 3}
        assert all(m.dtype == torch.float16 and m.shape == (16, 16) for m in frames.values())  # the tracker's masks
    coverage = tracks.frame_coverage(0, tracks.instances)
    assert coverage.shape == (len(tracks.instances), 40, 72) and 0 <= coverage.min() and coverage.max() <= 1


def test_tiny_sam3_still_drops_duplicate_detections(sam3):
    tracks = sam3.segment_still(FRAMES[0], "person")
    assert tracks.frame_count == 1 and 1 <= len(tracks.instances) <= 8
    masks = [tracks.coverage(i, 0) >= 0.5 for i in tracks.instances]
    for a in range(len(masks)):
        for b in range(a):
            iou = (masks[a] & masks[b]).sum() / max((masks[a] | masks[b]).sum(), 1)
            assert iou < 0.7


def test_a_cancel_raised_by_the_progress_callback_stops_tracking(sam3):
    class Stop(Exception):
        pass

    def on_frame(t):
        if t == 1:
            raise Stop

    with pytest.raises(Stop):
        sam3.track(iter(FRAMES), 4, 40, 72, "person", on_frame=on_frame)


def test_sam3_folder_loads_through_from_pretrained_and_matches_the_built_model(tmp_path):
    folder = save_sam3(tmp_path / "sam3")
    loaded = Sam3Segmenter.load(folder)
    built = Sam3Segmenter.tiny(seed=0)
    loaded.score_threshold = built.score_threshold
    a = loaded.track(iter(FRAMES), 4, 40, 72, "person")
    b = built.track(iter(FRAMES), 4, 40, 72, "person")
    assert a.instances == b.instances
    for i in a.instances:
        assert a.logits[i].keys() == b.logits[i].keys()
        for t in a.logits[i]:
            torch.testing.assert_close(a.logits[i][t], b.logits[i][t])


def test_sam3_is_found_in_the_hub_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--facebook--sam3" / "snapshots" / "0123abcd"
    save_sam3(snapshot)
    (tmp_path / "hub" / "models--facebook--sam3" / "refs").mkdir()
    (tmp_path / "hub" / "models--facebook--sam3" / "refs" / "main").write_text("0123abcd")
    use_hub_cache(monkeypatch, tmp_path / "hub")
    assert resolve_weights(None, "facebook/sam3") == snapshot
    assert Sam3Segmenter.load(None).name == str(snapshot)


@pytest.mark.parametrize("make, problem", [
    (lambda d: None, "is not a folder"),
    (lambda d: d.mkdir(), "has no config.json"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{}")), r"has no \*.safetensors"),
])
def test_missing_weights_say_what_to_download_and_where(tmp_path, make, problem):
    folder = tmp_path / "sam3"
    make(folder)
    with pytest.raises(SegmentationError, match=f"{problem}: download 'facebook/sam3'.*--sam3-weights") as error:
        Sam3Segmenter.load(folder)
    assert "\n" not in str(error.value)


def test_an_empty_hub_cache_is_one_line(tmp_path, monkeypatch):
    use_hub_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(SegmentationError, match="not in the Hugging Face hub cache: download 'facebook/sam2.1"):
        Sam2Tracker.load(None)


def test_tiny_sam2_tracks_marked_subjects_forward_and_back(tmp_path):
    from transformers import Sam2VideoModel

    torch.manual_seed(0)
    Sam2VideoModel(tiny_sam2_config()).save_pretrained(tmp_path / "sam2")
    tracker = Sam2Tracker.load(tmp_path / "sam2")
    seen = []
    subjects = [{"frame": 2, "box": [40, 4, 70, 38]}, {"frame": 2, "points": [[10, 20], [12, 30]], "labels": [1, 0]}]
    tracks = tracker.track(FRAMES, subjects, on_frame=seen.append)
    assert tracks.instances == [0, 1]  # one instance per mark, in mark order
    assert sorted(seen) == [0, 1, 2, 3]  # every frame reported once, though frame 2 runs both ways
    for frames in tracks.logits.values():
        assert set(frames) <= {0, 1, 2, 3}
    with pytest.raises(SegmentationError, match="marked on frame 9"):
        tracker.track(FRAMES, [{"frame": 9, "box": [1, 1, 5, 5]}])
