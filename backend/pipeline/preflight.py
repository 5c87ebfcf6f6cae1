"""Checks a job passes before any model time is spent: that each LoRA file it names is one.

Loading the SCAIL-2 transformer takes minutes with real weights, and a LoRA is merged only
after it: a missing, unreadable, truncated or foreign file is found here first, from the
file's header alone (nothing is unpickled, no tensor is read). Whether each key matches a
module of the model is still `loaders.lora`'s check, at merge time.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from ..loaders.lora import LoraError
from ..loaders.errors import few
from ..loaders.lora_keys import VARIANT_HINTS, split_kind

_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header


def check_lora_files(loras: list[tuple[str, float]]) -> None:
    """Raise LoraError (one line) unless every (path, strength) names a readable LoRA file."""
    for path, _strength in loras:
        check_lora_file(Path(path))


def check_lora_file(path: Path) -> None:
    """A safetensors file whose keys are all LoRA keys, or a torch zip checkpoint with its data."""
    if not path.exists():
        raise LoraError(f"LoRA file not found: {path}")
    if path.is_dir():
        raise LoraError(f"{path}: is a folder; give the LoRA file itself")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if size > 8 and head and f.read(1) == b"{":
                _check_safetensors(path, f, head, size)
                return
    except OSError as exc:
        raise LoraError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise LoraError(f"{path}: the file is empty (an interrupted download?)")
    if head.startswith(b"PK\x03\x04"):
        _check_torch_zip(path)
    elif head[:1] == b"\x80":
        raise LoraError(f"{path}: a legacy (non-zip) torch pickle; re-save it with a current torch.save or use "
                        "safetensors")
    else:
        raise LoraError(f"{path}: neither a safetensors file nor a torch checkpoint (truncated or corrupt?)")


def _check_safetensors(path: Path, f, head: bytes, size: int) -> None:
    (length,) = struct.unpack("<Q", head)
    if length > _MAX_HEADER_BYTES or 8 + length > size:
        raise LoraError(f"{path}: truncated or corrupt safetensors file (its header runs past the end)")
    f.seek(8)
    try:
        header = json.loads(f.read(length))
    except ValueError:
        raise LoraError(f"{path}: truncated or corrupt safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise LoraError(f"{path}: corrupt safetensors file (its header is not a table of tensors)")
    tensors = {key: value for key, value in header.items() if key != "__metadata__"}
    ends = [value.get("data_offsets", [0, 0])[1] for value in tensors.values() if isinstance(value, dict)]
    if len(ends) != len(tensors) or not all(isinstance(end, int) for end in ends):
        raise LoraError(f"{path}: corrupt safetensors file (a tensor without its place in the file)")
    if 8 + length + max(ends, default=0) > size:
        raise LoraError(f"{path}: truncated safetensors file ({size} bytes; its tensors need "
                        f"{8 + length + max(ends)}): an interrupted download?")
    if not tensors:
        raise LoraError(f"{path}: holds no tensors, so it is not a LoRA")
    foreign = sorted(key for key in tensors if split_kind(key) is None)
    if len(foreign) == len(tensors):
        raise LoraError(f"{path}: holds no LoRA tensors (no lora_down/lora_up, lora_A/lora_B, .diff or .diff_b "
                        "keys; is it a full model checkpoint?)")
    if foreign:
        variant = next((f"; {name} LoRAs are not supported" for marker, name in VARIANT_HINTS.items()
                        if any(marker in key for key in foreign)), "")
        raise LoraError(f"{path}: {len(foreign)} of its {len(tensors)} tensors are no LoRA factors (e.g. "
                        f"{few(foreign)}){variant}")


def _check_torch_zip(path: Path) -> None:
    """A torch.save zip: its directory is readable (a truncated file has none) and it holds a pickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise LoraError(f"{path}: truncated or corrupt torch checkpoint ({exc})") from None
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise LoraError(f"{path}: a zip file, but not a torch checkpoint (no data.pkl)")
