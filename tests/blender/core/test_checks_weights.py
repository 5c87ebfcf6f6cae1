"""Check Weights' per-component list, read from the real ``backend doctor`` report (plain Python)."""

import json
import math
import os
import struct

import pytest

import blender_testing

from scail2.core import checks  # noqa: E402
from scail2.core import setup as backend_setup  # noqa: E402

REPO = blender_testing.REPO_ROOT
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")
ITEM = {"F16": 2, "F32": 4}


def write_safetensors(path, tensors):
    """A safetensors file of zeros: {name: (dtype, shape)} (the format: 8-byte length, JSON, data)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * ITEM[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


REPORT = """weights  /models
  transformer: single-file layout, /models/diffusion_models/scail2.safetensors (32.8 GB)
  encoders:    comfyui layout
  files:       3 weights files checked by their headers (nothing unpickled), all intact
  per component (the file each part is read from, and why):
  transformer:   /models/diffusion_models/scail2.safetensors (fp16, single-file layout): the most precise of 2
                 skipped /models/unet/scail2-Q4_K_M.gguf: less precise (gguf Q4_K_M) than the chosen file
  text encoder:  /models/text_encoders/umt5_xxl_fp16.safetensors (fp16): the only usable umT5-XXL text encoder file
  tokenizer:     MISSING: the umT5 tokenizer is missing: download it (about 20 MB) with `hf download google/umt5-xxl`
  image encoder: /models/clip_vision/clip_vision_h.safetensors (fp16): the only usable CLIP ViT-H/14 image encoder
  vae:           MISSING: Wan 2.1 VAE: download wan_2.1_vae.safetensors
  loras:         1 file(s): lightx2v.safetensors
SAM 3    not found
"""


def test_report_lines_become_one_item_per_part():
    parts = checks.weights_components(REPORT.splitlines())
    assert [p.label for p in parts] == list(checks.COMPONENT_LABELS)
    states = {p.label: p.state for p in parts}
    assert states == {"transformer": 'OK', "text encoder": 'OK', "tokenizer": 'PROBLEM', "image encoder": 'OK',
                      "vae": 'PROBLEM', "loras": 'OK'}
    transformer = parts[0]
    assert transformer.short == "scail2.safetensors (fp16)"
    skipped = "skipped /models/unet/scail2-Q4_K_M.gguf: less precise (gguf Q4_K_M) than the chosen file"
    assert transformer.notes == (skipped,)
    assert parts[4].short.startswith("MISSING: Wan 2.1 VAE") and parts[5].short == "1 file(s)"
    assert checks.weights_components(["weights  not checked (no --weights)"]) == []


@pytest.mark.skipif(not os.path.exists(BACKEND_PYTHON), reason="no backend environment")
def test_the_real_doctor_report_is_read(tmp_path):
    models = tmp_path / "ComfyUI" / "models"
    write_safetensors(models / "diffusion_models" / "wan2.1_14B_SCAIL_2_fp16.safetensors",
                      {"patch_embedding_mask.weight": ("F16", (4, 28, 1, 2, 2))})
    write_safetensors(models / "text_encoders" / "umt5_xxl_fp16.safetensors", {
        "shared.weight": ("F16", (8, 4)),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": ("F16", (32, 2)),
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": ("F16", (32, 2)),
    })
    write_safetensors(models / "vae" / "wan_2.2_vae.safetensors", {
        "decoder.middle.0.residual.0.gamma": ("F32", (4,)),
        "decoder.upsamples.0.upsamples.0.residual.2.weight": ("F32", (4, 4)),
    })
    step = backend_setup.Step("Checking the weights", backend_setup.doctor_command(BACKEND_PYTHON, str(tmp_path / "ComfyUI")),
                              cwd=REPO, timeout_s=backend_setup.DOCTOR_TIMEOUT_S)
    run = backend_setup.CommandRun.start([step])
    deadline = backend_setup.DOCTOR_TIMEOUT_S
    import time

    start = time.monotonic()
    while not run.finished and time.monotonic() - start < deadline:
        time.sleep(0.2)
    assert run.status == "done", run.lines(20)
    parts = {p.label: p for p in checks.weights_components(run.lines())}
    assert parts["transformer"].state == 'OK'
    assert parts["transformer"].short == "wan2.1_14B_SCAIL_2_fp16.safetensors (fp16)"
    assert parts["text encoder"].short == "umt5_xxl_fp16.safetensors (fp16)"
    assert parts["tokenizer"].state == 'PROBLEM' and "hf download google/umt5-xxl" in parts["tokenizer"].value
    assert parts["image encoder"].state == 'PROBLEM' and "clip_vision_h.safetensors" in parts["image encoder"].value
    assert parts["vae"].state == 'PROBLEM'
    assert any("Wan 2.2 VAE" in note for note in parts["vae"].notes)
