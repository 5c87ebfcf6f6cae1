"""SCAIL-2's three frozen encoders: umT5 text encoder, CLIP vision encoder, Wan 2.1 VAE.

Thin wrappers around the field's classes (transformers `UMT5EncoderModel` and
`CLIPVisionModel`, diffusers `AutoencoderKLWan`) that apply the reference's
preprocessing (`docs/model.md`, sections "Preprocessing" and "Encoders"). Reading
them from a weights folder is `backend.loaders.encoder_folders.load_encoders`.

All `encode`/`decode` results are float32 on the wrapped model's device.
"""

from __future__ import annotations

import gc
import html
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TEXT_LEN",
    "EncoderError",
    "Encoders",
    "ImageEncoder",
    "TextEncoder",
    "VideoVAE",
    "clean_prompt",
    "image_dtype",
]

TEXT_LEN = 512
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class EncoderError(UserError):
    """A missing, incomplete or unrecognised encoder checkpoint; the message says what to do."""


# --------------------------------------------------------------------------- wrappers


class _Wrapper:
    """A wrapped torch module that can move between devices or be dropped."""

    _what = "encoder"

    def __init__(self, model: torch.nn.Module):
        self._model = model.eval().requires_grad_(False)

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            raise EncoderError(f"the {self._what} was freed (free(drop=True)); load the encoders again")
        return self._model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype: torch.dtype | None = None):
        """Move (and optionally cast) the weights; returns self."""
        module_to(self.model, device, dtype)
        return self

    def free(self, drop: bool = False) -> None:
        """Release accelerator memory: move the weights to the CPU, or drop them (`drop=True`)."""
        if self._model is None:
            return
        if drop:
            self._model = None
        else:
            module_to(self._model, "cpu")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def module_to(model: torch.nn.Module, device=None, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Plain `nn.Module.to`: diffusers' override warns on every dtype cast, even for models without fp32 parts."""
    args = [a for a in (device, dtype) if a is not None]
    return torch.nn.Module.to(model, *args) if args else model


def image_dtype(compute_dtype: torch.dtype) -> torch.dtype:
    """The dtype the CLIP vision tower is loaded and run in for a job computing in `compute_dtype`.

    The official code runs CLIP in float16 (Wan 2.1's `clip_dtype`) beside its bf16 transformer;
    bf16 drifts about 3x further from float32. A float32 job (the CPU default) keeps float32.
    """
    return torch.float16 if compute_dtype in (torch.bfloat16, torch.float16) else compute_dtype


def clean_prompt(text: str) -> str:
    """The official text cleaner: ftfy's fix_text, HTML entities undone twice, runs of white space
    collapsed to one space, trimmed. ftfy is a backend requirement (requirements/backend.txt)."""
    try:
        import ftfy
    except ImportError:
        raise EncoderError("the backend environment lacks ftfy, which the official text cleaner runs; "
                           "press Set Up Backend again (or pip install ftfy==6.3.1)") from None
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    # The official code uses the `regex` module, whose \s differs from re's only on \x1c-\x1f,
    # which fix_text has removed.
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder(_Wrapper):
    """umT5 encoder: prompts -> per-prompt [L_i, text_dim] float32, trimmed to the real token count."""

    _what = "text encoder"

    def __init__(self, model, tokenizer, max_length: int = TEXT_LEN):
        super().__init__(model)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def text_dim(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        if isinstance(prompts, str):
            prompts = [prompts]
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = self.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1).tolist()
        return [h[:n].float() for h, n in zip(hidden, lengths)]


class ImageEncoder(_Wrapper):
    """CLIP vision tower: image [3, H, W] in [-1, 1] -> [1, 257, 1280] penultimate hidden states."""

    _what = "image encoder"

    def __init__(self, model, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__(model)
        self.size = int(model.config.image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """[3, H, W] or [B, 3, H, W] in [-1, 1] -> normalised [B, 3, S, S] float32 (stretch, bicubic, no crop)."""
        if image.dim() == 3:
            image = image[None]
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [3, H, W] or [B, 3, H, W], got {tuple(image.shape)}")
        x = image.to(self.device, torch.float32)
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        x = x.mul(0.5).add(0.5)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """[3, H, W] float in [-1, 1] (values outside it are kept, as the reference) -> [1, 257, 1280].

        float16 weights on CUDA run under float16 autocast, as the official CLIP does (layer norms
        and softmax in float32).
        """
        pixels = self.preprocess(image).to(self.dtype)
        device = pixels.device
        half_autocast = device.type == "cuda" and self.dtype == torch.float16
        with torch.autocast(device.type, dtype=torch.float16, enabled=half_autocast):
            out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-2].float()


class VideoVAE(_Wrapper):
    """Wan 2.1 VAE: video [3, T, H, W] in [-1, 1] <-> normalised latents [16, (T-1)/4+1, H/8, W/8].

    `tiled=True` (or `enable_tiling`) decodes in overlapping spatial tiles to save
    memory; tiles are blended, so the result differs slightly from a whole decode.

    `before_chunk` (encode and decode): called before each chunk the VAE's causal encoder or
    decoder takes (a latent frame, or four video frames; per tile when tiled). It may raise to
    stop the call there, which is how a job is cancelled mid-decode; it changes no numbers.
    """

    _what = "VAE"

    def __init__(self, model, tiled: bool = False):
        super().__init__(model)
        self.tiled = tiled
        config = model.config
        self.mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.temporal = int(config.scale_factor_temporal or 4)
        self.spatial = int(config.scale_factor_spatial or 8)

    @property
    def z_dim(self) -> int:
        return int(self.model.config.z_dim)

    def enable_tiling(self, tile_size: int | None = None, stride: int | None = None) -> None:
        """Decode in tiles of `tile_size` pixels every `stride` pixels (diffusers defaults 256 / 192)."""
        self.model.enable_tiling(tile_size, tile_size, stride, stride)
        self.tiled = True

    def disable_tiling(self) -> None:
        self.tiled = False

    @contextmanager
    def _tiling(self, enabled: bool):
        previous = self.model.use_tiling
        self.model.use_tiling = bool(enabled)
        try:
            yield
        finally:
            self.model.use_tiling = previous

    @staticmethod
    @contextmanager
    def _before_each_call(module: torch.nn.Module, before_chunk: Callable[[], None] | None):
        """`before_chunk()` before every forward of `module` (diffusers' VAE runs its encoder and
        decoder once per chunk) inside the `with` block."""
        if before_chunk is None:
            yield
            return
        handle = module.register_forward_pre_hook(lambda _module, _args: before_chunk())
        try:
            yield
        finally:
            handle.remove()

    @torch.no_grad()
    def encode(self, video: torch.Tensor, tiled: bool = False,
               before_chunk: Callable[[], None] | None = None) -> torch.Tensor:
        """[3, T, H, W] (or [B, 3, T, H, W]) -> posterior mode, normalised with the config's mean/std."""
        batched = video.dim() == 5
        x = video if batched else video[None]
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"video must be [3, T, H, W], got {tuple(video.shape)}")
        frames, height, width = x.shape[2:]
        if (frames - 1) % self.temporal:
            raise ValueError(f"video must have 4k+1 frames, got {frames}")
        if height % self.spatial or width % self.spatial:
            raise ValueError(f"video height and width must be multiples of {self.spatial}, got {height}x{width}")
        with self._tiling(tiled), self._before_each_call(self.model.encoder, before_chunk):
            z = self.model.encode(x.to(self.device, self.dtype)).latent_dist.mode().float()
        z = (z - self.mean.to(z.device)) / self.std.to(z.device)
        return z if batched else z[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: bool | None = None,
               before_chunk: Callable[[], None] | None = None) -> torch.Tensor:
        """Normalised latents [16, t, h, w] (or batched) -> video [3, 4(t-1)+1, 8h, 8w] in [-1, 1]."""
        batched = latents.dim() == 5
        z = latents if batched else latents[None]
        if z.dim() != 5 or z.shape[1] != self.z_dim:
            raise ValueError(f"latents must be [{self.z_dim}, t, h, w], got {tuple(latents.shape)}")
        z = z.to(self.device, torch.float32)
        z = z * self.std.to(z.device) + self.mean.to(z.device)
        tiling = self._tiling(self.tiled if tiled is None else tiled)
        with tiling, self._before_each_call(self.model.decoder, before_chunk):
            video = self.model.decode(z.to(self.dtype)).sample.float().clamp(-1.0, 1.0)
        return video if batched else video[0]


@dataclass
class Encoders:
    text: TextEncoder
    image: ImageEncoder
    vae: VideoVAE
    label: str

    def to(self, device) -> "Encoders":
        for part in (self.text, self.image, self.vae):
            part.to(device)
        return self

    def free(self, drop: bool = False) -> None:
        for part in (self.text, self.image, self.vae):
            part.free(drop)
