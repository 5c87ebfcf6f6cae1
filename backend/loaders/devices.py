"""Where a job's models run: the device, and the memory options its models are loaded with.

Kept free of module-level torch imports: the command line and the segmentation jobs import it
without paying for the model stack.
"""

from __future__ import annotations


def resolve_device(device: str | None) -> str:
    """`device` when given, else "cuda" when a GPU is available, else "cpu"."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def memory_options(settings: dict, device: str):
    """MemoryOptions from plain settings (`options.memory_settings`); the dtype defaults to bf16 on
    CUDA and fp32 on CPU. ValueError (one line) for fp8 compute on a device that cannot run it."""
    import torch

    from .components import MemoryOptions

    settings = dict(settings)
    dtype = settings.pop("dtype", None) or ("bf16" if device.startswith("cuda") else "fp32")
    check_memory_settings(settings, device)
    return MemoryOptions(dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[dtype], **settings)


def check_memory_settings(settings: dict, device: str) -> None:
    """Raise ValueError (one line) for a device or memory option that cannot work, before any model loads."""
    if settings.get("compute") == "fp8":
        import torch

        from ..models.fp8_linear import fp8_compute_support

        reason = fp8_compute_support(torch.device(device))
        if reason:
            raise ValueError(f"--compute fp8 is not available on {device}: {reason}")
    backend = settings.get("attention_backend")
    if backend and backend != "auto":
        from diffusers.models.attention_dispatch import AttentionBackendName

        names = [name.value for name in AttentionBackendName]
        if backend not in names:
            raise ValueError(f"--attention {backend} is not a diffusers attention backend; use auto or one of "
                             f"{', '.join(sorted(n for n in names if not n.startswith('_')))}")
