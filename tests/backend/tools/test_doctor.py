"""`python -m backend doctor`: the report on this machine, a weights folder and the segmentation weights."""

from __future__ import annotations

import json


def test_doctor_reports_environment_weights_and_presets(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from backend import cli

    weights = tmp_path / "weights"
    weights.mkdir()
    save_file({"patch_embedding_mask.weight": torch.zeros(2)}, weights / "wan2.1_14B_SCAIL_2_fp16.safetensors")
    (weights / "vae").mkdir()
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

    assert cli.main(["doctor", "--json", "--weights", str(tmp_path / "nothing")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "error" in report["weights"]["transformer"] and "error" in report["weights"]["encoders"]
    assert any("zai-org/SCAIL-2" in tip for tip in report["advice"])
    assert any("optional, for automatic masks" in tip for tip in report["advice"]) or "folder" in report["segmentation"]["sam3"]
    peak = {(r["storage"], r["offload"]): r["estimate_512p_bytes"] for r in report["memory"]}
    assert peak[("fp8", "group")] < 16e9 < peak[("fp8", "model")] < peak[("fp8", "none")] < peak[("bf16", "none")]
    assert peak[("bf16", "none")] > 33e9
