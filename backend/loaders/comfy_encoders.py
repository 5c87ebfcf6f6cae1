"""SCAIL-2's encoders from single files as ComfyUI keeps them (``text_encoders/``, ``clip_vision/``, ``vae/``).

Key layouts, as ComfyUI's loaders read them (`comfy/sd.py` `detect_te_model` and the VAE
detection in `VAE.__init__`, `comfy/clip_vision.py` `load_clipvision_from_sd`):

* umT5 (``umt5_xxl_fp16``, ``umt5_xxl_fp8_e4m3fn_scaled``): transformers' `UMT5EncoderModel` names
  (``shared.weight``, ``encoder.block.N.layer...``), usually without the tied
  ``encoder.embed_tokens.weight``; the fp8 variant in ComfyUI's scaled-fp8 format (`fp8_scaled`);
* CLIP vision (``clip_vision_h``): `CLIPVisionModelWithProjection` names under ``vision_model.``
  plus ``visual_projection.weight`` (unused: SCAIL-2 reads hidden states);
* VAE (``wan_2.1_vae``, ``Wan2_1_VAE_bf16``): Wan's own module names, as in the release's
  ``Wan2.1_VAE.pth``; a diffusers-named file is read too.

Each file is renamed into the release's Wan names and built by `encoder_checkpoints`' config and
mapping code, so a ComfyUI file and the release file make the same model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..models.encoders import EncoderError
from . import encoder_checkpoints as ec
from .errors import CheckpointError
from .fp8_scaled import dequantize_state_dict

_CLIP_UNUSED = ("visual_projection.", "text_model.", "text_projection.", "logit_scale")


def read_file(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, ComfyUI's scaled fp8 dequantised to float32."""
    try:
        return dequantize_state_dict(path, load_file(str(path)))
    except CheckpointError as exc:
        raise EncoderError(str(exc)) from None


def umt5_wan_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A umT5 state dict (transformers' or Wan's names) under Wan's `T5Encoder` names."""
    if "token_embedding.weight" in tensors:
        return tensors
    encoder = {k: v for k, v in tensors.items() if k.startswith(("shared.", "encoder."))}
    if "shared.weight" not in encoder and "encoder.embed_tokens.weight" in encoder:
        encoder["shared.weight"] = encoder["encoder.embed_tokens.weight"]
    return ec.umt5_to_wan_t5(encoder)


def load_umt5_file(path: Path):
    """`UMT5EncoderModel` from a ComfyUI umT5 file (fp16, bf16 or scaled fp8)."""
    from transformers import UMT5EncoderModel

    wan = umt5_wan_names(read_file(path))
    model = ec.empty_model(lambda: UMT5EncoderModel(ec.wan_t5_config(wan)))
    return ec.adopt_state_dict(model, ec.wan_t5_to_umt5(wan), f"umT5 ({path.name})")


def clip_open_clip_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP vision state dict (transformers' names, with or without `vision_model.`) as open-clip's."""
    if any(k.startswith("visual.") or k == "cls_embedding" for k in tensors):
        return tensors
    vision = {k.removeprefix("vision_model."): v for k, v in tensors.items() if not k.startswith(_CLIP_UNUSED)}
    return ec.clip_vision_to_open_clip(vision)


def load_clip_vision_file(path: Path):
    """`CLIPVisionModel` from a ComfyUI clip_vision file (ViT-H/14)."""
    from transformers import CLIPVisionModel

    wan = clip_open_clip_names(read_file(path))
    model = ec.empty_model(lambda: CLIPVisionModel(ec.open_clip_vision_config(wan)))
    prefix = ec.model_key_prefix(model, "embeddings.class_embedding")
    return ec.adopt_state_dict(model, ec.open_clip_to_clip_vision(wan, prefix), f"CLIP ({path.name})")


def load_vae_file(path: Path):
    """`AutoencoderKLWan` from a Wan 2.1 VAE file (Wan's names, or diffusers')."""
    from diffusers import AutoencoderKLWan

    tensors = read_file(path)
    wan = tensors if "decoder.middle.0.residual.0.gamma" in tensors else ec.diffusers_vae_to_wan(tensors)
    model = ec.empty_model(lambda: AutoencoderKLWan(**ec.wan_vae_config(wan)))
    return ec.adopt_state_dict(model, ec.wan_vae_to_diffusers(wan), f"VAE ({path.name})")
