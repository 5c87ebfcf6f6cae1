"""fp8 compute: Float8Linear against float32 nn.Linear, the real `_scaled_mm` path against its
dequantised fallback, and `--compute fp8` from MemoryOptions to the model.

Bounds (derived in `backend.models.fp8_linear`'s docstring; measured on this CPU, torch 2.13):
one layer's relative Frobenius error is about 2^-4.5 (0.032-0.037 measured), held to 0.06; the
kernel and the fallback differ by the kernel's bf16 output rounding (0.0017 measured), held to
0.004; the tiny transformer's whole forward pass (24 fp8 layers) is off by 0.011-0.018, held to 0.05.
"""

from __future__ import annotations

import pytest
import torch
from scail_fixtures import case_inputs, tiny_model
from torch import nn

from backend.loaders.components import MemoryOptions, load_components
from backend.models.fp8_linear import (
    FP8,
    Float8Linear,
    dequantized_matmul,
    enable_fp8_compute,
    fp8_compute_support,
    quantize_rows,
)
from backend.models.tiny import tiny_transformer

LAYER_BOUND = 0.06
KERNEL_VS_FALLBACK_BOUND = 0.004
FORWARD_BOUND = 0.05
BLOCK_LINEARS = {"self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                 "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2"}


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return ((y.float() - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("in_features,out_features", [(48, 96), (96, 48), (1024, 512), (20, 12)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float8_linear_stays_within_the_bound_of_a_float32_linear(in_features, out_features, dtype):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features)
    x = torch.randn(2, 37, in_features)  # leading dims are flattened and restored
    fp8 = Float8Linear.from_linear(linear)
    assert fp8.weight_fp8.dtype == FP8 and fp8.weight_fp8.shape == (out_features, in_features)
    assert fp8.weight_scale.dtype == torch.float32 and fp8.weight_scale.shape == (out_features,)

    with torch.no_grad():
        y = fp8(x.to(dtype))
    assert y.dtype == dtype and y.shape == (2, 37, out_features)
    error = relative_error(y, linear(x).detach())
    assert 1e-3 < error < LAYER_BOUND, error  # above 1e-3: it really rounded to 3 mantissa bits


def test_the_scaled_mm_kernel_and_the_dequantised_fallback_compute_the_same_product(monkeypatch):
    torch.manual_seed(1)
    fp8 = Float8Linear.from_linear(nn.Linear(64, 32))
    x = torch.randn(50, 64)
    calls = []
    scaled_mm = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda *a, **k: calls.append(1) or scaled_mm(*a, **k))
    kernel = fp8(x)
    fp8.use_scaled_mm = False
    fallback = fp8(x)
    assert len(calls) == 1  # the first call went through the kernel, the second did not
    assert relative_error(kernel, fallback) < KERNEL_VS_FALLBACK_BOUND
    a8, a_scale = quantize_rows(x)
    torch.testing.assert_close(fallback, dequantized_matmul(a8, a_scale, fp8.weight_fp8, fp8.weight_scale, fp8.bias))


def test_row_quantisation_keeps_zero_rows_zero_and_each_rows_amax():
    t = torch.tensor([[0.0, 0.0, 0.0], [1.0, -3.0, 0.5], [1e-3, 2e-3, -4e-3]])
    q, scale = quantize_rows(t)
    assert torch.isfinite(scale).all() and (q[0].float() == 0).all()
    assert (q[1:].float().abs().amax(dim=1) == 448).all()  # the largest entry of a row maps to e4m3's max
    assert ((q.float() * scale - t).abs() <= t.abs() * 2**-4 + 1e-12).all()


def test_enable_fp8_compute_swaps_the_twelve_linear_layers_of_each_block_and_nothing_else():
    model = tiny_transformer()
    outside = {name for name, m in model.named_modules() if isinstance(m, nn.Linear) and not name.startswith("blocks.")}
    count = enable_fp8_compute(model)
    assert count == 12 * len(model.blocks) and model.fp8_compute is True
    for block in model.blocks:
        swapped = {name for name, m in block.named_modules() if isinstance(m, Float8Linear)}
        assert swapped == BLOCK_LINEARS
        assert not any(type(m) is nn.Linear for m in block.modules())
        assert block.modulation.dtype == torch.float32 and block.norm3.weight.dtype == torch.float32
    still_linear = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    assert still_linear == outside  # time_embedding, time_projection, text_embedding, img_emb, head
    assert model.patch_embedding.weight.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_tiny_forward_in_fp8_compute_is_finite_and_close_to_float32(animate_case, dtype):
    reference = tiny_model()
    model = tiny_model().to_inference_dtype(dtype) if dtype != torch.float32 else tiny_model()
    enable_fp8_compute(model)
    with torch.no_grad():
        (expected,) = reference(**case_inputs(animate_case))
        (out,) = model(**case_inputs(animate_case))
    assert torch.isfinite(out).all()
    error = relative_error(out, expected)
    assert 1e-3 < error < FORWARD_BOUND, error


def test_compute_fp8_reaches_the_model_through_load_components():
    components = load_components("tiny", memory=MemoryOptions(dtype=torch.float32, compute="fp8"))
    block = components.transformer.blocks[0]
    assert components.transformer.fp8_compute is True
    assert isinstance(block.ffn[0], Float8Linear) and block.ffn[0].weight_fp8.dtype == FP8
    plain = load_components("tiny", memory=MemoryOptions(dtype=torch.float32))
    assert type(plain.transformer.blocks[0].ffn[0]) is nn.Linear


def test_a_gguf_transformer_is_refused_fp8_compute():
    from backend.loaders.components import apply_memory_options

    model = tiny_transformer()
    model.is_quantized = True  # what the GGUF loader marks
    with pytest.raises(ValueError, match="GGUF") as refused:
        apply_memory_options(model, torch.device("cpu"), MemoryOptions(compute="fp8"))
    assert "\n" not in str(refused.value)
    assert type(model.blocks[0].ffn[0]) is nn.Linear


def test_support_is_probed_on_the_cpu_and_refused_where_cuda_is_missing(monkeypatch):
    assert fp8_compute_support(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fp8_compute_support("cuda") == "CUDA is not available"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA GeForce RTX 3090")
    reason = fp8_compute_support("cuda")
    assert "8.9" in reason and "RTX 3090 is 8.6" in reason and "\n" not in reason


def test_memory_options_refuses_fp8_compute_where_the_device_cannot_run_it(monkeypatch):
    import backend.models.fp8_linear
    from backend.loaders.devices import memory_options

    assert memory_options({"compute": "fp8"}, "cpu").compute == "fp8"
    monkeypatch.setattr(backend.models.fp8_linear, "fp8_compute_support", lambda device: "no fp8 here")
    with pytest.raises(ValueError, match="--compute fp8 is not available on cpu: no fp8 here"):
        memory_options({"compute": "fp8"}, "cpu")
    assert memory_options({"compute": "bf16"}, "cpu").compute == "bf16"


def test_the_worker_refuses_fp8_compute_before_it_loads_the_model(monkeypatch, tmp_path):
    import backend.loaders.components
    import backend.models.fp8_linear
    from backend.service.worker import Worker

    monkeypatch.setattr(backend.models.fp8_linear, "fp8_compute_support", lambda device: "no fp8 here")
    monkeypatch.setattr(backend.loaders.components, "load_components", lambda *a, **k: pytest.fail("model loaded"))
    worker = Worker("tiny", "cpu", {"compute": "fp8"}, tmp_path)
    with pytest.raises(ValueError, match="^--compute fp8 is not available on cpu: no fp8 here$"):
        worker.components_for(lambda *a, **k: None, [])
    assert worker.components is None
