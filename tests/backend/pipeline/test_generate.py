"""The generation pipeline end to end with the tiny profile, on real and made-up footage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scail_fixtures import FOOTAGE, REPO

from backend import cli
from backend.loaders.components import MemoryOptions, load_components
from backend.pipeline import durable, media
from backend.pipeline.generate import GenerationJob, JobDirectoryError, match_colours
from backend.pipeline.inputs import prepare_inputs
from backend.pipeline.sampler import Cancelled, SamplerSettings, make_scheduler
from backend.pipeline.segments import plan_segments
from protocol import JobSpec

SMALL = dict(height=64, width=128, steps=2, seed=3)
DRIVING = FOOTAGE / "scail_001_driving.mp4"
REFERENCE = FOOTAGE / "scail_001_ref.jpg"


@pytest.fixture(scope="module")
def tiny():
    return load_components("tiny", "cpu", MemoryOptions(dtype=torch.float32))


def made_up_clip(path: Path, fps: float, count: int) -> Path:
    """A clip whose frames differ (a grey ramp), at `fps`."""
    frames = np.stack([np.full((48, 64, 3), (4 * i) % 256, np.uint8) for i in range(count)])
    durable.write_preview_mp4(path, frames, fps)
    return path


def run_job(spec: JobSpec, components, job_dir: Path, should_cancel=None) -> dict:
    GenerationJob(prepare_inputs(spec), components, job_dir).run(should_cancel)
    return json.loads((job_dir / "manifest.json").read_text())


def frames_on_disk(job_dir: Path, manifest: dict) -> np.ndarray:
    return np.stack([media.read_image(job_dir / f["file"])[0] for f in manifest["frames"]])


# -- planning and schedules ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 7, 65, 81, 82, 96, 157, 158, 400])
def test_segments_give_every_frame_exactly_one_output(count):
    segments = plan_segments(count)
    produced = [k for s in segments for k in s.new_frames]
    assert produced == list(range(count))
    for s in segments:
        assert s.length <= 81 and (s.padded_length - 1) % 4 == 0 and s.padded_length >= s.length
        assert s.history == (5 if s.index else 0)
        assert s.history_latent_frames == (2 if s.index else 0)


def test_long_clip_segments_overlap_by_five():
    assert [(s.start, s.end) for s in plan_segments(160)] == [(0, 81), (76, 157), (152, 160)]


@pytest.mark.parametrize(
    "solver, start, shift", [("unipc", 0.999, 3.0), ("euler", 1.0, 5.0)]
)
def test_schedules_follow_the_reference(solver, start, shift):
    steps = 8
    scheduler = make_scheduler(SamplerSettings(steps=steps, guidance=1.0, shift=shift, solver=solver))
    sigma = np.linspace(start, 0.0, steps + 1)[:steps]
    expected = shift * sigma / (1 + (shift - 1) * sigma) * 1000
    np.testing.assert_allclose(scheduler.timesteps.double().numpy(), expected, atol=1.0)
    assert len(scheduler.timesteps) == steps


def test_colour_match_moves_overlap_statistics_onto_the_target():
    torch.manual_seed(0)
    target = torch.rand(3, 5, 8, 8) * 0.5 - 0.2
    video = torch.rand(3, 9, 8, 8) * 0.8 + 0.1
    matched = match_colours(video, video[:, :5], target)
    torch.testing.assert_close(matched[:, :5].mean(dim=(1, 2, 3)), target.mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(matched[:, :5].std(dim=(1, 2, 3)), target.std(dim=(1, 2, 3)), atol=1e-4, rtol=0)


# -- whole jobs ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_clip_gives_one_frame_per_driving_frame(tiny, tmp_path):
    spec = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), prompt="a dancer", **SMALL)
    manifest = run_job(spec, tiny, tmp_path / "job")
    frames = frames_on_disk(tmp_path / "job", manifest)
    assert frames.shape == (65, 64, 128, 3)
    assert [(f["source_frame"], f["source_time"]) for f in manifest["frames"]] == [(k, k / 16) for k in range(65)]
    assert manifest["status"] == "done" and manifest["seed"] == 3
    assert manifest["model"]["noise_only"] and "noise" in manifest["warnings"][0]
    assert any("no driving mask" in w for w in manifest["warnings"])
    assert any("no mask for the reference" in w for w in manifest["warnings"])
    assert manifest["sampler"] == {"steps": 2, "guidance": 5.0, "shift": 3.0, "solver": "unipc"}
    assert manifest["inputs"][str(DRIVING)] == durable.file_sha256(DRIVING)
    assert set(manifest["timings"]) >= {"encode", "sample", "decode"}
    assert media.probe_clip(tmp_path / "job" / "preview.mp4").frame_count == 65


@pytest.mark.slow
@pytest.mark.parametrize("fps, count, outputs", [(24.0, 48, 32), (30.0, 60, 32)])
def test_other_frame_rates_are_resampled_to_the_model_rate(tiny, tmp_path, fps, count, outputs):
    clip = made_up_clip(tmp_path / f"clip_{int(fps)}.mp4", fps, count)
    spec = JobSpec(driving=str(clip), reference=str(REFERENCE), **SMALL)
    manifest = run_job(spec, tiny, tmp_path / "job")
    assert len(manifest["frames"]) == outputs
    for k, frame in enumerate(manifest["frames"]):
        assert frame["source_time"] == pytest.approx(k / 16)
        assert frame["source_frame"] == int(k * fps / 16 + 1e-6)
    assert frames_on_disk(tmp_path / "job", manifest).shape[0] == outputs


@pytest.mark.slow
def test_interrupted_long_job_resumes_to_the_same_frames(tiny, tmp_path):
    clip = made_up_clip(tmp_path / "long.mp4", 30.0, 180)  # 96 model frames: two segments
    spec = JobSpec(driving=str(clip), reference=str(REFERENCE), color_match=True, **SMALL)
    whole = run_job(spec, tiny, tmp_path / "whole")
    assert len(whole["segments"]) == 2

    def cancel_in_second_segment():
        return (tmp_path / "resumed" / "frames" / "frame_000080.png").exists()

    with pytest.raises(Cancelled):
        run_job(spec, tiny, tmp_path / "resumed", should_cancel=cancel_in_second_segment)
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert state["completed_segments"] == 1 and state["status"] == "cancelled"
    assert sorted(p.name for p in (tmp_path / "resumed" / "frames").iterdir())[-1] == "frame_000080.png"

    resumed = run_job(spec, tiny, tmp_path / "resumed")
    assert resumed["seed"] == whole["seed"]
    np.testing.assert_array_equal(frames_on_disk(tmp_path / "resumed", resumed), frames_on_disk(tmp_path / "whole", whole))


@pytest.mark.slow
def test_a_job_directory_never_takes_another_job(tiny, tmp_path):
    spec = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), frame_end=5, **SMALL)
    run_job(spec, tiny, tmp_path / "job")
    other = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), frame_end=5, prompt="other", **SMALL)
    with pytest.raises(JobDirectoryError, match="holds a different job"):
        run_job(other, tiny, tmp_path / "job")


@pytest.mark.slow
def test_replacement_with_alpha_reference_and_extra_view(tiny, tmp_path):
    rgba = np.zeros((96, 64, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[20:80, 16:48, 3] = 255
    durable.write_png_atomic(tmp_path / "character.png", rgba)
    spec = JobSpec(
        driving=str(DRIVING), reference=str(tmp_path / "character.png"), mode="replace", frame_end=9,
        extra_references=[str(REFERENCE)], height=128, width=64, steps=2, seed=1,
    )
    inputs = prepare_inputs(spec)
    assert (inputs.height, inputs.width) == (128, 64)
    background = inputs.reference_mask[0, 0]
    assert tuple(background) == (0, 0, 0)  # replacement: reference background hidden
    assert tuple(inputs.reference_mask[64, 32]) == (0, 0, 255)  # identity 1 from the alpha
    manifest = run_job(spec, tiny, tmp_path / "job")
    assert len(manifest["frames"]) == 9
    assert not any("reference image" in w for w in manifest["warnings"])


def test_orientation_follows_the_reference():
    portrait = FOOTAGE / "mimicmotion_demo1.jpg"
    assert (prepare_inputs(JobSpec(driving=str(DRIVING), reference=str(portrait))).height,) == (896,)
    assert prepare_inputs(JobSpec(driving=str(DRIVING), reference=str(REFERENCE))).width == 896
    assert prepare_inputs(JobSpec(driving=str(DRIVING), reference=str(REFERENCE), resolution="704p")).width == 1280


# -- bad input: one line, before any model --------------------------------------------------------


def bad_input_cases(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    short_mask = made_up_clip(tmp_path / "mask.mp4", 16.0, 10)
    return {
        "missing driving": (["--driving", str(tmp_path / "nope.mp4")], "driving clip not found"),
        "unreadable": (["--driving", str(broken)], "cannot decode"),
        "mask length": (["--driving-mask", str(short_mask)], "driving mask has 10 frames but the driving clip has 65"),
        "size": (["--height", "100", "--width", "128"], "multiples of 32"),
        "empty range": (["--start", "100"], "the driving clip has 65 frames"),
        "missing reference": (["--reference", str(tmp_path / "nope.png")], "reference image not found"),
        "attention": (["--attention", "flashy"], "--attention flashy is not a diffusers attention backend"),
    }


def test_bad_input_is_one_line_and_loads_no_model(tmp_path, capsys, monkeypatch):
    import backend.loaders.components

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(backend.loaders.components, "load_components", no_model)
    base = {"--driving": str(DRIVING), "--reference": str(REFERENCE), "--out": str(tmp_path / "out")}
    for name, (override, message) in bad_input_cases(tmp_path).items():
        args = dict(base)
        args.update(dict(zip(override[::2], override[1::2])))
        status = cli.main(["generate", "--model", "tiny", *[x for kv in args.items() for x in kv]])
        err = capsys.readouterr().err.strip()
        assert status == cli.EXIT_BAD_INPUT, name
        assert err.startswith("error: ") and message in err and "\n" not in err, (name, err)


@pytest.mark.slow
def test_cli_in_a_real_process(tmp_path):
    env_python = sys.executable
    helped = subprocess.run([env_python, "-m", "backend", "generate", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0
    for option in ("--driving-mask", "--reference-mask", "--mode", "--weights", "--model", "--offload",
                   "--storage", "--compute", "--lora", "--fps", "--extra-reference", "--vae-tiling", "--attention",
                   "--compile"):
        assert option in helped.stdout
    bad = subprocess.run(
        [env_python, "-m", "backend", "generate", "--driving", str(tmp_path / "x.mp4"), "--reference",
         str(REFERENCE), "--out", str(tmp_path / "o"), "--model", "tiny"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "not found" in bad.stderr


# -- real weights folders, built tiny ------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_folders(tmp_path_factory):
    """Weights folders as users assemble them, with tiny models: official encoder files beside a
    converted transformer, and a diffusers Wan folder beside a community single-file transformer."""
    from ckpt_builders import write_diffusers_encoders, write_official_encoders, write_single_file
    from scail_fixtures import TINY_WEIGHTS, tiny_config

    from backend.loaders.convert import convert
    from backend.models.tiny import tiny_encoders

    encoders = tiny_encoders()
    official = write_official_encoders(tmp_path_factory.mktemp("official"), encoders)
    convert(TINY_WEIGHTS, official / "transformer", dtype=torch.float32)
    community = write_diffusers_encoders(tmp_path_factory.mktemp("community"), encoders)
    write_single_file(community / "wan2.1_14B_SCAIL_2_fp16.safetensors", metadata={"config": json.dumps(tiny_config())})
    return {"official": official, "community": community}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["official", "community"])
def test_generate_with_a_weights_folder(weights_folders, layout, tmp_path, capsys):
    out = tmp_path / "job"
    status = cli.main([
        "generate", "--driving", str(DRIVING), "--reference", str(REFERENCE), "--out", str(out),
        "--weights", str(weights_folders[layout]), "--device", "cpu", "--dtype", "fp32",
        "--height", "64", "--width", "128", "--steps", "2", "--end", "9", "--seed", "5",
    ])
    assert status == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["noise_only"] is False
    assert not any("noise" in w for w in manifest["warnings"])
    assert Path(manifest["model"]["files"][0]).is_relative_to(weights_folders[layout])
    # Which file each part was read from, and how the transformer stores its weights.
    components = manifest["model"]["components"]
    assert all(Path(path).is_relative_to(weights_folders[layout]) for path in components.values()), components
    assert "transformer" in components and "vae" in components
    assert manifest["model"]["quantization"].get("format") not in (None, "gguf")
    assert frames_on_disk(out, manifest).shape == (9, 64, 128, 3)


@pytest.mark.slow
def test_loras_are_merged_and_recorded(tmp_path, capsys):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    lora = {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 48, generator=g),
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(48, 4, generator=g),
    }
    save_file(lora, tmp_path / "style.safetensors")
    save_file({"diffusion_model.nowhere.lora_down.weight": torch.zeros(4, 48)}, tmp_path / "other.safetensors")
    common = ["generate", "--driving", str(DRIVING), "--reference", str(REFERENCE), "--model", "tiny",
              "--height", "64", "--width", "128", "--steps", "2", "--end", "5", "--seed", "2"]
    assert cli.main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "lora"), "--lora", f"{tmp_path / 'style.safetensors'}:0.5"]) == 0
    manifest = json.loads((tmp_path / "lora" / "manifest.json").read_text())
    assert manifest["model"]["loras"] == ["style.safetensors: 1 layers, strength 0.5"]
    assert manifest["job"]["loras"] == [{"path": str(tmp_path / "style.safetensors"), "strength": 0.5}]
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert not np.array_equal(frames_on_disk(tmp_path / "lora", manifest), frames_on_disk(tmp_path / "plain", plain))

    capsys.readouterr()
    status = cli.main([*common, "--out", str(tmp_path / "bad"), "--lora", str(tmp_path / "other.safetensors")])
    err = capsys.readouterr().err.strip()
    assert status == cli.EXIT_BAD_INPUT and "match nothing" in err and "\n" not in err


@pytest.mark.slow
def test_command_line_starts_without_torch_or_numpy():
    """`--version` and every `--help` build the parser only: the add-on's backend check must stay fast,
    and must answer in an environment that lacks the heavy packages."""
    blocker = "import sys; sys.modules.update(numpy=None, torch=None, cv2=None); from backend.cli import main; "
    for argv in (["--version"], *([command, "--help"] for command in
                                  ("generate", "serve", "convert", "doctor", "download", "masks", "demo"))):
        run = subprocess.run([sys.executable, "-c", blocker + f"main({argv!r})"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, (argv, run.stderr[-800:])


# -- cancelling outside sampling -------------------------------------------------------------------


def test_the_vae_calls_back_before_every_chunk_and_its_numbers_do_not_change(tiny):
    vae = tiny.encoders.vae
    torch.manual_seed(0)
    video = torch.rand(3, 9, 32, 64) * 2 - 1
    chunks = []
    latents = vae.encode(video, before_chunk=lambda: chunks.append("encode"))
    torch.testing.assert_close(latents, vae.encode(video), atol=0, rtol=0)
    decoded = vae.decode(latents, before_chunk=lambda: chunks.append("decode"))
    torch.testing.assert_close(decoded, vae.decode(latents), atol=0, rtol=0)
    assert chunks == ["encode"] * 3 + ["decode"] * 3  # 1 + 4 + 4 frames in, 3 latent frames out


@pytest.mark.slow
@pytest.mark.parametrize("phase, part", [("encode", "encoder"), ("decode", "decoder")])
def test_a_cancel_during_encode_or_decode_stops_before_the_next_vae_chunk(tiny, tmp_path, phase, part):
    spec = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), frame_end=33, **SMALL)  # 9 latent frames
    cancelled = []
    chunks_after_cancel = []

    def events(kind, **fields):
        if kind == "progress" and fields["phase"] == phase:
            cancelled.append(True)

    vae_part = getattr(tiny.encoders.vae.model, part)
    counting = vae_part.register_forward_hook(lambda *_: chunks_after_cancel.append(1) if cancelled else None)
    try:
        with pytest.raises(Cancelled):
            GenerationJob(prepare_inputs(spec), tiny, tmp_path / "job", events=events).run(lambda: bool(cancelled))
    finally:
        counting.remove()
    assert cancelled and chunks_after_cancel == []
    assert json.loads((tmp_path / "job" / "state.json").read_text())["status"] == "cancelled"
    assert not list((tmp_path / "job" / "frames").iterdir())
