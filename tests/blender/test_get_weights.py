"""Get Weights in Blender (bpy 5.0, and 4.5 LTS with -m lts): refused while online access is off, and with it
on, fetched from a stand-in for the Hugging Face Hub (tests/backend/download/hub_standin.py, served here on
loopback), the Weights field and Memory Mode set and Check Weights run on the folder."""

import os
import sys

import pytest

import blender_testing

sys.path.insert(0, os.path.join(blender_testing.REPO_ROOT, "tests", "backend", "download"))
from hub_standin import HubStandIn  # noqa: E402

FP8_FILES = (  # (repo, file in the repo) of the fp8 plan, as backend/download/catalog.py names them
    ("Comfy-Org/SCAIL-2", "diffusion_models/wan2.1_14B_SCAIL_2_fp8_scaled.safetensors"),
    ("Comfy-Org/Wan_2.1_ComfyUI_repackaged", "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    ("Comfy-Org/Wan_2.1_ComfyUI_repackaged", "split_files/clip_vision/clip_vision_h.safetensors"),
    ("Comfy-Org/Wan_2.1_ComfyUI_repackaged", "split_files/vae/wan_2.1_vae.safetensors"),
    ("google/umt5-xxl", "tokenizer.json"),
    ("google/umt5-xxl", "tokenizer_config.json"),
    ("Kijai/WanVideo_comfy", "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"),
)


@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    hub = HubStandIn()
    for i, (repo, filename) in enumerate(FP8_FILES):
        hub.add(repo, filename, bytes([i]) * (4096 if filename.endswith(".safetensors") else 100))
    servers, url = hub.start()
    tmp = tmp_path_factory.mktemp("get-weights")
    (tmp / "user").mkdir()
    try:
        data = blender_testing.run_child_script(
            "weights_script.py", [built_zip, blender_testing.BACKEND_PYTHON, tmp / "report.json", tmp],
            tmp, tmp / "user", extra_env={"HF_ENDPOINT": url, "HF_HOME": str(tmp / "hf")})
    finally:
        for server in servers:
            server.shutdown()
    data["_work"] = str(tmp)
    data["_gets"] = [r for r in hub.requests if r[0] == "GET" and ("/resolve/" in r[1] or r[1].startswith("/cdn/"))]
    return data


def step(report, name):
    assert name in report, report["_output"]
    assert report[name]["ok"], report[name]["detail"]
    return report[name]["detail"]


@pytest.mark.lts
def test_online_access_off_refuses_in_one_line_saying_where_to_allow_it(report):
    line = step(report, "offline_refused")
    assert line.startswith("Online access is off") and "Preferences > System > Network" in line
    assert "\n" not in line


@pytest.mark.lts
def test_get_weights_fills_the_weights_field_and_checks_the_folder(report):
    done = step(report, "downloads_sets_the_folder_and_checks_it")
    folder = os.path.join(report["_work"], "weights")
    assert done["end"] == "done" and done["weights_dir"] == folder and done["memory_mode"] == "FP8_STORAGE"
    assert os.path.isfile(os.path.join(folder, "vae", "wan_2.1_vae.safetensors"))
    assert done["doctor_status"] == "done" and any(folder in line for line in done["doctor_lines"])
    assert len(report["_gets"]) == len(FP8_FILES)  # each file fetched once
    # While it ran: a progress bar and Cancel; when done: the plan's reason and how it ended.
    assert ["operator", None, "scail2.cancel_get_weights"] in done["running"]
    assert any(kind == "progress" for kind, _text, _op in done["running"])
    finished = done["finished"]
    assert any(text and ": fp8_scaled transformer, fp8 text encoder, FP8 Storage" in text for text in finished)
    assert "the weights are in " + folder in finished
