"""Pixels: resizing decoded frames to the job's size and converting them to and from model tensors.

No file access and no model code. Frames are RGB ``uint8`` arrays, ``[H, W, 3]`` for one image and
``[N, H, W, 3]`` for many (as `media` decodes them); model tensors are float32 ``[3, N, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# Interpolation choices for resize_cover_crop.
CUBIC = cv2.INTER_CUBIC  # the reference's resize: antialiased bicubic (see resize_cover_crop)
NEAREST = cv2.INTER_NEAREST_EXACT  # pixel-centre nearest: colour masks keep their exact colours
LINEAR = cv2.INTER_LINEAR
AREA = cv2.INTER_AREA


def cover_size(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int]:
    """(H, W) of an image scaled to cover target_height x target_width with its aspect kept.

    As the reference: the side that limits the scale gets the target exactly, the other side is
    floored. Integer arithmetic, so equal aspect ratios give the target size exactly.
    """
    if width * target_height > target_width * height:  # wider than the target
        return target_height, (width * target_height) // height
    return (height * target_width) // width, target_width


def resize_cover_crop(
    frames: np.ndarray, height: int, width: int, interpolation: int = CUBIC
) -> np.ndarray:
    """Scale uint8 frames to cover height x width (aspect kept), then take the centre crop.

    frames: [H, W], [H, W, C] or [N, H, W, C] uint8; returns the same layout at height x width.
    CUBIC is the reference's resize (torchvision bicubic, antialiased, align_corners=False,
    clamped and rounded): plain cv2 bicubic aliases when shrinking 2x, as footage is. Any other
    value is a cv2 interpolation flag; NEAREST keeps mask colours exact. The crop offset is
    (excess // 2) on each axis, as the reference.

    float32 frames (CUBIC only) stay float32, neither clamped nor rounded: torchvision on a float
    tensor, which is how the reference resizes its reference still.
    """
    frames = np.asarray(frames)
    floating = frames.dtype == np.float32
    if floating and interpolation != CUBIC:
        raise ValueError("resize_cover_crop scales float32 frames with CUBIC only")
    if frames.dtype != np.uint8 and not floating:
        raise ValueError(f"resize_cover_crop takes uint8 or float32 frames, got {frames.dtype}")
    if frames.ndim == 2:
        return resize_cover_crop(frames[None, :, :, None], height, width, interpolation)[0, :, :, 0]
    if frames.ndim == 3:
        return resize_cover_crop(frames[None], height, width, interpolation)[0]
    if frames.ndim != 4:
        raise ValueError(f"resize_cover_crop takes [H, W], [H, W, C] or [N, H, W, C], got shape {frames.shape}")
    n, src_h, src_w, channels = frames.shape
    new_h, new_w = cover_size(src_h, src_w, height, width)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    out = np.empty((n, height, width, channels), frames.dtype)
    if (new_h, new_w) == (src_h, src_w):
        out[:] = frames[:, top : top + height, left : left + width]
    elif interpolation == CUBIC:
        # Chunks bound the float32 working copy (8 frames of 4K are ~800 MB).
        for lo in range(0, n, 8):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[lo : lo + 8])).permute(0, 3, 1, 2).float()
            scaled = F.interpolate(chunk, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            scaled = scaled[:, :, top : top + height, left : left + width]
            if not floating:
                scaled = scaled.clamp_(0, 255).round_().to(torch.uint8)
            out[lo : lo + 8] = scaled.permute(0, 2, 3, 1).numpy()
    else:
        for i in range(n):
            scaled = cv2.resize(frames[i], (new_w, new_h), interpolation=interpolation)
            out[i] = scaled.reshape(new_h, new_w, channels)[top : top + height, left : left + width]
    return out


def to_signed_float(image_uint8: np.ndarray) -> np.ndarray:
    """uint8 pixels u -> float32 2 (u / 255) - 1, as the reference reads its stills (ToTensor, then * 2 - 1)."""
    return (np.asarray(image_uint8).astype(np.float32) / np.float32(255.0)) * np.float32(2.0) - np.float32(1.0)


def to_model_tensor(frames_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [3, N, H, W] in [-1, 1] as (u - 127.5) / 127.5.

    A single image [H, W, 3] gives [3, H, W].
    """
    if torch.is_tensor(frames_uint8):
        frames = frames_uint8
    else:
        array = np.asarray(frames_uint8)
        # torch cannot share read-only (np.broadcast_to) or reversed-stride (rgb[..., ::-1]) memory.
        if not array.flags.writeable or any(stride < 0 for stride in array.strides):
            array = array.copy()
        frames = torch.from_numpy(array)
    if frames.dtype != torch.uint8:
        raise ValueError(f"to_model_tensor takes uint8 frames, got {frames.dtype}")
    if frames.ndim == 3:
        order = (2, 0, 1)
    elif frames.ndim == 4:
        order = (3, 0, 1, 2)
    else:
        raise ValueError(f"to_model_tensor takes [H, W, 3] or [N, H, W, 3], got shape {tuple(frames.shape)}")
    return frames.permute(*order).to(torch.float32).sub_(127.5).div_(127.5).contiguous()


def from_model_tensor(video: torch.Tensor) -> np.ndarray:
    """float [3, N, H, W] in [-1, 1] (also [1, 3, N, H, W]) -> uint8 [N, H, W, 3].

    Values are clamped to [-1, 1] and rounded. A single image [3, H, W] gives [H, W, 3].
    """
    video = torch.as_tensor(video).detach().cpu()
    if video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if video.ndim == 3:
        order = (1, 2, 0)
    elif video.ndim == 4:
        order = (1, 2, 3, 0)
    else:
        raise ValueError(f"from_model_tensor takes [3, N, H, W] or [3, H, W], got shape {tuple(video.shape)}")
    pixels = (video.to(torch.float32).clamp(-1.0, 1.0) + 1.0).mul_(127.5).round_().to(torch.uint8)
    return pixels.permute(*order).contiguous().numpy()

