"""fp8 compute for the transformer blocks' linear layers (float8_e4m3fn matmuls, not only fp8 storage).

`Float8Linear` keeps its weight in float8_e4m3fn with one float32 scale per output row and
quantises its input per row (per token) on the fly, both as `amax / 448`, then multiplies with
`torch._scaled_mm` (fp8 x fp8, float32 accumulation, bf16 out). `enable_fp8_compute` swaps the
blocks' nn.Linear layers for it; embeddings, time projection, head, norms and modulation keep their
dtype.

Error bound. e4m3 keeps 3 mantissa bits: rounding a normal value is off by at most 2^-4 relative
(entries below 2^-6 / 448 of their row's amax become subnormals, off by at most 2^-10 * amax / 448
absolute: negligible next to the row's large entries). Both operands are rounded, so one product
is off by up to ~2^-3, but the roundings are independent and partly cancel in the K-long sum:
one layer's relative Frobenius error ||y8 - y|| / ||y|| on Gaussian inputs is 0.032-0.037
(K 20..1024; about 2^-4.8). The tests hold one layer to 0.06 and the tiny transformer's whole
forward pass (two blocks, 24 fp8 layers; measured 0.011-0.018) to 0.05. The kernel's bf16 output
adds ~0.0017 (its difference from the float32 dequantised fallback), held to 0.004.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
MIN_CUDA_CAPABILITY = (8, 9)  # fp8 tensor cores: Ada (8.9) and Hopper (9.0) on


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """t [R, C] -> (float8 [R, C], float32 scale [R, 1]) with t ~= float8 * scale."""
    t = t.float()
    amax = t.abs().amax(dim=1, keepdim=True)
    # An all-zero row gets scale 1 (any scale maps it to zeros) instead of a 0/0.
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (t / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8).contiguous(), scale


def dequantized_matmul(a8, a_scale, w8, w_scale, bias=None) -> torch.Tensor:
    """The maths `_scaled_mm` does, in float32: (a8 * a_scale) @ (w8 * w_scale).T + bias; [M, N]."""
    y = (a8.float() * a_scale) @ (w8.float() * w_scale.view(-1, 1)).t()
    return y if bias is None else y + bias.float()


class Float8Linear(nn.Module):
    """nn.Linear computed in fp8: x [..., in] -> [..., out] in x's dtype.

    Buffers: `weight_fp8` [out, in] float8_e4m3fn, `weight_scale` [out] float32, `bias` [out] or None.
    """

    def __init__(self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", weight_scale.reshape(-1).float())
        self.register_buffer("bias", bias)
        self.use_scaled_mm = True  # False: always the dequantised matmul (tests compare the two)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Float8Linear":
        weight, scale = quantize_rows(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(weight, scale, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def _kernel_fits(self, a: torch.Tensor) -> bool:
        if not self.use_scaled_mm or a.shape[0] == 0:
            return False
        if a.device.type == "cuda":
            # cuBLASLt / CUTLASS fp8 GEMMs need K and N multiples of 16 (the 14B's 5120 and 13824 are);
            # other widths take the dequantised matmul, which computes the same quantised product.
            return self.in_features % 16 == 0 and self.out_features % 16 == 0
        return a.device.type == "cpu"  # CPU's _scaled_mm takes any shape; other backends may lack it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a8, a_scale = quantize_rows(x.reshape(-1, self.in_features))
        if self._kernel_fits(a8):
            # Row-wise scales need a bf16 output and a bf16 bias on CUDA; the kernel adds the bias.
            bias = None if self.bias is None else self.bias.to(torch.bfloat16)
            y = torch._scaled_mm(a8, self.weight_fp8.t(), scale_a=a_scale, scale_b=self.weight_scale.view(1, -1),
                                 bias=bias, out_dtype=torch.bfloat16)
        else:
            y = dequantized_matmul(a8, a_scale, self.weight_fp8, self.weight_scale, self.bias)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


def enable_fp8_compute(transformer: nn.Module) -> int:
    """Swap every nn.Linear inside `transformer.blocks` for a Float8Linear; the number swapped.

    Per SCAIL-2 block: self_attn q, k, v, o; cross_attn q, k, v, o, k_img, v_img; ffn.0, ffn.2 (12).
    Run it after LoRA merging: the fp8 weights are what the layers compute with from then on.
    """
    if getattr(transformer, "is_quantized", False):
        raise ValueError("--compute fp8 does not apply to a GGUF transformer (its blocks are already "
                         "quantised); use --compute bf16 or a bf16/fp8 safetensors transformer")
    replaced = 0
    for block in transformer.blocks:
        targets = [(name, module) for name, module in block.named_modules() if type(module) is nn.Linear]
        for name, linear in targets:
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            setattr(parent, child, Float8Linear.from_linear(linear))
            replaced += 1
    transformer.fp8_compute = True
    return replaced


@functools.lru_cache(maxsize=None)
def _probe(device: str) -> str | None:
    """None when a tiny row-wise-scaled fp8 matmul runs on `device`, else its error's first line."""
    try:
        a = torch.ones(16, 16, device=device).to(FP8)
        scale_a, scale_b = torch.ones(16, 1, device=device), torch.ones(1, 16, device=device)
        torch._scaled_mm(a, a.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16,
                         bias=torch.zeros(16, device=device, dtype=torch.bfloat16))
    except Exception as exc:  # the reason is the answer
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return f"torch._scaled_mm fails on {device}: {lines[0]}"
    return None


def fp8_compute_support(device: torch.device | str) -> str | None:
    """None when `device` can run fp8 compute, else one plain line saying why not."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        index = device.index if device.index is not None else torch.cuda.current_device()
        capability = torch.cuda.get_device_capability(index)
        if capability < MIN_CUDA_CAPABILITY:
            name = torch.cuda.get_device_name(index)
            return (f"fp8 compute needs a GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell); "
                    f"{name} is {capability[0]}.{capability[1]}")
        return _probe(f"cuda:{index}")
    return _probe(str(device))
