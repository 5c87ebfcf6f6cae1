"""SCAIL-2's encoders from single files as ComfyUI keeps them (``text_encoders/``, ``clip_vision/``, ``vae/``).

Key layouts, as ComfyUI's loaders read them (`comfy/sd.py` `detect_te_model` and the VAE
detection in `VAE.__init__`, `comfy/clip_vision.py` `load_clipvision_from_sd`):

* umT5 (``umt5_xxl_fp16``, ``umt5_xxl_fp8_e4m3fn_scaled``): transformers' `UMT5EncoderModel` names
  (``shared.weight``, ``encoder.block.N.layer...``), usually without the tied
  ``encoder.embed_tokens.weight``; the fp8 variant in ComfyUI's scaled-fp8 format (`fp8_scaled`);
* CLIP vision (``clip_vision_h``): `CLIPVisionModelWithProjection` names under ``vision_model.``
  plus ``visual_projection.weight`` (unused: SCAIL-2 reads hidden states);
* VAE (``wan_2.1_vae``, ``Wan2_1_VAE_bf16``): Wan's own module names, as in the release's
  ``Wan2.1_VAE.pth``; a diffusers-named file is read too;
* umT5 as GGUF (city96's ``umt5-xxl-encoder-Q8_0.gguf`` ... for ComfyUI-GGUF): llama.cpp's T5
  encoder names (``enc.blk.N.attn_q``, ``token_embd``), mapped back with the gguf package's own
  name table (`gguf.get_tensor_name_map` for ``MODEL_ARCH.T5ENCODER``) and dequantised to the
  load dtype one tensor at a time.

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


def read_file(path: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, ComfyUI's scaled fp8 dequantised to float32; a GGUF file's,
    dequantised to `dtype` under transformers' T5 names."""
    if path.open("rb").read(4) == b"GGUF":
        return read_gguf_t5(path, dtype)
    try:
        return dequantize_state_dict(path, load_file(str(path)))
    except CheckpointError as exc:
        raise EncoderError(str(exc)) from None


def gguf_t5_names(layers: int) -> dict[str, str]:
    """llama.cpp tensor name -> transformers `UMT5EncoderModel` name, for `layers` encoder blocks."""
    import gguf

    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, layers)
    modules = ["shared", "encoder.final_layer_norm"]
    for i in range(layers):
        block = f"encoder.block.{i}.layer"
        modules += [f"{block}.0.SelfAttention.{p}" for p in ("q", "k", "v", "o", "relative_attention_bias")]
        modules += [f"{block}.0.layer_norm", f"{block}.1.layer_norm"]
        modules += [f"{block}.1.DenseReluDense.{p}" for p in ("wi_0", "wi_1", "wo")]
    return {f"{table.get_name(m)}.weight": f"{m}.weight" for m in modules if table.get_name(m)}


def read_gguf_t5(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A GGUF umT5 encoder's tensors under transformers' names, each dequantised to `dtype`."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from .gguf_files import read_gguf, tensor_shapes

    try:
        reader = read_gguf(path)
    except CheckpointError as exc:
        raise EncoderError(str(exc)) from None
    shapes = tensor_shapes(reader)
    layers = len({t.name.split(".")[2] for t in reader.tensors if t.name.startswith("enc.blk.")})
    names = gguf_t5_names(layers)
    unknown = [t.name for t in reader.tensors if t.name not in names]
    if unknown:
        raise EncoderError(f"{path}: not a umT5 encoder GGUF file (unexpected tensor {unknown[0]!r})")
    out = {}
    for tensor in reader.tensors:
        values = dequantize(np.asarray(tensor.data), GGMLQuantizationType(int(tensor.tensor_type)))
        values = torch.from_numpy(np.array(values, dtype=np.float32))  # a copy: the map is read-only
        out[names[tensor.name]] = values.reshape(shapes[tensor.name]).to(dtype)
    return out


def umt5_wan_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A umT5 state dict (transformers' or Wan's names) under Wan's `T5Encoder` names."""
    if "token_embedding.weight" in tensors:
        return tensors
    encoder = {k: v for k, v in tensors.items() if k.startswith(("shared.", "encoder."))}
    if "shared.weight" not in encoder and "encoder.embed_tokens.weight" in encoder:
        encoder["shared.weight"] = encoder["encoder.embed_tokens.weight"]
    return ec.umt5_to_wan_t5(encoder)


def load_umt5_file(path: Path, dtype: torch.dtype = torch.float32):
    """`UMT5EncoderModel` from a ComfyUI umT5 file (fp16, bf16, scaled fp8, or GGUF read in `dtype`)."""
    from transformers import UMT5EncoderModel

    wan = umt5_wan_names(read_file(path, dtype))
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
