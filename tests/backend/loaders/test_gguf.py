"""GGUF quantisations of the SCAIL-2 transformer, written with the gguf package's own writer.

The bounds asserted are the formats' own (ggml-quants, as the gguf package implements them):

* Q8_0: blocks of 32 weights share one scale d = max|w| / 127, stored as float16 (d16); each
  weight is round(w / d), an int8. So |w - q * d16| <= d / 2 + 127 * |d - d16|: half a step,
  plus the scale's own float16 rounding carried through the largest code.
* Q4_0: blocks of 32, d = w_m / -8 with w_m the weight of largest magnitude, codes 0..15 for
  -8 d .. 7 d; the code 8 d is clamped to 7 d, so the error is at most one step |d| (plus the
  float16 rounding of d times 8): |w - w_hat| <= |d| + 8 * |d - d16|.
* Q4_K (the type of most tensors of a Q4_K_M file): super-blocks of 256 in 8 sub-blocks of 32,
  w = d * sc_j * q - dmin * m_j with 4-bit codes; a weight is within half its sub-block's step,
  |w - w_hat| <= d * sc_j / 2 (the writer, `comfy_builders.quantize_q4_k`, rounds the scales up
  so that every sub-block's range fits its 16 steps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ckpt_builders import tiny_config, tiny_weights, write_single_file
from comfy_builders import q8_0_bound, quantize_q4_k, write_gguf
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType
from safetensors.torch import save_file
from scail_fixtures import case_inputs

from backend.loaders.checkpoints import load_state_dict, load_transformer, open_checkpoint
from backend.loaders.errors import CheckpointError
from backend.loaders.headers import check_file
from backend.loaders.layouts import GGUF, detect_layout, find_transformer
from backend.loaders.lora import LoraError, merge_loras

PREFIX = "model.diffusion_model."


def _blocks(tensor: torch.Tensor, size: int = 32) -> np.ndarray:
    """The tensor's weights in ggml's blocks: consecutive runs of `size` in row-major order."""
    return tensor.double().reshape(-1, size).numpy()


def q4_0_bound(original: torch.Tensor) -> np.ndarray:
    blocks = _blocks(original)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 8
    d16 = d.astype(np.float16).astype(np.float64)
    return np.broadcast_to(d + 8 * np.abs(d - d16), blocks.shape)


def q4_k_bound(original: torch.Tensor) -> np.ndarray:
    step = quantize_q4_k(original.float().reshape(-1, 256).numpy())[1]
    return step.astype(np.float64).reshape(-1, 32) / 2 * (1 + 1e-6) + 1e-9


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    wan = tiny_weights()
    return {
        "q8_0": write_gguf(root / "scail2-Q8_0.gguf", wan, Q.Q8_0, PREFIX, LlamaFileType.MOSTLY_Q8_0),
        "q4_0": write_gguf(root / "scail2-Q4_0.gguf", wan, Q.Q4_0),
        "q4_k": write_gguf(root / "scail2-Q4_K_M.gguf", wan, Q.Q4_K, PREFIX, LlamaFileType.MOSTLY_Q4_K_M),
    }


def forward(model, case):
    with torch.no_grad():
        (out,) = model(**case_inputs(case))
    return out


@pytest.mark.parametrize("kind, bound", [("q8_0", q8_0_bound), ("q4_0", q4_0_bound), ("q4_k", q4_k_bound)])
def test_dequantised_weights_are_within_the_format_bound(gguf_files, kind, bound):
    assert detect_layout(gguf_files[kind]) == GGUF
    state = load_state_dict(gguf_files[kind], config=tiny_config())
    wan = tiny_weights()
    checkpoint = open_checkpoint(gguf_files[kind], config=tiny_config())
    quantised = [n for n in wan if checkpoint._source.type_name(n) != "F32"]
    assert len(quantised) >= 30  # every matrix of the tiny model, flattened or not
    for name in wan:
        assert state[name].shape == wan[name].shape and state[name].dtype == torch.float32, name
        if name not in quantised:
            assert torch.equal(state[name], wan[name].float()), name  # F32: stored as is
            continue
        error = np.abs(_blocks(state[name]) - _blocks(wan[name]))
        assert (error <= bound(wan[name]) + 1e-12).all(), name
        assert error.max() > 0, name  # really quantised


@pytest.mark.parametrize("kind", ["q8_0", "q4_k"])
def test_quantised_model_gives_the_outputs_of_its_dequantised_weights(gguf_files, kind, animate_case):
    """Linear weights stay quantised (diffusers' GGUFLinear), and the model computes what the same
    model with the dequantised weights computes (up to GGUFLinear's float16 dequantisation)."""
    from diffusers.quantizers.gguf.utils import GGUFLinear

    from backend.models.transformer_scail2 import SCAIL2Transformer3DModel

    model = load_transformer(gguf_files[kind], dtype=torch.float32, config=tiny_config())
    kept = [n for n, m in model.named_modules() if isinstance(m, GGUFLinear)]
    if kind == "q8_0":  # in-dims 96 and 32 hold whole 32-blocks; a Q4_K 256-block needs them flattened
        assert "blocks.0.ffn.2" in kept and "text_embedding.0" in kept
    else:  # only the CLIP projection's in-dim (1280) holds whole 256-blocks; the rest is stored flattened
        assert kept == ["img_emb.proj.1", "img_emb.proj.3"]
    assert not any(n.startswith(("head", "time_embedding", "time_projection")) for n in kept)  # float32 modules
    assert model.blocks[0].ffn[2].weight.dtype == (torch.uint8 if kind == "q8_0" else torch.float32)
    assert model.img_emb.proj[1].weight.dtype == torch.uint8
    reference = SCAIL2Transformer3DModel(**tiny_config())
    reference.load_state_dict(load_state_dict(gguf_files[kind], config=tiny_config()))
    out, expected = forward(model, animate_case), forward(reference.eval(), animate_case)
    assert (out - expected).abs().max() < 1e-3
    drift = (out - animate_case["expected"]).abs().max()  # against the float32 fixture model
    assert 0 < drift < (0.05 if kind == "q8_0" else 0.5)
    if kind == "q4_k":
        assert model.quantization["file_type"] == "Q4_K_M"


def test_quantization_is_recorded_per_tensor_family(gguf_files, tmp_path):
    q8 = load_transformer(gguf_files["q8_0"], dtype=torch.float32, config=tiny_config()).quantization
    assert q8["format"] == "gguf" and q8["file_type"] == "Q8_0"
    assert q8["families"]["blocks.*.self_attn.q.weight"] == "Q8_0"
    assert "blocks.*.self_attn.q.bias" not in q8["families"] and q8["types"]["F32"] > 0
    mixed = write_gguf(tmp_path / "mixed.gguf", tiny_weights(),
                       lambda name: Q.Q4_0 if name.startswith("blocks.1.") else Q.Q8_0)
    record = open_checkpoint(mixed, config=tiny_config()).quantization()
    assert record["file_type"] == "Q8_0"  # no declared type: the most common quantised one
    assert record["families"]["blocks.*.ffn.0.weight"] in ("Q8_0x1, Q4_0x1", "Q4_0x1, Q8_0x1")
    single = write_single_file(tmp_path / "fp32.safetensors")
    assert open_checkpoint(single, config=tiny_config()).quantization()["format"] == "float32"


def test_find_transformer_prefers_full_precision_then_takes_gguf(tmp_path, gguf_files):
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "scail2-Q4_0.gguf").write_bytes(gguf_files["q4_0"].read_bytes())
    (unet / "scail2-Q8_0.gguf").write_bytes(gguf_files["q8_0"].read_bytes())
    assert find_transformer(tmp_path) == unet / "scail2-Q8_0.gguf"  # more bits first
    write_single_file(tmp_path / "scail2.safetensors")
    assert find_transformer(tmp_path) == tmp_path / "scail2.safetensors"


def test_truncated_gguf_is_named(tmp_path, gguf_files):
    cut = tmp_path / "diffusion_models" / "scail2-Q8_0.gguf"
    cut.parent.mkdir()
    data = gguf_files["q8_0"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    check = check_file(cut)
    assert check.status in ("truncated", "damaged") and "truncated" in check.detail, check
    with pytest.raises(CheckpointError, match="scail2-Q8_0.gguf"):
        find_transformer(tmp_path)


def test_lora_into_a_gguf_model_is_refused_before_anything_changes(tmp_path, gguf_files):
    model = load_transformer(gguf_files["q8_0"], dtype=torch.float32, config=tiny_config())
    lora = tmp_path / "lora.safetensors"
    save_file({"diffusion_model.blocks.0.ffn.2.lora_down.weight": torch.ones(4, 96),
               "diffusion_model.blocks.0.ffn.2.lora_up.weight": torch.ones(48, 4)}, lora)
    before = model.blocks[0].ffn[2].weight.clone()
    with pytest.raises(LoraError, match="GGUF-quantised transformer.*Q8_0.*fp16 or fp8_scaled"):
        merge_loras(model, [(lora, 1.0)])
    assert torch.equal(model.blocks[0].ffn[2].weight, before)


def test_memory_modes_keep_a_gguf_model_quantised_and_its_outputs(gguf_files, animate_case):
    """Group offload moves GGUF weights as they are; fp8 storage does not apply to them (they are
    already quantised) and is skipped rather than casting their bytes."""
    from backend.loaders.components import MemoryOptions, apply_memory_options

    path = gguf_files["q8_0"]
    expected = forward(load_transformer(path, dtype=torch.float32, config=tiny_config()), animate_case)
    for offload, storage in (("group", "bf16"), ("none", "fp8")):
        model = load_transformer(path, dtype=torch.float32, config=tiny_config())
        apply_memory_options(model, torch.device("cpu"), MemoryOptions(torch.float32, storage, offload))
        assert hasattr(model.blocks[0].ffn[2].weight, "quant_type")
        assert torch.equal(forward(model, animate_case), expected), (offload, storage)
