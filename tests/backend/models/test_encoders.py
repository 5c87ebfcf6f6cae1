"""Encoders (umT5, CLIP vision, Wan VAE), their checkpoint layouts, and the tiny profile."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ckpt_builders import OFFICIAL_FILES, write_diffusers_encoders, write_official_encoders
from scail_fixtures import tiny_config

from backend.loaders import encoder_checkpoints as ec
from backend.loaders.encoder_folders import detect_layout, load_encoders
from backend.models.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    EncoderError,
    ImageEncoder,
    VideoVAE,
    clean_prompt,
    image_dtype,
)
from backend.models.tiny import TINY_LABEL, TINY_VAE_CONFIG, tiny_encoders, tiny_transformer

PROMPTS = ["a cat", "", "  h&eacute;llo \n  world  "]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny():
    return tiny_encoders(seed=0)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.rand(3, 64, 128, generator=g) * 2 - 1,  # 2:1, must not be cropped
        "video": torch.rand(3, 9, 64, 96, generator=g) * 2 - 1,
    }


@pytest.fixture(scope="module")
def reference(tiny, inputs):
    latents = tiny.vae.encode(inputs["video"])
    return {
        "text": tiny.text.encode(PROMPTS),
        "image": tiny.image.encode(inputs["image"]),
        "latents": latents,
        "video": tiny.vae.decode(latents),
    }


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory, tiny) -> Path:
    return write_official_encoders(tmp_path_factory.mktemp("official"), tiny)


@pytest.fixture(scope="module")
def diffusers_dir(tmp_path_factory, tiny) -> Path:
    return write_diffusers_encoders(tmp_path_factory.mktemp("diffusers"), tiny)


def _link_copy(src: Path, dst: Path, skip: set[str]) -> Path:
    """`src` mirrored into `dst` with symlinks, leaving out the relative paths in `skip`."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


# --------------------------------------------------------------------------- tiny profile


def test_tiny_shapes(tiny, reference):
    assert tiny.label == TINY_LABEL
    # Byte-level tiny tokenizer: real token count = UTF-8 bytes of the cleaned prompt + EOS.
    cleaned = ["a cat", "", "héllo world"]
    assert [c.shape for c in reference["text"]] == [(len(p.encode()) + 1, 32) for p in cleaned]
    assert all(c.dtype == torch.float32 for c in reference["text"])
    assert reference["image"].shape == (1, 257, 1280)
    assert reference["latents"].shape == (16, 3, 8, 12)
    video = reference["video"]
    assert video.shape == (3, 9, 64, 96)
    assert video.min() >= -1 and video.max() <= 1


def test_tiny_is_deterministic_and_feeds_the_tiny_transformer(tiny, reference, inputs):
    state = torch.random.get_rng_state()
    again = tiny_encoders(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state), "building must not touch the global RNG"
    for a, b in zip(again.text.encode(PROMPTS), reference["text"]):
        assert torch.equal(a, b)
    assert torch.equal(again.image.encode(inputs["image"]), reference["image"])
    other = tiny_encoders(seed=1)
    assert not torch.equal(other.image.encode(inputs["image"]), reference["image"])

    model = tiny_transformer(seed=0)
    expected = {k: tuple(v) if isinstance(v, list) else v for k, v in tiny_config().items()}
    assert {k: model.config[k] for k in expected} == expected
    w0 = tiny_transformer(seed=0).state_dict()
    assert all(torch.equal(w0[k], v) for k, v in model.state_dict().items())

    ref_latent = tiny.vae.encode(inputs["video"][:, :1])  # one frame -> one latent frame
    t_lat, h, w = reference["latents"].shape[1:]
    g = torch.Generator().manual_seed(0)
    out = model(
        x=[torch.randn(16, t_lat, h, w, generator=g)],
        pose_latents=[torch.randn(16, t_lat, h // 2, w // 2, generator=g)],
        driving_masks=[torch.zeros(28, t_lat, h // 2, w // 2)],
        ref_latents=[ref_latent],
        ref_masks=[torch.zeros(28, 1 + t_lat, h, w)],
        t=torch.tensor([500.0]),
        context=[reference["text"][0]],
        clip_fea=reference["image"],
    )
    assert out[0].shape == (16, t_lat, h, w) and torch.isfinite(out[0]).all()


# --------------------------------------------------------------------------- preprocessing


def test_text_is_trimmed_and_padding_is_masked(tiny, reference):
    tokenizer, model = tiny.text.tokenizer, tiny.text.model
    ids = tokenizer(["héllo world"], return_tensors="pt")["input_ids"]  # no padding at all
    assert ids[0, -1].item() == tokenizer.eos_token_id
    with torch.no_grad():
        unpadded = model(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(reference["text"][2], unpadded, rtol=1e-5, atol=1e-5)


def test_vae_normalises_with_config_statistics(tiny, inputs, reference):
    video = inputs["video"]
    with torch.no_grad():
        raw = tiny.vae.model.encode(video[None]).latent_dist.mode()[0]
    mean = torch.tensor(tiny.vae.model.config.latents_mean).view(-1, 1, 1, 1)
    std = torch.tensor(tiny.vae.model.config.latents_std).view(-1, 1, 1, 1)
    torch.testing.assert_close(reference["latents"], (raw - mean) / std)
    with torch.no_grad():
        decoded = tiny.vae.model.decode(raw[None]).sample[0].clamp(-1, 1)
    # Float rounding of the normalise/denormalise round trip only; a wrong normalisation is off by O(1).
    torch.testing.assert_close(reference["video"], decoded, rtol=1e-4, atol=2e-4)

    # The statistics come from the config, not from constants.
    from diffusers import AutoencoderKLWan

    custom = AutoencoderKLWan(**TINY_VAE_CONFIG, latents_mean=[0.5] * 16, latents_std=[2.0] * 16)
    custom.load_state_dict(tiny.vae.model.state_dict())
    torch.testing.assert_close(VideoVAE(custom).encode(video), (raw - 0.5) / 2.0)

    with pytest.raises(ValueError, match="4k\\+1"):
        tiny.vae.encode(video[:, :8])


def test_vae_tiled_decode(tiny, reference, monkeypatch):
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan(**TINY_VAE_CONFIG)
    model.load_state_dict(tiny.vae.model.state_dict())
    vae = VideoVAE(model)
    vae.enable_tiling(tile_size=32, stride=24)
    calls = []
    original = model.tiled_decode
    monkeypatch.setattr(model, "tiled_decode", lambda *a, **k: calls.append(1) or original(*a, **k))
    video = vae.decode(reference["latents"])
    assert calls and video.shape == (3, 9, 64, 96)
    assert video.min() >= -1 and video.max() <= 1
    assert not vae.decode(reference["latents"], tiled=False).equal(video)


def test_clip_stretches_without_crop_and_takes_the_penultimate_layer(tiny, inputs, reference):
    image, model = inputs["image"], tiny.image.model
    x = F.interpolate(image[None], size=(224, 224), mode="bicubic", align_corners=False)
    x = ((x + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = model.pre_layrnorm(model.embeddings(x))
        for layer in model.encoder.layers[:-1]:  # all blocks but the last, no final norm
            hidden = layer(hidden, None)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    torch.testing.assert_close(reference["image"], hidden, rtol=1e-4, atol=1e-4)

    # A shortest-side resize + centre crop (the diffusers image processor) gives other features.
    cropped = tiny.image.encode(image[:, :, 32:96])
    assert (cropped - reference["image"]).abs().max() > 1e-2


# --------------------------------------------------------------------------- key mappings


def test_vae_mapping_agrees_with_diffusers_converter(tiny):
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    ours = tiny.vae.model.state_dict()
    wan = ec.diffusers_vae_to_wan(ours)
    assert "decoder.upsamples.4.shortcut.weight" in wan and "encoder.head.2.weight" in wan
    theirs = convert_wan_vae_to_diffusers(wan)
    assert theirs.keys() == ours.keys()
    assert all(theirs[k] is ours[k] for k in ours), "the two mappings pair different tensors"
    back = ec.wan_vae_to_diffusers(wan)
    assert back.keys() == ours.keys() and all(back[k] is ours[k] for k in ours)


def _wan_t5_forward(sd: dict, ids: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's T5Encoder forward written against Wan's own key names (relative bias per block)."""

    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def bucket(rel, buckets=32, max_dist=128):
        half = buckets // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(max_dist / exact) * (half - exact)).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))

    b, length = ids.shape
    x = sd["token_embedding.weight"][ids]
    positions = bucket(torch.arange(length)[None, :] - torch.arange(length)[:, None])
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(layers):
        p = f"blocks.{i}."
        h = rms(x, sd[p + "norm1.weight"])
        q, k, v = (F.linear(h, sd[p + f"attn.{n}.weight"]).view(b, length, heads, -1) for n in "qkv")
        bias = sd[p + "pos_embedding.embedding.weight"][positions].permute(2, 0, 1)[None]
        bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        attn = (torch.einsum("binc,bjnc->bnij", q, k) + bias).softmax(-1)
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, length, -1), sd[p + "attn.o.weight"])
        h = rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(F.linear(h, sd[p + "ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(F.linear(h, sd[p + "ffn.fc1.weight"]) * gate, sd[p + "ffn.fc2.weight"])
    return rms(x, sd["norm.weight"])


def test_t5_mapping_matches_wan_t5_semantics(tiny):
    wan = ec.umt5_to_wan_t5(tiny.text.model.state_dict())
    assert {"token_embedding.weight", "norm.weight", "blocks.1.pos_embedding.embedding.weight",
            "blocks.0.ffn.gate.0.weight", "blocks.0.ffn.fc1.weight"} <= wan.keys()
    batch = tiny.text.tokenizer(["a cat", "héllo world"], padding="max_length", max_length=24, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        ours = tiny.text.model(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = _wan_t5_forward(wan, ids, mask, heads=tiny.text.model.config.num_heads)
    real = mask.bool()
    torch.testing.assert_close(ours[real], expected[real], rtol=1e-4, atol=1e-4)
    config = ec.wan_t5_config(wan)
    assert (config.d_model, config.d_kv, config.d_ff, config.num_heads, config.num_layers) == (32, 16, 64, 2, 2)


def _open_clip_penultimate(sd: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's open-clip VisionTransformer(use_31_block=True) forward against its own key names."""
    v = {k.removeprefix("visual."): t for k, t in sd.items()}
    weight = v["patch_embedding.weight"]
    x = F.conv2d(pixels, weight, stride=weight.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([v["cls_embedding"].expand(len(x), -1, -1), x], dim=1) + v["pos_embedding"]

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], v[name + ".weight"], v[name + ".bias"], 1e-5)

    x = ln(x, "pre_norm")
    layers = len({k.split(".")[1] for k in v if k.startswith("transformer.")})
    for i in range(layers - 1):
        p = f"transformer.{i}."
        b, s, c = x.shape
        qkv = F.linear(ln(x, p + "norm1"), v[p + "attn.to_qkv.weight"], v[p + "attn.to_qkv.bias"])
        q, k, val = qkv.view(b, s, 3, heads, c // heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), val.transpose(1, 2))
        x = x + F.linear(a.transpose(1, 2).reshape(b, s, c), v[p + "attn.proj.weight"], v[p + "attn.proj.bias"])
        h = F.gelu(F.linear(ln(x, p + "norm2"), v[p + "mlp.0.weight"], v[p + "mlp.0.bias"]))
        x = x + F.linear(h, v[p + "mlp.2.weight"], v[p + "mlp.2.bias"])
    return x


def test_clip_mapping_matches_open_clip_semantics(tiny, inputs, reference):
    wan = ec.clip_vision_to_open_clip(tiny.image.model.state_dict())
    assert wan["visual.cls_embedding"].shape == (1, 1, 1280) and wan["visual.pos_embedding"].shape == (1, 257, 1280)
    assert wan["visual.transformer.0.attn.to_qkv.weight"].shape == (3 * 1280, 1280)
    pixels = tiny.image.preprocess(inputs["image"])
    expected = _open_clip_penultimate(wan, pixels, heads=16)
    torch.testing.assert_close(reference["image"], expected, rtol=1e-4, atol=1e-4)
    config = ec.open_clip_vision_config(wan)
    assert (config.image_size, config.patch_size, config.num_hidden_layers, config.intermediate_size) == (
        224, 14, 2, 64)


# --------------------------------------------------------------------------- layouts


def _assert_same_outputs(loaded, reference, inputs):
    for a, b in zip(loaded.text.encode(PROMPTS), reference["text"]):
        assert torch.equal(a, b)
    assert torch.equal(loaded.image.encode(inputs["image"]), reference["image"])
    assert torch.equal(loaded.vae.encode(inputs["video"]), reference["latents"])
    assert torch.equal(loaded.vae.decode(reference["latents"]), reference["video"])


def test_loads_official_release_layout(official_dir, reference, inputs):
    assert detect_layout(official_dir) == "official"
    loaded = load_encoders(official_dir, "cpu", torch.float32)
    assert "SCAIL-2" in loaded.label
    _assert_same_outputs(loaded, reference, inputs)


def test_loads_diffusers_folder(diffusers_dir, reference, inputs):
    assert detect_layout(diffusers_dir) == "diffusers"
    loaded = load_encoders(diffusers_dir, "cpu", torch.float32)
    assert "diffusers" in loaded.label
    _assert_same_outputs(loaded, reference, inputs)


def test_official_layout_casts_to_the_requested_dtype(official_dir):
    loaded = load_encoders(official_dir, "cpu", torch.bfloat16)
    # CLIP beside a bf16 job runs in float16, as the official code (issue 16).
    assert loaded.text.dtype == torch.bfloat16 and loaded.image.dtype == torch.float16
    assert loaded.vae.dtype == torch.float32
    assert loaded.text.encode(["a cat"])[0].dtype == torch.float32
    assert load_encoders(official_dir, "cpu", torch.float32).image.dtype == torch.float32


# --------------------------------------------------------------------------- official numerics (issue 16)


def test_clip_runs_in_float16_beside_a_bf16_job_which_drifts_less_than_bf16(inputs):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    assert image_dtype(torch.bfloat16) == torch.float16 and image_dtype(torch.float32) == torch.float32
    torch.manual_seed(0)  # a narrow CLIP: the comparison holds for any width, and half matmuls are slow on a CPU
    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                             num_attention_heads=4, image_size=56, patch_size=14))
    exact = ImageEncoder(copy.deepcopy(model)).encode(inputs["image"])
    drift = {}
    for dtype in (torch.float16, torch.bfloat16):  # float16 runs on the CPU too (torch >= 2.1)
        half = ImageEncoder(copy.deepcopy(model).to(dtype))
        drift[dtype] = (half.encode(inputs["image"]) - exact).abs().max().item()
    assert drift[torch.float16] < drift[torch.bfloat16] / 2, drift


@pytest.mark.parametrize("prompt, cleaned", [
    ("The Mona Lisa doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t have eyebrows.",
     "The Mona Lisa doesn't have eyebrows."),  # ftfy undoes the mojibake (and uncurls the quote)
    ("fish &amp;amp; chips", "fish & chips"),  # HTML entities undone twice
    ("  two\n\t lines\u3000 ", "two lines"),  # runs of white space, Unicode ones too
])
def test_the_text_cleaner_is_the_official_one(prompt, cleaned):
    assert clean_prompt(prompt) == cleaned


def test_a_backend_without_ftfy_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "ftfy", None)  # `import ftfy` now raises ImportError
    with pytest.raises(EncoderError, match="lacks ftfy"):
        clean_prompt("a cat")


@pytest.mark.parametrize(
    "skip, expected",
    [
        ({OFFICIAL_FILES["vae"]}, "Wan2.1_VAE.pth"),
        ({OFFICIAL_FILES["t5"]}, "umt5-xxl/models_t5_umt5-xxl-enc-bf16.pth"),
        ({OFFICIAL_FILES["clip"]}, "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth"),
        ({"umt5-xxl/tokenizer.json", "umt5-xxl/tokenizer_config.json"}, "tokenizer"),
    ],
)
def test_official_layout_missing_file_is_named(official_dir, tmp_path, skip, expected):
    folder = _link_copy(official_dir, tmp_path / "weights", skip)
    with pytest.raises(EncoderError, match=expected.replace(".", r"\.")) as info:
        load_encoders(folder, "cpu", torch.float32)
    assert "zai-org/SCAIL-2" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("component", ["vae", "text_encoder", "image_encoder", "tokenizer"])
def test_diffusers_folder_missing_component_is_named(diffusers_dir, tmp_path, component):
    folder = _link_copy(diffusers_dir, tmp_path / "weights", {component})
    with pytest.raises(EncoderError, match=f"missing {component}/") as info:
        load_encoders(folder, "cpu", torch.float32)
    assert "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" in str(info.value)


def test_empty_or_absent_folder(tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        load_encoders(tmp_path / "nowhere", "cpu", torch.float32)
    with pytest.raises(EncoderError, match="Wan2.1_VAE.pth.*image_encoder/"):
        load_encoders(tmp_path, "cpu", torch.float32)


def test_all_missing_release_files_are_listed_at_once(official_dir, tmp_path):
    folder = _link_copy(official_dir, tmp_path / "weights", {"umt5-xxl", OFFICIAL_FILES["clip"]})
    with pytest.raises(EncoderError) as info:
        load_encoders(folder, "cpu", torch.float32)
    message = str(info.value)
    assert OFFICIAL_FILES["t5"] in message and OFFICIAL_FILES["clip"] in message and "tokenizer" in message
    assert OFFICIAL_FILES["vae"] not in message and "\n" not in message


def test_wrong_checkpoint_in_a_slot_is_rejected(official_dir, tmp_path):
    folder = _link_copy(official_dir, tmp_path / "weights", {OFFICIAL_FILES["vae"]})
    (folder / OFFICIAL_FILES["vae"]).symlink_to(official_dir / OFFICIAL_FILES["t5"])
    with pytest.raises(EncoderError, match="not a Wan 2.1 VAE"):
        load_encoders(folder, "cpu", torch.float32)
    pickled = tmp_path / "pickled.pth"
    torch.save({"weight": torch.zeros(1), "code": Path("not a tensor")}, pickled)
    with pytest.raises(EncoderError, match="weights-only"):
        ec.read_state_dict(pickled)
    with pytest.raises(EncoderError, match="unexpected tensor"):
        ec.wan_vae_to_diffusers({"encoder.conv1.weight": torch.zeros(1), "blocks.0.x.weight": torch.zeros(1)})


def test_free_offloads_or_drops(inputs):
    encoders = tiny_encoders(seed=2)
    image = ImageEncoder(encoders.image.model)
    before = image.encode(inputs["image"])
    image.free()
    assert image.device.type == "cpu"
    assert torch.equal(image.to("cpu").encode(inputs["image"]), before)
    encoders.free(drop=True)
    with pytest.raises(EncoderError, match="freed"):
        encoders.text.encode(["a cat"])
