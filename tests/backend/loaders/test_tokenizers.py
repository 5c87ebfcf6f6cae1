"""Where the umT5 tokenizer is found, in order, and what to download when it is not."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from backend.loaders.tokenizers import UMT5_REPO, find_umt5_tokenizer


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def tokenizer_at(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_each_place_in_order(tmp_path, hub):
    weights = tmp_path / "models"
    text_encoder = weights / "text_encoders" / "umt5_xxl_fp16.safetensors"
    text_encoder.parent.mkdir(parents=True)
    text_encoder.write_bytes(b"")
    cached = tokenizer_at(hub / "models--google--umt5-xxl" / "snapshots" / "abc123")
    found = find_umt5_tokenizer(weights, text_encoder)
    assert found.path == cached and found.where == f"in the Hugging Face cache ({UMT5_REPO})"
    official = tokenizer_at(weights / "umt5-xxl")
    assert find_umt5_tokenizer(weights, text_encoder).path == official
    assert "official release's umt5-xxl/" in find_umt5_tokenizer(weights, text_encoder).where
    beside = tokenizer_at(text_encoder.parent / "umt5-xxl")
    assert find_umt5_tokenizer(weights, text_encoder).path == beside
    assert find_umt5_tokenizer(weights, text_encoder).where == "in umt5-xxl/ beside the text encoder file"
    (text_encoder.parent / "tokenizer.json").write_text("{}")
    assert find_umt5_tokenizer(weights, text_encoder).where == "beside the text encoder file"


def test_a_diffusers_repo_in_the_cache_counts(tmp_path, hub):
    snapshot = hub / "models--Wan-AI--Wan2.1-I2V-14B-480P-Diffusers" / "snapshots" / "f00"
    tokenizer_at(snapshot / "tokenizer")
    found = find_umt5_tokenizer(tmp_path)
    assert found.path == snapshot / "tokenizer" and "Wan2.1-I2V-14B-480P-Diffusers" in found.where


def test_missing_names_the_download(tmp_path, hub):
    text_encoder = tmp_path / "text_encoders" / "umt5_xxl_fp16.safetensors"
    text_encoder.parent.mkdir()
    save_file({"spiece_model": torch.zeros(8, dtype=torch.uint8), "shared.weight": torch.zeros(2, 2)}, text_encoder)
    missing = find_umt5_tokenizer(tmp_path, text_encoder)
    assert not missing.found
    assert f"hf download {UMT5_REPO} tokenizer.json" in missing.advice
    assert f"--local-dir {text_encoder.parent / 'umt5-xxl'}" in missing.advice
    assert "embeds ComfyUI's copy" in missing.advice and "sentencepiece" in missing.advice
    plain = find_umt5_tokenizer(tmp_path)
    assert "embeds" not in plain.advice and f"--local-dir {tmp_path / 'umt5-xxl'}" in plain.advice
