"""`python -m backend download` against a stand-in for the Hugging Face Hub (`hub_standin`), with the real
`huggingface_hub` client pointed at it through HF_ENDPOINT, in real subprocesses.

The stand-in's repositories hold the tiny SCAIL-2 stack in ComfyUI's layout under the catalog's real
repository and file names, so the finished folder is read by `doctor` and runs a tiny job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol import REVIEW_NAME, TakeReview, read_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loaders"))  # comfy_builders

from ckpt_builders import tiny_weights  # noqa: E402
from comfy_builders import write_comfy_folder  # noqa: E402
from hub_standin import HubStandIn  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from scail_fixtures import FOOTAGE, REPO  # noqa: E402

from backend.download.catalog import FILES, VARIANTS  # noqa: E402
from backend.download.plan import STATE_DIR, make_plan  # noqa: E402
from backend.tools.doctor import GB, transformer_params  # noqa: E402

TINY_SOURCES = {  # catalog key -> the tiny stack's file standing in for it
    "transformer-fp8": "diffusion_models/wan2.1_14B_SCAIL_2_fp16.safetensors",
    "text-encoder-fp8": "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "image-encoder": "clip_vision/clip_vision_h.safetensors",
    "vae": "vae/wan_2.1_vae.safetensors",
    "tokenizer": "text_encoders/umt5-xxl/tokenizer.json",
    "tokenizer-config": "text_encoders/umt5-xxl/tokenizer_config.json",
    "lora-lightx2v": "loras/tiny_lora.safetensors",
}


@pytest.fixture(scope="module")
def tiny_stack(tmp_path_factory):
    from backend.models.tiny import tiny_encoders
    import torch

    root = write_comfy_folder(tmp_path_factory.mktemp("source") / "models", tiny_encoders(), tiny_weights(),
                              text_fp8=True)
    g = torch.Generator().manual_seed(0)
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 48, generator=g),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(48, 4, generator=g)},
              root / "loras" / "tiny_lora.safetensors")
    return root


@pytest.fixture()
def hub(tiny_stack):
    """A fresh stand-in for the Hugging Face Hub serving the tiny stack under the fp8 plan's names."""
    standin = HubStandIn()
    for key, source in TINY_SOURCES.items():
        file = FILES[key]
        standin.add(file.repo, file.filename, (tiny_stack / source).read_bytes())
    servers, standin.url = standin.start()
    yield standin
    for server in servers:
        server.shutdown()
        server.server_close()


def hosted(hub: HubStandIn, key: str):
    return hub.repos[FILES[key].repo][FILES[key].filename]


def env_for(hub: HubStandIn, tmp_path: Path, token: str | None = None) -> dict:
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


def command(to: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "backend", "download", "--plan", "fp8", "--to", str(to), "--json", *extra]


def download(hub, tmp_path, to, *extra, token=None) -> tuple[int, list[dict]]:
    run = subprocess.run(command(to, *extra), cwd=REPO, env=env_for(hub, tmp_path, token), capture_output=True,
                         text=True, timeout=300)
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return run.returncode, events


def parts(folder: Path) -> list[Path]:
    return sorted((folder / STATE_DIR).rglob("*.part"))


# -- the plan -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gb, variant, offload, fits", [
    (80, "fp16", "none", True),
    (48, "fp16", "model", True),
    (24, "fp8", "model", True),
    (16, "gguf-q4", "model", True),
    (12, "gguf-q4", "group", False),
    (8, "gguf-q4", "group", False),
])
def test_the_plan_for_each_gpu_size(gb, variant, offload, fits):
    plan = make_plan("auto", gb * GB, transformer_params())
    assert (plan.variant.name, plan.offload, plan.fits) == (variant, offload, fits)
    assert plan.reason.startswith(f"{gb} GB: {VARIANTS[variant].label}")
    assert ("below the estimated minimum" in plan.reason) == (not fits)
    names = [f.path for f in plan.files]
    assert names[0].startswith("diffusion_models/") and "vae/wan_2.1_vae.safetensors" in names
    assert "loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors" in names


def test_dry_run_shows_plan_sizes_and_free_space_and_touches_no_network(hub, tmp_path):
    status, events = download(hub, tmp_path, tmp_path / "w", "--dry-run")
    assert status == 0 and [e["event"] for e in events] == ["plan"]
    plan = events[0]
    assert plan["total_bytes"] == sum(FILES[k].size_bytes for k in VARIANTS["fp8"].keys())
    assert plan["free_bytes"] > 0 and plan["memory_mode"] == "FP8_STORAGE" and "fp8_scaled" in plan["message"]
    assert hub.requests == [] and not (tmp_path / "w").exists()


# -- the download ---------------------------------------------------------------------------------


def test_a_cut_mid_file_resumes_and_the_folder_passes_doctor_and_runs_a_tiny_job(hub, tmp_path):
    transformer = hosted(hub, "transformer-fp8")
    cut = len(transformer.data) // 3
    transformer.cut_after = cut
    folder = tmp_path / "weights"
    status, events = download(hub, tmp_path, folder)
    assert status == 0, events[-1]
    first, second = [r[2] for r in hub.gets(transformer)]
    resumed_at = int(second.removeprefix("bytes=").rstrip("-"))
    assert first == "" and 0 < resumed_at <= cut  # the second request continues where the cut left it
    assert events[-1]["event"] == "done" and events[-1]["folder"] == str(folder)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done_bytes"] == progress[-1]["total_bytes"]
    for key, source in TINY_SOURCES.items():
        assert (folder / FILES[key].path).read_bytes() == hosted(hub, key).data
    assert parts(folder) == []

    doctor = subprocess.run([sys.executable, "-m", "backend", "doctor", "--weights", str(folder), "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    components = json.loads(doctor.stdout)["weights"]["components"]
    for part in ("transformer", "text_encoder", "tokenizer", "image_encoder", "vae"):
        chosen = components[part]["chosen"]
        assert chosen and not chosen.get("problem"), (part, components[part])
        assert chosen["path"].startswith(str(folder))

    job = subprocess.run([sys.executable, "-m", "backend", "generate", "--weights", str(folder), "--device", "cpu",
                          "--driving", str(FOOTAGE / "scail_001_driving.mp4"),
                          "--reference", str(FOOTAGE / "scail_001_ref.jpg"), "--height", "64", "--width", "128",
                          "--steps", "2", "--end", "3", "--out", str(tmp_path / "job")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-2000:]
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert not manifest["model"]["noise_only"]
    assert manifest["model"]["components"]["transformer"] == str(folder / FILES["transformer-fp8"].path)
    assert len(list((tmp_path / "job" / "frames").glob("*.png"))) == 3
    # The take's recipe names the weights by the Hub's SHA-256, which the download verified: not hashed again.
    recipe = read_record(tmp_path / "job" / REVIEW_NAME, TakeReview).recipe
    model = {f.role: f for f in recipe.model}
    assert model["transformer"].sha256 == hashlib.sha256(hosted(hub, "transformer-fp8").data).hexdigest()


def test_a_corrupted_byte_is_caught_by_the_hash(hub, tmp_path):
    hosted(hub, "vae").corrupt = True
    folder = tmp_path / "weights"
    status, events = download(hub, tmp_path, folder)
    assert status == 1
    assert events[-1]["event"] == "error" and "vae/wan_2.1_vae.safetensors: damaged in transit" in events[-1]["message"]
    assert not (folder / FILES["vae"].path).exists() and not any("wan_2.1_vae" in p.name for p in parts(folder))
    assert (folder / FILES["image-encoder"].path).is_file()  # files before it were verified and kept


def test_cancel_keeps_a_part_that_the_next_run_resumes(hub, tmp_path):
    transformer = hosted(hub, "transformer-fp8")
    transformer.delay_s = 0.002
    folder = tmp_path / "weights"
    proc = subprocess.Popen(command(folder), cwd=REPO, env=env_for(hub, tmp_path), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (parts(folder) and parts(folder)[0].stat().st_size > 64 * 1024):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert json.loads(out.splitlines()[-1])["event"] == "cancelled"
    [part] = parts(folder)
    kept = part.stat().st_size
    assert 0 < kept < len(transformer.data) and not (folder / FILES["transformer-fp8"].path).exists()

    transformer.delay_s = 0.0
    status, events = download(hub, tmp_path, folder)
    assert status == 0 and events[-1]["event"] == "done"
    assert hub.gets(transformer)[-1][2] == f"bytes={kept}-"  # resumed, not started over
    assert (folder / FILES["transformer-fp8"].path).read_bytes() == transformer.data


def test_a_full_disk_is_refused_before_anything_is_fetched(hub, tmp_path):
    hosted(hub, "transformer-fp8").claimed_size = 10 ** 18  # the hub announces more than any disk here holds
    status, events = download(hub, tmp_path, tmp_path / "weights")
    assert status == 2
    assert events[-1]["event"] == "error" and "not enough disk space" in events[-1]["message"]
    assert [r for r in hub.requests if r[0] == "GET"] == []  # only HEADs: nothing fetched
    assert not any((tmp_path / "weights").rglob("*.safetensors"))


def test_files_already_present_are_not_fetched(hub, tiny_stack, tmp_path):
    folder = tmp_path / "weights"
    (folder / "vae").mkdir(parents=True)
    shutil.copy(tiny_stack / "vae" / "wan_2.1_vae.safetensors", folder / "vae" / "my_own_vae.safetensors")
    (folder / "clip_vision").mkdir()
    shutil.copy(tiny_stack / "clip_vision" / "clip_vision_h.safetensors", folder / "clip_vision" / "clip-h.sft")
    status, events = download(hub, tmp_path, folder)
    assert status == 0
    present = {f["path"]: f for f in events[0]["files"] if f["present"]}
    assert set(present) == {FILES["vae"].path, FILES["image-encoder"].path}
    assert "my_own_vae.safetensors" in present[FILES["vae"].path]["where"]
    assert hub.gets(hosted(hub, "vae")) == [] and hub.gets(hosted(hub, "image-encoder")) == []
    assert not (folder / FILES["vae"].path).exists()
    status, events = download(hub, tmp_path, folder)  # a second run: everything is there, nothing fetched
    assert status == 0 and all(f["present"] for f in events[0]["files"]) and events[0]["total_bytes"] == 0
    assert [e["event"] for e in events] == ["plan", "progress", "done"]


@pytest.mark.parametrize("token, words", [(None, "needs a Hugging Face token"),
                                          ("hf_not_granted", "access not granted yet")])
def test_a_gated_repository_says_in_one_line_what_to_do(hub, tmp_path, token, words):
    hub.gated.add(FILES["vae"].repo)
    status, events = download(hub, tmp_path, tmp_path / "weights", token=token)
    assert status == 2 and events[-1]["event"] == "error"
    message = events[-1]["message"]
    assert words in message and "\n" not in message and FILES["vae"].repo in message
    hub.granted_tokens.add("hf_granted")
    status, events = download(hub, tmp_path, tmp_path / "weights", token="hf_granted")
    assert status == 0


def test_sam3_is_fetched_whole_with_the_token_once_access_is_granted(hub, tmp_path):
    hub.gated.add("facebook/sam3")
    files = {"config.json": b'{"model_type": "sam3"}', "model.safetensors": bytes(range(256)) * 20,
             "processor/tokenizer.json": b'{"version": "1.0"}'}
    for path, data in files.items():
        hub.add("facebook/sam3", path, data)
    hub.add("facebook/sam3", ".gitattributes", b"*.safetensors filter=lfs")
    folder = tmp_path / "weights"
    status, events = download(hub, tmp_path, folder, "--with", "sam3", "--dry-run")
    assert status == 0 and [f["path"] for f in events[0]["files"]][-1] == "sam3/"
    status, events = download(hub, tmp_path, folder, "--with", "sam3")
    assert status == 2 and "facebook/sam3 needs a Hugging Face token" in events[-1]["message"]
    assert not (folder / "sam3").exists()  # refused before anything was fetched

    hub.granted_tokens.add("hf_granted")
    status, events = download(hub, tmp_path, folder, "--with", "sam3", token="hf_granted")
    assert status == 0, events[-1]
    for path, data in files.items():
        assert (folder / "sam3" / path).read_bytes() == data
    assert not (folder / "sam3" / ".gitattributes").exists()
    verified = {e["file"] for e in events if e["event"] == "verified"}
    assert {"sam3/config.json", "sam3/model.safetensors", "sam3/processor/tokenizer.json"} <= verified


def test_a_file_already_in_place_with_the_hubs_hash_is_kept_not_fetched(hub, tmp_path):
    files = {"config.json": b'{"model_type": "sam3"}', "model.safetensors": bytes(range(256)) * 20}
    for path, data in files.items():
        hub.add("facebook/sam3", path, data)
    folder = tmp_path / "weights"
    (folder / "sam3").mkdir(parents=True)
    (folder / "sam3" / "model.safetensors").write_bytes(files["model.safetensors"])  # as `hf download` left it
    status, events = download(hub, tmp_path, folder, "--with", "sam3")
    assert status == 0, events[-1]
    model = hub.repos["facebook/sam3"]["model.safetensors"]

    def config_gets():
        return [r for r in hub.requests if r[:2] == ("GET", "/facebook/sam3/resolve/main/config.json")]

    assert hub.gets(model) == [] and len(config_gets()) == 1
    assert (folder / "sam3" / "config.json").read_bytes() == files["config.json"]
    status, events = download(hub, tmp_path, folder, "--with", "sam3")  # both recorded as verified now
    assert status == 0 and hub.gets(model) == [] and len(config_gets()) == 1


def test_a_file_in_the_hugging_face_cache_is_linked_in_not_fetched(hub, tmp_path):
    from hub_standin import COMMIT

    vae = FILES["vae"]
    cache = tmp_path / "hf-home" / "hub" / f"models--{vae.repo.replace('/', '--')}"
    cached = cache / "snapshots" / COMMIT / vae.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(hosted(hub, "vae").data)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(COMMIT)
    folder = tmp_path / "weights"
    status, events = download(hub, tmp_path, folder)
    assert status == 0, events[-1]
    [entry] = [f for f in events[0]["files"] if f["path"] == vae.path]
    assert entry["present"] and "Hugging Face cache" in entry["where"]
    assert hub.gets(hosted(hub, "vae")) == []
    assert (folder / vae.path).read_bytes() == hosted(hub, "vae").data


def test_auto_without_a_gpu_asks_for_its_memory_in_one_line(hub, tmp_path):
    run = subprocess.run([sys.executable, "-m", "backend", "download", "--plan", "auto", "--to", str(tmp_path / "w"),
                          "--dry-run"], cwd=REPO, env=dict(env_for(hub, tmp_path), CUDA_VISIBLE_DEVICES=""),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().startswith("error: no NVIDIA GPU found here to plan for")
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_file_of_someone_elses_where_a_planned_file_goes_is_refused_before_anything_is_fetched(hub, tmp_path):
    folder = tmp_path / "weights"
    target = folder / FILES["vae"].path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the hub's VAE: a copy cut short, or another file of the same name")
    status, events = download(hub, tmp_path, folder)
    assert status == 2, events
    assert events[-1]["event"] == "error"
    assert events[-1]["message"] == (f"{target} is there and is not the file the plan fetches (not the hub's hash); "
                                     "move it away, then run the download again: nothing was fetched")
    assert [r for r in hub.requests if r[0] == "GET"] == []
    assert target.read_bytes() == b"not the hub's VAE: a copy cut short, or another file of the same name"


def test_a_weights_folder_that_is_a_file_or_under_one_is_refused_before_the_plan(hub, tmp_path):
    a_file = tmp_path / "weights"
    a_file.write_text("the user's")
    for to, words in ((a_file, "is a file, not a folder"), (a_file / "scail2", f"cannot be made: {a_file} is a file")):
        status, events = download(hub, tmp_path, to, "--dry-run")
        assert status == 2 and [e["event"] for e in events] == ["error"], events
        assert events[0]["message"].startswith(f"the weights folder {to} {words}"), events[0]["message"]
    assert a_file.read_text() == "the user's"
