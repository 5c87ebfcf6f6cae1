"""LoRA merging: every supported key layout encodes the same delta and merges to the same model.

The delta (`DELTA`) is built on the tiny fixture model: low-rank pairs (rank 4) on fused and
plain projections, a conv patch embedding and an fp32-kept head, plus full `.diff` weight deltas
(a linear, a norm, a bare modulation) and `.diff_b` bias deltas. Each layout writes it in its own
spelling; layouts without alpha carry the alpha / rank = 2 scale in `up` (a power of two, so the
products are bit-identical and every layout must give exactly the same merged model).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scail_fixtures import TINY_WEIGHTS, case_inputs

from backend.loaders.lora import LoraError, merge_loras

RANK, ALPHA = 4, 8.0
SCALE = ALPHA / RANK  # 2: exact in every layout
STRENGTH = 0.75
SAT = "model.diffusion_model."


def _delta() -> dict:
    """Wan module -> ("pair", down, up) | ("diff", tensor) | ("diff_b", tensor), seeded."""
    g = torch.Generator().manual_seed(1234)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    shared_qkv, shared_kv = rand(RANK, 48), rand(RANK, 48)
    pairs = {
        "blocks.0.self_attn.q": (shared_qkv, rand(48, RANK)),
        "blocks.0.self_attn.k": (shared_qkv, rand(48, RANK)),
        "blocks.0.self_attn.v": (shared_qkv, rand(48, RANK)),
        "blocks.1.cross_attn.k": (shared_kv, rand(48, RANK)),
        "blocks.1.cross_attn.v": (shared_kv, rand(48, RANK)),
        "blocks.0.cross_attn.k_img": (rand(RANK, 48), rand(48, RANK)),
        "blocks.0.ffn.0": (rand(RANK, 48), rand(96, RANK)),
        "blocks.1.ffn.2": (rand(RANK, 96), rand(48, RANK)),
        "patch_embedding_mask": (rand(RANK, 28, 1, 2, 2), rand(48, RANK)),  # conv: [out, in, 1, 2, 2]
        "head.head": (rand(RANK, 48), rand(64, RANK)),  # kept in float32
        "time_projection.1": (rand(RANK, 48), rand(288, RANK)),  # kept in float32
    }
    diffs = {
        "blocks.1.self_attn.o": rand(48, 48),
        "blocks.0.norm3": rand(48),  # a float32 norm weight
        "blocks.0.modulation": rand(1, 6, 48),  # a bare parameter
    }
    diff_bs = {"blocks.0.ffn.2": rand(48), "blocks.0.self_attn.q": rand(48), "head.head": rand(64)}
    return {"pairs": pairs, "diffs": diffs, "diff_bs": diff_bs}


DELTA = _delta()


def expected_state(model, strength: float) -> dict[str, torch.Tensor]:
    """The model's state with DELTA added by the formula, in float32, cast to each dtype."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def add(name, delta):
        state[name] = (state[name].float() + delta.reshape(state[name].shape)).to(state[name].dtype)

    for base, (down, up) in DELTA["pairs"].items():
        add(base + ".weight", (up @ down.flatten(1)) * (strength * SCALE))
    for base, diff in DELTA["diffs"].items():
        add(base + ".weight" if base + ".weight" in state else base, diff * strength)
    for base, diff in DELTA["diff_bs"].items():
        add(base + ".bias", diff * strength)
    return state


# ----------------------------------------------------------------------------- layouts


def _common_diffs(name) -> dict[str, torch.Tensor]:
    out = {name(base) + ".diff": t for base, t in DELTA["diffs"].items()}
    out.update({name(base) + ".diff_b": t for base, t in DELTA["diff_bs"].items()})
    return out


def wan_native() -> dict[str, torch.Tensor]:
    """LightX2V / ComfyUI: `diffusion_model.` prefix, lora_down / lora_up / alpha, .diff / .diff_b."""
    out = {}
    for base, (down, up) in DELTA["pairs"].items():
        out[f"diffusion_model.{base}.lora_down.weight"] = down
        out[f"diffusion_model.{base}.lora_up.weight"] = up
        out[f"diffusion_model.{base}.alpha"] = torch.tensor(ALPHA)
    out.update(_common_diffs(lambda base: "diffusion_model." + base))
    return out


def peft() -> dict[str, torch.Tensor]:
    """PEFT factor names without a prefix or alpha; conv down flattened to 2-D; modulation (6, dim)."""
    out = {}
    for base, (down, up) in DELTA["pairs"].items():
        out[f"{base}.lora_A.weight"] = down.flatten(1)
        out[f"{base}.lora_B.weight"] = up * SCALE
    out.update(_common_diffs(lambda base: base))
    out["blocks.0.modulation.diff"] = DELTA["diffs"]["blocks.0.modulation"].reshape(6, 48)
    return out


DIFFUSERS_NAMES = {
    "blocks.0.self_attn.q": "blocks.0.attn1.to_q", "blocks.0.self_attn.k": "blocks.0.attn1.to_k",
    "blocks.0.self_attn.v": "blocks.0.attn1.to_v", "blocks.1.self_attn.o": "blocks.1.attn1.to_out.0",
    "blocks.1.cross_attn.k": "blocks.1.attn2.to_k", "blocks.1.cross_attn.v": "blocks.1.attn2.to_v",
    "blocks.0.cross_attn.k_img": "blocks.0.attn2.add_k_proj", "blocks.0.ffn.0": "blocks.0.ffn.net.0.proj",
    "blocks.1.ffn.2": "blocks.1.ffn.net.2", "blocks.0.ffn.2": "blocks.0.ffn.net.2",
    "patch_embedding_mask": "patch_embedding_mask", "head.head": "proj_out",
    "time_projection.1": "condition_embedder.time_proj", "blocks.0.norm3": "blocks.0.norm2",
    "blocks.0.modulation": "blocks.0.scale_shift_table",
}


def diffusers() -> dict[str, torch.Tensor]:
    """PEFT factors on diffusers' WanTransformer3DModel names under `transformer.`."""
    name = lambda base: "transformer." + DIFFUSERS_NAMES[base]  # noqa: E731
    out = {}
    for base, (down, up) in DELTA["pairs"].items():
        out[f"{name(base)}.lora_A.weight"] = down
        out[f"{name(base)}.lora_B.weight"] = up * SCALE
    out.update(_common_diffs(name))
    return out


def comfy_flat() -> dict[str, torch.Tensor]:
    """kohya / musubi-tuner / ComfyUI: `lora_unet_` + the module name with underscores, with alpha."""
    name = lambda base: "lora_unet_" + base.replace(".", "_")  # noqa: E731
    out = {}
    for base, (down, up) in DELTA["pairs"].items():
        out[f"{name(base)}.lora_down.weight"] = down
        out[f"{name(base)}.lora_up.weight"] = up.reshape(*up.shape, 1, 1, 1) if down.dim() == 5 else up
        out[f"{name(base)}.alpha"] = torch.tensor(ALPHA, dtype=torch.bfloat16)
    out.update(_common_diffs(name))
    return out


SAT_MODULES = {  # Wan module -> (SAT module, sub-LoRA index or None)
    "blocks.0.self_attn.q": ("transformer.layers.0.attention.query_key_value", 0),
    "blocks.0.self_attn.k": ("transformer.layers.0.attention.query_key_value", 1),
    "blocks.0.self_attn.v": ("transformer.layers.0.attention.query_key_value", 2),
    "blocks.1.self_attn.o": ("transformer.layers.1.attention.dense", None),
    "blocks.1.cross_attn.k": ("transformer.layers.1.cross_attention.key_value", 0),
    "blocks.1.cross_attn.v": ("transformer.layers.1.cross_attention.key_value", 1),
    "blocks.0.cross_attn.k_img": ("mixins.adaln_layer.clip_feature_key_value_list.0", 0),
    "blocks.0.ffn.0": ("transformer.layers.0.mlp.dense_h_to_4h", None),
    "blocks.1.ffn.2": ("transformer.layers.1.mlp.dense_4h_to_h", None),
    "blocks.0.ffn.2": ("transformer.layers.0.mlp.dense_4h_to_h", None),
    "patch_embedding_mask": ("mixins.patch_embed.proj_mask", None),
    "head.head": ("mixins.final_layer.linear", None),
    "time_projection.1": ("adaln_projection.1", None),
    "blocks.0.norm3": ("transformer.layers.0.post_cross_attention_layernorm", None),
}


def _sat_name(base: str) -> str:
    module, part = SAT_MODULES[base]
    return f"{SAT}{module}.lora_layer" + (f".{part}" if part is not None else "")


def sat_split() -> dict[str, torch.Tensor]:
    """The official release's layout: SAT names, one sub-LoRA per fused part, down/up, no alpha."""
    out = {}
    for base, (down, up) in DELTA["pairs"].items():
        out[_sat_name(base) + ".down.weight"] = down
        out[_sat_name(base) + ".up.weight"] = up * SCALE
    for base, diff in DELTA["diffs"].items():
        key = SAT + "mixins.adaln_layer.adaLN_modulations.0" if base == "blocks.0.modulation" else _sat_name(base)
        out[key + ".diff"] = diff
    out.update({_sat_name(base) + ".diff_b": t for base, t in DELTA["diff_bs"].items()})
    return out


def sat_fused() -> dict[str, torch.Tensor]:
    """SAT with fused LoRAs: one shared down per fused module, the parts' ups stacked by rows."""
    out = sat_split()
    fused = {"transformer.layers.0.attention.query_key_value": ["blocks.0.self_attn.q", "blocks.0.self_attn.k",
                                                               "blocks.0.self_attn.v"],
             "transformer.layers.1.cross_attention.key_value": ["blocks.1.cross_attn.k", "blocks.1.cross_attn.v"]}
    for module, bases in fused.items():
        for base in bases:
            del out[_sat_name(base) + ".down.weight"], out[_sat_name(base) + ".up.weight"]
        out[f"{SAT}{module}.lora_layer.down.weight"] = DELTA["pairs"][bases[0]][0]
        out[f"{SAT}{module}.lora_layer.up.weight"] = torch.cat([DELTA["pairs"][b][1] * SCALE for b in bases])
    return out


def diffs_only() -> dict[str, torch.Tensor]:
    """Every change as a full `.diff` (what a LoRA extraction with no rank limit would write)."""
    out = {f"diffusion_model.{base}.diff": ((up @ down.flatten(1)) * SCALE).reshape(-1, *down.shape[1:])
           for base, (down, up) in DELTA["pairs"].items()}
    out.update(_common_diffs(lambda base: "diffusion_model." + base))
    return out


SAFETENSORS_LAYOUTS = {"wan_native": wan_native, "peft": peft, "diffusers": diffusers,
                       "comfy_flat": comfy_flat, "diffs_only": diffs_only}
PT_LAYOUTS = {"sat_split": sat_split, "sat_fused": sat_fused}


def save(tensors: dict[str, torch.Tensor], path):
    """save_file, with the shared `down` tensors copied (safetensors refuses shared storage)."""
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, path)


def write(tmp_path, layout: str):
    if layout in PT_LAYOUTS:
        path = tmp_path / f"{layout}.pt"
        # Beside the weights, training state as in the official release (the loader keeps "module").
        torch.save({"module": PT_LAYOUTS[layout](), "iteration": 400,
                    "np_rng_state": np.random.RandomState(0).get_state()}, path)
        return path
    path = tmp_path / f"{layout}.safetensors"
    save(SAFETENSORS_LAYOUTS[layout](), path)
    return path


ALL_LAYOUTS = [*SAFETENSORS_LAYOUTS, *PT_LAYOUTS]


def changed(model, state: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, tensor in model.state_dict().items() if not torch.equal(tensor, state[name])}


def assert_state(model, expected: dict[str, torch.Tensor]):
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == expected[name].dtype, name
        assert torch.equal(tensor, expected[name]), name


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_every_layout_merges_the_same_delta_exactly(tmp_path, model, layout):
    expected = expected_state(model, STRENGTH)
    touched = changed(model, expected)
    assert len(touched) == len(DELTA["pairs"]) + len(DELTA["diffs"]) + len(DELTA["diff_bs"])
    report = merge_loras(model, [(write(tmp_path, layout), STRENGTH)])
    assert_state(model, expected)
    modules = len(DELTA["pairs"]) + len(DELTA["diffs"]) + len(set(DELTA["diff_bs"]) - set(DELTA["pairs"]))
    assert report == [f"{layout}.{'pt' if layout in PT_LAYOUTS else 'safetensors'}: {modules} layers, strength 0.75"]


def test_bf16_model_with_fp32_kept_modules(tmp_path, model):
    model.to_inference_dtype(torch.bfloat16)
    expected = expected_state(model, STRENGTH)
    assert expected["blocks.0.self_attn.q.weight"].dtype == torch.bfloat16
    assert expected["head.head.weight"].dtype == torch.float32
    assert expected["blocks.0.modulation"].dtype == torch.float32
    merge_loras(model, [(write(tmp_path, "wan_native"), STRENGTH)])
    assert_state(model, expected)


def test_strength_zero_leaves_the_model_bit_identical(tmp_path, model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = merge_loras(model, [(write(tmp_path, "sat_split"), 0.0)])
    assert_state(model, before)
    assert report[0].endswith("strength 0 (not applied)")


def test_several_files_add_up(tmp_path, model):
    path = write(tmp_path, "wan_native")
    once = tiny_copy(model)
    merge_loras(once, [(path, 1.0)])
    merge_loras(model, [(path, 0.5), (write(tmp_path, "peft"), 0.5)])
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, once.state_dict()[name], rtol=0, atol=1e-6)


def test_merged_model_output_changes(tmp_path, model, animate_case):
    with torch.no_grad():
        (before,) = model(**case_inputs(animate_case))
        merge_loras(model, [(write(tmp_path, "comfy_flat"), 1.0)])
        (after,) = model(**case_inputs(animate_case))
    assert (after - before).abs().max() > 1e-3


def test_unknown_keys_are_an_error_that_names_them(tmp_path, model):
    tensors = wan_native()
    tensors["diffusion_model.blocks.7.self_attn.q.lora_down.weight"] = torch.zeros(RANK, 48)  # a bigger model's
    tensors["diffusion_model.blocks.7.self_attn.q.lora_up.weight"] = torch.zeros(48, RANK)
    tensors["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(RANK, 8)
    path = tmp_path / "mixed.safetensors"
    save(tensors, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoraError, match=r"3 of \d+ tensors match nothing") as info:
        merge_loras(model, [(path, 1.0)])
    assert "diffusion_model.blocks.7.self_attn.q.lora_down.weight" in str(info.value)
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1" in str(info.value)
    assert "\n" not in str(info.value)
    assert_state(model, before)


def test_loha_factors_are_named_as_unsupported(tmp_path, model):
    path = tmp_path / "loha.safetensors"
    save_file({"lora_unet_blocks_0_self_attn_q.hada_w1_a": torch.zeros(48, 4),
               "lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.zeros(4, 48),
               "lora_unet_blocks_0_self_attn_q.lora_up.weight": torch.zeros(48, 4)}, path)
    with pytest.raises(LoraError, match="LoHa LoRAs are not supported"):
        merge_loras(model, [(path, 1.0)])


def test_shape_mismatch_is_an_error_and_nothing_is_merged(tmp_path, model):
    good = write(tmp_path, "wan_native")
    bad = tmp_path / "stock_i2v.safetensors"  # Wan 2.1 I2V's 36-channel patch embedding
    save_file({"diffusion_model.patch_embedding.lora_down.weight": torch.zeros(RANK, 36, 1, 2, 2),
               "diffusion_model.patch_embedding.lora_up.weight": torch.zeros(48, RANK)}, bad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoraError, match="stock_i2v.safetensors: diffusion_model.patch_embedding gives a delta of "
                                        r"shape \(48, 36, 1, 2, 2\), which does not fit patch_embedding.weight"):
        merge_loras(model, [(good, 1.0), (bad, 1.0)])
    assert_state(model, before)  # the good file was not merged either


def test_rank_mismatch_and_orphans_are_errors(tmp_path, model):
    path = tmp_path / "broken.safetensors"
    save_file({"blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 48),
               "blocks.0.self_attn.q.lora_up.weight": torch.zeros(48, 8)}, path)
    with pytest.raises(LoraError, match="ranks differ"):
        merge_loras(model, [(path, 1.0)])
    save_file({"blocks.0.self_attn.q.lora_up.weight": torch.zeros(48, 4)}, path)
    with pytest.raises(LoraError, match="has no matching down tensor"):
        merge_loras(model, [(path, 1.0)])


def test_one_module_under_two_names_is_an_error(tmp_path, model):
    path = tmp_path / "twice.safetensors"
    down, up = DELTA["pairs"]["blocks.0.ffn.0"]
    save({"diffusion_model.blocks.0.ffn.0.lora_down.weight": down, "diffusion_model.blocks.0.ffn.0.lora_up.weight": up,
          "lora_unet_blocks_0_ffn_0.lora_down.weight": down, "lora_unet_blocks_0_ffn_0.lora_up.weight": up}, path)
    with pytest.raises(LoraError, match="both change blocks.0.ffn.0"):
        merge_loras(model, [(path, 1.0)])


def test_missing_file_and_non_lora_files(tmp_path, model):
    with pytest.raises(LoraError, match="nope.safetensors: no such file"):
        merge_loras(model, [(tmp_path / "nope.safetensors", 1.0)])
    with pytest.raises(LoraError, match="holds no LoRA tensors"):
        merge_loras(model, [(TINY_WEIGHTS, 1.0)])  # the full model
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file at all")
    with pytest.raises(LoraError, match="neither a safetensors file nor a torch checkpoint"):
        merge_loras(model, [(junk, 1.0)])
    with pytest.raises(LoraError, match="strength must be finite"):
        merge_loras(model, [(write(tmp_path, "peft"), float("nan"))])


def test_pickled_code_is_refused_and_never_runs(tmp_path, model):
    marker = tmp_path / "pwned"

    class WritesAFile:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    path = tmp_path / "evil-lora.pt"
    torch.save({"module": sat_split(), "payload": WritesAFile()}, path)
    with pytest.raises(LoraError, match="refused to unpickle builtins.exec"):
        merge_loras(model, [(path, 1.0)])
    assert not marker.exists()


def tiny_copy(model):
    import copy

    return copy.deepcopy(model)
