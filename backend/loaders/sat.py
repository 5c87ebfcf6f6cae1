"""The official release's SAT format: its parameter names, and reading its pickles safely.

`sat_to_wan_names` turns a SAT name into the Wan-native name(s) of `SCAIL2Transformer3DModel`
(`docs/model.md`, section "Checkpoint layouts"). `load_pickled_state_dict` reads a torch zip
checkpoint (the release's backbone and its LoRAs) with torch's weights-only unpickler, which
builds tensors and plain containers and refuses every other global; the only extra types
allowed are the numpy array types of the training RNG state the release stores beside the
weights (`headers.numpy_rng_globals`). Nothing in a checkpoint can run code; what a refused
pickle would have imported is named by reading its opcodes (`headers.pickle_globals`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError, first_line
from .headers import allowed_numpy_names, check_torch_zip, numpy_rng_globals

# ---------------------------------------------------------------------------------------------
# SAT -> Wan-native names
#
# The table below (the layout is `docs/model.md`, section "Checkpoint layouts") has its exact SAT
# spellings checked against two independent public transcriptions of the official `convert.py`
# (branch wan-scail2) -- the SCAIL-2 converter of WanGP and the one in a scail-2-mlx-style port --
# and against the official Wan->SAT script's inverse. Assumptions, all confirmed there:
#   * every backbone name sits under `model.diffusion_model.`;
#   * per-block linear layers live under `transformer.layers.{i}` (`attention.query_key_value`,
#     `attention.dense`, `cross_attention.{query,key_value,dense}`, `post_cross_attention_layernorm`,
#     `mlp.dense_h_to_4h`, `mlp.dense_4h_to_h`), each with `.weight` and `.bias`;
#   * per-block norms and modulation live in the adaLN mixin as lists indexed by block:
#     `mixins.adaln_layer.{query,key,cross_query,cross_key,clip_feature_key}_layernorm_list.{i}.weight`,
#     `mixins.adaln_layer.clip_feature_key_value_list.{i}.{weight,bias}` and
#     `mixins.adaln_layer.adaLN_modulations.{i}` (a bare parameter, no `.weight`);
#   * `mixins.final_layer.adaLN_modulation` is bare too; `mixins.final_layer.linear.{weight,bias}`;
#   * `mixins.patch_embed.{proj,proj_pose,proj_mask}`, `time_embed.{0,2}`, `adaln_projection.1`,
#     `text_embedding.{0,2}`, `clip_proj.proj.{0,1,3,4}` keep Wan's sequential indices;
#   * fused tensors are plain concatenations along dim 0 in the order q|k|v, k|v, k_img|v_img
#     (the official converter splits them with `chunk(n, dim=0)`; no per-head interleaving),
#     for the weight and the bias alike;
#   * the modulation parameters have Wan's shapes, (1, 6, dim) and (1, 2, dim). Should a file
#     store them without the leading 1, `sources.Source.validate` reshapes (same values, same order).
# ---------------------------------------------------------------------------------------------

SAT_PREFIX = "model.diffusion_model."

_SAT_RULES: list[tuple[re.Pattern, tuple[str, ...]]] = [
    (re.compile(pattern), targets)
    for pattern, targets in [
        # Per block, in the transformer: "{0}" is the block index, "{1}" weight or bias.
        (r"transformer\.layers\.(\d+)\.attention\.query_key_value\.(\w+)",
         ("blocks.{0}.self_attn.q.{1}", "blocks.{0}.self_attn.k.{1}", "blocks.{0}.self_attn.v.{1}")),
        (r"transformer\.layers\.(\d+)\.attention\.dense\.(\w+)", ("blocks.{0}.self_attn.o.{1}",)),
        (r"transformer\.layers\.(\d+)\.cross_attention\.query\.(\w+)", ("blocks.{0}.cross_attn.q.{1}",)),
        (r"transformer\.layers\.(\d+)\.cross_attention\.key_value\.(\w+)",
         ("blocks.{0}.cross_attn.k.{1}", "blocks.{0}.cross_attn.v.{1}")),
        (r"transformer\.layers\.(\d+)\.cross_attention\.dense\.(\w+)", ("blocks.{0}.cross_attn.o.{1}",)),
        (r"transformer\.layers\.(\d+)\.post_cross_attention_layernorm\.(\w+)", ("blocks.{0}.norm3.{1}",)),
        (r"transformer\.layers\.(\d+)\.mlp\.dense_h_to_4h\.(\w+)", ("blocks.{0}.ffn.0.{1}",)),
        (r"transformer\.layers\.(\d+)\.mlp\.dense_4h_to_h\.(\w+)", ("blocks.{0}.ffn.2.{1}",)),
        # Per block, in the adaLN mixin's lists.
        (r"mixins\.adaln_layer\.adaLN_modulations\.(\d+)", ("blocks.{0}.modulation",)),
        (r"mixins\.adaln_layer\.query_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.self_attn.norm_q.{1}",)),
        (r"mixins\.adaln_layer\.key_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.self_attn.norm_k.{1}",)),
        (r"mixins\.adaln_layer\.cross_query_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.cross_attn.norm_q.{1}",)),
        (r"mixins\.adaln_layer\.cross_key_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.cross_attn.norm_k.{1}",)),
        (r"mixins\.adaln_layer\.clip_feature_key_layernorm_list\.(\d+)\.(\w+)",
         ("blocks.{0}.cross_attn.norm_k_img.{1}",)),
        (r"mixins\.adaln_layer\.clip_feature_key_value_list\.(\d+)\.(\w+)",
         ("blocks.{0}.cross_attn.k_img.{1}", "blocks.{0}.cross_attn.v_img.{1}")),
        # Whole-model modules.
        (r"mixins\.patch_embed\.proj\.(\w+)", ("patch_embedding.{0}",)),
        (r"mixins\.patch_embed\.proj_pose\.(\w+)", ("patch_embedding_pose.{0}",)),
        (r"mixins\.patch_embed\.proj_mask\.(\w+)", ("patch_embedding_mask.{0}",)),
        (r"mixins\.final_layer\.adaLN_modulation", ("head.modulation",)),
        (r"mixins\.final_layer\.linear\.(\w+)", ("head.head.{0}",)),
        (r"time_embed\.(\d+)\.(\w+)", ("time_embedding.{0}.{1}",)),
        (r"adaln_projection\.(\d+)\.(\w+)", ("time_projection.{0}.{1}",)),
        (r"clip_proj\.proj\.(\d+)\.(\w+)", ("img_emb.proj.{0}.{1}",)),
        # `text_embedding.{0,2}` has the same name on both sides.
    ]
]


def sat_to_wan_names(sat_name: str) -> tuple[str, ...] | None:
    """Wan-native names for one SAT name (without `model.diffusion_model.`), several for a fused
    tensor (split evenly along dim 0 in the order given); None when the name is not SAT."""
    for pattern, targets in _SAT_RULES:
        match = pattern.fullmatch(sat_name)
        if match:
            return tuple(target.format(*match.groups()) for target in targets)
    return None


# ---------------------------------------------------------------------------------------------
# Safe unpickling
# ---------------------------------------------------------------------------------------------


def load_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a torch zip checkpoint: under "module" (SAT/DeepSpeed/FSDP),
    "state_dict", or the top level. Memory-mapped; never runs pickled code."""
    try:
        with torch.serialization.safe_globals(numpy_rng_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        refused = sorted(set(_unsafe_globals(path)) - allowed_numpy_names())
        what = ", ".join(refused[:4]) if refused else "non-tensor objects"
        raise CheckpointError(
            f"{path}: refused to unpickle {what}: checkpoints are loaded without running pickled code, "
            "and model weights never need it"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt torch checkpoint ({first_line(exc)[:160]})") from None
    state = obj
    if isinstance(obj, dict):
        for key in ("module", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def _unsafe_globals(path: Path) -> list[str]:
    """Globals a pickle names, found by reading its opcodes (nothing is executed; `headers`)."""
    return check_torch_zip(path).globals

