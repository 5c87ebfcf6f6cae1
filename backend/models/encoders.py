"""SCAIL-2's three frozen encoders: umT5 text encoder, CLIP vision encoder, Wan 2.1 VAE.

Thin wrappers around the field's classes (transformers `UMT5EncoderModel` and
`CLIPVisionModel`, diffusers `AutoencoderKLWan`) that apply the preprocessing of
the reference (SCAIL2_SPEC.md, sections 2 and 4), plus `load_encoders`, which
reads either a Wan2.1-I2V diffusers folder or the official SCAIL-2 / Wan release
files (`.pth`, mapped in `encoder_checkpoints`).

All `encode`/`decode` results are float32 on the wrapped model's device.
"""

from __future__ import annotations

import gc
import html
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..encoder_checkpoints import (
    EncoderError,
    load_open_clip_visual,
    load_wan_t5,
    load_wan_vae,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TEXT_LEN",
    "EncoderError",
    "Encoders",
    "ImageEncoder",
    "TextEncoder",
    "VideoVAE",
    "detect_layout",
    "load_encoders",
]

TEXT_LEN = 512
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DIFFUSERS_REPO = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
OFFICIAL_REPO = "zai-org/SCAIL-2"
OFFICIAL_VAE = "Wan2.1_VAE.pth"
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_T5_DIR = "umt5-xxl"
OFFICIAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth"
WAN_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"  # Wan 2.1 release: full CLIP
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


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
        _move(self.model, device, dtype)
        return self

    def free(self, drop: bool = False) -> None:
        """Release accelerator memory: move the weights to the CPU, or drop them (`drop=True`)."""
        if self._model is None:
            return
        if drop:
            self._model = None
        else:
            _move(self._model, "cpu")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _move(model: torch.nn.Module, device=None, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Plain `nn.Module.to`: diffusers' override warns on every dtype cast, even for models without fp32 parts."""
    args = [a for a in (device, dtype) if a is not None]
    return torch.nn.Module.to(model, *args) if args else model


def _clean_prompt(text: str) -> str:
    """The reference's prompt cleaning: ftfy (when installed), HTML unescape, collapse whitespace."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
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
            [_clean_prompt(p) for p in prompts],
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
        pixels = self.preprocess(image).to(self.dtype)
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-2].float()


class VideoVAE(_Wrapper):
    """Wan 2.1 VAE: video [3, T, H, W] in [-1, 1] <-> normalised latents [16, (T-1)/4+1, H/8, W/8].

    `tiled=True` (or `enable_tiling`) decodes in overlapping spatial tiles to save
    memory; tiles are blended, so the result differs slightly from a whole decode.
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

    @torch.no_grad()
    def encode(self, video: torch.Tensor, tiled: bool = False) -> torch.Tensor:
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
        with self._tiling(tiled):
            z = self.model.encode(x.to(self.device, self.dtype)).latent_dist.mode().float()
        z = (z - self.mean.to(z.device)) / self.std.to(z.device)
        return z if batched else z[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
        """Normalised latents [16, t, h, w] (or batched) -> video [3, 4(t-1)+1, 8h, 8w] in [-1, 1]."""
        batched = latents.dim() == 5
        z = latents if batched else latents[None]
        if z.dim() != 5 or z.shape[1] != self.z_dim:
            raise ValueError(f"latents must be [{self.z_dim}, t, h, w], got {tuple(latents.shape)}")
        z = z.to(self.device, torch.float32)
        z = z * self.std.to(z.device) + self.mean.to(z.device)
        with self._tiling(self.tiled if tiled is None else tiled):
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


# --------------------------------------------------------------------------- loading


def detect_layout(weights_dir: Path) -> str:
    """"diffusers" (Wan2.1-I2V diffusers folder) or "official" (SCAIL-2 / Wan release files)."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise EncoderError(f"encoder weights folder {weights_dir} does not exist")
    if any((weights_dir / name).is_dir() for name in ("vae", "text_encoder", "image_encoder")) or (
        weights_dir / "model_index.json"
    ).is_file():
        return "diffusers"
    official = (OFFICIAL_VAE, OFFICIAL_T5, OFFICIAL_T5_DIR, OFFICIAL_CLIP, WAN_CLIP)
    if any((weights_dir / name).exists() for name in official):
        return "official"
    raise EncoderError(
        f"no encoder weights in {weights_dir}: put there either the {OFFICIAL_REPO} release files "
        f"({OFFICIAL_VAE}, {OFFICIAL_T5_DIR}/{OFFICIAL_T5} with its tokenizer files, {OFFICIAL_CLIP}) "
        f"or the vae/, text_encoder/, tokenizer/ and image_encoder/ folders of {DIFFUSERS_REPO}"
    )


def load_encoders(
    weights_dir: Path,
    device="cpu",
    dtype: torch.dtype = torch.bfloat16,
    *,
    vae_dtype: torch.dtype = torch.float32,
) -> Encoders:
    """Load the three encoders from `weights_dir` (layout detected), cast and moved to `device`.

    `dtype` is for the text and image encoders (the reference: bf16 / fp16); the VAE
    runs in `vae_dtype` (float32 as in the Wan reference).
    """
    weights_dir = Path(weights_dir)
    layout = detect_layout(weights_dir)
    if layout == "diffusers":
        text, image, vae = _load_diffusers(weights_dir, dtype, vae_dtype)
        label = f"Wan2.1-I2V encoders (diffusers folder {weights_dir})"
    else:
        text, image, vae = _load_official(weights_dir, dtype, vae_dtype)
        label = f"SCAIL-2 release encoders ({weights_dir})"
    return Encoders(text=text, image=image, vae=vae, label=label).to(device)


def _load_tokenizer(folder: Path, where: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - report any tokenizer failure as one clear line
        reason = f"{exc.__class__.__name__}: {exc}".replace("\n", " ")
        raise EncoderError(
            f"cannot load the umT5 tokenizer from {folder} ({reason}); "
            f"it needs the google/umt5-xxl tokenizer files (tokenizer.json, tokenizer_config.json, "
            f"special_tokens_map.json, spiece.model) from {where}"
        ) from exc


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))


def _missing_diffusers_parts(weights_dir: Path) -> list[str]:
    missing = []
    for name in ("vae", "text_encoder", "image_encoder"):
        folder = weights_dir / name
        if not (folder / "config.json").is_file() or not _has_weights(folder):
            missing.append(f"{name}/")
    if not any((weights_dir / "tokenizer" / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer/")
    return missing


def _clip_stats(weights_dir: Path):
    config = weights_dir / "image_processor" / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return CLIP_MEAN, CLIP_STD


def _load_diffusers(weights_dir: Path, dtype, vae_dtype):
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionModel, UMT5EncoderModel

    missing = _missing_diffusers_parts(weights_dir)
    if missing:
        raise EncoderError(
            f"missing {', '.join(missing)} in {weights_dir}: download these folders (config.json and "
            f".safetensors weights; tokenizer files) of Hugging Face {DIFFUSERS_REPO} into {weights_dir}"
        )
    opts = dict(local_files_only=True, use_safetensors=True)
    vae = AutoencoderKLWan.from_pretrained(str(weights_dir / "vae"), torch_dtype=vae_dtype, **opts)
    text = UMT5EncoderModel.from_pretrained(str(weights_dir / "text_encoder"), dtype=dtype, **opts)
    image = CLIPVisionModel.from_pretrained(str(weights_dir / "image_encoder"), dtype=dtype, **opts)
    tokenizer = _load_tokenizer(weights_dir / "tokenizer", f"the tokenizer/ folder of {DIFFUSERS_REPO}")
    mean, std = _clip_stats(weights_dir)
    return TextEncoder(text, tokenizer), ImageEncoder(image, mean, std), VideoVAE(vae)


def _official_paths(weights_dir: Path) -> dict[str, Path]:
    """The release files (first existing candidate of each), or one EncoderError listing all missing ones."""
    wanted = {
        "vae": ([OFFICIAL_VAE], "Wan 2.1 VAE"),
        "t5": ([f"{OFFICIAL_T5_DIR}/{OFFICIAL_T5}", OFFICIAL_T5], "umT5-XXL text encoder"),
        "clip": ([OFFICIAL_CLIP, WAN_CLIP], "CLIP ViT-H/14 image encoder"),
    }
    found, missing = {}, []
    for key, (candidates, description) in wanted.items():
        path = next((weights_dir / c for c in candidates if (weights_dir / c).is_file()), None)
        if path is None:
            missing.append(f"{candidates[0]} ({description})")
        else:
            found[key] = path
    # SCAIL-2 keeps the tokenizer next to the T5 weights; the Wan 2.1 release in google/umt5-xxl/.
    folders = [weights_dir / OFFICIAL_T5_DIR, weights_dir / "google" / "umt5-xxl"]
    if "t5" in found:
        folders.insert(0, found["t5"].parent)
    tokenizer = next((d for d in folders if any((d / f).is_file() for f in TOKENIZER_FILES)), None)
    if tokenizer is None:
        missing.append(f"{OFFICIAL_T5_DIR}/tokenizer.json, tokenizer_config.json, special_tokens_map.json, "
                       "spiece.model (umT5 tokenizer)")
    if missing:
        raise EncoderError(
            f"missing {'; '.join(missing)} in {weights_dir}: download them from Hugging Face {OFFICIAL_REPO} "
            f"and put them at the same paths under {weights_dir}"
        )
    found["tokenizer"] = tokenizer
    return found


def _load_official(weights_dir: Path, dtype, vae_dtype):
    paths = _official_paths(weights_dir)
    tokenizer = _load_tokenizer(paths["tokenizer"], f"{OFFICIAL_REPO} {OFFICIAL_T5_DIR}/")
    vae = _move(load_wan_vae(paths["vae"]), dtype=vae_dtype)
    text = _move(load_wan_t5(paths["t5"]), dtype=dtype)
    image = _move(load_open_clip_visual(paths["clip"]), dtype=dtype)
    return TextEncoder(text, tokenizer), ImageEncoder(image), VideoVAE(vae)
