"""Which context-parallel scheme a run uses, and turning it on for the SCAIL-2 transformer.

The scheme is diffusers' (`ContextParallelConfig`); the model's `_cp_plan` says where the
sequence is split and gathered. The choice, for N ranks and the model's attention heads:

* Ulysses (all-to-all over heads) when N divides the heads and the attention backend takes a
  key mask (native SDPA, cuDNN);
* ring attention (`ring_anything`, any length) when N does not divide the heads and the backend
  returns the log-sum-exp (flash, cuDNN, sage), or when asked for;
* otherwise Ulysses "anything" (heads, and without a mask the sequence, split unevenly).

With a mask-taking backend the sequence is padded to a multiple of N and the padding masked
out (`SCAIL2Transformer3DModel._sequence_padding` says why that is exact). The uneven splits
of the "anything" modes need NCCL (gloo gathers only equal shapes); they only arise on CUDA,
where the maskless and LSE kernels live.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig
from diffusers.models._modeling_parallel import ParallelConfig

from ..models.transformer_scail2 import MASKED_BACKENDS, SCAIL2Attention

STRATEGIES = ("auto", "ulysses", "ring")
# diffusers backends (`--attention`) whose kernels return the log-sum-exp that ring attention merges with
LSE_BACKENDS = {"flash", "flash_hub", "flash_varlen_hub", "_flash_3_hub", "_flash_3_varlen_hub",
                "_native_cudnn", "_native_flash", "sage", "sage_hub"}


def attention_backend(model) -> str | None:
    """The backend `set_attention_backend` chose for the model's attention (None: diffusers' default)."""
    backend = model.blocks[0].self_attn.processor._attention_backend
    return None if backend is None else getattr(backend, "value", str(backend))


def choose_config(world_size: int, heads: int, backend: str | None, strategy: str = "auto") -> ContextParallelConfig:
    """The ContextParallelConfig for `world_size` ranks (module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if world_size < 2:
        raise ValueError("context parallelism needs at least 2 ranks")
    if strategy == "ring" or (strategy == "auto" and heads % world_size and backend in LSE_BACKENDS):
        if backend not in LSE_BACKENDS:
            raise ValueError(f"ring attention needs an attention backend that returns the log-sum-exp "
                             f"({', '.join(sorted(LSE_BACKENDS))}); this run uses {backend or 'native'}")
        return ContextParallelConfig(ring_degree=world_size, ring_anything=True)
    if heads % world_size == 0 and backend in MASKED_BACKENDS:
        return ContextParallelConfig(ulysses_degree=world_size)
    return ContextParallelConfig(ulysses_degree=world_size, ulysses_anything=True)


def describe_config(config: ContextParallelConfig) -> dict:
    """The config as plain data (what rank 0 sends the other ranks)."""
    return {"ring_degree": config.ring_degree, "ulysses_degree": config.ulysses_degree,
            "ring_anything": config.ring_anything, "ulysses_anything": config.ulysses_anything}


def enable_context_parallel(model, config: ContextParallelConfig) -> None:
    """`model.enable_parallelism(config=config)`, on a CPU-only build too.

    diffusers 0.42 takes the rank's device from `torch.accelerator.device_count()`, which is 0
    on a CPU-only build (a ZeroDivisionError). There the same steps run with the CPU as the
    device: the mesh, the config's setup, the processors' `_parallel_config`, the plan's hooks.
    """
    if torch.accelerator.device_count() > 0:
        model.enable_parallelism(config=config)
        return
    from diffusers.hooks.context_parallel import apply_context_parallel
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", config.mesh_shape, mesh_dim_names=config.mesh_dim_names)
    parallel = ParallelConfig(context_parallel_config=config)
    parallel.setup(dist.get_rank(), dist.get_world_size(), torch.device("cpu"), mesh=mesh)
    model._parallel_config = parallel
    for module in model.modules():
        if isinstance(module, SCAIL2Attention):
            module.processor._parallel_config = parallel
    apply_context_parallel(model, config, model._cp_plan)
