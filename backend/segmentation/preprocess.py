"""What SAM 2 and SAM 3 share around the model: loading from a folder, and pixels in its input format.

The transformers processors for both need torchvision, which the backend environment does not
ship; their image half is this: resize to the model's square input (bilinear, antialiased),
rescale to [0, 1], normalise with the folder's preprocessor_config.json mean and std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import protocol

from . import SegmentationError


class SamModel:
    """A SAM video model on a device, with the pixel normalisation it was trained with."""

    def __init__(self, model, name: str, device: str, image_mean, image_std):
        self.model, self.name, self.device = model, name, device
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.noise_only = name == "tiny"

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def pixels(self, frame: np.ndarray, device: str | None = None) -> torch.Tensor:
        """uint8 [H, W, 3] -> [3, S, S] normalised, in the model's dtype, on `device` (the model's by default)."""
        device = device or self.device
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.image_mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std)[0].to(self.dtype)


def load_pretrained(model_class, folder: Path, repo: str, device: str, mean, std):
    """(model on `device` in bf16 on CUDA / fp32 elsewhere, image mean, image std) from a local folder."""
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        try:
            data = protocol.read_json_file(processor, "image processor config")
        except protocol.ProtocolError as exc:
            raise SegmentationError(f"{exc}: download '{repo}' from Hugging Face into {folder} again") from None
        if not isinstance(data, dict):
            raise SegmentationError(f"{processor} is not an image processor config (not a JSON object)")
        mean, std = data.get("image_mean", mean), data.get("image_std", std)
    try:
        model = model_class.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise SegmentationError(f"cannot load {model_class.__name__} from {folder} ({str(exc).splitlines()[0]}): "
                                f"download '{repo}' from Hugging Face into it") from None
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return model.eval().to(device, dtype), mean, std
