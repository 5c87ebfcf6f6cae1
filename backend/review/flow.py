"""Dense optical flow between consecutive frames (OpenCV DIS), shared by the motion and temporal scores.

DIS with its fast preset: about 6 ms a pair at 896x512 on two CPU cores, so 81 frames cost well
under a second. Flow k maps frame k-1 onto frame k: pixel (x, y) of frame k-1 moves to
(x + u, y + v) in frame k.
"""

from __future__ import annotations

import hashlib
import threading

import cv2
import numpy as np

# Frames are measured at most this many pixels on their short side: flow and structure scores see
# nothing finer that matters for a review, and 720p takes cost what 512p ones do.
WORK_SHORT_SIDE = 512


# What a shot's driving clip gives scoring (its flows, its face counts) is the same for every take of
# the shot, and a wedge's takes are scored one after another by the same worker: the last shot's is
# kept (one shot only: its flows are 300 MB at 512p), which takes about 3.5 s off each later take's 9 s.
_last_shot: dict = {"key": None, "values": {}}
_last_shot_lock = threading.Lock()


def work_scale(height: int, width: int) -> float:
    return min(1.0, WORK_SHORT_SIDE / min(height, width))


def to_work_size(images: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """[N, H, W, ...] images scaled by `work_scale` (bool masks by nearest neighbour)."""
    scale = work_scale(*images.shape[1:3])
    if scale == 1.0:
        return images
    size = (round(images.shape[2] * scale), round(images.shape[1] * scale))
    if images.dtype == bool:
        return np.stack([cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in images]) > 0
    return np.stack([cv2.resize(image, size, interpolation=interpolation) for image in images])


def grey(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] -> uint8 [N, H, W]."""
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])


def consecutive_flows(frames_grey: np.ndarray) -> np.ndarray:
    """float32 [N, H, W, 2]: flow k from frame k-1 to frame k; flow 0 is zero (no previous frame)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    flows = np.zeros((*frames_grey.shape, 2), np.float32)
    for k in range(1, len(frames_grey)):
        flows[k] = dis.calc(frames_grey[k - 1], frames_grey[k], None)
    return flows


def warp_back(frame: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame k pulled back onto frame k-1 along flow k: (warped image, bool [H, W] of pixels that
    landed inside frame k)."""
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    warped = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, inside


class TakeFlows:
    """The take's frames, driving frames and masks at work size, with their flows computed once."""

    def __init__(self, take):
        self.take = take
        self.frames = to_work_size(take.frames)
        self.masks = {identity: to_work_size(mask) for identity, mask in take.masks.items()}
        self.driving = None if take.driving is None else to_work_size(take.driving)
        self._take_flows = self._driving_flows = None
        self._driving_key: str | None = None

    @property
    def character(self) -> np.ndarray:
        return np.logical_or.reduce(list(self.masks.values()))

    @property
    def take_flows(self) -> np.ndarray:
        if self._take_flows is None:
            self._take_flows = consecutive_flows(grey(self.frames))
        return self._take_flows

    @property
    def driving_flows(self) -> np.ndarray | None:
        if self._driving_flows is None and self.driving is not None:
            self._driving_flows = self.of_driving("flows", lambda: consecutive_flows(grey(self.driving)))
        return self._driving_flows

    def of_driving(self, name, compute):
        """`compute()`, something of the driving clip and masks alone (never changed by its caller), taken
        from the last take scored when that take had the same driving clip and masks."""
        if self._driving_key is None:
            digest = hashlib.blake2b(np.ascontiguousarray(self.driving).data, digest_size=16)
            for identity, mask in sorted(self.masks.items()):
                digest.update(identity.to_bytes(2, "little") + np.packbits(mask).tobytes())
            self._driving_key = digest.hexdigest()
        with _last_shot_lock:
            if _last_shot["key"] == self._driving_key and name in _last_shot["values"]:
                return _last_shot["values"][name]
        value = compute()
        with _last_shot_lock:
            if _last_shot["key"] != self._driving_key:
                _last_shot.update(key=self._driving_key, values={})
            _last_shot["values"][name] = value
        return value
