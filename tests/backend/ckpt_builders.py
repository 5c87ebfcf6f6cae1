"""Tiny checkpoints in the layouts users download, built from the parity fixture's weights.

The SAT layout is written with the inverse of the SAT -> Wan mapping, spelled out here name by
name from the spec's table (independently of `backend.loaders.sat`'s rule table, so a slip in
either shows up as a failing round trip).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scail_fixtures import TINY_WEIGHTS, tiny_config

from backend.loaders import encoder_checkpoints as ec
from backend.models.encoders import CLIP_MEAN, CLIP_STD

SAT_PREFIX = "model.diffusion_model."
OFFICIAL_FILES = {
    "vae": "Wan2.1_VAE.pth",
    "t5": "umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth",
    "clip": "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth",
}
RELEASE_CHECKPOINT = Path("model") / "1" / "fsdp2_rank_0000_checkpoint.pt"


def tiny_weights() -> dict[str, torch.Tensor]:
    return load_file(TINY_WEIGHTS)


def wan_to_sat(wan: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan-native state dict -> SAT names (prefixed), fusing q|k|v, k|v and k_img|v_img along dim 0."""
    sat: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name):
        used.add(name)
        return wan[name]

    def put(name, tensor):
        sat[SAT_PREFIX + name] = tensor.clone()

    for p in ("weight", "bias"):
        put(f"mixins.patch_embed.proj.{p}", take(f"patch_embedding.{p}"))
        put(f"mixins.patch_embed.proj_pose.{p}", take(f"patch_embedding_pose.{p}"))
        put(f"mixins.patch_embed.proj_mask.{p}", take(f"patch_embedding_mask.{p}"))
        put(f"mixins.final_layer.linear.{p}", take(f"head.head.{p}"))
        put(f"adaln_projection.1.{p}", take(f"time_projection.1.{p}"))
        for i in (0, 2):
            put(f"text_embedding.{i}.{p}", take(f"text_embedding.{i}.{p}"))
            put(f"time_embed.{i}.{p}", take(f"time_embedding.{i}.{p}"))
        for i in (0, 1, 3, 4):
            put(f"clip_proj.proj.{i}.{p}", take(f"img_emb.proj.{i}.{p}"))
    put("mixins.final_layer.adaLN_modulation", take("head.modulation"))

    layers = 1 + max(int(name.split(".")[1]) for name in wan if name.startswith("blocks."))
    for i in range(layers):
        b, layer, ada = f"blocks.{i}.", f"transformer.layers.{i}.", "mixins.adaln_layer."
        for p in ("weight", "bias"):
            put(f"{layer}attention.query_key_value.{p}",
                torch.cat([take(f"{b}self_attn.q.{p}"), take(f"{b}self_attn.k.{p}"), take(f"{b}self_attn.v.{p}")]))
            put(f"{layer}attention.dense.{p}", take(f"{b}self_attn.o.{p}"))
            put(f"{layer}cross_attention.query.{p}", take(f"{b}cross_attn.q.{p}"))
            put(f"{layer}cross_attention.key_value.{p}",
                torch.cat([take(f"{b}cross_attn.k.{p}"), take(f"{b}cross_attn.v.{p}")]))
            put(f"{layer}cross_attention.dense.{p}", take(f"{b}cross_attn.o.{p}"))
            put(f"{layer}post_cross_attention_layernorm.{p}", take(f"{b}norm3.{p}"))
            put(f"{layer}mlp.dense_h_to_4h.{p}", take(f"{b}ffn.0.{p}"))
            put(f"{layer}mlp.dense_4h_to_h.{p}", take(f"{b}ffn.2.{p}"))
            put(f"{ada}clip_feature_key_value_list.{i}.{p}",
                torch.cat([take(f"{b}cross_attn.k_img.{p}"), take(f"{b}cross_attn.v_img.{p}")]))
        put(f"{ada}adaLN_modulations.{i}", take(f"{b}modulation"))
        put(f"{ada}query_layernorm_list.{i}.weight", take(f"{b}self_attn.norm_q.weight"))
        put(f"{ada}key_layernorm_list.{i}.weight", take(f"{b}self_attn.norm_k.weight"))
        put(f"{ada}cross_query_layernorm_list.{i}.weight", take(f"{b}cross_attn.norm_q.weight"))
        put(f"{ada}cross_key_layernorm_list.{i}.weight", take(f"{b}cross_attn.norm_k.weight"))
        put(f"{ada}clip_feature_key_layernorm_list.{i}.weight", take(f"{b}cross_attn.norm_k_img.weight"))

    assert used == set(wan), f"not mapped: {sorted(set(wan) - used)}"
    return sat


def write_sat_release(root: Path, wan: dict[str, torch.Tensor] | None = None) -> Path:
    """An official-release-like folder: `model/1/fsdp2_rank_0000_checkpoint.pt` holding
    {"module": SAT state dict} beside training state (a numpy RNG state, as the release has)."""
    path = root / RELEASE_CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "module": wan_to_sat(wan if wan is not None else tiny_weights()),
        "iteration": 1000,
        "np_rng_state": np.random.RandomState(0).get_state(),
        "torch_rng_state": torch.get_rng_state(),
    }
    torch.save(state, path)
    return root


def write_single_file(path: Path, wan: dict[str, torch.Tensor] | None = None,
                      prefix: str = "model.diffusion_model.", metadata: dict | None = None) -> Path:
    """A community-style single safetensors file with (prefixed) Wan-native names."""
    wan = wan if wan is not None else tiny_weights()
    save_file({prefix + name: t.contiguous() for name, t in wan.items()}, path, metadata=metadata)
    return path


def fp8_scaled(wan: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI fp8_scaled (older naming): 2-D block weights as float8_e4m3fn with a float32
    per-tensor `scale_weight`, plus the `scaled_fp8` marker; everything else unchanged."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    for name, t in wan.items():
        if name.startswith("blocks.") and name.endswith(".weight") and t.dim() == 2:
            scale = t.abs().max().float() / torch.finfo(torch.float8_e4m3fn).max
            out[name] = (t / scale).to(torch.float8_e4m3fn)
            out[name[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[name] = t
    return out


def stock_wan_i2v(wan: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tiny stand-in for a stock Wan 2.1 I2V file: 36-channel patch_embedding, no pose/mask convs."""
    out = {name: t for name, t in wan.items() if not name.startswith(("patch_embedding_pose", "patch_embedding_mask"))}
    dim = wan["patch_embedding.weight"].shape[0]
    out["patch_embedding.weight"] = torch.randn(dim, 36, 1, 2, 2)
    return out


__all__ = ["tiny_config", "tiny_weights", "wan_to_sat", "write_sat_release", "write_single_file",
           "fp8_scaled", "stock_wan_i2v", "RELEASE_CHECKPOINT"]


# -- encoders and VAE (`tiny` is an Encoders from backend.models.tiny) ---------------------------


def write_official_encoders(folder: Path, tiny) -> Path:
    """The SCAIL-2 release layout, written with the inverse key mappings."""
    (folder / "umt5-xxl").mkdir(parents=True, exist_ok=True)
    torch.save(ec.diffusers_vae_to_wan(tiny.vae.model.state_dict()), folder / OFFICIAL_FILES["vae"])
    torch.save(ec.umt5_to_wan_t5(tiny.text.model.state_dict()), folder / OFFICIAL_FILES["t5"])
    tiny.text.tokenizer.save_pretrained(folder / "umt5-xxl")
    clip = ec.clip_vision_to_open_clip(tiny.image.model.state_dict())
    clip["visual.head"] = torch.zeros(1280, 1024)  # present in the release file, unused
    clip["log_scale"] = torch.tensor(4.6052)
    torch.save(clip, folder / OFFICIAL_FILES["clip"])
    return folder


def write_diffusers_encoders(folder: Path, tiny) -> Path:
    """A Wan2.1-I2V diffusers folder; the image encoder saved with transformers-4 key names."""
    tiny.vae.model.save_pretrained(folder / "vae")
    tiny.text.model.save_pretrained(folder / "text_encoder")
    tiny.text.tokenizer.save_pretrained(folder / "tokenizer")
    tiny.image.model.save_pretrained(folder / "image_encoder")
    weights = folder / "image_encoder" / "model.safetensors"
    tensors = {"vision_model." + k: v.contiguous() for k, v in load_file(weights).items()}
    tensors["visual_projection.weight"] = torch.zeros(1024, 1280)
    save_file(tensors, weights, metadata={"format": "pt"})
    config = json.loads((folder / "image_encoder" / "config.json").read_text())
    config["architectures"] = ["CLIPVisionModelWithProjection"]
    (folder / "image_encoder" / "config.json").write_text(json.dumps(config))
    (folder / "image_processor").mkdir()
    (folder / "image_processor" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "crop_size": 224})
    )
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    return folder
