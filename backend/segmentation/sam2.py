"""SAM 2 through transformers: subjects the user marked by hand (boxes or points), tracked through a clip.

The alternative to text prompts when the prompt finds the wrong things or too many.
Prompt coordinates are scaled to the model's square input as Sam2VideoProcessor does
(its image half needs torchvision, which the backend environment does not ship). The
marks may sit on any frame: the clip is tracked forward from the earliest marked frame,
then backward to the start.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from . import SegmentationError
from .preprocess import SamModel, load_pretrained
from .tracks import Tracks
from .weights import SAM2_REPO, resolve_weights

BOX_LABELS = (2, 3)  # SAM's point labels for a box's top-left and bottom-right corners
SAM2_MEAN, SAM2_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as SAM 2 was trained
TINY_SIZE, TINY_HIDDEN = 64, 128


def tiny_video_config():
    """A Sam2VideoConfig small enough for CPU tests (about 1 M parameters)."""
    from transformers import Sam2VideoConfig
    from transformers.models.sam2.configuration_sam2 import (
        Sam2HieraDetConfig,
        Sam2VisionConfig,
    )

    size, hidden = TINY_SIZE, TINY_HIDDEN
    # A global-attention block must not open a stage (it has no window to pool), hence 2 blocks in stage 3.
    hiera = Sam2HieraDetConfig(hidden_size=8, image_size=[size, size], blocks_per_stage=[1, 1, 2, 1],
                               embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                               window_size_per_stage=[2, 2, 2, 2], global_attention_blocks=[3],
                               window_positional_embedding_background_size=[2, 2])
    vision = Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=hidden,
                              backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2])
    return Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=dict(hidden_size=hidden, image_size=size),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden, memory_fuser_num_layers=1,
        memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64,
        memory_attention_rope_feat_sizes=[size // 16] * 2, image_size=size,
    )


class Sam2Tracker(SamModel):
    """Hand-marked subjects -> Tracks (instance i is subject i)."""

    @classmethod
    def tiny(cls, device: str = "cpu", seed: int = 0) -> "Sam2Tracker":
        from transformers import Sam2VideoModel

        torch.manual_seed(seed)
        return cls(Sam2VideoModel(tiny_video_config()).eval().to(device), "tiny", device, SAM2_MEAN, SAM2_STD)

    @classmethod
    def load(cls, folder: os.PathLike | str | None, device: str = "cpu") -> "Sam2Tracker":
        """From a local copy of a SAM 2.1 checkpoint (or the hub cache's facebook/sam2.1-hiera-large)."""
        from transformers import Sam2VideoModel

        folder = resolve_weights(folder, SAM2_REPO)
        model, mean, std = load_pretrained(Sam2VideoModel, folder, SAM2_REPO, device, SAM2_MEAN, SAM2_STD)
        return cls(model, str(folder), device, mean, std)

    def _prompt(self, subject: dict, height: int, width: int) -> dict:
        """A subject mark in source pixels -> the session's point inputs in model pixels."""
        scale = torch.tensor([self.image_size / width, self.image_size / height])
        if subject.get("box") is not None:
            x0, y0, x1, y1 = subject["box"]
            coords, labels = [[x0, y0], [x1, y1]], list(BOX_LABELS)
        else:
            coords, labels = subject["points"], subject.get("labels") or [1] * len(subject["points"])
        return {"point_coords": (torch.tensor(coords, dtype=torch.float32) * scale)[None, None],
                "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None]}

    def track(self, frames: np.ndarray, subjects: list[dict],
              on_frame: Callable[[int], None] | None = None) -> Tracks:
        """uint8 [T, H, W, 3] and marks (see protocol.SegmentSpec.subjects) -> Tracks, one instance per mark."""
        from transformers import Sam2VideoInferenceSession

        count, height, width = frames.shape[:3]
        marked = [int(s.get("frame", 0)) for s in subjects]
        if any(f >= count for f in marked):
            raise SegmentationError(f"a subject is marked on frame {max(marked)}, but the clip has {count} frames")
        video = torch.stack([self.pixels(frame, device="cpu") for frame in frames])  # long clips live in host memory
        session = Sam2VideoInferenceSession(video=video, video_height=height, video_width=width,
                                            inference_device=self.device, video_storage_device="cpu",
                                            inference_state_device=self.device, dtype=self.dtype)
        for obj_id, subject in enumerate(subjects):
            prompt = self._prompt(subject, height, width)
            session.add_point_inputs(session.obj_id_to_idx(obj_id), marked[obj_id], prompt)
        session.obj_with_new_inputs = list(range(len(subjects)))
        tracks = Tracks(count, height, width)
        for obj_id in range(len(subjects)):
            tracks.logits[obj_id] = {}  # instance i is subject i, even if it is never seen
        start, seen = min(marked), set()
        with torch.inference_mode():
            for reverse in (False, True) if start > 0 else (False,):
                for output in self.model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                    for obj_id, logits in zip(output.object_ids, output.pred_masks):
                        tracks.add(obj_id, output.frame_idx, logits[0])
                    if on_frame is not None and output.frame_idx not in seen:  # the start frame runs both ways
                        on_frame(len(seen))
                    seen.add(output.frame_idx)
        return tracks
