"""Tiny files in the layouts of a ComfyUI models/ folder: GGUF transformers and ComfyUI-named encoders.

GGUF files are written with the `gguf` package's own writer and quantisers, the way
ComfyUI-GGUF's converter lays them out: names as in the single file, 1-D and small tensors in
F32, a tensor whose last dimension does not divide into the type's blocks flattened to
[n / 256, 256] (or [n / block, block]) with its shape under `comfy.gguf.orig_shape.<name>`.
Encoders are written from the tiny profile's models under the names ComfyUI's files use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quantize
from safetensors.torch import save_file
from scail_fixtures import tiny_config

from backend.loaders import encoder_checkpoints as ec
from backend.loaders.fp8_scaled import quantize_e4m3

ORIG_SHAPE = "comfy.gguf.orig_shape."
SMALL = 1024  # ComfyUI-GGUF keeps tensors this small in F32


def gguf_layout(name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType):
    """(type, stored shape or None) for one tensor, as ComfyUI-GGUF's converter decides it."""
    n = math.prod(shape)
    if len(shape) == 1 or n <= SMALL:
        return GGMLQuantizationType.F32, None
    block = GGML_QUANT_SIZES[qtype][0]
    if len(shape) <= 4 and shape[-1] % block == 0:
        return qtype, None
    for width in (256, block):
        if n % width == 0:
            return qtype, (n // width, width)
    return GGMLQuantizationType.F16, (shape[0], n // shape[0]) if len(shape) > 4 else None


def quantize_q4_k(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GGML's Q4_K, which the gguf package reads but cannot write: 256-weight super-blocks of 8
    sub-blocks of 32, w = d * sc_j * q - dmin * m_j with 4-bit q and 6-bit sc_j, m_j, d and dmin
    in float16 (144 bytes: d, dmin, 12 bytes of packed scales, 128 of nibbles).

    Scales are rounded up so every sub-block's range fits its 16 steps: each weight is then
    within half a step, d * sc_j / 2. Returns (the packed bytes, rows x 144k; each weight's step).
    """
    rows = data.reshape(-1, 8, 32).astype(np.float64)
    mins = np.minimum(rows.min(-1), 0.0)
    dmin = (np.float16(1.001) * (-mins).max(-1) / 63).astype(np.float16).astype(np.float64)
    m = np.clip(np.ceil(np.divide(-mins, dmin[:, None], out=np.zeros_like(mins), where=dmin[:, None] > 0)), 0, 63)
    top = rows.max(-1) + dmin[:, None] * m
    d = (np.maximum(top.max(-1), 1e-8) / 15 / 63 * 1.001).astype(np.float16).astype(np.float64)
    sc = np.clip(np.ceil(top / 15 / d[:, None]), 1, 63)
    step = d[:, None] * sc
    q = np.clip(np.rint((rows + (dmin[:, None] * m)[..., None]) / step[..., None]), 0, 15).astype(np.uint8)
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    scales = np.concatenate([sc[:, :4] | ((sc[:, 4:] >> 4) << 6), m[:, :4] | ((m[:, 4:] >> 4) << 6),
                             (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)], axis=1)
    nibbles = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)
    packed = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2),
                             dmin.astype(np.float16).view(np.uint8).reshape(-1, 2), scales, nibbles], axis=1)
    n_super = data.size // 256
    return packed.reshape(data.shape[0], -1) if data.ndim == 2 else packed, \
        np.repeat(step.reshape(n_super * 8), 32).reshape(data.shape)


def q8_0_bound(original: torch.Tensor) -> np.ndarray:
    """Q8_0's error bound per weight, in ggml's blocks of 32 (see test_gguf's module doc)."""
    blocks = original.double().reshape(-1, 32).numpy()
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    d16 = d.astype(np.float16).astype(np.float64)
    return np.broadcast_to(d / 2 + 127 * np.abs(d - d16), blocks.shape)


def write_gguf_umt5(path: Path, model: torch.nn.Module) -> Path:
    """city96's umT5 encoder GGUF layout: llama.cpp's T5 names, 2-D weights in Q8_0, the rest F32."""
    from backend.loaders.comfy_encoders import gguf_t5_names

    layers = model.config.num_layers
    to_gguf = {hf: name for name, hf in gguf_t5_names(layers).items()}
    writer = GGUFWriter(path, arch="t5encoder")
    for name, tensor in comfy_umt5(model).items():
        data = tensor.float().numpy()
        kind = GGMLQuantizationType.Q8_0 if data.ndim == 2 and data.shape[-1] % 32 == 0 and data.size > SMALL \
            else GGMLQuantizationType.F32
        writer.add_tensor(to_gguf[name], quantize(np.ascontiguousarray(data), kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_gguf(path: Path, wan: dict[str, torch.Tensor], qtype, prefix: str = "",
               file_type: LlamaFileType | None = None) -> Path:
    """`qtype`: one GGML type for every quantised tensor, or a function of the name giving it."""
    writer = GGUFWriter(path, arch="wan")
    if file_type is not None:
        writer.add_file_type(int(file_type))
    for name, tensor in wan.items():
        kind, stored = gguf_layout(name, tuple(tensor.shape), qtype(name) if callable(qtype) else qtype)
        data = tensor.float().numpy()
        if stored is not None:
            writer.add_array(ORIG_SHAPE + prefix + name, [int(n) for n in tensor.shape])
            data = data.reshape(stored)
        if kind == GGMLQuantizationType.Q4_K:
            packed = quantize_q4_k(np.ascontiguousarray(data))[0]
        else:
            packed = quantize(np.ascontiguousarray(data), kind)
        writer.add_tensor(prefix + name, packed, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def comfy_umt5(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ComfyUI's umT5 file: transformers' names, no tied `encoder.embed_tokens` copy."""
    return {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def scaled_fp8(tensors: dict[str, torch.Tensor], newer: bool = False) -> dict[str, torch.Tensor]:
    """ComfyUI's fp8 e4m3 scaled format: each 2-D weight as e4m3 with a per-tensor scale.

    Older files: `X.scale_weight` and the `scaled_fp8` marker; newer: `X.weight_scale` and a
    `X.comfy_quant` JSON tensor. Embeddings stay as they are, as in ComfyUI's files.
    """
    out: dict[str, torch.Tensor] = {} if newer else {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for name, tensor in tensors.items():
        if name.endswith(".weight") and tensor.dim() == 2 and "embed" not in name and "shared" not in name \
                and "relative_attention_bias" not in name:
            weight, scale = quantize_e4m3(tensor)
            out[name] = weight
            stem = name[: -len(".weight")]
            if newer:
                out[stem + ".weight_scale"] = scale
                out[stem + ".comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
            else:
                out[stem + ".scale_weight"] = scale
        else:
            out[name] = tensor.contiguous()
    return out


def comfy_clip_vision(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ComfyUI's clip_vision_h: `CLIPVisionModelWithProjection` names (vision_model. prefix, a projection)."""
    prefix = ec.model_key_prefix(model, "embeddings.class_embedding")
    tensors = {"vision_model." + k.removeprefix(prefix): v.contiguous() for k, v in model.state_dict().items()}
    tensors.pop("vision_model.embeddings.position_ids", None)
    tensors["visual_projection.weight"] = torch.zeros(1024, tensors["vision_model.post_layernorm.weight"].shape[0])
    return tensors


def comfy_vae(model: torch.nn.Module, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """ComfyUI's wan_2.1_vae / Kijai's Wan2_1_VAE_bf16: Wan's own names."""
    return {k: v.to(dtype).contiguous() for k, v in ec.diffusers_vae_to_wan(model.state_dict()).items()}


def write_comfy_folder(root: Path, tiny, transformer: dict[str, torch.Tensor], text_fp8: bool = False) -> Path:
    """A ComfyUI models/ folder with the tiny stack: diffusion_models, text_encoders, clip_vision, vae."""
    for sub in ("diffusion_models", "text_encoders", "clip_vision", "vae", "loras"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in transformer.items()},
              root / "diffusion_models" / "wan2.1_14B_SCAIL_2_fp16.safetensors",
              metadata={"config": json.dumps(tiny_config())})  # the tiny model's head count is not in its shapes
    text = comfy_umt5(tiny.text.model)
    name = "umt5_xxl_fp8_e4m3fn_scaled.safetensors" if text_fp8 else "umt5_xxl_fp16.safetensors"
    save_file(scaled_fp8(text) if text_fp8 else text, root / "text_encoders" / name)
    tiny.text.tokenizer.save_pretrained(root / "text_encoders" / "umt5-xxl")
    save_file(comfy_clip_vision(tiny.image.model), root / "clip_vision" / "clip_vision_h.safetensors")
    save_file(comfy_vae(tiny.vae.model), root / "vae" / "wan_2.1_vae.safetensors")
    return root
