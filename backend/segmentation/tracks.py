"""Instances tracked through a clip, as the segmentation models' low-resolution mask logits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .identities import mask_box


@dataclass
class Tracks:
    """Per instance and frame, low-resolution mask logits [h, w] (float16, CPU).

    Sparse: a frame where an instance has no positive logit is not stored, so a long clip
    costs memory only where people are. `coverage` brings a mask to the output size
    [height, width] (bilinear on logits, then sigmoid: soft edges for mattes); painting
    thresholds it at 0.5, which is the SAM processors' `logits > 0`.
    """

    frame_count: int
    height: int
    width: int
    logits: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)

    @property
    def instances(self) -> list[int]:
        """Instance ids in the order they were first seen; `pick` and masks.json index this list."""
        return list(self.logits)

    def add(self, instance: int, frame: int, logits: torch.Tensor) -> None:
        frames = self.logits.setdefault(int(instance), {})
        if bool((logits > 0).any()):
            frames[int(frame)] = logits.detach().to("cpu", torch.float16)

    def drop(self, instances) -> None:
        for instance in instances:
            self.logits.pop(int(instance), None)

    def drop_empty(self) -> None:
        self.drop([i for i, frames in self.logits.items() if not frames])

    def coverage(self, instance: int, frame: int) -> np.ndarray:
        """Soft coverage [height, width] in [0, 1] (zeros where the instance is absent)."""
        logits = self.logits[instance].get(frame)
        if logits is None:
            return np.zeros((self.height, self.width), np.float32)
        up = F.interpolate(logits[None, None].float(), size=(self.height, self.width), mode="bilinear",
                           align_corners=False)
        return up[0, 0].sigmoid().numpy()

    def frame_coverage(self, frame: int, instances: list[int | None]) -> np.ndarray:
        """[len(instances), height, width] soft coverage of one frame (zeros for a None: an unused identity)."""
        empty = np.zeros((self.height, self.width), np.float32)
        stack = [empty if i is None else self.coverage(i, frame) for i in instances]
        return np.stack(stack) if stack else np.zeros((0, self.height, self.width), np.float32)

    def areas(self) -> np.ndarray:
        """[N] mean fraction of the frame each instance covers over the clip (at the models' resolution)."""
        return np.array([sum(float((m > 0).float().mean()) for m in frames.values()) / max(self.frame_count, 1)
                         for frames in self.logits.values()], np.float64)

    def first_boxes(self) -> np.ndarray:
        """[N, 4] output-pixel box (x0, y0, x1, y1) in each instance's first frame (NaN if never seen)."""
        boxes = np.full((len(self.logits), 4), np.nan, np.float32)
        for n, (instance, frames) in enumerate(self.logits.items()):
            for frame in sorted(frames):
                box = mask_box(self.coverage(instance, frame))
                if box is not None:
                    boxes[n] = box
                    break
        return boxes
