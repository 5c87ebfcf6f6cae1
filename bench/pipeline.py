"""A whole generation, timed per stage: 81 frames at 512p with the fast preset, random weights.

    python bench/pipeline.py                        # CUDA: 14B transformer, umT5-XXL, CLIP ViT-H, Wan VAE
    python bench/pipeline.py --device cpu --small   # the tiny profile at 128x224

Stages come from the job's manifest (encode, read, sample, decode, preview).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import SCAIL2_14B_CONFIG, emit, environment, random_transformer

from backend.loaders.components import Components, MemoryOptions, apply_memory_options, load_components
from backend.pipeline import durable
from backend.pipeline.generate import GenerationJob
from backend.pipeline.inputs import prepare_inputs
from protocol import JobSpec


def _random_on(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    module.to_empty(device=device)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.02)
    return module.to(dtype).eval().requires_grad_(False)


def full_size_components(device: torch.device, memory: MemoryOptions) -> Components:
    """The production architecture with random weights made on the device."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from backend.models.encoders import Encoders, ImageEncoder, TextEncoder, VideoVAE
    from backend.models.tiny import tiny_tokenizer

    with torch.device("meta"):
        text = UMT5EncoderModel(UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                           num_heads=64, feed_forward_proj="gated-gelu"))
        image = CLIPVisionModel(CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                 num_attention_heads=16, image_size=224, patch_size=14))
        vae = AutoencoderKLWan()
    encoders = Encoders(
        text=TextEncoder(_random_on(text, device, torch.bfloat16), tiny_tokenizer()),
        image=ImageEncoder(_random_on(image, device, torch.float16)),
        vae=VideoVAE(_random_on(vae, device, torch.float32)),
        label="random full-size weights (benchmark)",
    )
    # Resident weights are made on the GPU (seconds); offloaded ones start in CPU memory, as after loading.
    home = device if memory.offload == "none" else torch.device("cpu")
    transformer = random_transformer(SCAIL2_14B_CONFIG, home, memory.dtype)
    apply_memory_options(transformer, device, memory)
    return Components(transformer, encoders, device, encoders.label, noise_only=True, offload=memory.offload)


def synthetic_clip(folder: Path, frames: int = 81) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    clip = np.stack([np.roll(rng.integers(0, 255, (540, 960, 3), np.uint8), 8 * i, axis=1) for i in range(frames)])
    durable.write_preview_mp4(folder / "driving.mp4", clip, 16.0)
    durable.write_png_atomic(folder / "reference.png", clip[0])
    return folder / "driving.mp4", folder / "reference.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--storage", choices=["bf16", "fp8"], default="bf16")
    parser.add_argument("--offload", choices=["none", "model", "group"], default="none")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = torch.device(args.device)
    memory = MemoryOptions(dtype=torch.float32 if args.small else torch.bfloat16,
                           storage=args.storage, offload=args.offload)
    start = time.perf_counter()
    components = load_components("tiny", device, memory) if args.small else full_size_components(device, memory)
    load_seconds = time.perf_counter() - start
    size = dict(height=128, width=224) if args.small else {}
    with tempfile.TemporaryDirectory() as tmp:
        driving, reference = synthetic_clip(Path(tmp))
        spec = JobSpec(driving=str(driving), reference=str(reference), preset="fast", seed=0, **size)
        start = time.perf_counter()
        GenerationJob(prepare_inputs(spec), components, Path(tmp) / "job").run()
        total = time.perf_counter() - start
        manifest = json.loads((Path(tmp) / "job" / "manifest.json").read_text())
    emit(environment(device) | {
        "bench": "pipeline", "size": manifest["size"], "frames": len(manifest["frames"]),
        "preset": "fast", "storage": args.storage, "offload": args.offload,
        "stages": {k: round(v, 2) for k, v in manifest["timings"].items()},
        "total_seconds": round(total, 2), "model_setup_seconds": round(load_seconds, 2),
        "peak_memory_gib": round(manifest["peak_memory_bytes"] / 2**30, 2),
    }, args.out)


if __name__ == "__main__":
    main()
