"""A ComfyUI models/ folder: components found by their tensors, read to the reference's outputs.

The reference is the tiny profile's own encoders (the models the files were written from). Full
precision files must give exactly its outputs. For ComfyUI's scaled fp8 (e4m3, one float32 scale
s = max|W| / 448 per tensor) the bound is the format's: e4m3 keeps 3 mantissa bits, so a weight
rounds to within half a step, |w - w_hat| <= |w| * 2^-4 in the normal range and <= 2^-10 * s in
the subnormal range (|w| < 2^-6 * s); and the model must compute exactly what the same model with
those dequantised weights computes.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from ckpt_builders import stock_wan_i2v, tiny_weights
from comfy_builders import comfy_umt5, comfy_vae, q8_0_bound, scaled_fp8, write_comfy_folder, write_gguf_umt5
from safetensors.torch import save_file

from backend.loaders.checkpoints import load_state_dict
from backend.loaders.comfy_encoders import load_umt5_file, load_vae_file
from backend.loaders.encoder_folders import detect_layout, load_encoders
from backend.loaders.errors import CheckpointError
from backend.loaders.fp8_scaled import E4M3_HALF_STEP
from backend.loaders.inventory import Inventory, classify
from backend.models.tiny import tiny_encoders

PROMPT = ["a dancer spins on a wet street"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_encoders()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, tiny):
    return write_comfy_folder(tmp_path_factory.mktemp("ComfyUI") / "models", tiny, tiny_weights())


def fp8_bound(original: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    normal = original.abs() * E4M3_HALF_STEP
    return torch.maximum(normal, torch.full_like(original, 2.0 ** -10) * scale) * (1 + 1e-6) + 1e-12


def test_components_are_told_by_their_tensors_not_their_names(comfy, tmp_path):
    inventory = Inventory.scan(comfy.parent)  # the ComfyUI folder: its models/ is looked into
    kinds = {f.path.name: (f.component, f.precision, f.problem) for f in inventory.files}
    assert kinds["wan2.1_14B_SCAIL_2_fp16.safetensors"] == ("transformer", "fp32", "")
    assert kinds["umt5_xxl_fp16.safetensors"] == ("text_encoder", "fp32", "")
    assert kinds["clip_vision_h.safetensors"] == ("image_encoder", "fp32", "")
    assert kinds["wan_2.1_vae.safetensors"] == ("vae", "fp32", "")
    # A misleading name changes nothing: a VAE saved as "umt5" in text_encoders/ is still a VAE.
    shutil.copy(comfy / "vae" / "wan_2.1_vae.safetensors", tmp_path / "umt5_xxl_fp16.safetensors")
    assert classify(tmp_path / "umt5_xxl_fp16.safetensors").component == "vae"


def test_load_components_reads_a_comfy_folder_as_it_is(comfy, tiny):
    from backend.loaders.components import MemoryOptions, load_components

    assert detect_layout(comfy) == "comfyui" and detect_layout(comfy.parent) == "comfyui"
    components = load_components(str(comfy.parent), "cpu", MemoryOptions(dtype=torch.float32))
    assert not components.noise_only and components.quantization["format"] == "float32"
    files = components.component_files
    assert files["transformer"].endswith("diffusion_models/wan2.1_14B_SCAIL_2_fp16.safetensors")
    assert files["text_encoder"].endswith("text_encoders/umt5_xxl_fp16.safetensors")
    assert files["tokenizer"].endswith("text_encoders/umt5-xxl")
    assert files["image_encoder"].endswith("clip_vision/clip_vision_h.safetensors")
    assert files["vae"].endswith("vae/wan_2.1_vae.safetensors")
    encoders = components.encoders  # full-precision files: exactly the reference's outputs
    assert torch.equal(encoders.text.encode(PROMPT)[0], tiny.text.encode(PROMPT)[0])
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert torch.equal(encoders.image.encode(image), tiny.image.encode(image))
    video = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert torch.equal(encoders.vae.encode(video), tiny.vae.encode(video))


@pytest.mark.parametrize("newer", [False, True], ids=["scale_weight", "weight_scale+comfy_quant"])
def test_umt5_fp8_scaled_is_within_e4m3_rounding_and_computes_like_its_dequantised_weights(tmp_path, tiny, newer):
    original = comfy_umt5(tiny.text.model)
    quantised = scaled_fp8(original, newer)
    path = tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(quantised, path)
    assert classify(path).precision == "fp8_scaled" and classify(path).component == "text_encoder"
    model = load_umt5_file(path)
    loaded = model.state_dict()
    suffix = ".weight_scale" if newer else ".scale_weight"
    checked = 0
    for name, weight in original.items():
        scale_key = name[: -len(".weight")] + suffix
        if scale_key not in quantised:
            assert torch.equal(loaded[name], weight), name  # embeddings and norms are stored as they are
            continue
        error = (loaded[name] - weight).abs()
        assert (error <= fp8_bound(weight, quantised[scale_key])).all(), name
        assert error.max() > 0, name
        checked += 1
    assert checked == 14  # 2 blocks x (q, k, v, o, wi_0, wi_1, wo)
    reference = copy.deepcopy(tiny.text.model)  # the same architecture, given the dequantised weights
    reference.load_state_dict(loaded)
    ids = tiny.text.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_umt5_gguf_is_within_q8_0_rounding_and_computes_like_its_dequantised_weights(tmp_path, tiny):
    """city96's umT5 GGUF (llama.cpp's T5 names); Q8_0's bound is test_gguf's: half a step of each
    block of 32's scale max|w| / 127, plus that scale's float16 rounding through the largest code."""
    path = write_gguf_umt5(tmp_path / "umt5-xxl-encoder-Q8_0.gguf", tiny.text.model)
    found = classify(path)
    assert (found.component, found.precision, found.problem) == ("text_encoder", "gguf Q8_0", "")
    model = load_umt5_file(path)
    loaded, original = model.state_dict(), comfy_umt5(tiny.text.model)
    quantised = 0
    for name, weight in original.items():
        error = (loaded[name] - weight).abs()
        if weight.dim() == 2 and weight.shape[-1] % 32 == 0 and weight.numel() > 1024:
            assert (error.double().reshape(-1, 32).numpy() <= q8_0_bound(weight) + 1e-12).all(), name
            quantised += 1
        else:
            assert torch.equal(loaded[name], weight), name
    assert quantised == 7  # the embedding, and per block wi_0, wi_1, wo (32 x 32 ones stay F32, as small)
    reference = copy.deepcopy(tiny.text.model)
    reference.load_state_dict(loaded)
    ids = tiny.text.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_bf16_vae_loads_as_its_bf16_values(tmp_path, tiny):
    path = tmp_path / "Wan2_1_VAE_bf16.safetensors"
    save_file(comfy_vae(tiny.vae.model, torch.bfloat16), path)
    assert classify(path).precision == "bf16"
    model = load_vae_file(path)
    for name, tensor in tiny.vae.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor.to(torch.bfloat16)), name


def test_wrong_models_are_skipped_with_a_reason(comfy, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(comfy, folder)
    vae = dict(load_state_dict_like(folder / "vae" / "wan_2.1_vae.safetensors"))
    vae["decoder.upsamples.0.upsamples.0.residual.2.weight"] = torch.zeros(1)  # Wan 2.2's layout
    save_file(vae, folder / "vae" / "wan2.2_vae.safetensors")
    save_file({k: v.contiguous() for k, v in stock_wan_i2v(tiny_weights()).items()},
              folder / "diffusion_models" / "wan2.1_i2v_480p_14B_fp16.safetensors")
    t5 = load_state_dict_like(folder / "text_encoders" / "umt5_xxl_fp16.safetensors")
    t5 = {k: v for k, v in t5.items() if "block.1.layer.0.SelfAttention.relative_attention_bias" not in k}
    save_file(t5, folder / "text_encoders" / "t5xxl_fp16.safetensors")
    save_file({"lora_unet_blocks_0_ffn_0.lora_down.weight": torch.zeros(4, 48)},
              folder / "loras" / "SCAIL2_DPO_lora.safetensors")
    (folder / "vae" / "notes.safetensors").write_bytes(b"not a checkpoint at all")
    inventory = Inventory.scan(folder)
    vae_choice = inventory.choose("vae")
    assert vae_choice.file.path.name == "wan_2.1_vae.safetensors"
    why = {f.path.name: reason for f, reason in vae_choice.skipped}
    assert "Wan 2.2 VAE" in why["wan2.2_vae.safetensors"]
    transformer = inventory.choose("transformer")
    assert transformer.file.path.name == "wan2.1_14B_SCAIL_2_fp16.safetensors"
    assert "stock Wan 2.1 image-to-video" in dict((f.path.name, r) for f, r in transformer.skipped)[
        "wan2.1_i2v_480p_14B_fp16.safetensors"]
    text = inventory.choose("text_encoder")
    assert "not umT5" in dict((f.path.name, r) for f, r in text.skipped)["t5xxl_fp16.safetensors"]
    assert [f.path.name for f in inventory.loras()] == ["SCAIL2_DPO_lora.safetensors"]
    assert any(f.path.name == "notes.safetensors" and f.problem for f in inventory.files)


def load_state_dict_like(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_mxfp8_and_other_quantisations_are_refused_in_one_line(tmp_path):
    wan = {k: v.contiguous() for k, v in tiny_weights().items()}
    wan["blocks.0.ffn.0.comfy_quant"] = torch.tensor(list(json.dumps({"format": "mxfp8"}).encode()), dtype=torch.uint8)
    path = tmp_path / "wan2.1_14B_SCAIL_2_mxfp8.safetensors"
    save_file(wan, path)
    problem = classify(path).problem
    assert "'mxfp8'" in problem and "not documented" in problem and "\n" not in problem
    with pytest.raises(CheckpointError, match="mxfp8.*not documented in ComfyUI's public loader code"):
        load_state_dict(path)


def test_missing_encoder_says_what_to_download(comfy, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(comfy, folder)
    (folder / "vae" / "wan_2.1_vae.safetensors").unlink()
    from backend.models.encoders import EncoderError

    with pytest.raises(EncoderError, match="missing in .*Wan 2.1 VAE.*Comfy-Org/Wan_2.1_ComfyUI_repackaged"):
        load_encoders(folder, "cpu", torch.float32)


def test_a_weights_path_that_is_a_file_or_missing_is_said_as_it_is(tmp_path):
    from backend.models.encoders import EncoderError

    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(EncoderError, match=r"model\.safetensors is a file, not a folder$"):
        detect_layout(a_file)
    with pytest.raises(EncoderError, match=r"missing does not exist$"):
        detect_layout(tmp_path / "missing")
