"""Reading GGUF files' tables: tensor shapes, declared file type, and a file's quantisation summary.

Shared by `inventory` (which component a file is) and `gguf_source` (reading the tensors); see
`gguf_source` for the conventions of ComfyUI-GGUF's files.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CheckpointError, first_line

ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."
FILE_TYPE_KEY = "general.file_type"
FLOAT_TYPES = ("F32", "F16", "BF16")


def read_gguf(path: Path):
    """The `gguf.GGUFReader` of `path` (memory-mapped: tensor data are views), or CheckpointError."""
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path}: not a readable GGUF file, truncated or damaged ({size} bytes; "
                              f"{first_line(exc)})") from None


def tensor_shapes(reader) -> dict[str, tuple[int, ...]]:
    """Each tensor's logical shape (outermost first), from `orig_shape` metadata or the reversed `ne`."""
    shapes = {}
    for tensor in reader.tensors:
        orig = reader.get_field(ORIG_SHAPE_KEY + tensor.name)
        if orig is not None:
            shapes[tensor.name] = tuple(int(v) for v in orig.contents())
        else:
            shapes[tensor.name] = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    return shapes


def file_type(reader) -> str:
    """The file's declared quantisation (`general.file_type`, e.g. "Q4_K_M"), '' when absent."""
    from gguf import LlamaFileType

    field = reader.get_field(FILE_TYPE_KEY)
    if field is None:
        return ""
    try:
        return LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")
    except ValueError:
        return str(field.contents())


def family(name: str) -> str:
    """A tensor's family: its name with the block index replaced by '*' (blocks.*.ffn.0.weight)."""
    return re.sub(r"^(blocks|transformer\.layers)\.\d+\.", r"\1.*.", name)


def summarize(types: dict[str, str], declared: str = "") -> dict:
    """The `quantization` record of a GGUF file: {"format", "file_type", "types", "families"}.

    `types` maps Wan-native names to GGML type names. `families` names the type of each family
    not stored in F32; a family whose blocks use several types (Q4_K_M keeps some in Q6_K) lists
    each with its count, most frequent first ("Q4_Kx30, Q6_Kx10").
    """
    counts: dict[str, int] = {}
    by_family: dict[str, dict[str, int]] = {}
    for name, kind in types.items():
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "F32":  # biases, norms, modulations: kept in full precision by every converter
            continue
        group = by_family.setdefault(family(name), {})
        group[kind] = group.get(kind, 0) + 1
    families = {}
    for name, group in sorted(by_family.items()):
        ordered = sorted(group.items(), key=lambda item: -item[1])
        families[name] = ordered[0][0] if len(ordered) == 1 else ", ".join(f"{k}x{n}" for k, n in ordered)
    quantised = {k: n for k, n in counts.items() if k not in FLOAT_TYPES}
    main = max(quantised, key=quantised.get) if quantised else max(counts, key=counts.get, default="")
    return {"format": "gguf", "file_type": declared or main, "types": dict(sorted(counts.items())),
            "families": families}
