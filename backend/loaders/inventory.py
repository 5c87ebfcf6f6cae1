"""What a weights folder holds, file by file, judged from tensor names and shapes (never file names).

A ComfyUI ``models/`` folder, or any folder with its files in ComfyUI's usual sub-folders
(`SUBFOLDERS`), or loose in the folder itself, is read by reading each ``.safetensors`` /
``.sft`` / ``.gguf`` file's header (no tensor data, nothing unpickled) and naming the component
its tensors belong to:

* ``transformer``: Wan-native names with ``patch_embedding_mask.weight`` of shape (dim, 28, 1, 2, 2)
  (a stock Wan 2.1 file, 36 or 16 input channels and no mask convolution, is named and skipped);
* ``text_encoder``: umT5, transformers' names (``encoder.block.N.layer.0.SelfAttention...``, a
  relative position table in every block; ComfyUI's ``umt5_xxl_*`` files), Wan's
  (``blocks.N.pos_embedding``) or llama.cpp's in a GGUF file (``enc.blk.N.attn_rel_b``); a T5
  with one shared table is skipped;
* ``image_encoder``: a CLIP vision tower of width 1280 (ViT-H/14), transformers' names with or
  without ``vision_model.`` (ComfyUI's ``clip_vision_h``) or Wan's open-clip names (``visual.*``);
* ``vae``: the Wan 2.1 VAE with 16 latent channels, Wan's names (``decoder.middle.0.residual...``;
  ComfyUI's ``wan_2.1_vae``, Kijai's ``Wan2_1_VAE_bf16``) or diffusers' (``decoder.mid_block...``);
  the Wan 2.2 VAE (48 channels) is skipped;
* ``lora``: LoRA factors or diffs (checked against the model when merged, `lora`).

Per component `Inventory.choose` takes the most precise usable file (`PRECISION_RANK`: full
precision, then fp8_scaled, then GGUF by bits) and says why, and why each other file was skipped.
Folders holding a ``config.json`` are a diffusers / transformers model folder, read whole by
`encoder_folders` and `layouts`, and not looked into here.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .headers import check_file

SUBFOLDERS = ("diffusion_models", "unet", "text_encoders", "clip", "clip_vision", "vae", "loras")
SUFFIXES = (".safetensors", ".sft", ".gguf")
COMPONENTS = ("transformer", "text_encoder", "image_encoder", "vae")
LABELS = {"transformer": "SCAIL-2 transformer", "text_encoder": "umT5-XXL text encoder",
          "image_encoder": "CLIP ViT-H/14 image encoder", "vae": "Wan 2.1 VAE", "lora": "LoRA"}
MAX_DEPTH = 3
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "")
_ST_DTYPES = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F64": "fp32"}
PRECISION_RANK = {"fp32": 0, "bf16": 1, "fp16": 1, "fp8_scaled": 2, "fp8": 3}
_GGUF_RANK = (("Q8", 4), ("F16", 1), ("BF16", 1), ("F32", 0), ("Q6", 5), ("Q5", 6), ("Q4", 7), ("Q3", 8),
              ("Q2", 9))
CLIP_WIDTH = 1280
VAE_LATENTS = 16


@dataclass
class WeightsFile:
    """One file and what its header says: which component, how it is stored, or why it is unusable."""

    path: Path
    component: str  # one of COMPONENTS, "lora", or "" (not a SCAIL-2 part)
    precision: str = ""  # "fp16", "bf16", "fp32", "fp8_scaled", "fp8", "gguf Q4_K_M", ...
    key_layout: str = ""  # "wan", "hf", "diffusers", "open_clip" (how its tensors are named)
    problem: str = ""  # why it cannot be used; '' when usable
    size: int = 0

    @property
    def usable(self) -> bool:
        return not self.problem and bool(self.component)

    @property
    def rank(self) -> int:
        if self.precision.startswith("gguf"):
            kind = self.precision.split(" ", 1)[-1]
            return next((rank for prefix, rank in _GGUF_RANK if kind.startswith(prefix)), 10)
        return PRECISION_RANK.get(self.precision, 10)

    def as_dict(self) -> dict:
        return {"path": str(self.path), "component": self.component, "precision": self.precision,
                "key_layout": self.key_layout, "problem": self.problem, "size_bytes": self.size}


@dataclass
class Choice:
    """The file chosen for one component, why, and every other candidate with why it was skipped."""

    component: str
    file: WeightsFile | None
    reason: str = ""
    skipped: list[tuple[WeightsFile, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        chosen = None if self.file is None else dict(self.file.as_dict(), reason=self.reason)
        return {"component": self.component, "chosen": chosen,
                "skipped": [{"path": str(f.path), "why": why} for f, why in self.skipped]}


# -- reading headers --------------------------------------------------------------------------------


def safetensors_entries(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors header (the file is checked whole before)."""
    with path.open("rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(length))
    return {name: (entry["dtype"], tuple(entry["shape"])) for name, entry in header.items()
            if name != "__metadata__"}


def gguf_entries(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], str]:
    """({name: (GGML type, shape)}, declared file type) from a GGUF file's tensor table."""
    from .gguf_files import file_type, read_gguf, tensor_shapes

    reader = read_gguf(path)
    shapes = tensor_shapes(reader)
    return {t.name: (t.tensor_type.name, shapes[t.name]) for t in reader.tensors}, file_type(reader)


def classify(path: Path) -> WeightsFile:
    """The component and storage of one weights file, from its header (see module doc)."""
    path = Path(path)
    check = check_file(path)
    size = path.stat().st_size if path.exists() else 0
    if not check.ok:
        return WeightsFile(path, "", problem=check.detail or check.status, size=size)
    if check.kind == "gguf":
        entries, declared = gguf_entries(path)
        quantised = [kind for kind, _ in entries.values() if kind not in ("F32", "F16", "BF16")]
        main = max(set(quantised), key=quantised.count) if quantised else "F16"
        precision = f"gguf {declared or main}"
    elif check.kind == "safetensors":
        entries = safetensors_entries(path)
        precision = _safetensors_precision(path, entries)
    else:
        return WeightsFile(path, "", problem=f"a {check.kind} file, not read from a ComfyUI folder", size=size)
    component, key_layout, problem = kind_of(entries)
    if precision.startswith("refused:"):
        problem = problem or precision.removeprefix("refused:")
        precision = "quantised"
    return WeightsFile(path, component, precision, key_layout, problem, size)


def _safetensors_precision(path: Path, entries: dict) -> str:
    from .errors import CheckpointError
    from .fp8_scaled import comfy_quant_format, refuse_format

    names = list(entries)
    quant = [n for n in names if n.endswith(".comfy_quant")]
    if quant:
        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            try:
                for name in quant:
                    refuse_format(path, name, comfy_quant_format(handle.get_tensor(name)))
            except CheckpointError as exc:
                return "refused:" + str(exc).split(": ", 1)[-1]
    float8 = [n for n, (dtype, _) in entries.items() if dtype.startswith("F8")]
    if float8:
        scaled = any(n.endswith((".scale_weight", ".weight_scale")) for n in names)
        return "fp8_scaled" if scaled else "fp8"
    weights = [_ST_DTYPES.get(dtype, dtype.lower()) for dtype, shape in entries.values() if len(shape) >= 2]
    return max(set(weights), key=weights.count) if weights else ""


def kind_of(entries: dict[str, tuple[str, tuple[int, ...]]]) -> tuple[str, str, str]:
    """(component, key layout, problem) of a file with these tensors (see module doc)."""
    names = list(entries)

    def shape(name):
        return entries[name][1] if name in entries else None

    if any("lora" in n.lower() or n.endswith((".diff", ".diff_b")) for n in names):
        return "lora", "", ""
    prefix = next((p for p in _PREFIXES if any(n.startswith(p + "patch_embedding") for n in names)), None)
    if prefix is not None:
        mask = shape(prefix + "patch_embedding_mask.weight")
        if mask is not None:
            ok = len(mask) >= 2 and mask[1] == 28  # the full shape is checked when loading
            return "transformer", "wan", "" if ok else f"patch_embedding_mask.weight has shape {mask}, not SCAIL-2's"
        embed = shape(prefix + "patch_embedding.weight") or ()
        what = {36: "a stock Wan 2.1 image-to-video", 16: "a Wan text-to-video"}.get(embed[1] if len(embed) > 1 else 0,
                                                                                    "another Wan")
        return "transformer", "wan", f"{what} transformer, not SCAIL-2 (no patch_embedding_mask)"
    if "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in entries:
        blocks = {int(m.group(1)) for n in names if (m := re.match(r"encoder\.block\.(\d+)\.", n))}
        if len(blocks) > 1 and "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in entries:
            return "text_encoder", "hf", "a T5 text encoder (one shared position table), not umT5"
        return "text_encoder", "hf", ""
    if "enc.blk.0.attn_rel_b.weight" in entries:  # llama.cpp's T5 names (a GGUF text encoder)
        blocks = {n.split(".")[2] for n in names if n.startswith("enc.blk.")}
        if len(blocks) > 1 and "enc.blk.1.attn_rel_b.weight" not in entries:
            return "text_encoder", "gguf", "a T5 text encoder (one shared position table), not umT5"
        return "text_encoder", "gguf", ""
    if "token_embedding.weight" in entries and "blocks.0.pos_embedding.embedding.weight" in entries:
        return "text_encoder", "wan", ""
    for clip_prefix in ("vision_model.", ""):
        cls = shape(clip_prefix + "embeddings.class_embedding")
        if cls is not None:
            if cls[-1] != CLIP_WIDTH:
                return "image_encoder", "hf", f"a CLIP vision tower of width {cls[-1]}; SCAIL-2 needs ViT-H/14 (1280)"
            return "image_encoder", "hf", ""
    if "visual.cls_embedding" in entries or "cls_embedding" in entries:
        cls = shape("visual.cls_embedding") or shape("cls_embedding")
        problem = "" if cls[-1] == CLIP_WIDTH else f"an open-clip ViT of width {cls[-1]}; SCAIL-2 needs ViT-H/14"
        return "image_encoder", "open_clip", problem
    if "visual.transformer.resblocks.0.attn.in_proj_weight" in entries:
        return "image_encoder", "open_clip", "open-clip's own key layout (resblocks), which is not read here"
    if "decoder.middle.0.residual.0.gamma" in entries:
        if "decoder.upsamples.0.upsamples.0.residual.2.weight" in entries:
            return "vae", "wan", "the Wan 2.2 VAE (48 latent channels); SCAIL-2 needs the Wan 2.1 VAE (16)"
        z = (shape("conv2.weight") or (VAE_LATENTS,))[0]
        return "vae", "wan", "" if z == VAE_LATENTS else f"a Wan VAE with {z} latent channels; SCAIL-2 needs 16"
    if "decoder.mid_block.resnets.0.norm1.gamma" in entries and "post_quant_conv.weight" in entries:
        z = shape("post_quant_conv.weight")[0]
        return "vae", "diffusers", "" if z == VAE_LATENTS else f"a VAE with {z} latent channels; SCAIL-2 needs 16"
    return "", "", "not a part of SCAIL-2 (no transformer, umT5, CLIP ViT-H, Wan 2.1 VAE or LoRA tensors)"


# -- a folder ----------------------------------------------------------------------------------------


def candidate_paths(folder: Path) -> list[Path]:
    """Weights files in `folder`, its `models/` and the usual sub-folders (not in model folders with a
    config.json, nor hidden ones), each once."""
    folder = Path(folder)
    roots = [folder] + ([folder / "models"] if (folder / "models").is_dir() else [])
    found: list[Path] = []
    for root in roots:
        found += sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        for sub in SUBFOLDERS:
            found += _walk(root / sub, 1)
    seen, unique = set(), []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _walk(folder: Path, depth: int) -> list[Path]:
    if not folder.is_dir() or folder.name.startswith(".") or (folder / "config.json").is_file():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if depth < MAX_DEPTH:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            files += _walk(sub, depth + 1)
    return files


class Inventory:
    """Every weights file found in a folder (`candidate_paths`), classified (`classify`)."""

    def __init__(self, folder: Path, files: list[WeightsFile]):
        self.folder = Path(folder)
        self.files = files

    @classmethod
    def scan(cls, folder: str | Path) -> "Inventory":
        folder = Path(folder)
        return cls(folder, [classify(p) for p in candidate_paths(folder)] if folder.is_dir() else [])

    def of(self, component: str) -> list[WeightsFile]:
        return [f for f in self.files if f.component == component]

    def damaged(self) -> list[WeightsFile]:
        return [f for f in self.files if not f.component and f.problem and "not a part of" not in f.problem]

    def choose(self, component: str) -> Choice:
        """The most precise usable file of `component` (ties: by path), with every skip explained."""
        label = LABELS[component]
        usable = sorted((f for f in self.of(component) if f.usable), key=lambda f: (f.rank, str(f.path)))
        skipped = [(f, f.problem) for f in self.of(component) if not f.usable]
        if not usable:
            return Choice(component, None, "", skipped)
        chosen = usable[0]
        if len(usable) == 1:
            reason = f"the only usable {label} file here ({chosen.precision})"
        else:
            reason = f"the most precise of {len(usable)} usable {label} files ({chosen.precision})"
        for other in usable[1:]:
            why = (f"another {other.precision} copy; {chosen.path.name} comes first by name"
                   if other.rank == chosen.rank else f"less precise ({other.precision}) than the chosen file")
            skipped.insert(0, (other, why))
        return Choice(component, chosen, reason, skipped)

    def loras(self) -> list[WeightsFile]:
        return self.of("lora")
