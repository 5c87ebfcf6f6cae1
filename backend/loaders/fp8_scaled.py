"""ComfyUI's scaled-fp8 safetensors files, read back to floating point.

The format, as ComfyUI's loaders read it (`comfy/ops.py`: the legacy `scaled_fp8` ops and
`mixed_precision_ops`; `comfy/quant_ops.py`: `TensorCoreFP8Layout`):

* older files (``*_fp8_e4m3fn_scaled``, e.g. ``umt5_xxl_fp8_e4m3fn_scaled.safetensors``): a
  marker tensor ``scaled_fp8`` (its dtype is the fp8 type used), each quantised ``X.weight`` in
  float8 with a float32 ``X.scale_weight``; ``X.scale_input`` only matters to fp8 matmul kernels;
* newer files: ``X.weight`` in float8 with ``X.weight_scale`` and ``X.comfy_quant``, a uint8
  tensor holding the UTF-8 JSON ``{"format": "float8_e4m3fn", ...}``; ``X.input_scale`` as above.

Either way the weight is ``weight.float() * scale``, the scale one value per tensor (ComfyUI's
layout) or, in some third-party files, one per output row. Formats other than float8 (nvfp4,
int8 and ``mxfp8``, whose block layout ComfyUI's public loader code does not define) are refused.
"""

from __future__ import annotations

import json

import torch

from .errors import CheckpointError

MARKER = "scaled_fp8"
WEIGHT_SCALES = (".scale_weight", ".weight_scale")
IGNORED = (".scale_input", ".input_scale", ".comfy_quant")
FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)
FLOAT8_FORMATS = ("float8_e4m3fn", "float8_e5m2")
# Worst relative rounding of e4m3: 3 mantissa bits, so half a step is 2^-4 of the value's binade.
E4M3_HALF_STEP = 2.0 ** -4


def comfy_quant_format(tensor: torch.Tensor) -> str:
    """The ``format`` of a ``.comfy_quant`` tensor (UTF-8 JSON as uint8), '' when it has none."""
    try:
        info = json.loads(bytes(tensor.flatten().tolist()).decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        return "unreadable"
    return str(info.get("format", "")) if isinstance(info, dict) else "unreadable"


def refuse_format(where, key: str, fmt: str) -> None:
    """Raise CheckpointError for a ComfyUI quantisation other than per-tensor float8."""
    if fmt in FLOAT8_FORMATS:
        return
    if fmt == "mxfp8":
        why = ("its block-scale layout is not documented in ComfyUI's public loader code, so it is not read "
               "here; use the fp16 or fp8_scaled file")
    else:
        why = "only ComfyUI's per-tensor float8 (fp8_scaled) is read; use the fp16 or fp8_scaled file"
    raise CheckpointError(f"{where}: quantisation format {fmt!r} ({key}): {why}")


def dequantize(where, name: str, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``weight.float() * scale``, the scale per tensor or per output row (float32 result)."""
    weight = weight.float()
    if scale is None:
        return weight
    scale = scale.float()
    if scale.numel() == 1:
        return weight * scale.reshape(())
    if weight.dim() and scale.numel() == weight.shape[0]:
        return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    raise CheckpointError(f"{where}: the scale of {name} has shape {tuple(scale.shape)}; only per-tensor or "
                          "per-row fp8 scales are supported")


def is_scaled(names) -> bool:
    return any(n == MARKER or n.endswith(MARKER) or n.endswith(WEIGHT_SCALES) for n in names)


def dequantize_state_dict(where, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ComfyUI (scaled-)fp8 state dict as float32 weights under the plain names.

    Unscaled float8 weights are widened as they are; everything not float8 is returned unchanged.
    """
    for key, tensor in tensors.items():
        if key.endswith(".comfy_quant"):
            refuse_format(where, key, comfy_quant_format(tensor))
    scales = {}
    for key in tensors:
        if key.endswith(WEIGHT_SCALES):
            scales[key.rsplit(".", 1)[0] + ".weight"] = key
    out = {}
    for key, tensor in tensors.items():
        if key == MARKER or key.endswith(WEIGHT_SCALES) or key.endswith(IGNORED) or key.endswith("." + MARKER):
            continue
        if key in scales or tensor.dtype in FLOAT8:
            scale = tensors[scales[key]] if key in scales else None
            out[key] = dequantize(where, key, tensor, scale)
        else:
            out[key] = tensor
    orphans = [scales[w] for w in scales if w not in tensors]
    if orphans:
        raise CheckpointError(f"{where}: scale {orphans[0]} has no weight")
    return out


def quantize_e4m3(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's per-tensor quantisation: scale = max|W| / 448, weight = W / scale in e4m3.

    Each dequantised value is then within half an e4m3 step of the original: at most
    |w| * 2^-4 for normal values, and 2^-10 * scale in e4m3's subnormal range (below 2^-6 * scale).
    """
    scale = weight.abs().max().float().clamp_min(1e-12) / torch.finfo(torch.float8_e4m3fn).max
    return (weight.float() / scale).to(torch.float8_e4m3fn), scale.reshape(())
