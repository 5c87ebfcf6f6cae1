"""What the network sees besides the noise: a job's shared context, each segment's driving frames.

`build_job_context` encodes what every segment of a job shares (the reference still and its
mask, the prompts, the extra views); `segment_driving` reads a segment's driving frames and
mask frames at the job's size; `match_colours` keeps segments' colours continuous.
`docs/model.md`, sections "Mask channels" and "Segments and overlap".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..loaders.components import Components
from . import media, pixels
from .inputs import PreparedInputs, fallback_mask
from .masks import encode_mask_video, to_signed_unit
from .segments import Segment

Check = Callable[[], None]  # raises sampler.Cancelled when the job is to stop


@dataclass
class JobContext:
    """Per-job tensors that do not change between segments."""

    ref_latents: torch.Tensor
    ref_mask_latents: torch.Tensor  # [28, 1, H/8, W/8]
    clip: torch.Tensor
    context: torch.Tensor
    negative_context: torch.Tensor
    extra_ref_latents: torch.Tensor | None
    extra_ref_masks: torch.Tensor | None


def _mask_latents(rgb_uint8: np.ndarray) -> torch.Tensor:
    """Colour mask still [H, W, 3] -> [28, 1, H/8, W/8]."""
    return encode_mask_video(to_signed_unit(torch.from_numpy(rgb_uint8[None])))


def _paste_on_black(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replacement mode: the reference (float, [-1, 1]) outside its character mask becomes black before encoding."""
    background = (mask > 225).all(axis=-1) | (mask <= 225).all(axis=-1)  # white or black pixels
    out = rgb.copy()
    out[background] = -1.0
    return out


def still_tensor(rgb: np.ndarray) -> torch.Tensor:
    """A float still [H, W, 3] in [-1, 1] (`PreparedInputs.reference`) -> [3, H, W], values as they are."""
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).contiguous()


def build_job_context(components: Components, inputs: PreparedInputs, check: Check | None = None) -> JobContext:
    """Encode what every segment shares; `check()` runs between the encoders and the VAE's chunks."""
    enc, device = components.encoders, components.device
    check = check or (lambda: None)
    spec = inputs.spec
    reference = inputs.reference
    if spec.mode == "replace":
        reference = _paste_on_black(reference, inputs.reference_mask)
    try:
        # A worker keeps its models between jobs; the encoders went off the device after the last one.
        enc.text.to(device)
        check()
        enc.image.to(device)
        check()
        # The float still, bicubic overshoot included, as the reference encodes it: no 8-bit rounding.
        ref_video = still_tensor(reference)[:, None].to(device)
        ref_latents = enc.vae.encode(ref_video, before_chunk=check)
        check()
        clip = enc.image.encode(still_tensor(inputs.reference).to(device))
        check()
        context, negative = enc.text.encode([spec.prompt, spec.negative_prompt])
        extra_latents = extra_masks = None
        if inputs.extra_references:
            extra_latents = torch.cat([enc.vae.encode(still_tensor(rgb)[:, None].to(device), before_chunk=check)
                                       for rgb, _ in inputs.extra_references], dim=1)
            extra_masks = torch.cat([_mask_latents(mask) for _, mask in inputs.extra_references], dim=1).to(device)
    finally:
        # The encoders' outputs exist now (or the job stopped): their weights need no GPU memory any more.
        enc.text.free()
        enc.image.free()
    return JobContext(
        ref_latents, _mask_latents(inputs.reference_mask).to(device), clip, context, negative,
        extra_latents, extra_masks,
    )


def _pad_to(frames: np.ndarray, length: int) -> np.ndarray:
    """Repeat the last frame so the segment has the model's 4k+1 frames."""
    if len(frames) == length:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], length - len(frames), axis=0)])


def half_size(video: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] -> [3, T, H/2, W/2], bilinear as the reference."""
    return F.interpolate(video.transpose(0, 1), scale_factor=0.5, mode="bilinear", align_corners=False).transpose(0, 1)


def segment_driving(inputs: PreparedInputs, segment: Segment) -> tuple[np.ndarray, np.ndarray]:
    """Driving frames and colour-mask frames of a segment at the job's size, padded to 4k+1."""
    indices = [inputs.frame_times[k][0] for k in range(segment.start, segment.end)]
    frames = pixels.resize_cover_crop(media.read_frames(inputs.driving, indices), inputs.height, inputs.width)
    if inputs.driving_mask is not None:
        masks = media.read_frames(inputs.driving_mask, indices)
        # Like the reference: masks are resized as images; the encoding's >225 threshold cleans the edges.
        masks = pixels.resize_cover_crop(masks, inputs.height, inputs.width)
    else:
        masks = np.repeat(fallback_mask(inputs.height, inputs.width)[None], len(indices), axis=0)
    return _pad_to(frames, segment.padded_length), _pad_to(masks, segment.padded_length)


def match_colours(video: torch.Tensor, overlap: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Shift/scale each channel of `video` [3, T, H, W] so its overlap frames match the target's statistics."""
    dims = (1, 2, 3)
    scale = target.std(dim=dims, keepdim=True) / overlap.std(dim=dims, keepdim=True).clamp_min(1e-4)
    shift = target.mean(dim=dims, keepdim=True) - overlap.mean(dim=dims, keepdim=True) * scale
    return (video * scale + shift).clamp(-1, 1)
