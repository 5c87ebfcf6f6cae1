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
