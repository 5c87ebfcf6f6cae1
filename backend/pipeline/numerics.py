"""What a job records of how it computed, where a backend could part from the official SCAIL-2 code.

Each entry of `numerics_record` names one choice of `docs/model.md`, section "Matching the
official code", as this run made it; the manifest keeps it under "numerics".
"""

from __future__ import annotations

from importlib import metadata

import torch

from ..loaders.components import Components
from .sampler import SamplerSettings, uses_cfg


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def compute_dtype(components: Components) -> torch.dtype:
    """The job's compute dtype: the text encoder is loaded in it (bf16 on CUDA, float32 on the CPU);
    weights kept in a storage format (float8, quantised) compute in bf16."""
    dtype = components.encoders.text.dtype
    return dtype if dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.bfloat16


def _ftfy_version() -> str:
    try:
        return metadata.version("ftfy")
    except metadata.PackageNotFoundError:
        return "missing"


def numerics_record(settings: SamplerSettings, components: Components, color_match: bool) -> dict[str, str]:
    """The manifest's "numerics": one plain line per choice."""
    history = dtype_name(compute_dtype(components))
    return {
        "guidance": ("uncond + g (cond - uncond), two passes" if uses_cfg(settings.guidance)
                     else "g = 1: the conditional pass alone (exactly the formula's value)"),
        "clip_dtype": dtype_name(components.encoders.image.dtype),
        "reference": "float, resized without 8-bit rounding (bicubic overshoot kept)",
        "size_rule": "landscape only when the reference is wider than tall (a square one is portrait)",
        "text_cleaner": f"ftfy {_ftfy_version()} fix_text, HTML unescaped twice, white space collapsed",
        "history": f"the decoded frames of the previous segment as they are, in {history}",
        "color_match": "a post-process of the written frames only" if color_match else "off",
    }
