"""Sources: a checkpoint's tensors under Wan-native names, read one at a time.

`open_source` picks the reader for a path's layout (see `layouts`): the release's torch pickle,
one safetensors file, or the shards of a converted folder. Every source maps the file's keys to
the names of `SCAIL2Transformer3DModel` (stripping a backbone prefix, splitting SAT's fused
tensors, attaching ComfyUI fp8 scales), reports shapes without reading data, and reads one
tensor at a time from memory-mapped files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from . import fp8_scaled
from .errors import CheckpointError, few, first_line
from .headers import check_safetensors
from .layouts import (
    CONFIG_NAME,
    DIFFUSERS,
    GGUF,
    INDEX_NAME,
    MODEL_CLASS_NAME,
    RELEASE_CHECKPOINT,
    SAT,
    SINGLE_FILE,
    WEIGHTS_NAME,
    detect_layout,
)
from .sat import SAT_PREFIX, load_pickled_state_dict, sat_to_wan_names

_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)
_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F8_E4M3": "float8_e4m3fn",
                       "F8_E5M2": "float8_e5m2"}

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


@dataclass(frozen=True)
class _TensorRef:
    """Where a Wan-native tensor lives: `key` in the file, part `part` of `parts` fused along dim 0."""

    key: str
    part: int = 0
    parts: int = 1
    scale_key: str | None = None  # fp8_scaled: the tensor holding this weight's scale


class Source:
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
        return fp8_scaled.dequantize(self.path, name, weight, scale)

    def quantization(self) -> dict:
        """How the weights are stored: {"format": "fp8_scaled" or the main dtype, "types": {dtype: count}}."""
        types: dict[str, int] = {}
        for ref in self.refs.values():
            dtype = self._dtype(ref.key)
            types[dtype] = types.get(dtype, 0) + 1
        scaled = any(ref.scale_key for ref in self.refs.values())
        main = max(types, key=types.get) if types else ""
        return {"format": "fp8_scaled" if scaled else main, "types": dict(sorted(types.items()))}

    def _dtype(self, key: str) -> str:
        return str(self.raw_tensor(key).dtype).removeprefix("torch.")

    def validate(self, expected: dict[str, tuple[int, ...]]) -> None:
        """Raise CheckpointError unless the names and shapes are exactly `expected`'s."""
        missing = [name for name in expected if name not in self.refs]
        unexpected = [name for name in self.refs if name not in expected]
        if missing or unexpected:
            problems = []
            if missing:
                problems.append(f"{len(missing)} of {len(expected)} tensors missing (e.g. {few(missing)})")
            if unexpected:
                problems.append(f"{len(unexpected)} unexpected (e.g. {few(unexpected)})")
            raise CheckpointError(f"{self.path}: partial or mismatched checkpoint: {'; '.join(problems)}")
        for name, want in expected.items():
            have = self.shape(name)
            if have == want:
                continue
            if squeezed(have) == squeezed(want):  # e.g. a modulation stored as (6, dim), not (1, 6, dim)
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


def squeezed(shape) -> tuple[int, ...]:
    """`shape` without its 1s: shapes that hold the same values in the same order compare equal."""
    return tuple(n for n in shape if n != 1)


class _PickleSource(Source):
    """A torch zip checkpoint, loaded memory-mapped by the weights-only unpickler."""

    layout = SAT

    def __init__(self, path: Path):
        self.state = load_pickled_state_dict(path)
        super().__init__(path, list(self.state))

    def raw_shape(self, key):
        return tuple(self.state[key].shape)

    def raw_tensor(self, key):
        return self.state[key]


class _SafetensorsSource(Source):
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
            raise CheckpointError(f"{file}: cannot read {key} ({first_line(exc)})") from None

    def raw_tensor(self, key):
        file = self._files[key]
        try:
            return self._handle(file).get_tensor(key)
        except SafetensorError as exc:
            raise CheckpointError(f"{file}: cannot read {key} ({first_line(exc)})") from None

    def _check_quantisation(self) -> None:
        """Refuse ComfyUI quantisations other than per-tensor fp8 (nvfp4, mxfp8, int8 ...)."""
        for key in self._files:
            if key.endswith(".comfy_quant"):
                fp8_scaled.refuse_format(self.path, key, fp8_scaled.comfy_quant_format(self.raw_tensor(key)))

    def _dtype(self, key: str) -> str:
        dtype = self._handle(self._files[key]).get_slice(key).get_dtype()
        return _SAFETENSORS_DTYPES.get(dtype, dtype.lower())


def _open_safetensors(file: Path):
    try:
        return safe_open(file, framework="pt", device="cpu")
    except SafetensorError as exc:
        check = check_safetensors(file)  # says how: truncated (by how much) or which tensor is damaged
        if not check.ok:
            raise CheckpointError(check.line()) from None
        raise CheckpointError(f"{file}: truncated or corrupt safetensors file ({first_line(exc)})") from None
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot open ({exc.strerror or exc})") from None


def open_source(path: str | Path) -> Source:
    """The source of the checkpoint at `path`, in any layout (a folder's config.json or index name the folder)."""
    path = Path(path)
    layout = detect_layout(path)
    if path.is_file() and path.name in (CONFIG_NAME, INDEX_NAME):
        path = path.parent
    if layout == GGUF:
        raise CheckpointError(f"{path}: a GGUF file; open it with checkpoints.open_checkpoint (gguf_source)")
    if layout == SAT:
        return _PickleSource(path / RELEASE_CHECKPOINT if path.is_dir() else path)
    if layout == SINGLE_FILE:
        handle = _open_safetensors(path)
        metadata = handle.metadata() or {}
        stored = _parse_json(path, metadata["config"]) if "config" in metadata else None
        files = {key: path for key in handle.keys()}
        return _SafetensorsSource(path, SINGLE_FILE, files, stored, handles={path: handle})
    return _open_diffusers_folder(path)


def _open_diffusers_folder(folder: Path) -> Source:
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
                                  f"(e.g. {few(absent)})")
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

