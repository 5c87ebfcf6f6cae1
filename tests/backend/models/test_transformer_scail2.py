"""The SCAIL-2 network against the official reference's output, and diffusers integration."""

from __future__ import annotations

import pytest
import torch
from scail_fixtures import case_inputs, tiny_model

from backend.models.transformer_scail2 import SCAIL2AttnProcessor, SCAIL2Transformer3DModel
from backend.models.rope import TokenLayout

PARITY_TOLERANCE = 2e-6  # the fixture README: legitimate float32 differences stay below 5e-7


def run(model, **kwargs):
    with torch.no_grad():
        return model(**kwargs)


def test_animate_case_matches_reference(model, animate_case):
    (out,) = run(model, **case_inputs(animate_case))
    assert out.shape == animate_case["expected"].shape
    assert (out - animate_case["expected"]).abs().max() <= PARITY_TOLERANCE


def test_batched_tensors_give_the_same_output_as_lists(model, animate_case):
    kwargs = case_inputs(animate_case)
    batched = {k: (torch.stack(v) if isinstance(v, list) and k != "context" else v) for k, v in kwargs.items()}
    (from_lists,) = run(model, **kwargs)
    (from_batch,) = run(model, **batched)
    torch.testing.assert_close(from_batch, from_lists, rtol=0, atol=1e-6)


def test_cfg_batch_of_two_equals_two_single_passes(model, animate_case):
    """Conditional and unconditional passes share everything but the text context."""
    c = animate_case
    empty = torch.zeros(0, c["context_0"].shape[1])
    (cond,) = run(model, **case_inputs(c))
    (uncond,) = run(model, **case_inputs(c, context=[empty]))
    pair = case_inputs(c, context=[c["context_0"], empty])
    for key in ("x", "pose_latents", "driving_masks", "ref_latents", "ref_masks"):
        pair[key] = pair[key] * 2
    both = run(model, **pair)
    torch.testing.assert_close(both[0], cond, rtol=0, atol=2e-6)
    torch.testing.assert_close(both[1], uncond, rtol=0, atol=2e-6)
    assert (cond - uncond).abs().max() > 1e-4


def test_replacement_mode_moves_the_output_as_a_rope_shift_does(model, animate_case):
    """The fixture README: a wrong replace flag moves the output by about 1e-3 to 2e-3."""
    (animate,) = run(model, **case_inputs(animate_case))
    (replace,) = run(model, **case_inputs(animate_case, replace_flag=True))
    assert 2e-4 < (animate - replace).abs().max() < 1e-1


def test_history_mask_conditions_the_video_tokens(model, animate_case):
    c = animate_case
    history = torch.zeros(4, *c["x"].shape[1:])
    (without,) = run(model, **case_inputs(c))
    (zeros,) = run(model, **case_inputs(c, history_mask=[history]))
    torch.testing.assert_close(zeros, without, rtol=0, atol=1e-6)  # zeros are the default channels
    history[:, :2] = 1.0
    (with_history,) = run(model, **case_inputs(c, history_mask=[history]))
    assert (with_history - without).abs().max() > 1e-3


def test_extra_reference_views_are_prepended_and_cropped_away(model, animate_case):
    c = animate_case
    torch.manual_seed(1)
    extra = torch.randn(16, 2, *c["x"].shape[2:])
    extra_masks = torch.rand(28, 2, *c["x"].shape[2:])
    (plain,) = run(model, **case_inputs(c))
    (with_extra,) = run(
        model, **case_inputs(c, additional_ref_latents=[extra], additional_ref_masks=[extra_masks])
    )
    assert with_extra.shape == plain.shape
    assert (with_extra - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="come together"):
        run(model, **case_inputs(c, additional_ref_latents=[extra]))


def test_group_offloading_keeps_parity(animate_case):
    for kwargs in (
        dict(offload_type="block_level", num_blocks_per_group=1),
        dict(offload_type="leaf_level"),
    ):
        model = tiny_model()
        model.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"), **kwargs)
        (out,) = run(model, **case_inputs(animate_case))
        assert (out - animate_case["expected"]).abs().max() <= PARITY_TOLERANCE, kwargs


def test_fp8_layerwise_casting_stores_fp8_and_computes_bf16(animate_case):
    model = tiny_model().to_inference_dtype(torch.bfloat16)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    block = model.blocks[0]
    assert block.ffn[0].weight.dtype == torch.float8_e4m3fn
    assert block.self_attn.q.weight.dtype == torch.float8_e4m3fn
    # The reference computes these in float32; casting them would cost accuracy, not memory.
    assert block.modulation.dtype == torch.float32
    assert block.self_attn.norm_q.weight.dtype == torch.float32
    assert model.time_projection[1].weight.dtype == torch.float32
    (out,) = run(model, **case_inputs(animate_case))
    err = (out - animate_case["expected"]).abs().max()
    assert torch.isfinite(out).all()
    assert err < 0.05, err  # outputs are of order 1


def test_attention_goes_through_the_diffusers_dispatcher(animate_case):
    model = tiny_model()
    model.set_attention_backend("_native_math")
    processors = {type(m.processor).__name__ for m in model.modules() if hasattr(m, "processor")}
    assert processors == {"SCAIL2AttnProcessor"}
    assert all(m.processor._attention_backend == "_native_math" for m in model.modules() if hasattr(m, "processor"))
    (out,) = run(model, **case_inputs(animate_case))
    assert (out - animate_case["expected"]).abs().max() <= PARITY_TOLERANCE


def test_full_size_token_count_matches_the_spec():
    layout = TokenLayout(frames=21, height=32, width=56)  # 512x896, 81 frames
    assert (layout.prefix_tokens, layout.video_tokens, layout.driving_tokens) == (1792, 37632, 9408)
    assert layout.total_tokens == 48832


def test_only_i2v_with_global_attention_is_accepted():
    with pytest.raises(ValueError, match="i2v"):
        SCAIL2Transformer3DModel(model_type="t2v", dim=48, ffn_dim=96, num_heads=2, num_layers=1)
    with pytest.raises(ValueError, match="global attention"):
        SCAIL2Transformer3DModel(window_size=(4, 4), dim=48, ffn_dim=96, num_heads=2, num_layers=1)


def test_padding_the_sequence_with_its_key_mask_leaves_the_output_unchanged(model, animate_case, monkeypatch):
    """What context parallelism does to a sequence that does not split evenly, here in one process."""
    (plain,) = run(model, **case_inputs(animate_case))
    monkeypatch.setattr(model, "_sequence_padding", lambda tokens: 3)
    (padded,) = run(model, **case_inputs(animate_case))
    torch.testing.assert_close(padded, plain, rtol=0, atol=1e-6)
    # Without the mask the padded keys take softmax weight and move every token.
    attend = SCAIL2AttnProcessor._attend
    monkeypatch.setattr(SCAIL2AttnProcessor, "_attend", lambda self, q, k, v, *rest: attend(self, q, k, v))
    (unmasked,) = run(model, **case_inputs(animate_case))
    assert (unmasked - plain).abs().max() > 1e-4


def test_context_parallel_plan_names_modules_of_the_model(model):
    from diffusers.hooks.context_parallel import _get_submodule_by_name

    for name in SCAIL2Transformer3DModel._cp_plan:
        assert isinstance(_get_submodule_by_name(model, name), torch.nn.Module), name
    assert model._sequence_padding(113) == 0  # one process: never padded
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig

    model._parallel_config = ParallelConfig(context_parallel_config=ContextParallelConfig(ulysses_degree=4))
    assert [model._sequence_padding(n) for n in (112, 113, 114)] == [0, 3, 2]
    for block in model.blocks:  # a kernel without masks: Ulysses "anything" splits unevenly instead
        block.self_attn.processor._attention_backend = "flash"
    assert model._sequence_padding(113) == 0


def test_conditioning_embedded_once_gives_exactly_the_whole_call(model, animate_case):
    """`forward` without x embeds what a segment's steps share; each step then embeds only x. The two
    routes give identical numbers, with CFG's pair, history channels and extra views."""
    c = animate_case
    torch.manual_seed(2)
    empty = torch.zeros(0, c["context_0"].shape[1])
    history = torch.zeros(4, *c["x"].shape[1:])
    history[:, :1] = 1.0
    extra = [torch.randn(16, 1, *c["x"].shape[2:])]
    extra_masks = [torch.rand(28, 1, *c["x"].shape[2:])]
    for replace_flag in (False, True):
        pair = case_inputs(c, context=[c["context_0"], empty], replace_flag=replace_flag,
                           additional_ref_latents=extra * 2, additional_ref_masks=extra_masks * 2)
        for key in ("x", "pose_latents", "driving_masks", "ref_latents", "ref_masks"):
            pair[key] = pair[key] * 2
        pair["history_mask"] = [history] * 2
        whole = run(model, **pair)
        x, t = pair.pop("x"), pair.pop("t")
        conditioning = run(model, **pair).first_sample()
        assert conditioning.prefix_tokens.shape[0] == 1 and conditioning.context.shape[0] == 2
        for step_x in (x, [torch.randn_like(x[0])] * 2):  # the same conditioning serves any step's latents
            stepped = run(model, x=step_x, t=t, conditioning=conditioning)
            expected = whole if step_x is x else run(model, x=step_x, t=t, **pair)
            for a, b in zip(stepped, expected):
                assert torch.equal(a, b), replace_flag
        with pytest.raises(ValueError, match="does not match"):
            run(model, x=[x[0][:, :1]] * 2, t=t, conditioning=conditioning)
