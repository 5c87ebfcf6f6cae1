"""Which checkpoint layout a file or folder holds, and where a weights folder keeps its backbone.

Layouts, as `detect_layout` names them (`docs/model.md`, section "Checkpoint layouts"):

* ``"sat"``: the official release, ``<root>/model/1/fsdp2_rank_0000_checkpoint.pt``. A torch zip
  pickle ``{"module": {SAT name: tensor}, ...training state}`` whose names sit under
  ``model.diffusion_model.`` and fuse the attention projections (q|k|v, k|v, k_img|v_img).
* ``"single-file"``: one safetensors file with Wan-native names, possibly under a
  ``model.diffusion_model.`` or ``diffusion_model.`` prefix: the community fp16 file, and
  ComfyUI's ``fp8_scaled`` variant (float8 weights, each with a float32 scale).
* ``"gguf"``: a GGUF quantisation of the single file (ComfyUI-GGUF's Q3_K_M ... Q8_0), read
  by `gguf_source` through diffusers' GGUF support.
* ``"diffusers"``: our converted folder, ``config.json`` plus ``diffusion_pytorch_model.safetensors``
  or its shards and ``diffusion_pytorch_model.safetensors.index.json`` (diffusers' own layout, so
  ``SCAIL2Transformer3DModel.from_pretrained`` reads it too). `backend.loaders.convert` writes it.

Judged by a folder's contents or a file's first bytes, never by its suffix.
"""

from __future__ import annotations

from pathlib import Path

import protocol

from ..models.transformer_scail2 import SCAIL2Transformer3DModel
from .errors import CheckpointError

SAT = "sat"
SINGLE_FILE = "single-file"
DIFFUSERS = "diffusers"
GGUF = "gguf"
LAYOUTS = (SAT, SINGLE_FILE, DIFFUSERS, GGUF)

RELEASE_CHECKPOINT = Path("model") / "1" / "fsdp2_rank_0000_checkpoint.pt"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
MODEL_CLASS_NAME = SCAIL2Transformer3DModel.__name__

ZIP_MAGIC = b"PK\x03\x04"
_GGUF_MAGIC = b"GGUF"


def detect_layout(path: str | Path) -> str:
    """`"sat"`, `"single-file"`, `"gguf"` or `"diffusers"` for a checkpoint file or folder (see module doc).

    Judged by the folder's contents or the file's first bytes, not by its suffix.
    Raises CheckpointError for a missing path, an unknown folder or an unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        if _has_diffusers_files(path):
            return DIFFUSERS
        if (path / RELEASE_CHECKPOINT).is_file():
            return SAT
        raise CheckpointError(
            f"{path}: no SCAIL-2 checkpoint in this folder (looked for {CONFIG_NAME} with {WEIGHTS_NAME} "
            f"or its shards, and for {RELEASE_CHECKPOINT.as_posix()})"
        )
    if path.name in (CONFIG_NAME, INDEX_NAME):
        return detect_layout(path.parent)
    kind = _file_kind(path)
    return {"torch": SAT, "gguf": GGUF}.get(kind, SINGLE_FILE)


def _has_diffusers_files(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and ((folder / INDEX_NAME).is_file() or (folder / WEIGHTS_NAME).is_file())


def _file_kind(path: Path) -> str:
    """"torch" (a zip written by torch.save), "gguf" or "safetensors", from the file's first bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if head.startswith(ZIP_MAGIC):
        return "torch"
    if head.startswith(_GGUF_MAGIC):
        return "gguf"
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":  # a bare pickle: torch's legacy format, which cannot be memory-mapped
        raise CheckpointError(
            f"{path}: a legacy (non-zip) torch pickle; re-save it with a current torch.save or use safetensors"
        )
    raise CheckpointError(f"{path}: neither a safetensors file nor a torch checkpoint (truncated or corrupt?)")


def find_transformer(weights: str | Path) -> Path:
    """The SCAIL-2 backbone checkpoint inside a weights folder (or `weights` itself if a file).

    Looked for, in order: a converted `transformer/` subfolder (not a stock Wan one), the folder
    itself if converted, the official release's `model/1/fsdp2_rank_0000_checkpoint.pt`, then the
    SCAIL-2 files among the folder's own and its ComfyUI sub-folders' (`inventory`, judged by their
    headers): the most precise one (full precision, then fp8_scaled, then GGUF by bits). When none is
    intact but some file there is truncated or damaged, the error names that file and what is wrong.
    """
    from .inventory import Inventory

    weights = Path(weights)
    if not weights.exists():
        raise CheckpointError(f"{weights}: no such file or folder")
    if weights.is_file():
        return weights
    for folder in (weights / "transformer", weights):
        if _is_converted_folder(folder):
            return folder
    if (weights / RELEASE_CHECKPOINT).is_file():
        return weights / RELEASE_CHECKPOINT
    inventory = Inventory.scan(weights)
    choice = inventory.choose("transformer")
    if choice.file is not None:
        return choice.file.path
    damaged = inventory.damaged()
    if damaged:  # a download cut short is not "no transformer": say which file and how
        more = f" ({len(damaged) - 1} more damaged)" if len(damaged) > 1 else ""
        raise CheckpointError(f"{damaged[0].path}: {damaged[0].problem}{more}; no intact SCAIL-2 transformer in "
                              f"{weights}")
    wrong = [f for f in inventory.of("transformer") if f.problem]
    if wrong:
        raise CheckpointError(f"{wrong[0].path}: {wrong[0].problem}; no SCAIL-2 transformer in {weights}")
    raise CheckpointError(
        f"{weights}: no SCAIL-2 transformer found (looked for transformer/ from `python -m backend convert`, "
        f"{RELEASE_CHECKPOINT.as_posix()} from the official release, or a SCAIL-2 .safetensors / .gguf file "
        "there or in diffusion_models/ or unet/)"
    )


def _is_converted_folder(folder: Path) -> bool:
    """A diffusers folder of SCAIL-2 (a Wan2.1-I2V diffusers folder's stock `transformer/` is not)."""
    if not _has_diffusers_files(folder):
        return False
    try:
        config = protocol.read_json_file(folder / CONFIG_NAME)
    except protocol.ProtocolError:
        return True  # let loading report the broken file
    return not isinstance(config, dict) or config.get("_class_name", MODEL_CLASS_NAME) == MODEL_CLASS_NAME
