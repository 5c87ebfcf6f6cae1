"""The official Wan / SCAIL-2 encoder checkpoints (`.pth`) mapped onto diffusers / transformers classes.

The official release (Hugging Face `zai-org/SCAIL-2`, and the Wan 2.1 releases it
comes from) ships its three encoders as plain state dicts keyed by Wan's own
module names:

* `Wan2.1_VAE.pth`: Wan's `WanVAE_` -> diffusers `AutoencoderKLWan`.
* `models_t5_umt5-xxl-enc-bf16.pth`: Wan's `T5Encoder` (umT5-XXL, one relative
  position table per block) -> transformers `UMT5EncoderModel`.
* `models_clip_open-clip-xlm-roberta-large-vit-huge-14[-onlyvisual].pth`:
  Wan's `XLMRobertaCLIP`, of which only `visual.*` (an open-clip ViT-H/14) is
  used -> transformers `CLIPVisionModel`.

Each mapping is a table of module-name pairs, used in both directions: the
forward direction loads a release file, the inverse writes one (tests build
tiny release-layout checkpoints with it). Files are read with
`torch.load(weights_only=True, mmap=True)`: no code is ever unpickled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from ..models.encoders import EncoderError

# Wan 2.1 VAE latent statistics (the `WanVAE` mean/std of the reference; also
# the defaults of diffusers' `AutoencoderKLWan` config).
WAN21_LATENTS_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]
WAN21_LATENTS_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]
# Wan 2.1 VAE structure (only the width `base_dim` is read from the file).
WAN21_VAE_DIM_MULT = (1, 2, 4, 4)
WAN21_VAE_RES_BLOCKS = 2
WAN21_VAE_TEMPORAL_DOWNSAMPLE = (False, True, True)

# Wan's T5 constants that the state dict does not carry.
WAN_T5_MAX_DISTANCE = 128
WAN_T5_EPS = 1e-6
# open-clip ViT-H/14: 16 heads of 80 on a 1280 width (head count is not in the state dict).
OPEN_CLIP_HEAD_DIM = 80
OPEN_CLIP_EPS = 1e-5


# --------------------------------------------------------------------------- files


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth`/`.pt` (weights only, memory-mapped) or `.safetensors` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        reason = f"{exc.__class__.__name__}: {exc}".replace("\n", " ")
        raise EncoderError(f"cannot read {path} as a weights-only checkpoint ({reason})") from exc
    # Unwrap {"state_dict": {...}} style containers.
    while isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise EncoderError(f"{path} does not hold a plain state dict of tensors")
    return data


# --------------------------------------------------------------------------- renaming


def _rename(
    state_dict: dict[str, torch.Tensor],
    modules: dict[str, str],
    param_renames: dict[str, dict[str, str]],
    what: str,
) -> dict[str, torch.Tensor]:
    """Rename `<module>.<rest>` keys by the module table; `param_renames[target]` renames `<rest>`.

    Every key must belong to a module of the table, else EncoderError (a file of a
    different architecture must not load half-way).
    """
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in modules:
                target = modules[prefix]
                rest = ".".join(parts[cut:])
                rest = param_renames.get(target, {}).get(rest, rest)
                out[f"{target}.{rest}"] = value
                break
        else:
            raise EncoderError(f"unexpected tensor {key!r} in the {what} checkpoint: not the expected architecture")
    return out


def _inverse(table: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


def _block_count(keys: Iterable[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not found or found != set(range(max(found) + 1)):
        return 0
    return max(found) + 1


# --------------------------------------------------------------------------- VAE

# Wan's ResidualBlock is Sequential(RMS_norm, SiLU, Conv, RMS_norm, SiLU, Dropout, Conv) + shortcut.
_WAN_RESNET_PARAMS = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}


def _vae_modules(num_stages: int = len(WAN21_VAE_DIM_MULT), res_blocks: int = WAN21_VAE_RES_BLOCKS):
    """Wan VAE module name -> AutoencoderKLWan module name, and which targets are residual blocks."""
    modules = {"conv1": "quant_conv", "conv2": "post_quant_conv"}
    resnets = []
    for side in ("encoder", "decoder"):
        modules[f"{side}.conv1"] = f"{side}.conv_in"
        modules[f"{side}.middle.0"] = f"{side}.mid_block.resnets.0"
        modules[f"{side}.middle.1"] = f"{side}.mid_block.attentions.0"
        modules[f"{side}.middle.2"] = f"{side}.mid_block.resnets.1"
        modules[f"{side}.head.0"] = f"{side}.norm_out"
        modules[f"{side}.head.2"] = f"{side}.conv_out"
        resnets += [f"{side}.mid_block.resnets.0", f"{side}.mid_block.resnets.1"]
    # Encoder: one flat list in both (res blocks of a stage, then its downsampler).
    index = 0
    for stage in range(num_stages):
        for _ in range(res_blocks):
            modules[f"encoder.downsamples.{index}"] = f"encoder.down_blocks.{index}"
            resnets.append(f"encoder.down_blocks.{index}")
            index += 1
        if stage != num_stages - 1:
            modules[f"encoder.downsamples.{index}"] = f"encoder.down_blocks.{index}"
            index += 1
    # Decoder: Wan's flat list -> diffusers' up_blocks[stage].{resnets[j], upsamplers[0]}.
    index = 0
    for stage in range(num_stages):
        for j in range(res_blocks + 1):
            modules[f"decoder.upsamples.{index}"] = f"decoder.up_blocks.{stage}.resnets.{j}"
            resnets.append(f"decoder.up_blocks.{stage}.resnets.{j}")
            index += 1
        if stage != num_stages - 1:
            modules[f"decoder.upsamples.{index}"] = f"decoder.up_blocks.{stage}.upsamplers.0"
            index += 1
    return modules, resnets


def wan_vae_to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan 2.1 `Wan2.1_VAE.pth` keys -> `AutoencoderKLWan` keys."""
    modules, resnets = _vae_modules()
    return _rename(state_dict, modules, {name: _WAN_RESNET_PARAMS for name in resnets}, "Wan 2.1 VAE")


def diffusers_vae_to_wan(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `wan_vae_to_diffusers`."""
    modules, resnets = _vae_modules()
    inverse = _inverse(modules)
    params = {inverse[name]: _inverse(_WAN_RESNET_PARAMS) for name in resnets}
    return _rename(state_dict, inverse, params, "AutoencoderKLWan")


def wan_vae_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """`AutoencoderKLWan` constructor arguments for a Wan 2.1 VAE state dict (Wan keys)."""
    try:
        base_dim = state_dict["encoder.conv1.weight"].shape[0]
        z_dim = state_dict["conv2.weight"].shape[0]
    except KeyError as exc:
        raise EncoderError(f"not a Wan 2.1 VAE checkpoint: {exc.args[0]!r} is missing") from exc
    if z_dim != 16 or state_dict["encoder.conv1.weight"].shape[1] != 3:
        raise EncoderError(
            f"VAE checkpoint has {z_dim} latent channels: SCAIL-2 needs the Wan 2.1 VAE (16 channels), "
            "not the Wan 2.2 one"
        )
    return dict(
        base_dim=int(base_dim),
        z_dim=16,
        dim_mult=list(WAN21_VAE_DIM_MULT),
        num_res_blocks=WAN21_VAE_RES_BLOCKS,
        attn_scales=[],
        temperal_downsample=list(WAN21_VAE_TEMPORAL_DOWNSAMPLE),
        latents_mean=list(WAN21_LATENTS_MEAN),
        latents_std=list(WAN21_LATENTS_STD),
    )


# --------------------------------------------------------------------------- umT5


def _t5_modules(num_layers: int) -> dict[str, str]:
    """Wan `T5Encoder` module name -> `UMT5EncoderModel` module name."""
    modules = {"token_embedding": "shared", "norm": "encoder.final_layer_norm"}
    for i in range(num_layers):
        src, dst = f"blocks.{i}", f"encoder.block.{i}.layer"
        modules.update({
            f"{src}.norm1": f"{dst}.0.layer_norm",
            f"{src}.attn.q": f"{dst}.0.SelfAttention.q",
            f"{src}.attn.k": f"{dst}.0.SelfAttention.k",
            f"{src}.attn.v": f"{dst}.0.SelfAttention.v",
            f"{src}.attn.o": f"{dst}.0.SelfAttention.o",
            f"{src}.pos_embedding.embedding": f"{dst}.0.SelfAttention.relative_attention_bias",
            f"{src}.norm2": f"{dst}.1.layer_norm",
            # Wan: fc2(fc1(x) * gelu(gate(x))); transformers: wo(act(wi_0(x)) * wi_1(x)).
            f"{src}.ffn.gate.0": f"{dst}.1.DenseReluDense.wi_0",
            f"{src}.ffn.fc1": f"{dst}.1.DenseReluDense.wi_1",
            f"{src}.ffn.fc2": f"{dst}.1.DenseReluDense.wo",
        })
    return modules


def wan_t5_to_umt5(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan `models_t5_umt5-xxl-enc-bf16.pth` keys -> `UMT5EncoderModel` keys (embedding tied)."""
    layers = _block_count(state_dict, r"blocks\.(\d+)\.")
    out = _rename(state_dict, _t5_modules(layers), {}, "umT5 encoder")
    if "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out


def umt5_to_wan_t5(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `wan_t5_to_umt5`."""
    state_dict = {k: v for k, v in state_dict.items() if k != "encoder.embed_tokens.weight"}
    layers = _block_count(state_dict, r"encoder\.block\.(\d+)\.")
    return _rename(state_dict, _inverse(_t5_modules(layers)), {}, "UMT5EncoderModel")


def wan_t5_config(state_dict: dict[str, torch.Tensor]):
    """`UMT5Config` of a Wan T5 encoder state dict (Wan keys), read from the tensor shapes."""
    from transformers import UMT5Config

    layers = _block_count(state_dict, r"blocks\.(\d+)\.")
    try:
        vocab, d_model = state_dict["token_embedding.weight"].shape
        buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
        inner = state_dict["blocks.0.attn.q.weight"].shape[0]
        d_ff = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as exc:
        raise EncoderError(
            f"not a Wan umT5 encoder checkpoint: {exc.args[0]!r} is missing "
            "(a shared-position T5 or a full encoder-decoder file is not supported)"
        ) from exc
    return UMT5Config(
        vocab_size=int(vocab),
        d_model=int(d_model),
        d_kv=int(inner // heads),
        d_ff=int(d_ff),
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=int(heads),
        relative_attention_num_buckets=int(buckets),
        relative_attention_max_distance=WAN_T5_MAX_DISTANCE,
        layer_norm_epsilon=WAN_T5_EPS,
        feed_forward_proj="gated-gelu",  # gelu_new = the tanh GELU of Wan's T5
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )


# --------------------------------------------------------------------------- CLIP vision


def _clip_modules(num_layers: int) -> dict[str, str]:
    """open-clip visual module name (without `visual.`) -> `CLIPVisionModel` module name (no prefix)."""
    modules = {
        "patch_embedding": "embeddings.patch_embedding",
        "pre_norm": "pre_layrnorm",
        "post_norm": "post_layernorm",
    }
    for i in range(num_layers):
        src, dst = f"transformer.{i}", f"encoder.layers.{i}"
        modules.update({
            f"{src}.norm1": f"{dst}.layer_norm1",
            f"{src}.attn.proj": f"{dst}.self_attn.out_proj",
            f"{src}.norm2": f"{dst}.layer_norm2",
            f"{src}.mlp.0": f"{dst}.mlp.fc1",
            f"{src}.mlp.2": f"{dst}.mlp.fc2",
        })
    return modules


# Tensors of the release file that CLIPVisionModel has no place for: the CLIP projection
# `visual.head`, the logit scale, and (in Wan's full file) the XLM-RoBERTa text tower.
_CLIP_IGNORED = re.compile(r"^((visual\.)?head$|log_scale$|textual\.)")


def open_clip_to_clip_vision(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Wan/open-clip ViT-H/14 keys (`visual.*`, with or without that prefix) -> `CLIPVisionModel` keys.

    `prefix` is the model's own key prefix ("" in transformers 5, "vision_model." before).
    The fused `attn.to_qkv` ([q; k; v] along the output dim) is split into q/k/v_proj.
    """
    visual = {}
    for key, value in state_dict.items():
        if _CLIP_IGNORED.match(key):
            continue
        visual[key.removeprefix("visual.")] = value
    special = {}
    try:
        special["embeddings.class_embedding"] = visual.pop("cls_embedding").reshape(-1)
        pos = visual.pop("pos_embedding")
        special["embeddings.position_embedding.weight"] = pos.reshape(pos.shape[-2], pos.shape[-1])
    except KeyError as exc:
        raise EncoderError(f"not an open-clip ViT checkpoint: {exc.args[0]!r} is missing") from exc
    for key in [k for k in visual if k.endswith((".attn.to_qkv.weight", ".attn.to_qkv.bias"))]:
        layer, kind = key.split(".")[1], key.rsplit(".", 1)[1]
        q, k, v = visual.pop(key).chunk(3, dim=0)
        for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
            special[f"encoder.layers.{layer}.self_attn.{name}.{kind}"] = part
    layers = _block_count(visual, r"transformer\.(\d+)\.")
    out = _rename(visual, _clip_modules(layers), {}, "open-clip ViT")
    out.update(special)
    return {prefix + k: v for k, v in out.items()}


def clip_vision_to_open_clip(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Inverse of `open_clip_to_clip_vision`: `CLIPVisionModel` keys -> `visual.*` keys (no head/log_scale)."""
    sd = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
    sd.pop("embeddings.position_ids", None)
    out = {
        "cls_embedding": sd.pop("embeddings.class_embedding").reshape(1, 1, -1),
        "pos_embedding": sd.pop("embeddings.position_embedding.weight")[None],
    }
    layers = _block_count(sd, r"encoder\.layers\.(\d+)\.")
    for i in range(layers):
        for kind in ("weight", "bias"):
            parts = [sd.pop(f"encoder.layers.{i}.self_attn.{n}_proj.{kind}") for n in ("q", "k", "v")]
            out[f"transformer.{i}.attn.to_qkv.{kind}"] = torch.cat(parts, dim=0)
    out.update(_rename(sd, _inverse(_clip_modules(layers)), {}, "CLIPVisionModel"))
    return {"visual." + k: v for k, v in out.items()}


def open_clip_vision_config(state_dict: dict[str, torch.Tensor]):
    """`CLIPVisionConfig` of an open-clip ViT state dict (Wan keys), read from the tensor shapes."""
    from transformers import CLIPVisionConfig

    sd = {k.removeprefix("visual."): v for k, v in state_dict.items() if not _CLIP_IGNORED.match(k)}
    try:
        patch = sd["patch_embedding.weight"]
        positions = sd["pos_embedding"].shape[-2]
        intermediate = sd["transformer.0.mlp.0.weight"].shape[0]
    except KeyError as exc:
        raise EncoderError(f"not an open-clip ViT checkpoint: {exc.args[0]!r} is missing") from exc
    if "patch_embedding.bias" in sd or "pre_norm.weight" not in sd:
        raise EncoderError("CLIP checkpoint is not a pre-norm open-clip ViT (ViT-H/14) visual tower")
    hidden, _, patch_size, _ = patch.shape
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise EncoderError(f"CLIP checkpoint has {positions} positions: expected a square grid plus a class token")
    return CLIPVisionConfig(
        hidden_size=int(hidden),
        intermediate_size=int(intermediate),
        num_hidden_layers=_block_count(sd, r"transformer\.(\d+)\."),
        num_attention_heads=int(hidden // OPEN_CLIP_HEAD_DIM),
        image_size=int(grid * patch_size),
        patch_size=int(patch_size),
        hidden_act="gelu",
        layer_norm_eps=OPEN_CLIP_EPS,
    )


# --------------------------------------------------------------------------- model building


def model_key_prefix(model: torch.nn.Module, anchor: str) -> str:
    """The prefix in front of `anchor` in the model's state dict keys ("" or e.g. "vision_model.")."""
    for key in model.state_dict():
        if key.endswith(anchor):
            return key[: -len(anchor)]
    raise EncoderError(f"{type(model).__name__} has no parameter named like {anchor!r}")


def empty_model(factory):
    """Build a model without allocating its weights (parameters on the meta device, buffers real)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def adopt_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Give an empty model the state dict's tensors (no copy); every parameter must be covered."""
    result = model.load_state_dict(state_dict, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise EncoderError(
            f"{what} checkpoint does not match the model: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model.eval().requires_grad_(False)


def load_wan_vae(path: Path):
    """`AutoencoderKLWan` from the release's `Wan2.1_VAE.pth`."""
    from diffusers import AutoencoderKLWan

    wan = read_state_dict(path)
    model = empty_model(lambda: AutoencoderKLWan(**wan_vae_config(wan)))
    return adopt_state_dict(model, wan_vae_to_diffusers(wan), f"VAE ({Path(path).name})")


def load_wan_t5(path: Path):
    """`UMT5EncoderModel` from the release's `models_t5_umt5-xxl-enc-bf16.pth`."""
    from transformers import UMT5EncoderModel

    wan = read_state_dict(path)
    model = empty_model(lambda: UMT5EncoderModel(wan_t5_config(wan)))
    return adopt_state_dict(model, wan_t5_to_umt5(wan), f"umT5 ({Path(path).name})")


def load_open_clip_visual(path: Path):
    """`CLIPVisionModel` from the release's open-clip ViT-H/14 `.pth` (visual-only or full CLIP)."""
    from transformers import CLIPVisionModel

    wan = read_state_dict(path)
    model = empty_model(lambda: CLIPVisionModel(open_clip_vision_config(wan)))
    prefix = model_key_prefix(model, "embeddings.class_embedding")
    return adopt_state_dict(model, open_clip_to_clip_vision(wan, prefix), f"CLIP ({Path(path).name})")
