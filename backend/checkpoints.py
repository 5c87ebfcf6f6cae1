"""Loading the SCAIL-2 backbone from the checkpoint layouts users download.

Layouts, as `detect_layout` names them (spec section 6):

* ``"sat"``: the official release, ``<root>/model/1/fsdp2_rank_0000_checkpoint.pt``. A torch zip
  pickle ``{"module": {SAT name: tensor}, ...training state}`` whose names sit under
  ``model.diffusion_model.`` and fuse the attention projections (q|k|v, k|v, k_img|v_img).
* ``"single-file"``: one safetensors file with Wan-native names, possibly under a
  ``model.diffusion_model.`` or ``diffusion_model.`` prefix: the community fp16 file, and
  ComfyUI's ``fp8_scaled`` variant (float8 weights, each with a float32 scale).
* ``"diffusers"``: our converted folder, ``config.json`` plus ``diffusion_pytorch_model.safetensors``
  or its shards and ``diffusion_pytorch_model.safetensors.index.json`` (diffusers' own layout, so
  ``SCAIL2Transformer3DModel.from_pretrained`` reads it too). `backend.convert` writes it.

Whatever the layout, tensors come out under the Wan-native names of `SCAIL2Transformer3DModel`.

Safety: a pickle is only ever read by torch's weights-only unpickler (`torch.load(weights_only=True)`),
which builds tensors and plain containers and refuses every other global; the only extra types
allowed are the numpy array types of the training RNG state the release stores beside the weights.
Nothing in a checkpoint can run code.

Memory: sources are memory-mapped and read one tensor at a time; `load_transformer` builds the
model on the meta device and assigns the loaded tensors, so the weights exist once.
"""

from __future__ import annotations

import inspect
import json
import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .models.transformer_scail2 import SCAIL2_14B_CONFIG, SCAIL2Transformer3DModel

SAT = "sat"
SINGLE_FILE = "single-file"
DIFFUSERS = "diffusers"
LAYOUTS = (SAT, SINGLE_FILE, DIFFUSERS)

RELEASE_CHECKPOINT = Path("model") / "1" / "fsdp2_rank_0000_checkpoint.pt"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
MODEL_CLASS_NAME = SCAIL2Transformer3DModel.__name__

MASK_CHANNELS = 28  # `patch_embedding_mask` input channels: what makes a Wan file SCAIL-2
STOCK_I2V_CHANNELS = 36  # Wan 2.1 I2V's patch_embedding: 16 latent + 4 mask + 16 image-latent
T2V_CHANNELS = 16
SCAIL2_CHANNELS = 20
WAN_HEAD_DIM = 128  # every released Wan 2.1 model (1.3B: 1536/12, 14B: 5120/40)

_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)
_ZIP_MAGIC = b"PK\x03\x04"
_GGUF_MAGIC = b"GGUF"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as SCAIL-2; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------
# SAT -> Wan-native names
#
# The table below is spec section 6, with the exact SAT spellings checked against two
# independent public transcriptions of the official `convert.py` (branch wan-scail2) -- the
# SCAIL-2 converter of WanGP and the one in a scail-2-mlx-style port -- and against the official
# Wan->SAT script's inverse. Assumptions, all confirmed there:
#   * every backbone name sits under `model.diffusion_model.`;
#   * per-block linear layers live under `transformer.layers.{i}` (`attention.query_key_value`,
#     `attention.dense`, `cross_attention.{query,key_value,dense}`, `post_cross_attention_layernorm`,
#     `mlp.dense_h_to_4h`, `mlp.dense_4h_to_h`), each with `.weight` and `.bias`;
#   * per-block norms and modulation live in the adaLN mixin as lists indexed by block:
#     `mixins.adaln_layer.{query,key,cross_query,cross_key,clip_feature_key}_layernorm_list.{i}.weight`,
#     `mixins.adaln_layer.clip_feature_key_value_list.{i}.{weight,bias}` and
#     `mixins.adaln_layer.adaLN_modulations.{i}` (a bare parameter, no `.weight`);
#   * `mixins.final_layer.adaLN_modulation` is bare too; `mixins.final_layer.linear.{weight,bias}`;
#   * `mixins.patch_embed.{proj,proj_pose,proj_mask}`, `time_embed.{0,2}`, `adaln_projection.1`,
#     `text_embedding.{0,2}`, `clip_proj.proj.{0,1,3,4}` keep Wan's sequential indices;
#   * fused tensors are plain concatenations along dim 0 in the order q|k|v, k|v, k_img|v_img
#     (the official converter splits them with `chunk(n, dim=0)`; no per-head interleaving),
#     for the weight and the bias alike;
#   * the modulation parameters have Wan's shapes, (1, 6, dim) and (1, 2, dim). Should a file
#     store them without the leading 1, `_Source.validate` reshapes (same values, same order).
# ---------------------------------------------------------------------------------------------

SAT_PREFIX = "model.diffusion_model."

_SAT_RULES: list[tuple[re.Pattern, tuple[str, ...]]] = [
    (re.compile(pattern), targets)
    for pattern, targets in [
        # Per block, in the transformer: "{0}" is the block index, "{1}" weight or bias.
        (r"transformer\.layers\.(\d+)\.attention\.query_key_value\.(\w+)",
         ("blocks.{0}.self_attn.q.{1}", "blocks.{0}.self_attn.k.{1}", "blocks.{0}.self_attn.v.{1}")),
        (r"transformer\.layers\.(\d+)\.attention\.dense\.(\w+)", ("blocks.{0}.self_attn.o.{1}",)),
        (r"transformer\.layers\.(\d+)\.cross_attention\.query\.(\w+)", ("blocks.{0}.cross_attn.q.{1}",)),
        (r"transformer\.layers\.(\d+)\.cross_attention\.key_value\.(\w+)",
         ("blocks.{0}.cross_attn.k.{1}", "blocks.{0}.cross_attn.v.{1}")),
        (r"transformer\.layers\.(\d+)\.cross_attention\.dense\.(\w+)", ("blocks.{0}.cross_attn.o.{1}",)),
        (r"transformer\.layers\.(\d+)\.post_cross_attention_layernorm\.(\w+)", ("blocks.{0}.norm3.{1}",)),
        (r"transformer\.layers\.(\d+)\.mlp\.dense_h_to_4h\.(\w+)", ("blocks.{0}.ffn.0.{1}",)),
        (r"transformer\.layers\.(\d+)\.mlp\.dense_4h_to_h\.(\w+)", ("blocks.{0}.ffn.2.{1}",)),
        # Per block, in the adaLN mixin's lists.
        (r"mixins\.adaln_layer\.adaLN_modulations\.(\d+)", ("blocks.{0}.modulation",)),
        (r"mixins\.adaln_layer\.query_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.self_attn.norm_q.{1}",)),
        (r"mixins\.adaln_layer\.key_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.self_attn.norm_k.{1}",)),
        (r"mixins\.adaln_layer\.cross_query_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.cross_attn.norm_q.{1}",)),
        (r"mixins\.adaln_layer\.cross_key_layernorm_list\.(\d+)\.(\w+)", ("blocks.{0}.cross_attn.norm_k.{1}",)),
        (r"mixins\.adaln_layer\.clip_feature_key_layernorm_list\.(\d+)\.(\w+)",
         ("blocks.{0}.cross_attn.norm_k_img.{1}",)),
        (r"mixins\.adaln_layer\.clip_feature_key_value_list\.(\d+)\.(\w+)",
         ("blocks.{0}.cross_attn.k_img.{1}", "blocks.{0}.cross_attn.v_img.{1}")),
        # Whole-model modules.
        (r"mixins\.patch_embed\.proj\.(\w+)", ("patch_embedding.{0}",)),
        (r"mixins\.patch_embed\.proj_pose\.(\w+)", ("patch_embedding_pose.{0}",)),
        (r"mixins\.patch_embed\.proj_mask\.(\w+)", ("patch_embedding_mask.{0}",)),
        (r"mixins\.final_layer\.adaLN_modulation", ("head.modulation",)),
        (r"mixins\.final_layer\.linear\.(\w+)", ("head.head.{0}",)),
        (r"time_embed\.(\d+)\.(\w+)", ("time_embedding.{0}.{1}",)),
        (r"adaln_projection\.(\d+)\.(\w+)", ("time_projection.{0}.{1}",)),
        (r"clip_proj\.proj\.(\d+)\.(\w+)", ("img_emb.proj.{0}.{1}",)),
        # `text_embedding.{0,2}` has the same name on both sides.
    ]
]

# Other spellings of Wan-native names seen in third-party conversions (WanGP's SCAIL files).
_ALIASES = {"pose_patch_embedding.": "patch_embedding_pose.", "mask_patch_embedding.": "patch_embedding_mask."}

# Prefixes a backbone's names may carry; names outside the chosen one (a bundled VAE or text
# encoder, e.g. `first_stage_model.` / `conditioner.` in SAT, `vae.` in ComfyUI) are ignored.
_PREFIXES = (SAT_PREFIX, "diffusion_model.", "model.", "")
_BACKBONE_ROOTS = ("patch_embedding", "blocks.", "head.", "mixins.", "transformer.layers.")

# ComfyUI fp8_scaled bookkeeping: `X.weight` (float8) has a float32 scale in `X.scale_weight`
# (older files, with a `scaled_fp8` marker tensor) or `X.weight_scale` (newer files, with a
# `X.comfy_quant` JSON tensor). Input scales only matter to fp8 matmul kernels: ignored.
_WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_IGNORED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
_MARKER = "scaled_fp8"


def sat_to_wan_names(sat_name: str) -> tuple[str, ...] | None:
    """Wan-native names for one SAT name (without `model.diffusion_model.`), several for a fused
    tensor (split evenly along dim 0 in the order given); None when the name is not SAT."""
    for pattern, targets in _SAT_RULES:
        match = pattern.fullmatch(sat_name)
        if match:
            return tuple(target.format(*match.groups()) for target in targets)
    return None


# ---------------------------------------------------------------------------------------------
# Layout detection
# ---------------------------------------------------------------------------------------------


def detect_layout(path: str | Path) -> str:
    """`"sat"`, `"single-file"` or `"diffusers"` for a checkpoint file or folder (see module doc).

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
    return SAT if kind == "torch" else SINGLE_FILE


def _has_diffusers_files(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and ((folder / INDEX_NAME).is_file() or (folder / WEIGHTS_NAME).is_file())


def _file_kind(path: Path) -> str:
    """"torch" (a zip written by torch.save) or "safetensors", from the file's first bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if head.startswith(_GGUF_MAGIC):
        raise CheckpointError(f"{path}: GGUF files are not supported; use the fp16 or fp8_scaled safetensors file")
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
    itself if converted, the official release's `model/1/fsdp2_rank_0000_checkpoint.pt`, then any
    `*.safetensors` directly in the folder or in `diffusion_models/` whose header names
    `patch_embedding_mask` (unquantised files before fp8 ones).
    """
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
    candidates = sorted(weights.glob("*.safetensors")) + sorted((weights / "diffusion_models").glob("*.safetensors"))
    scail2 = [p for p in candidates if _names_scail2_mask(p)]
    scail2.sort(key=lambda p: "fp8" in p.name.lower())  # stable: unquantised first
    if scail2:
        return scail2[0]
    raise CheckpointError(
        f"{weights}: no SCAIL-2 transformer found (looked for transformer/ from `python -m backend convert`, "
        f"{RELEASE_CHECKPOINT.as_posix()} from the official release, or a SCAIL-2 .safetensors file)"
    )


def _is_converted_folder(folder: Path) -> bool:
    """A diffusers folder of SCAIL-2 (a Wan2.1-I2V diffusers folder's stock `transformer/` is not)."""
    if not _has_diffusers_files(folder):
        return False
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # let loading report the broken file
    return not isinstance(config, dict) or config.get("_class_name", MODEL_CLASS_NAME) == MODEL_CLASS_NAME


def _names_scail2_mask(path: Path) -> bool:
    try:
        with safe_open(path, framework="pt") as f:
            return any(key.endswith("patch_embedding_mask.weight") for key in f.keys())
    except (SafetensorError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# Sources: a checkpoint's tensors under Wan-native names, read one at a time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorRef:
    """Where a Wan-native tensor lives: `key` in the file, part `part` of `parts` fused along dim 0."""

    key: str
    part: int = 0
    parts: int = 1
    scale_key: str | None = None  # fp8_scaled: the tensor holding this weight's scale


class _Source:
    """Base: maps the file's keys to Wan-native names; subclasses read raw tensors and shapes."""

    layout: str

    def __init__(self, path: Path, raw_keys: list[str], stored_config: dict | None = None):
        self.path = path
        self.stored_config = stored_config
        self.refs: dict[str, _TensorRef] = {}
        self.ignored: list[str] = []
        self._reshape: dict[str, tuple[int, ...]] = {}
        self._map_names(raw_keys)

    # Subclasses implement these two.
    def raw_shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def raw_tensor(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def _map_names(self, raw_keys: list[str]) -> None:
        """Fill `refs`: strip the backbone prefix, split SAT's fused names, attach fp8 scales."""
        prefix = _backbone_prefix(raw_keys)
        scales: dict[str, str] = {}
        for key in raw_keys:
            if not key.startswith(prefix):
                self.ignored.append(key)
                continue
            name = key[len(prefix):]
            if name == _MARKER or name.endswith(_IGNORED_SUFFIXES):
                continue
            if name.endswith(_WEIGHT_SCALE_SUFFIXES):
                stem = name.rsplit(".", 1)[0]
                scales[stem + ".weight"] = key
                continue
            targets = sat_to_wan_names(name) or (_unalias(name),)
            for part, target in enumerate(targets):
                if target in self.refs:
                    raise CheckpointError(
                        f"{self.path}: two tensors map to {target} ({self.refs[target].key} and {key})"
                    )
                self.refs[target] = _TensorRef(key, part, len(targets))
        for weight, scale_key in scales.items():
            target = _unalias(weight)
            if target not in self.refs:
                raise CheckpointError(f"{self.path}: scale {scale_key} has no weight {prefix}{weight}")
            ref = self.refs[target]
            self.refs[target] = _TensorRef(ref.key, ref.part, ref.parts, scale_key)

    @property
    def names(self) -> list[str]:
        return list(self.refs)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of the Wan-native tensor `name` (a fused tensor's part), without reading it."""
        ref = self.refs[name]
        shape = self.raw_shape(ref.key)
        if ref.parts > 1:
            if not shape or shape[0] % ref.parts:
                raise CheckpointError(
                    f"{self.path}: fused tensor {ref.key} of shape {shape} does not split into {ref.parts} parts"
                )
            shape = (shape[0] // ref.parts, *shape[1:])
        return self._reshape.get(name, shape)

    def read(self, name: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """The tensor `name` (float8 weights dequantised to float32 first), in `dtype` on `device`.

        With the source dtype and the CPU, no copy is made: the result may be a memory-mapped view.
        """
        ref = self.refs[name]
        tensor = self.raw_tensor(ref.key)
        if ref.parts > 1:
            tensor = tensor.chunk(ref.parts, dim=0)[ref.part]
        if ref.scale_key is not None or tensor.dtype in _FLOAT8:
            scale = self.raw_tensor(ref.scale_key) if ref.scale_key is not None else None
            tensor = self._dequantize(name, tensor, scale)
        if name in self._reshape:
            tensor = tensor.reshape(self._reshape[name])
        return tensor.to(device=device, dtype=dtype)

    def _dequantize(self, name: str, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        """ComfyUI fp8_scaled: weight.float() * scale, the scale per tensor or per output row."""
        weight = weight.float()
        if scale is None:
            return weight
        scale = scale.float()
        if scale.numel() == 1:
            return weight * scale.reshape(())
        if scale.numel() == weight.shape[0]:
            return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
        raise CheckpointError(
            f"{self.path}: the scale of {name} has shape {tuple(scale.shape)}; only per-tensor or per-row "
            "fp8 scales are supported"
        )

    def validate(self, expected: dict[str, tuple[int, ...]]) -> None:
        """Raise CheckpointError unless the names and shapes are exactly `expected`'s."""
        missing = [name for name in expected if name not in self.refs]
        unexpected = [name for name in self.refs if name not in expected]
        if missing or unexpected:
            problems = []
            if missing:
                problems.append(f"{len(missing)} of {len(expected)} tensors missing (e.g. {_few(missing)})")
            if unexpected:
                problems.append(f"{len(unexpected)} unexpected (e.g. {_few(unexpected)})")
            raise CheckpointError(f"{self.path}: partial or mismatched checkpoint: {'; '.join(problems)}")
        for name, want in expected.items():
            have = self.shape(name)
            if have == want:
                continue
            if _squeeze(have) == _squeeze(want):  # e.g. a modulation stored as (6, dim), not (1, 6, dim)
                self._reshape[name] = tuple(want)
                continue
            raise CheckpointError(f"{self.path}: {name} has shape {tuple(have)}, SCAIL-2 expects {tuple(want)}")


def _backbone_prefix(keys: list[str]) -> str:
    for prefix in _PREFIXES:
        if any(key.startswith(prefix + root) for key in keys for root in _BACKBONE_ROOTS):
            return prefix
    return ""


def _unalias(name: str) -> str:
    for old, new in _ALIASES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _few(names: list[str], count: int = 3) -> str:
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def _squeeze(shape) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


class _PickleSource(_Source):
    """A torch zip checkpoint, loaded memory-mapped by the weights-only unpickler."""

    layout = SAT

    def __init__(self, path: Path):
        self.state = _load_pickled_state_dict(path)
        super().__init__(path, list(self.state))

    def raw_shape(self, key):
        return tuple(self.state[key].shape)

    def raw_tensor(self, key):
        return self.state[key]


class _SafetensorsSource(_Source):
    """One safetensors file, or the shards of a diffusers folder (key -> file)."""

    def __init__(self, path: Path, layout: str, files: dict[str, Path], stored_config: dict | None, handles=None):
        self.layout = layout
        self._files = files
        self._handles: dict[Path, object] = dict(handles or {})
        super().__init__(path, list(files), stored_config)
        self._check_quantisation()

    def _handle(self, file: Path):
        if file not in self._handles:
            self._handles[file] = _open_safetensors(file)
        return self._handles[file]

    def raw_shape(self, key):
        file = self._files[key]
        try:
            return tuple(self._handle(file).get_slice(key).get_shape())
        except SafetensorError as exc:
            raise CheckpointError(f"{file}: cannot read {key} ({_first_line(exc)})") from None

    def raw_tensor(self, key):
        file = self._files[key]
        try:
            return self._handle(file).get_tensor(key)
        except SafetensorError as exc:
            raise CheckpointError(f"{file}: cannot read {key} ({_first_line(exc)})") from None

    def _check_quantisation(self) -> None:
        """Refuse ComfyUI quantisations other than per-tensor fp8 (nvfp4, mxfp8, int8 ...)."""
        for key in self._files:
            if key.endswith(".comfy_quant"):
                info = json.loads(bytes(self.raw_tensor(key).tolist()).decode("utf-8", "replace") or "{}")
                fmt = str(info.get("format", ""))
                if not fmt.startswith("float8"):
                    raise CheckpointError(
                        f"{self.path}: quantisation format {fmt!r} ({key}) is not supported; "
                        "use the fp16 or fp8_scaled file"
                    )


def _open_safetensors(file: Path):
    try:
        return safe_open(file, framework="pt", device="cpu")
    except SafetensorError as exc:
        raise CheckpointError(f"{file}: truncated or corrupt safetensors file ({_first_line(exc)})") from None
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot open ({exc.strerror or exc})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Safe unpickling
# ---------------------------------------------------------------------------------------------


def _numpy_rng_globals() -> list:
    """Numpy types the weights-only unpickler may build: the release stores numpy's RNG state
    (a uint32 array) beside the weights (as a public port of the converter found). Arrays,
    dtypes and scalars of plain numeric types carry data only; both module spellings of the
    reconstructors are listed since numpy 2 moved `numpy.core` to `numpy._core`."""
    import numpy as np

    multiarray = np._core.multiarray
    allowed = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    allowed += [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                (multiarray.scalar, "numpy.core.multiarray.scalar")]
    allowed += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]
    return allowed


def _allowed_global_names() -> set[str]:
    names = set()
    for item in _numpy_rng_globals():
        obj, name = item if isinstance(item, tuple) else (item, None)
        names.add(name or f"{obj.__module__}.{obj.__qualname__}")
    return names


def _load_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a torch zip checkpoint: under "module" (SAT/DeepSpeed/FSDP),
    "state_dict", or the top level. Memory-mapped; never runs pickled code."""
    try:
        with torch.serialization.safe_globals(_numpy_rng_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        refused = sorted(set(_unsafe_globals(path)) - _allowed_global_names())
        what = ", ".join(refused[:4]) if refused else "non-tensor objects"
        raise CheckpointError(
            f"{path}: refused to unpickle {what}: checkpoints are loaded without running pickled code, "
            "and model weights never need it"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt torch checkpoint ({_first_line(exc)[:160]})") from None
    state = obj
    if isinstance(obj, dict):
        for key in ("module", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def _unsafe_globals(path: Path) -> list[str]:
    """Globals a pickle names, found by reading its opcodes (nothing is executed)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # best effort, only to name the culprit in the message
        return []


# ---------------------------------------------------------------------------------------------
# Opening, configuration, validation
# ---------------------------------------------------------------------------------------------


def _open_source(path: str | Path) -> _Source:
    path = Path(path)
    layout = detect_layout(path)
    if path.is_file() and path.name in (CONFIG_NAME, INDEX_NAME):
        path = path.parent
    if layout == SAT:
        return _PickleSource(path / RELEASE_CHECKPOINT if path.is_dir() else path)
    if layout == SINGLE_FILE:
        handle = _open_safetensors(path)
        metadata = handle.metadata() or {}
        stored = _parse_json(path, metadata["config"]) if "config" in metadata else None
        files = {key: path for key in handle.keys()}
        return _SafetensorsSource(path, SINGLE_FILE, files, stored, handles={path: handle})
    return _open_diffusers_folder(path)


def _open_diffusers_folder(folder: Path) -> _Source:
    config = _parse_json(folder / CONFIG_NAME, (folder / CONFIG_NAME).read_text(encoding="utf-8"))
    class_name = config.get("_class_name", MODEL_CLASS_NAME)
    if class_name != MODEL_CLASS_NAME:
        hint = " (stock Wan 2.1)" if class_name == "WanTransformer3DModel" else ""
        raise CheckpointError(f"{folder}: holds a {class_name}{hint}, not SCAIL-2's {MODEL_CLASS_NAME}")
    if (folder / INDEX_NAME).is_file():
        index = _parse_json(folder / INDEX_NAME, (folder / INDEX_NAME).read_text(encoding="utf-8"))
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{folder / INDEX_NAME}: no weight_map")
        files = {key: folder / name for key, name in weight_map.items()}
        absent = sorted({f.name for f in files.values() if not f.is_file()})
        if absent:
            raise CheckpointError(f"{folder}: {len(absent)} shard file(s) listed in {INDEX_NAME} are missing "
                                  f"(e.g. {_few(absent)})")
        return _SafetensorsSource(folder, DIFFUSERS, files, config)
    handle = _open_safetensors(folder / WEIGHTS_NAME)
    files = {key: folder / WEIGHTS_NAME for key in handle.keys()}
    return _SafetensorsSource(folder, DIFFUSERS, files, config, handles={folder / WEIGHTS_NAME: handle})


def _parse_json(where: Path, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    return value


def check_is_scail2(where, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise CheckpointError when `shapes` (Wan-native name -> shape) is another model's.

    SCAIL-2 is recognisable by `patch_embedding_mask.weight` of shape (dim, 28, 1, 2, 2).
    """
    mask = shapes.get("patch_embedding_mask.weight")
    if mask is not None:
        if len(mask) != 5 or mask[1] != MASK_CHANNELS:
            raise CheckpointError(
                f"{where}: patch_embedding_mask.weight has shape {tuple(mask)}; SCAIL-2's is (dim, 28, 1, 2, 2)"
            )
        return
    embed = shapes.get("patch_embedding.weight")
    if embed is None:
        if any("lora" in name.lower() for name in shapes):
            raise CheckpointError(f"{where}: this is a LoRA, not the SCAIL-2 base model")
        if not any(name.startswith("blocks.") for name in shapes):
            raise CheckpointError(
                f"{where}: no SCAIL-2 transformer weights in this file (a VAE, text or image encoder?)"
            )
        return  # a backbone with pieces missing: reported as a partial checkpoint
    channels = embed[1] if len(embed) > 1 else None
    if channels == SCAIL2_CHANNELS:
        return  # SCAIL-2-like but without the mask conv: reported as a partial checkpoint
    if channels == STOCK_I2V_CHANNELS:
        raise CheckpointError(f"{where}: this is a stock Wan 2.1 I2V checkpoint, not SCAIL-2 "
                              f"(patch_embedding takes 36 channels and there is no patch_embedding_mask)")
    if channels == T2V_CHANNELS:
        raise CheckpointError(f"{where}: this is a Wan text-to-video checkpoint, not SCAIL-2 "
                              f"(patch_embedding takes 16 channels and there is no patch_embedding_mask)")
    raise CheckpointError(f"{where}: not a SCAIL-2 checkpoint (no patch_embedding_mask; "
                          f"patch_embedding takes {channels} channels, SCAIL-2's takes 20)")


_CONFIG_KEYS = [name for name in inspect.signature(SCAIL2Transformer3DModel.__init__).parameters if name != "self"]


def infer_config(shapes: dict[str, tuple[int, ...]], stored: dict | None = None, where="checkpoint") -> dict:
    """The `SCAIL2Transformer3DModel` config of weights with these Wan-native shapes.

    Sizes read from the shapes, which a `stored` config (config.json, the safetensors metadata
    `config`, or the caller's) must agree with: dim, in_dim and patch_size (patch_embedding),
    mask_dim, ffn_dim, freq_dim, text_dim, out_dim. Structure, where `stored` wins so that a
    partial file is reported as missing tensors rather than loaded as a smaller model:
    num_layers (highest block index + 1), qk_norm and cross_attn_norm (whether their norm weights
    exist). Without `stored`, a dim-5120 file is taken to be the released 14B model and gets
    `SCAIL2_14B_CONFIG` as its stored config. Not in the weights: text_len (512) and eps (1e-6),
    the constructor defaults, and the head count: `stored`'s, else dim // 128 as in every released
    Wan 2.1 model; a model whose dim is not a multiple of 128 (the tiny test model) needs `stored`.
    """
    sizes: dict = {}
    structure: dict = {}

    def first(pattern: str):
        regex = re.compile(pattern)
        return next((shapes[name] for name in shapes if regex.fullmatch(name)), None)

    embed = shapes.get("patch_embedding.weight")
    if embed is not None and len(embed) == 5:
        sizes.update(dim=embed[0], in_dim=embed[1], patch_size=tuple(embed[2:]))
    if (mask := shapes.get("patch_embedding_mask.weight")) is not None and len(mask) > 1:
        sizes["mask_dim"] = mask[1]
    if (ffn := first(r"blocks\.\d+\.ffn\.0\.weight")) is not None:
        sizes["ffn_dim"] = ffn[0]
    if (time := shapes.get("time_embedding.0.weight")) is not None and len(time) == 2:
        sizes["freq_dim"] = time[1]
    if (text := shapes.get("text_embedding.0.weight")) is not None and len(text) == 2:
        sizes["text_dim"] = text[1]
    if (head := shapes.get("head.head.weight")) is not None and "patch_size" in sizes:
        sizes["out_dim"] = head[0] // math.prod(sizes["patch_size"])
    blocks = [int(m.group(1)) for name in shapes if (m := re.match(r"blocks\.(\d+)\.", name))]
    if blocks:
        structure["num_layers"] = max(blocks) + 1
    structure["qk_norm"] = first(r"blocks\.\d+\.self_attn\.norm_q\.weight") is not None
    structure["cross_attn_norm"] = first(r"blocks\.\d+\.norm3\.weight") is not None

    if stored is None and sizes.get("dim") == SCAIL2_14B_CONFIG["dim"]:
        stored = SCAIL2_14B_CONFIG
    config = {key: value for key, value in (stored or {}).items() if key in _CONFIG_KEYS}
    for key, value in sizes.items():
        if key in config and _normalised(config[key]) != _normalised(value):
            raise CheckpointError(f"{where}: the config says {key}={config[key]}, the weights have {key}={value}")
        config[key] = value
    for key, value in structure.items():
        config.setdefault(key, value)
    if "num_heads" not in config and "dim" in config:
        if config["dim"] % WAN_HEAD_DIM:
            raise CheckpointError(
                f"{where}: cannot tell the attention head count of a dim={config['dim']} model from its weights "
                f"(Wan uses {WAN_HEAD_DIM}-wide heads); give a config with num_heads"
            )
        config["num_heads"] = config["dim"] // WAN_HEAD_DIM
    # Anything still unknown (a file missing its patch_embedding) takes the 14B default; the
    # validation that follows then names the missing tensors.
    return config


def _normalised(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _expected_shapes(model: SCAIL2Transformer3DModel) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def meta_model(config: dict) -> SCAIL2Transformer3DModel:
    """A `SCAIL2Transformer3DModel` with no storage (meta device): shapes and names only."""
    with torch.device("meta"):
        return SCAIL2Transformer3DModel(**config)


def keeps_float32(name: str) -> bool:
    """Whether parameter `name` belongs to `_keep_in_fp32_modules` (the rule of `to_inference_dtype`)."""
    keep = SCAIL2Transformer3DModel._keep_in_fp32_modules
    return any(part in keep for part in name.split("."))


def storage_dtype(name: str, dtype: torch.dtype | None) -> torch.dtype | None:
    """`dtype` for parameter `name`, float32 for `_keep_in_fp32_modules`; None keeps the file's."""
    if dtype is None:
        return None
    return torch.float32 if keeps_float32(name) else dtype


class Checkpoint:
    """A validated SCAIL-2 checkpoint: its layout, config and tensors under Wan-native names.

    `config` is the resolved constructor config, `model` a matching `SCAIL2Transformer3DModel` on
    the meta device, `shapes` its parameter shapes; `names` follow its `state_dict()` order and
    `read` loads one tensor at a time.
    """

    def __init__(self, path: str | Path, config: dict | None = None):
        self.path = Path(path)
        self._source = _open_source(self.path)
        self.layout = self._source.layout
        shapes = {name: self._source.shape(name) for name in self._source.names}
        check_is_scail2(self._source.path, shapes)
        self.config = infer_config(shapes, config or self._source.stored_config, where=self._source.path)
        self.model = meta_model(self.config)
        self.shapes = _expected_shapes(self.model)
        self._source.validate(self.shapes)
        self.names = list(self.shapes)

    def read(self, name: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """Tensor `name` in `dtype` (None: the file's, float32 for fp8) on `device`."""
        return self._source.read(name, dtype, device)


def open_checkpoint(path: str | Path, config: dict | None = None) -> Checkpoint:
    """Open and validate the checkpoint at `path` (any layout). `config` overrides a stored one."""
    return Checkpoint(path, config)


def load_state_dict(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", config: dict | None = None
) -> dict[str, torch.Tensor]:
    """All backbone tensors under Wan-native names, validated complete.

    dtype None keeps each tensor's stored dtype (fp8 is dequantised to float32); otherwise
    tensors are cast to `dtype`, except `_keep_in_fp32_modules`' which become float32.
    """
    checkpoint = open_checkpoint(path, config)
    return {name: checkpoint.read(name, storage_dtype(name, dtype), device) for name in checkpoint.names}


def load_transformer(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    config: dict | None = None,
) -> SCAIL2Transformer3DModel:
    """A `SCAIL2Transformer3DModel` in eval mode with the weights at `path` (any layout).

    The config is `config`, else the stored one (config.json / safetensors metadata), else
    inferred from the shapes (see `infer_config`). Parameters are `dtype`, with
    `_keep_in_fp32_modules` in float32. The model is built on the meta device and the loaded
    tensors are assigned to it, so the weights are never held twice; tensors already in the
    wanted dtype on the CPU stay memory-mapped views of the file.
    """
    checkpoint = open_checkpoint(path, config)
    model = checkpoint.model
    state = {name: checkpoint.read(name, storage_dtype(name, dtype), device) for name in checkpoint.names}
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if leftover:  # a buffer outside the state dict would stay without storage
        raise CheckpointError(f"{path}: no data for {_few(leftover)}")
    return model.eval()
