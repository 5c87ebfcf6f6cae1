"""backend.loaders.headers: weights files judged by their headers, never unpickled (issue 14, item 11)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from backend.loaders.errors import CheckpointError
from backend.loaders.headers import check_file
from backend.loaders.layouts import find_transformer
from backend.loaders.sat import load_pickled_state_dict


class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def files(tmp_path):
    """Whole and broken weights files of both formats."""
    save_file({"patch_embedding_mask.weight": torch.zeros(16, 28), "b": torch.ones(3, dtype=torch.bfloat16)},
              tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    (tmp_path / "cut_header.safetensors").write_bytes(data[:20])
    (tmp_path / "padded.safetensors").write_bytes(data + b"\0" * 8)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "lying.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    # Issue 30, item 7: two tensors sharing bytes, and a dtype the format does not have.
    overlap = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    (tmp_path / "overlap.safetensors").write_bytes(struct.pack("<Q", len(overlap)) + overlap + b"\0" * 12)
    f13 = json.dumps({"w": {"dtype": "F13", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "f13.safetensors").write_bytes(struct.pack("<Q", len(f13)) + f13 + b"\0" * 8)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    torch.save({"module": {"w": torch.zeros(3)}, "rng": np.random.get_state()}, tmp_path / "ok.pt")
    torch.save({"module": {"w": torch.zeros(3)}}, tmp_path / "ok4.pt", pickle_protocol=4)
    pt = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(pt[: len(pt) // 2])
    torch.save({"module": {"w": torch.zeros(3)}, "x": RunsCode(tmp_path / "ran")}, tmp_path / "code.pt")
    torch.save({"module": {"w": torch.zeros(3)}, "x": RunsCode(tmp_path / "ran")}, tmp_path / "code4.pt",
               pickle_protocol=4)
    (tmp_path / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 16)  # no tensors, no metadata
    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x05" + b"\0" * 15)  # 5 tensors promised
    return tmp_path


@pytest.mark.parametrize("name, status, detail", [
    ("ok.safetensors", "ok", ""),
    ("cut.safetensors", "truncated", "truncated: its header promises"),
    ("cut_header.safetensors", "truncated", "truncated inside its header"),
    ("padded.safetensors", "damaged", "damaged: 8 bytes after its last tensor"),
    ("lying.safetensors", "damaged", "damaged: tensor w (F32, shape [4]) needs 16 bytes, its offsets give 8"),
    ("empty.safetensors", "empty", "the file is empty"),
    ("overlap.safetensors", "damaged", "damaged: Error while deserializing header: invalid offset for tensor `b`"),
    ("f13.safetensors", "damaged", "damaged: Error while deserializing header: invalid JSON in header: unknown variant `F13`"),
    ("ok.pt", "ok", ""),
    ("ok4.pt", "ok", ""),
    ("cut.pt", "truncated", "truncated or damaged: a torch checkpoint without its zip directory"),
    ("code.pt", "code", "carries code or objects the safe loader refuses (posix.system)"),
    ("code4.pt", "code", "carries code or objects the safe loader refuses (posix.system)"),
    ("model.gguf", "ok", ""),
    ("cut.gguf", "truncated", "truncated or damaged GGUF file"),
])
def test_every_file_is_judged_by_its_header(files, name, status, detail):
    check = check_file(files / name)
    assert check.status == status and check.detail.startswith(detail), check
    assert "\n" not in check.line()
    assert not (files / "ran").exists()  # nothing was unpickled


@pytest.mark.parametrize("name", ["overlap.safetensors", "f13.safetensors", "lying.safetensors", "ok.safetensors"])
def test_doctor_and_the_loaders_judge_a_safetensors_file_alike(files, name):
    """One header check: a file doctor calls ok is one the loaders open, and one they refuse it calls damaged."""
    from backend.loaders.sources import open_source

    try:
        open_source(files / name)
        loads = True
    except CheckpointError:
        loads = False
    assert check_file(files / name).ok == loads


def test_a_truncated_safetensors_file_says_by_how_much(files):
    whole = (files / "ok.safetensors").stat().st_size
    assert check_file(files / "cut.safetensors").line() == (
        f"{files / 'cut.safetensors'}: truncated: its header promises {whole} bytes, the file holds {whole - 10} "
        "bytes (an interrupted download?)")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_code_pickle_of_any_protocol_is_named_when_refused(files):
    with pytest.raises(CheckpointError, match="refused to unpickle posix.system"):
        load_pickled_state_dict(files / "code4.pt")
    assert not (files / "ran").exists()


def test_a_truncated_transformer_is_named_not_reported_missing(tmp_path):
    save_file({"patch_embedding_mask.weight": torch.zeros(64, 28)}, tmp_path / "wan2.1_14B_SCAIL_2_fp16.safetensors")
    path = tmp_path / "wan2.1_14B_SCAIL_2_fp16.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError) as info:
        find_transformer(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: truncated: its header promises")
    assert message.endswith(f"(an interrupted download?); no intact SCAIL-2 transformer in {tmp_path}")
    # An intact copy beside it is still found.
    save_file({"patch_embedding_mask.weight": torch.zeros(64, 28)}, tmp_path / "scail2_fp8_scaled.safetensors")
    assert find_transformer(tmp_path) == tmp_path / "scail2_fp8_scaled.safetensors"
