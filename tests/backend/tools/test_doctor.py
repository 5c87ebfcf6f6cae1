"""`python -m backend doctor`: the report on this machine, a weights folder and the segmentation weights."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # doctor probes attention backends and opens weights


def test_doctor_reports_environment_weights_and_presets(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from backend import cli

    weights = tmp_path / "weights"
    weights.mkdir()
    save_file({"patch_embedding_mask.weight": torch.zeros(2, 28)}, weights / "wan2.1_14B_SCAIL_2_fp16.safetensors")
    (weights / "vae").mkdir()
    (weights / "vae" / "config.json").write_text("{}")  # a diffusers folder (ComfyUI's vae/ has none)
    sam3 = tmp_path / "sam3"
    sam3.mkdir()
    (sam3 / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, sam3 / "model.safetensors")
    assert cli.main(["doctor", "--weights", str(weights), "--sam3-weights", str(sam3)]) == 0
    text = capsys.readouterr().out
    assert f"SAM 3    {sam3}" in text
    assert f"torch    {torch.__version__}" in text and "attention backends:" in text and "native" in text
    assert "transformer: single-file layout" in text and "encoders:    diffusers layout" in text
    assert "ESTIMATES" in text and "--storage fp8 --offload group" in text
    assert "fp8 compute: yes" in text  # this CPU runs torch._scaled_mm

    assert cli.main(["doctor", "--json", "--weights", str(tmp_path / "nothing")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "error" in report["weights"]["transformer"] and "error" in report["weights"]["encoders"]
    assert any("zai-org/SCAIL-2" in tip for tip in report["advice"])
    assert any("optional, for automatic masks" in tip for tip in report["advice"]) or "folder" in report["segmentation"]["sam3"]
    peak = {(r["storage"], r["offload"]): r["estimate_512p_bytes"] for r in report["memory"]}
    assert peak[("fp8", "group")] < 16e9 < peak[("fp8", "model")] < peak[("fp8", "none")] < peak[("bf16", "none")]
    assert peak[("bf16", "none")] > 33e9
    assert report["fp8_compute"] == {"device": "cpu", "supported": True, "reason": None}


def test_doctor_says_why_fp8_compute_is_not_available(monkeypatch, capsys):
    import backend.models.fp8_linear
    from backend import cli

    monkeypatch.setattr(backend.models.fp8_linear, "fp8_compute_support", lambda device: "a reason")
    assert cli.main(["doctor"]) == 0
    assert "fp8 compute: no (a reason)" in capsys.readouterr().out.splitlines()


def test_doctor_opens_checkpoints_by_their_headers_and_names_what_is_wrong(tmp_path, capsys):
    import os

    import torch
    from safetensors.torch import save_file

    from backend import cli

    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # A release folder whose backbone pickle carries code, and a truncated encoder file beside it.
    release = tmp_path / "release"
    (release / "model" / "1").mkdir(parents=True)
    torch.save({"module": {"w": torch.zeros(2)}, "x": RunsCode()}, release / "model" / "1" / "fsdp2_rank_0000_checkpoint.pt",
               pickle_protocol=4)
    save_file({"decoder.conv_in.weight": torch.zeros(64, 64)}, release / "Wan2.1_VAE.safetensors")
    data = (release / "Wan2.1_VAE.safetensors").read_bytes()
    (release / "Wan2.1_VAE.safetensors").write_bytes(data[:-1000])
    assert cli.main(["doctor", "--weights", str(release)]) == 0
    text = capsys.readouterr().out
    pt = release / "model" / "1" / "fsdp2_rank_0000_checkpoint.pt"
    assert f"transformer: REFUSED: {pt}: carries code or objects the safe loader refuses (posix.system)" in text
    assert "sat layout" not in text
    assert "2 weights files checked by their headers (nothing unpickled), 2 not usable:" in text
    assert f"TRUNCATED: {release / 'Wan2.1_VAE.safetensors'}: truncated: its header promises" in text
    assert f"delete {pt}" in text and f"download {release / 'Wan2.1_VAE.safetensors'} again" in text
    assert not marker.exists()

    # A truncated download of the single SCAIL-2 file: named as such, not "no transformer found".
    single = tmp_path / "single"
    single.mkdir()
    save_file({"patch_embedding_mask.weight": torch.zeros(128, 28)}, single / "wan2.1_14B_SCAIL_2_fp16.safetensors")
    cut = single / "wan2.1_14B_SCAIL_2_fp16.safetensors"
    cut.write_bytes(cut.read_bytes()[:-4096])
    assert cli.main(["doctor", "--json", "--weights", str(single)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"]["transformer"]["error"].startswith(f"{cut}: truncated: its header promises")
    assert report["weights"]["files"][0]["status"] == "truncated"


def _gguf(path, tensors):
    """A GGUF file with these float32 tensors: 2-D ones whose rows divide into 32 as Q8_0, others F32."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
    from gguf.quants import quantize

    writer = GGUFWriter(path, arch="wan")
    writer.add_file_type(int(LlamaFileType.MOSTLY_Q8_0))
    for name, array in tensors.items():
        kind = GGMLQuantizationType.Q8_0 if array.ndim == 2 and array.shape[-1] % 32 == 0 else GGMLQuantizationType.F32
        writer.add_tensor(name, quantize(np.ascontiguousarray(array, dtype=np.float32), kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_doctor_lists_each_component_of_a_comfyui_folder(tmp_path, capsys):
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from backend import cli

    models = tmp_path / "ComfyUI" / "models"
    for sub in ("unet", "diffusion_models", "text_encoders", "vae", "loras"):
        (models / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    _gguf(models / "unet" / "Wan2.1-SCAIL-2-Q8_0.gguf", {
        "patch_embedding_mask.weight": rng.standard_normal((64, 28, 1, 2, 2)),
        "blocks.0.ffn.0.weight": rng.standard_normal((64, 256)),
        "blocks.0.self_attn.q.weight": rng.standard_normal((64, 64)),
        "blocks.0.self_attn.q.bias": rng.standard_normal(64),
    })
    save_file({"patch_embedding.weight": torch.zeros(64, 36, 1, 2, 2), "blocks.0.ffn.0.weight": torch.zeros(2, 2)},
              models / "diffusion_models" / "wan2.1_i2v_480p_14B_fp16.safetensors")
    umt5 = {f"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight": torch.zeros(32, 2)
            for i in range(2)}
    umt5.update({"shared.weight": torch.zeros(8, 4), "encoder.block.0.layer.0.SelfAttention.q.weight":
                 torch.zeros(4, 4, dtype=torch.float8_e4m3fn), "encoder.block.0.layer.0.SelfAttention.q.scale_weight":
                 torch.ones(()), "scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)})
    save_file(umt5, models / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    save_file({"decoder.middle.0.residual.0.gamma": torch.zeros(4), "conv2.weight": torch.zeros(16, 16, 1, 1, 1)},
              models / "vae" / "wan_2.1_vae.safetensors")
    save_file({"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(4, 256)},
              models / "loras" / "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors")

    assert cli.main(["doctor", "--json", "--weights", str(tmp_path / "ComfyUI")]) == 0
    report = json.loads(capsys.readouterr().out)
    parts = report["weights"]["components"]
    transformer = parts["transformer"]["chosen"]
    assert transformer["path"].endswith("Wan2.1-SCAIL-2-Q8_0.gguf") and transformer["layout"] == "gguf"
    assert transformer["quantization"]["file_type"] == "Q8_0"
    assert transformer["quantization"]["families"]["blocks.*.ffn.0.weight"] == "Q8_0"
    skipped = {s["path"].rsplit("/", 1)[-1]: s["why"] for s in parts["transformer"]["skipped"]}
    assert "stock Wan 2.1 image-to-video" in skipped["wan2.1_i2v_480p_14B_fp16.safetensors"]
    assert parts["text_encoder"]["chosen"]["precision"] == "fp8_scaled"
    assert parts["vae"]["chosen"]["path"].endswith("wan_2.1_vae.safetensors")
    assert parts["image_encoder"]["chosen"] is None and "clip_vision_h.safetensors" in parts["image_encoder"]["missing"]
    assert parts["tokenizer"]["chosen"] is None and "hf download google/umt5-xxl" in parts["tokenizer"]["missing"]
    assert [l["path"].rsplit("/", 1)[-1] for l in parts["loras"]] == [
        "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"]
    assert {row["storage"] for row in report["memory"]} == {"gguf"}  # the memory modes of these files
    assert [row["flags"] for row in report["memory"]] == ["--offload none", "--offload model", "--offload group"]
    assert any("clip_vision_h.safetensors" in tip for tip in report["advice"])

    assert cli.main(["doctor", "--weights", str(tmp_path / "ComfyUI")]) == 0
    text = capsys.readouterr().out
    assert "  image encoder: MISSING: CLIP ViT-H/14 image encoder: download clip_vision_h.safetensors" in text
    assert "quantisation: GGUF Q8_0 (blocks.*.ffn.0.weight Q8_0" in text
    assert "skipped " in text and "memory presets for the chosen GGUF transformer" in text


def test_a_layout_of_files_that_cannot_be_read_is_not_called_ok(tmp_path, capsys):
    from backend import cli

    # The official release's VAE name on a 6-byte file (an interrupted download), and empty diffusers folders.
    release = tmp_path / "release"
    release.mkdir()
    (release / "Wan2.1_VAE.pth").write_bytes(b"abcdef")
    assert cli.main(["doctor", "--weights", str(release)]) == 0
    text = capsys.readouterr().out
    vae = release / "Wan2.1_VAE.pth"
    assert f"encoders:    official layout, TRUNCATED: {vae}: truncated: 6 bytes" in text
    assert f"vae:           TRUNCATED: {vae}" in text
    assert "encoders:    official layout\n" not in text

    empty = tmp_path / "empty"
    for name in ("vae", "text_encoder", "tokenizer", "image_encoder"):
        (empty / name).mkdir(parents=True)
    assert cli.main(["doctor", "--weights", str(empty)]) == 0
    text = capsys.readouterr().out
    assert "encoders:    MISSING: no encoder weights in" in text and "diffusers layout" not in text


def test_doctor_probes_attention_and_jobs_use_the_recorded_choice(tmp_path, monkeypatch):
    """The probe times every local backend against native's output; a model loaded with `--attention auto`
    (the default on a GPU) takes the recorded choice without probing again."""
    import torch

    from backend.loaders.components import MemoryOptions, load_components
    from backend.models import attention_choice
    from backend.tools.doctor import attention_line, build_report

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    report = build_report()
    probe = report["attention_probe"]
    assert probe["choice"] in probe["milliseconds"] and "native" in probe["milliseconds"]
    assert all(ms > 0 for ms in probe["milliseconds"].values())
    assert probe["milliseconds"][probe["choice"]] == min(probe["milliseconds"].values())
    assert attention_line(probe).startswith(f"attention: {probe['choice']} is fastest here")
    cpu = torch.device("cpu")
    assert attention_choice.recorded_choice(cpu) == probe["choice"]

    # Another machine's record is not this one's; this machine's, once recorded, is used as is.
    record = json.loads(attention_choice.choices_file().read_text())
    record[attention_choice.machine_key(cpu)]["choice"] = "_native_math"
    attention_choice.choices_file().write_text(json.dumps(record))
    monkeypatch.setattr(attention_choice, "probe_and_record", lambda device: pytest.fail("probed again"))
    components = load_components("tiny", "cpu", MemoryOptions(dtype=torch.float32, attention_backend="auto"))
    backend = components.transformer.blocks[0].self_attn.processor._attention_backend
    assert getattr(backend, "value", backend) == "_native_math"


def test_a_backend_that_disagrees_with_native_is_not_chosen(monkeypatch):
    import torch
    from diffusers.models import attention_dispatch

    from backend.models.attention_choice import probe_attention

    real = attention_dispatch.dispatch_attention_fn

    def broken_math(q, k, v, backend=None, **kwargs):
        out = real(q, k, v, backend=backend, **kwargs)
        return out * 2 if backend == "_native_math" else out

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", broken_math)
    result = probe_attention(torch.device("cpu"), ["native", "_native_math"], tokens=64, heads=2, head_dim=32)
    assert result["choice"] == "native" and "_native_math" in result["rejected"]
    assert "differs from native" in result["rejected"]["_native_math"]


@pytest.mark.parametrize("tensors", [
    {"patch_embedding_mask.weight": {"dtype": "F13", "shape": [2], "data_offsets": [0, 8]}},
    {"patch_embedding_mask.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
])
def test_doctor_weights_is_not_ok_with_a_header_the_loaders_refuse(tmp_path, capsys, tensors):
    """Issue 30, item 7: an unknown dtype or overlapping data_offsets are damaged for doctor as for generate."""
    import struct

    from backend import cli

    header = json.dumps(tensors).encode()
    end = max(t["data_offsets"][1] for t in tensors.values())
    path = tmp_path / "wan2.1_14B_SCAIL_2_fp16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * end)
    assert cli.main(["doctor", "--json", "--weights", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"]["files"][0]["status"] == "damaged"
    assert "Error while deserializing header" in report["weights"]["files"][0]["detail"]
