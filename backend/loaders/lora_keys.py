"""How a LoRA file may spell the model's names: every key layout, mapped to the model's own.

Key layouts (all normalised to the model's parameter names, e.g. ``blocks.0.self_attn.q.weight``):

* Wan-native (LightX2V, ComfyUI, the official wan-scail2 converter's output):
  ``[diffusion_model.]blocks.0.self_attn.q.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``,
  ``...q.diff``, ``...q.diff_b``; also under ``model.diffusion_model.``, ``transformer.`` or
  ``base_model.model.``;
* PEFT factor names ``.lora_A.weight`` / ``.lora_B.weight`` (A = down, B = up), on Wan-native names
  or on diffusers' `WanTransformer3DModel` names (``blocks.0.attn1.to_q``, ``ffn.net.0.proj``,
  ``condition_embedder.time_proj`` ...; the table is diffusers' own Wan single-file conversion);
* kohya / musubi-tuner / ComfyUI flattened names, ``lora_unet_blocks_0_self_attn_q.lora_down.weight``
  (+ ``.alpha``), resolved by matching against the model's own module names with dots as
  underscores (``lora_transformer_`` and an inner ``diffusion_model_`` are accepted too);
* SAT names, as in the official release's ``model/bias-aware-dpo-lora.pt`` and
  ``model/relighting-lora.pt`` (torch zip pickles, state dict under ``"module"``), mapped with
  `backend.loaders.sat.sat_to_wan_names`. Facts, from two public copies of the official
  ``convert_lora.py`` (branch wan-scail2) and a third-party converter that applied the DPO file:
  keys are ``model.diffusion_model.transformer.layers.{i}.<SAT module>.lora_layer[.{j}].{down,up}.weight``
  (and ``.diff_b``); the fused projections carry one sub-LoRA per part, ``query_key_value.lora_layer.{0,1,2}``
  = q/k/v and ``key_value.lora_layer.{0,1}`` = k/v, each with its own down and up; there is no
  alpha and the converter applies the pairs unscaled (scale 1). Assumptions, not seen in a
  released file: a fused module's LoRA without the part index (``query_key_value.lora_layer.up.weight``)
  is one down shared by the parts and an up whose output rows are the parts concatenated in
  SAT's order (split like the fused weight itself); ``.diff`` / ``.diff_b`` on a fused module are
  split the same way; ``lora_layer`` may be absent (``mixins.adaln_layer.adaLN_modulations.0.diff``).
"""

from __future__ import annotations

import re

import torch

from .sat import sat_to_wan_names

# Suffix -> kind. Longer spellings first (".lora_down.weight" also ends with ".down.weight").
KINDS = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".down.weight", "down"),  # SAT: `<module>.lora_layer[.j].down.weight`
    (".up.weight", "up"),
    (".alpha", "alpha"),
    (".diff_b", "diff_b"),
    (".diff", "diff"),
)

# Prefixes of dotted names, each tried in turn (and none): the first reading that names a
# module of the model wins, so SAT's `transformer.layers.` is never mistaken for `transformer.`.
_DOTTED_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.",
                    "model.", "module.")
_FLAT_PREFIXES = ("lora_unet_", "lora_transformer_")
_FLAT_INNER = "diffusion_model_"

# Factors of LoRA variants that are not a plain low-rank product; named in the error.
VARIANT_HINTS = {"hada_": "LoHa", "lokr_": "LoKr", "dora_scale": "DoRA", "lora_mid": "LoCon/Tucker"}

# Wan-native -> diffusers `WanTransformer3DModel` names (diffusers' Wan single-file conversion).
_DIFFUSERS_IN_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",  # Wan's affine cross-attention norm is diffusers' norm2
    "modulation": "scale_shift_table", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
_DIFFUSERS_TOP = {
    "head.head": "proj_out", "head.modulation": "scale_shift_table",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
}


def diffusers_name(base: str) -> str | None:
    """The diffusers `WanTransformer3DModel` spelling of a Wan-native module name, if it has one."""
    if base in _DIFFUSERS_TOP:
        return _DIFFUSERS_TOP[base]
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", base)
    if match and match.group(2) in _DIFFUSERS_IN_BLOCK:
        return f"blocks.{match.group(1)}.{_DIFFUSERS_IN_BLOCK[match.group(2)]}"
    return None


class ModuleNames:
    """The model's parameters and every spelling of its module names a LoRA file may use."""

    def __init__(self, transformer: torch.nn.Module):
        self.params: dict[str, torch.nn.Parameter] = dict(transformer.named_parameters())
        self.modules: set[str] = set()  # a module with .weight/.bias, or a bare parameter's own name
        for name in self.params:
            for suffix in (".weight", ".bias"):
                if name.endswith(suffix):
                    self.modules.add(name[: -len(suffix)])
                    break
            else:
                self.modules.add(name)
        self.aliases: dict[str, str] = {}
        spellings = [(base, base) for base in sorted(self.modules)]
        spellings += [(d, base) for base in sorted(self.modules) if (d := diffusers_name(base))]
        for alias, base in spellings:  # Wan-native spellings first: they win any clash
            self.aliases.setdefault(alias, base)
        self.flat: dict[str, str] = {}
        for alias, base in spellings:
            self.flat.setdefault(alias.replace(".", "_"), base)

    def resolve(self, raw: str) -> tuple[tuple[str, ...], int | None] | None:
        """(module names, part) for a file's module name `raw` (its key less the LoRA suffix).

        Several names for a fused SAT module; `part` is the index of a SAT sub-LoRA into them.
        None when nothing in the model matches.
        """
        for prefix in (*_DOTTED_PREFIXES, ""):
            if raw.startswith(prefix):
                rest = raw[len(prefix):]
                if rest in self.aliases:
                    return (self.aliases[rest],), None
                sat = self._resolve_sat(rest)
                if sat is not None:
                    return sat
        for prefix in _FLAT_PREFIXES:
            if raw.startswith(prefix):
                rest = raw[len(prefix):]
                rest = rest[len(_FLAT_INNER):] if rest.startswith(_FLAT_INNER) else rest
                if rest in self.flat:
                    return (self.flat[rest],), None
        return None

    def _resolve_sat(self, name: str) -> tuple[tuple[str, ...], int | None] | None:
        match = re.fullmatch(r"(.+?)(?:\.lora_layer(?:\.(\d+))?)?", name)
        module, part = match.group(1), match.group(2)
        targets = sat_to_wan_names(module + ".weight")
        if targets is not None:
            bases = tuple(t[: -len(".weight")] for t in targets)
        else:
            bases = sat_to_wan_names(module)  # a bare parameter (adaLN_modulations.i)
        if not bases or not all(base in self.modules for base in bases):
            return None
        if part is None:
            return bases, None
        if int(part) >= len(bases):
            return None
        return bases, int(part)


def split_kind(key: str) -> tuple[str, str] | None:
    """(module name, kind) of a LoRA key, by its suffix (`KINDS`); None for a key of no known kind."""
    for suffix, kind in KINDS:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], kind
    return None

