"""Paths to the fixtures in `tests/fixtures/`, and the tiny SCAIL-2 model built from them."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"  # in the repository: a clone anywhere tests itself
PARITY = FIXTURES / "scail2_parity"
FOOTAGE = FIXTURES / "footage"
TINY_WEIGHTS = PARITY / "tiny_scail2.safetensors"


def tiny_config() -> dict:
    with safe_open(TINY_WEIGHTS, "pt") as f:
        return json.loads(f.metadata()["config"])


def tiny_model():
    from backend.models.transformer_scail2 import SCAIL2Transformer3DModel

    model = SCAIL2Transformer3DModel(**tiny_config())
    model.load_state_dict(load_file(TINY_WEIGHTS), strict=True)
    return model.eval()


def case_inputs(case: dict, **overrides) -> dict:
    """The reference forward's keyword arguments for a fixture case."""
    kwargs = dict(
        x=[case["x"]],
        pose_latents=[case["pose_latents"]],
        driving_masks=[case["driving_masks"]],
        ref_latents=[case["ref_latents"]],
        ref_masks=[case["ref_masks"]],
        t=case["t"],
        context=[case["context_0"]],
        seq_len=72,
        replace_flag=False,
        clip_fea=case["clip_fea"],
    )
    kwargs.update(overrides)
    return kwargs
