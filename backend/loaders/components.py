"""Loading the models a job needs: the SCAIL-2 transformer and the encoders/VAE.

`load_components("tiny")` builds the random-weight tiny profile (CPU, seconds,
output is noise); any other value is a weights folder. Memory options map to
diffusers' own mechanisms: fp8 storage is layerwise casting, offloading is
model CPU offload or group offloading. fp8 compute (`models.fp8_linear`) runs the blocks'
linear layers as fp8 matmuls.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..models.encoders import Encoders
from ..models.transformer_scail2 import SCAIL2Transformer3DModel
from .errors import CheckpointError, first_line

TINY = "tiny"
OFFLOAD_MODES = ("none", "model", "group")
STORAGE_MODES = ("bf16", "fp8")
COMPUTE_MODES = ("bf16", "fp8")


@dataclass(frozen=True)
class MemoryOptions:
    dtype: torch.dtype = torch.bfloat16
    storage: str = "bf16"  # "fp8": weights stored in float8, computed in dtype
    offload: str = "none"
    vae_tiling: bool = False
    attention_backend: str | None = None  # None: the probed fastest on CUDA, native on the CPU; "auto": probed
    compile: bool = False  # regional torch.compile of the blocks (`models.compile`)
    compute: str = "bf16"  # "fp8": the blocks' linear layers compute in float8 (Float8Linear)


@dataclass
class Components:
    transformer: SCAIL2Transformer3DModel
    encoders: Encoders
    device: torch.device
    label: str
    noise_only: bool
    files: list[str] = field(default_factory=list)
    offload: str = "none"
    loras: list[str] = field(default_factory=list)  # one report line per merged LoRA file
    # How the transformer file stores its weights (`Checkpoint.quantization`): {"format": "gguf" |
    # "fp8_scaled" | a dtype, "file_type": "Q4_K_M" (GGUF), "types": {type: count}, "families": {...}}.
    quantization: dict = field(default_factory=dict)
    component_files: dict = field(default_factory=dict)  # component -> the file it was read from

    @contextmanager
    def sampling(self):
        """The transformer on the device while sampling; with model offload it goes back to CPU after."""
        if self.offload != "model":
            yield self.transformer
            return
        self.transformer.to(self.device)
        try:
            yield self.transformer
        finally:
            self.transformer.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


@contextmanager
def model_files_read():
    """Around loading the model: an OSError or ValueError reading the files the user named (a
    corrupt checkpoint, a missing shard) is their input, a `CheckpointError`, for the CLI and the
    worker alike (`backend.errors`); running out of memory and anything else stay ours."""
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the model files: {first_line(exc)}") from exc


def load_components(
    model: str,
    device: str | torch.device = "cpu",
    memory: MemoryOptions | None = None,
    loras: list[tuple[str, float]] = (),
) -> Components:
    """The transformer and encoders for `model` ("tiny" or a weights folder) on `device`.

    `loras` ((path, strength) pairs) are merged into the transformer's weights before
    fp8 storage or offloading is applied.
    """
    from .lora import merge_loras

    device = torch.device(device)
    memory = memory or MemoryOptions()
    if model == TINY:
        from ..models.tiny import tiny_encoders, tiny_transformer

        transformer, encoders = tiny_transformer(), tiny_encoders()
        report = merge_loras(transformer, list(loras))
        apply_memory_options(transformer, device, memory)
        return Components(transformer.eval(), encoders.to(device), device, encoders.label, noise_only=True,
                          offload=memory.offload, loras=report)

    from .checkpoints import load_transformer
    from .encoder_folders import load_encoders
    from .layouts import find_transformer

    weights = Path(model)
    transformer_path = find_transformer(weights)
    transformer = load_transformer(transformer_path, dtype=memory.dtype)
    report = merge_loras(transformer, list(loras))
    encoders = load_encoders(weights, device=device, dtype=memory.dtype)
    apply_memory_options(transformer, device, memory)
    if memory.vae_tiling:
        encoders.vae.enable_tiling()
    return Components(
        transformer.eval(), encoders, device, f"SCAIL-2 14B from {weights}", noise_only=False,
        files=[str(transformer_path), *(path for path, _ in loras)], offload=memory.offload, loras=report,
        quantization=dict(getattr(transformer, "quantization", {})),
        component_files=chosen_files(weights),
    )


def chosen_files(weights: Path) -> dict[str, str]:
    """{part: the file or folder it was read from} (`resolve.resolve_components`), for the manifest."""
    from .resolve import PARTS, resolve_components

    parts = resolve_components(weights)
    return {part: parts[part]["chosen"]["path"] for part in PARTS if parts[part]["chosen"]}


def apply_memory_options(transformer: SCAIL2Transformer3DModel, device: torch.device, memory: MemoryOptions) -> None:
    """Place the transformer on `device` under the chosen storage and offload modes."""
    backend = memory.attention_backend
    if backend == "auto" or (backend is None and device.type == "cuda"):
        from ..models.attention_choice import fastest_attention

        backend = fastest_attention(device)
    if backend:
        transformer.set_attention_backend(backend)
    if memory.compute == "fp8":
        # Stores the blocks' weights in fp8 too, so layerwise casting has nothing left to do.
        from ..models.fp8_linear import enable_fp8_compute

        enable_fp8_compute(transformer)  # refuses a GGUF transformer (ValueError)
    elif memory.storage == "fp8" and not getattr(transformer, "is_quantized", False):
        # A GGUF transformer is already stored quantised; fp8 casting would destroy its blocks.
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=memory.dtype)
    if memory.offload == "group":
        # On CUDA the next block group is copied from pinned memory on a side stream while the
        # current one computes; `record_stream` lets its memory be reused without a sync.
        streams = device.type == "cuda"
        transformer.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=1, use_stream=streams, record_stream=streams, non_blocking=streams,
        )
    elif memory.offload == "model":
        # The transformer lives on the GPU only while sampling: Components.sampling().
        transformer.to("cpu")
    else:
        transformer.to(device)
    if memory.compile:
        from ..models.compile import compile_blocks

        compile_blocks(transformer)
