"""A segment's history is the previous segment's decoded frames; colour matching touches only what is
written (issue 16, "Official numerics"). Tiny profile, three 9-frame segments overlapping by 5."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scail_fixtures import FOOTAGE

from backend.loaders.components import MemoryOptions, load_components
from backend.pipeline import durable, media
from backend.pipeline.generate import GenerationJob
from backend.pipeline.history import HistoryStore
from backend.pipeline.inputs import prepare_inputs
from backend.pipeline.segments import plan_segments
from protocol import JobSpec

REFERENCE = FOOTAGE / "scail_001_ref.jpg"


@pytest.fixture(scope="module")
def tiny():
    return load_components("tiny", "cpu", MemoryOptions(dtype=torch.float32))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """17 frames of changing colour, so each segment's statistics differ from the one before."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    ramp = np.linspace(0, 255, 17).astype(np.uint8)
    frames = np.stack([np.dstack([np.full((32, 64), v, np.uint8), np.full((32, 64), 255 - v, np.uint8),
                                  np.full((32, 64), 128, np.uint8)]) for v in ramp])
    durable.write_preview_mp4(path, frames, 16.0)
    return path


def run_recorded(tiny, clip, job_dir, color_match: bool) -> dict:
    """Run a DPM++ job (guidance 0.5: both passes) in 9-frame segments, recording per segment the
    decoded video, the history pixels it was given and the clean history latents the sampler got."""
    spec = JobSpec(driving=str(clip), reference=str(REFERENCE), height=32, width=64, steps=1, seed=5,
                   sampler="dpm++", guidance=0.5, color_match=color_match)
    job = GenerationJob(prepare_inputs(spec), tiny, job_dir)
    job.segments = plan_segments(17, segment_frames=9, overlap=5)  # (0, 9), (4, 13), (8, 17)
    seen = {"video": [], "history": [], "latents": []}
    generate, conditioning = job._generate_segment, job._conditioning

    def spy_generate(segment, context, noise, history):
        seen["video"].append(generate(segment, context, noise, history))
        return seen["video"][-1]

    def spy_conditioning(segment, context, history):
        cond = conditioning(segment, context, history)
        seen["history"].append(history)
        seen["latents"].append(cond.history_latents)
        return cond

    job._generate_segment, job._conditioning = spy_generate, spy_conditioning
    job.run()
    manifest = json.loads((job_dir / "manifest.json").read_text())
    seen["frames"] = np.stack([media.read_image(job_dir / f["file"])[0] for f in manifest["frames"]])
    seen["manifest"] = manifest
    return seen


def test_history_is_the_decoded_tail_and_colour_matching_only_changes_written_frames(tiny, clip, tmp_path):
    on = run_recorded(tiny, clip, tmp_path / "on", color_match=True)
    off = run_recorded(tiny, clip, tmp_path / "off", color_match=False)

    # Each later segment conditions on the last 5 frames the VAE decoded for the one before, as decoded.
    for runs in (on, off):
        assert runs["history"][0] is None and runs["latents"][0] is None
        for k in (1, 2):
            torch.testing.assert_close(runs["history"][k], runs["video"][k - 1][:, 4:9], atol=0, rtol=0)
    # What the model sees is the same with colour matching on or off ...
    for k in (1, 2):
        torch.testing.assert_close(on["latents"][k], off["latents"][k], atol=0, rtol=0)
        torch.testing.assert_close(on["video"][k], off["video"][k], atol=0, rtol=0)
    # ... and only the frames written after the first segment differ.
    np.testing.assert_array_equal(on["frames"][:9], off["frames"][:9])
    assert np.abs(on["frames"][9:].astype(int) - off["frames"][9:].astype(int)).max() > 0

    manifest = on["manifest"]
    assert manifest["sampler"]["solver"] == "dpm++" and manifest["sampler"]["guidance"] == 0.5
    assert manifest["numerics"]["color_match"] == "a post-process of the written frames only"
    assert off["manifest"]["numerics"]["color_match"] == "off"
    assert manifest["numerics"]["guidance"].startswith("uncond + g (cond - uncond)")
    assert not (tmp_path / "on" / "history").exists()  # a finished job keeps no history file


def test_the_history_store_keeps_the_newest_tail_exactly(tmp_path):
    store = HistoryStore(tmp_path)
    tails = [torch.randn(3, 5, 4, 6).to(torch.bfloat16) for _ in range(3)]
    for k, tail in enumerate(tails):
        store.save(k, tail)
        store.forget_before(k)
    assert store.load(0) is None and store.load(1) is None
    assert torch.equal(store.load(2), tails[2]) and store.load(2).dtype == torch.bfloat16
    store.path(2).write_bytes(b"not safetensors")
    assert store.load(2) is None  # a damaged file is a missing one: the job falls back to the written frames
