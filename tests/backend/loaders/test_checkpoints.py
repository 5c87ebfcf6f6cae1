"""Checkpoint layouts, their detection, clear errors, safe unpickling and the streaming converter."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ckpt_builders import (
    RELEASE_CHECKPOINT,
    fp8_scaled,
    stock_wan_i2v,
    tiny_config,
    tiny_weights,
    wan_to_sat,
    write_sat_release,
    write_single_file,
)
from safetensors import safe_open
from safetensors.torch import save_file
from scail_fixtures import TINY_WEIGHTS, case_inputs

from backend.loaders.checkpoints import infer_config, load_state_dict, load_transformer, meta_model
from backend.loaders.convert import convert, convert_main, parse_size
from backend.loaders.errors import CheckpointError
from backend.loaders.layouts import (
    DIFFUSERS,
    INDEX_NAME,
    SAT,
    SINGLE_FILE,
    WEIGHTS_NAME,
    detect_layout,
    find_transformer,
)
from backend.loaders.sat import sat_to_wan_names
from backend.models.transformer_scail2 import SCAIL2_14B_CONFIG, SCAIL2Transformer3DModel

PARITY_TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The tiny fixture model in each real layout: release folder, prefixed single file, converted folder."""
    root = tmp_path_factory.mktemp("layouts")
    release = write_sat_release(root / "release")
    single = write_single_file(root / "scail2_fp32.safetensors")
    converted = convert(release, root / "converted", dtype=torch.float32, config=tiny_config())
    return {"release": release, "single": single, "converted": converted}


def forward(model, case):
    with torch.no_grad():
        (out,) = model(**case_inputs(case))
    return out


# ----------------------------------------------------------------------------- the 14B config


def test_14b_config_has_1307_tensors_and_16_4b_parameters():
    with torch.device("meta"):
        model = SCAIL2Transformer3DModel(**SCAIL2_14B_CONFIG)
    state = model.state_dict()
    assert len(state) == 1307
    assert sum(t.numel() for t in state.values()) == 16_395_544_384


def test_14b_shapes_infer_the_14b_config():
    shapes = {name: tuple(t.shape) for name, t in meta_model(SCAIL2_14B_CONFIG).state_dict().items()}
    assert infer_config(shapes) == {**SCAIL2_14B_CONFIG, "patch_size": (1, 2, 2)}
    without_last_block = {name: shape for name, shape in shapes.items() if not name.startswith("blocks.39.")}
    assert infer_config(without_last_block)["num_layers"] == 40  # reported as missing, not a 39-layer model


def test_sat_names_of_the_14b_model_map_back_to_its_1307_tensors():
    wan = meta_model(SCAIL2_14B_CONFIG).state_dict()
    sat = wan_to_sat(wan)  # meta tensors: names and shapes only
    mapped = {}
    for key, tensor in sat.items():
        name = key.removeprefix("model.diffusion_model.")
        targets = sat_to_wan_names(name) or (name,)  # text_embedding keeps its name
        for part, target in enumerate(targets):
            mapped[target] = tensor.chunk(len(targets))[part].shape
    assert len(sat) == 1307 - 40 * 8  # per block, q|k|v, k|v and k_img|v_img fused: 12 tensors -> 4
    assert mapped == {name: t.shape for name, t in wan.items()}


# ----------------------------------------------------------------------------- name mapping


def test_sat_names_split_fused_projections_in_order():
    assert sat_to_wan_names("transformer.layers.7.attention.query_key_value.bias") == (
        "blocks.7.self_attn.q.bias", "blocks.7.self_attn.k.bias", "blocks.7.self_attn.v.bias")
    assert sat_to_wan_names("transformer.layers.0.cross_attention.key_value.weight") == (
        "blocks.0.cross_attn.k.weight", "blocks.0.cross_attn.v.weight")
    assert sat_to_wan_names("mixins.adaln_layer.clip_feature_key_value_list.39.weight") == (
        "blocks.39.cross_attn.k_img.weight", "blocks.39.cross_attn.v_img.weight")
    assert sat_to_wan_names("mixins.adaln_layer.adaLN_modulations.3") == ("blocks.3.modulation",)
    assert sat_to_wan_names("mixins.final_layer.adaLN_modulation") == ("head.modulation",)
    assert sat_to_wan_names("mixins.patch_embed.proj_mask.weight") == ("patch_embedding_mask.weight",)
    assert sat_to_wan_names("blocks.0.self_attn.q.weight") is None  # already Wan-native


def test_sat_checkpoint_maps_to_exactly_the_fixture_tensors(layouts):
    state = load_state_dict(layouts["release"], config=tiny_config())
    reference = tiny_weights()
    assert state.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(state[name], tensor), name


# ----------------------------------------------------------------------------- detection


def test_detect_layout_of_each_layout(layouts):
    assert detect_layout(layouts["release"]) == SAT
    assert detect_layout(layouts["release"] / RELEASE_CHECKPOINT) == SAT
    assert detect_layout(layouts["single"]) == SINGLE_FILE
    assert detect_layout(TINY_WEIGHTS) == SINGLE_FILE
    assert detect_layout(layouts["converted"]) == DIFFUSERS
    assert detect_layout(layouts["converted"] / "config.json") == DIFFUSERS


def test_detect_layout_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        detect_layout(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="no SCAIL-2 checkpoint in this folder"):
        detect_layout(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        detect_layout(tmp_path / "empty.pt")
    (tmp_path / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    assert detect_layout(tmp_path / "model.gguf") == "gguf"  # judged by its magic: a GGUF without tensors
    with pytest.raises(CheckpointError, match="no SCAIL-2 transformer weights") as error:
        load_state_dict(tmp_path / "model.gguf")
    assert "\n" not in str(error.value)
    (tmp_path / "notes.txt").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError) as error:
        detect_layout(tmp_path / "notes.txt")
    assert "\n" not in str(error.value)


def test_find_transformer_in_a_weights_folder(tmp_path, layouts):
    write_sat_release(tmp_path)
    assert find_transformer(tmp_path) == tmp_path / RELEASE_CHECKPOINT
    community = tmp_path / "diffusion_models"
    community.mkdir()
    write_single_file(community / "wan2.1_14B_SCAIL_2_fp16.safetensors")
    assert find_transformer(tmp_path) == tmp_path / RELEASE_CHECKPOINT  # the release comes first
    (tmp_path / RELEASE_CHECKPOINT).unlink()
    assert find_transformer(tmp_path) == community / "wan2.1_14B_SCAIL_2_fp16.safetensors"
    convert(layouts["single"], tmp_path / "transformer", config=tiny_config())
    assert find_transformer(tmp_path) == tmp_path / "transformer"  # converted wins
    assert find_transformer(layouts["single"]) == layouts["single"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no SCAIL-2 transformer found"):
        find_transformer(tmp_path / "empty")


def test_find_transformer_skips_a_stock_wan_diffusers_transformer(tmp_path):
    """README layout: the community file beside a Wan2.1-I2V diffusers folder's parts."""
    stock = tmp_path / "transformer"
    stock.mkdir()
    (stock / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel"}))
    save_file({"patch_embedding.weight": torch.zeros(1)}, stock / WEIGHTS_NAME)
    save_file({"decoder.conv_in.weight": torch.zeros(1)}, tmp_path / "vae.safetensors")
    single = write_single_file(tmp_path / "wan2.1_14B_SCAIL_2_fp16.safetensors")
    assert find_transformer(tmp_path) == single
    with pytest.raises(CheckpointError, match="WanTransformer3DModel"):
        load_transformer(stock)


# ----------------------------------------------------------------------------- all layouts agree


def test_all_layouts_load_identical_parameters_and_outputs(layouts, animate_case):
    models = {
        "release": load_transformer(layouts["release"], dtype=torch.float32, config=tiny_config()),
        "single": load_transformer(layouts["single"], dtype=torch.float32, config=tiny_config()),
        "converted": load_transformer(layouts["converted"], dtype=torch.float32),  # config.json
        "fixture": load_transformer(TINY_WEIGHTS, dtype=torch.float32),  # config in the metadata
    }
    reference = tiny_weights()
    for label, model in models.items():
        params = model.state_dict()
        assert params.keys() == reference.keys(), label
        assert all(torch.equal(params[name], reference[name]) for name in reference), label
        assert not model.training
    outputs = {label: forward(model, animate_case) for label, model in models.items()}
    for label, out in outputs.items():
        assert torch.equal(out, outputs["fixture"]), label
    assert (outputs["release"] - animate_case["expected"]).abs().max() <= PARITY_TOLERANCE


def test_converted_folder_loads_with_diffusers_from_pretrained(layouts, animate_case):
    model = SCAIL2Transformer3DModel.from_pretrained(layouts["converted"], torch_dtype=torch.float32).eval()
    assert (forward(model, animate_case) - animate_case["expected"]).abs().max() <= PARITY_TOLERANCE


def test_bfloat16_load_keeps_fp32_modules_in_float32(layouts):
    model = load_transformer(layouts["single"], config=tiny_config())
    for name, param in model.named_parameters():
        keep = any(part in SCAIL2Transformer3DModel._keep_in_fp32_modules for part in name.split("."))
        assert param.dtype == (torch.float32 if keep else torch.bfloat16), name
    assert model.head.head.weight.dtype == torch.float32
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16


def test_load_state_dict_returns_wan_native_names_in_the_stored_dtype(layouts):
    state = load_state_dict(layouts["single"], config=tiny_config())
    assert "blocks.1.cross_attn.k_img.weight" in state
    assert {t.dtype for t in state.values()} == {torch.float32}
    half = load_state_dict(layouts["single"], dtype=torch.float16, config=tiny_config())
    assert half["blocks.0.ffn.0.weight"].dtype == torch.float16
    assert half["blocks.0.modulation"].dtype == torch.float32


def test_prefixless_and_diffusion_model_prefixed_files_load(tmp_path):
    for prefix in ("", "diffusion_model."):
        path = write_single_file(tmp_path / f"p{len(prefix)}.safetensors", prefix=prefix)
        state = load_state_dict(path, config=tiny_config())
        assert torch.equal(state["patch_embedding_mask.weight"], tiny_weights()["patch_embedding_mask.weight"])


def test_fp8_scaled_weights_are_dequantized(tmp_path, animate_case):
    quantised = fp8_scaled(tiny_weights())
    path = write_single_file(tmp_path / "scail2_fp8_scaled.safetensors", quantised)
    state = load_state_dict(path, config=tiny_config())
    name = "blocks.0.self_attn.q.weight"
    expected = quantised[name].float() * quantised["blocks.0.self_attn.q.scale_weight"]
    assert state[name].dtype == torch.float32 and torch.equal(state[name], expected)
    assert not any("scale" in key for key in state)
    model = load_transformer(path, dtype=torch.float32, config=tiny_config())
    error = (forward(model, animate_case) - animate_case["expected"]).abs().max()
    assert 0 < error < 0.2  # fp8 rounding, not a mapping error


def test_head_count_needs_a_config_when_dim_is_not_a_multiple_of_128(layouts):
    with pytest.raises(CheckpointError, match="num_heads"):
        load_transformer(layouts["release"])
    wrong = dict(tiny_config(), dim=64)
    with pytest.raises(CheckpointError, match="config says dim=64"):
        load_transformer(layouts["release"], config=wrong)


# ----------------------------------------------------------------------------- errors


def test_stock_wan_i2v_is_reported_as_the_wrong_model(tmp_path):
    path = write_single_file(tmp_path / "wan2.1_i2v_480p_14B_fp16.safetensors", stock_wan_i2v(tiny_weights()))
    with pytest.raises(CheckpointError, match="this is a stock Wan 2.1 I2V checkpoint, not SCAIL-2"):
        load_transformer(path)


def test_non_backbone_file_is_reported(tmp_path):
    path = tmp_path / "vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4)}, path)
    with pytest.raises(CheckpointError, match="no SCAIL-2 transformer weights"):
        load_transformer(path)


def test_truncated_files_are_reported(tmp_path, layouts):
    data = TINY_WEIGHTS.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "cut.safetensors")
    assert str(error.value) == (f"{tmp_path / 'cut.safetensors'}: truncated: its header promises {len(data)} bytes, "
                                f"the file holds {len(data) // 2} bytes (an interrupted download?)")
    pt = (layouts["release"] / RELEASE_CHECKPOINT).read_bytes()
    (tmp_path / "cut.pt").write_bytes(pt[: len(pt) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt torch checkpoint") as error:
        load_transformer(tmp_path / "cut.pt")
    assert "\n" not in str(error.value)


def test_partial_checkpoint_names_missing_and_unexpected_tensors(tmp_path):
    weights = tiny_weights()
    for name in ("blocks.1.ffn.0.weight", "blocks.1.ffn.0.bias", "head.modulation"):
        del weights[name]
    weights["blocks.0.self_attn.extra.weight"] = torch.zeros(2)
    path = write_single_file(tmp_path / "partial.safetensors", weights)
    with pytest.raises(CheckpointError) as error:
        load_transformer(path, config=tiny_config())
    message = str(error.value)
    assert "3 of 91 tensors missing" in message and "blocks.1.ffn.0.weight" in message
    assert "1 unexpected" in message and "blocks.0.self_attn.extra.weight" in message
    assert "\n" not in message


def test_missing_shard_of_a_converted_folder_is_reported(tmp_path, layouts):
    folder = convert(layouts["single"], tmp_path / "out", dtype=torch.float32, max_shard_size="2MB",
                     config=tiny_config())
    next(folder.glob("diffusion_pytorch_model-00002-of-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard file"):
        load_transformer(folder)


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class WritesAFile:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    root = tmp_path / "release"
    (root / RELEASE_CHECKPOINT).parent.mkdir(parents=True)
    sat = wan_to_sat(tiny_weights())
    torch.save({"module": sat, "payload": WritesAFile()}, root / RELEASE_CHECKPOINT)
    with pytest.raises(CheckpointError, match="refused to unpickle builtins.exec"):
        load_transformer(root, config=tiny_config())
    assert not marker.exists()


# ----------------------------------------------------------------------------- the converter


def test_converter_writes_several_shards_and_a_correct_index(tmp_path, layouts):
    max_bytes = parse_size("2MB")
    folder = convert(layouts["release"], tmp_path / "out", dtype=torch.float32, max_shard_size=max_bytes,
                     config=tiny_config())
    index = json.loads((folder / INDEX_NAME).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) >= 3
    count = len(files)
    assert files == [f"diffusion_pytorch_model-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]
    assert sorted(index["weight_map"]) == sorted(tiny_weights())
    total = 0
    for file in files:
        with safe_open(folder / file, "pt") as shard:
            assert sorted(shard.keys()) == sorted(k for k, v in index["weight_map"].items() if v == file)
            sizes = [math.prod(shard.get_slice(k).get_shape()) * 4 for k in shard.keys()]
        assert sum(sizes) <= max_bytes or len(sizes) == 1
        total += sum(sizes)
    assert index["metadata"]["total_size"] == total
    assert not (folder / WEIGHTS_NAME).exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "SCAIL2Transformer3DModel" and config["num_heads"] == 2
    state = load_state_dict(folder)
    assert all(torch.equal(state[k], v) for k, v in tiny_weights().items())


def test_converter_stores_bf16_with_fp32_modules_kept(tmp_path, layouts):
    folder = convert(layouts["single"], tmp_path / "out", config=tiny_config())
    assert (folder / WEIGHTS_NAME).exists() and not (folder / INDEX_NAME).exists()  # fits one shard
    with safe_open(folder / WEIGHTS_NAME, "pt") as f:
        assert f.get_tensor("blocks.0.self_attn.q.weight").dtype == torch.bfloat16
        assert f.get_tensor("blocks.0.modulation").dtype == torch.float32
        assert f.get_tensor("time_projection.1.weight").dtype == torch.float32
        assert f.get_tensor("img_emb.proj.1.weight").dtype == torch.bfloat16


def test_converter_refuses_a_non_empty_destination(tmp_path, layouts):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an empty folder"):
        convert(layouts["single"], tmp_path / "out", config=tiny_config())
    with pytest.raises(CheckpointError, match=r"out/keep\.txt/converted cannot be made: .*keep\.txt is a file, not a folder"):
        convert(layouts["single"], tmp_path / "out" / "keep.txt" / "converted", config=tiny_config())
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_convert_cli(tmp_path, capsys):
    assert convert_main([str(TINY_WEIGHTS), str(tmp_path / "cli"), "--dtype", "fp16", "--shard-size", "1MB"]) == 0
    assert (tmp_path / "cli" / INDEX_NAME).exists()
    assert "converted 91 tensors" in capsys.readouterr().out
    assert load_state_dict(tmp_path / "cli")["blocks.0.ffn.0.weight"].dtype == torch.float16
    assert convert_main([str(tmp_path / "nothing.pt"), str(tmp_path / "cli2")]) == 2
    assert "error: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert_main([str(TINY_WEIGHTS), str(tmp_path / "cli3"), "--shard-size", "lots"])


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size(1234) == 1234
    with pytest.raises(ValueError):
        parse_size("5 parsecs")
