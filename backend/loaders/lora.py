"""Merging LoRA files into a loaded SCAIL-2 transformer.

`merge_loras(transformer, [(path, strength), ...])` adds every file's weight deltas to the
model's parameters, in float32, one tensor at a time, and casts each result back to the
parameter's own dtype (bfloat16 weights stay bfloat16, `_keep_in_fp32_modules` stay float32).
All files are read and checked against the model before the first parameter changes, so a
bad file leaves the model as it was.

Per module, a file may hold (`docs/model.md`, section "LoRA files"):

* a low-rank pair, ``down`` [rank, in, *kernel] and ``up`` [out, rank, *ones], with an optional
  ``alpha``: delta W = strength * (alpha / rank, or 1 without alpha) * (up @ down); conv weights
  (the patch embeddings) are flattened to [out, in * kernel] for the product and reshaped back;
* ``.diff``, a full weight delta (also for 1-D norm weights and the bare ``modulation`` tensors),
  and ``.diff_b``, a full bias delta: delta = strength * diff.

The key layouts a file may use (Wan-native, PEFT, diffusers, kohya-style flattened, SAT) are
`lora_keys`'.

Every tensor in a file must be understood: a key that matches no module of the model (a text
encoder LoRA, another architecture, LoHa / LoKr / DoRA factors, a block the model lacks) is an
error naming the keys, never silently skipped.

Safety: ``.pt`` files are read by `backend.loaders.sat`'s weights-only, memory-mapped unpickler,
which refuses any pickled code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import UserError
from .errors import CheckpointError, few, first_line
from .layouts import ZIP_MAGIC
from .lora_keys import VARIANT_HINTS, ModuleNames, split_kind
from .sat import load_pickled_state_dict
from .sources import squeezed


class LoraError(UserError):
    """A LoRA file that cannot be merged into this model; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


class _LoraFile:
    """A LoRA file's tensors, read one at a time: safetensors, or a torch zip pickle."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        if not path.exists():
            raise LoraError(f"{path}: no such file")
        if path.is_dir():
            raise LoraError(f"{path}: is a folder; give the LoRA file itself")
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(9)
        except OSError as exc:
            raise LoraError(f"{path}: cannot read ({exc.strerror or exc})") from None
        self._handle = None
        self._state: dict[str, torch.Tensor] | None = None
        if size == 0:
            raise LoraError(f"{path}: the file is empty (an interrupted download?)")
        if head.startswith(ZIP_MAGIC):
            try:
                self._state = load_pickled_state_dict(path)
            except CheckpointError as exc:
                raise LoraError(str(exc)) from None
            self.keys = list(self._state)
        elif len(head) == 9 and head[8:9] == b"{":
            try:
                self._handle = safe_open(path, framework="pt", device="cpu")
            except SafetensorError as exc:
                raise LoraError(f"{path}: truncated or corrupt safetensors file ({first_line(exc)})") from None
            except OSError as exc:
                raise LoraError(f"{path}: cannot open ({exc.strerror or exc})") from None
            self.keys = list(self._handle.keys())
        elif head[:1] == b"\x80":
            raise LoraError(f"{path}: a legacy (non-zip) torch pickle; re-save it with a current torch.save "
                            "or use safetensors")
        else:
            raise LoraError(f"{path}: neither a safetensors file nor a torch checkpoint (truncated or corrupt?)")

    def shape(self, key: str) -> tuple[int, ...]:
        if self._state is not None:
            return tuple(self._state[key].shape)
        try:
            return tuple(self._handle.get_slice(key).get_shape())
        except SafetensorError as exc:
            raise LoraError(f"{self.path}: cannot read {key} ({first_line(exc)})") from None

    def tensor(self, key: str) -> torch.Tensor:
        if self._state is not None:
            return self._state[key]
        try:
            return self._handle.get_tensor(key)
        except SafetensorError as exc:
            raise LoraError(f"{self.path}: cannot read {key} ({first_line(exc)})") from None


# ---------------------------------------------------------------------------------------------
# Planning: every tensor of every file mapped and checked before anything changes
# ---------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """One module's entries in a file: kind ("down", "up", "alpha", "diff", "diff_b") -> key."""

    raw: str
    keys: dict[str, str] = field(default_factory=dict)
    bases: tuple[str, ...] = ()
    part: int | None = None  # a SAT sub-LoRA: the index into `bases`

    @property
    def targets(self) -> tuple[str, ...]:
        """The module names this group writes, in the order of a fused tensor's parts."""
        return self.bases if self.part is None else (self.bases[self.part],)


@dataclass
class _Plan:
    file: _LoraFile
    strength: float
    groups: list[_Group]
    layers: int


def _plan(file: _LoraFile, strength: float, names: ModuleNames) -> _Plan:
    groups: dict[str, _Group] = {}
    unknown: list[str] = []
    for key in file.keys:
        split = split_kind(key)
        if split is None:
            unknown.append(key)
            continue
        raw, kind = split
        group = groups.setdefault(raw, _Group(raw))
        if kind in group.keys:  # e.g. both `x.lora_A.weight` and `x.lora_down.weight`
            raise LoraError(f"{file.name}: two {kind} tensors for {raw} ({group.keys[kind]} and {key})")
        group.keys[kind] = key
    if not groups:
        raise LoraError(f"{file.path}: holds no LoRA tensors (no lora_down/lora_up, lora_A/lora_B, "
                        f".diff or .diff_b keys; is it a full model checkpoint?)")
    for group in groups.values():
        resolved = names.resolve(group.raw)
        if resolved is None:
            unknown.extend(group.keys.values())
        else:
            group.bases, group.part = resolved
    if unknown:
        unknown.sort()
        hint = next((f"; {variant} LoRAs are not supported" for marker, variant in VARIANT_HINTS.items()
                     if any(marker in key for key in unknown)), "")
        raise LoraError(f"{file.name}: {len(unknown)} of {len(file.keys)} tensors match nothing in this "
                        f"SCAIL-2 model (e.g. {few(unknown)}){hint}")

    written: dict[tuple[str, str], str] = {}
    for group in groups.values():
        _check_group(file, group, names)
        for kind in ("pair", "diff", "diff_b"):
            if not _has(group, kind):
                continue
            for base in group.targets:
                previous = written.setdefault((base, kind), group.raw)
                if previous != group.raw:
                    raise LoraError(f"{file.name}: {previous} and {group.raw} both change {base} "
                                    "(the same LoRA under two names?)")
    layers = len({base for base, _ in written})
    return _Plan(file, strength, list(groups.values()), layers)


def _has(group: _Group, kind: str) -> bool:
    return "down" in group.keys if kind == "pair" else kind in group.keys


def _weight_name(names: ModuleNames, base: str, kind: str) -> str | None:
    """The parameter a `kind` entry on module `base` changes, or None if it has none."""
    if kind == "diff_b":
        return base + ".bias" if base + ".bias" in names.params else None
    if base + ".weight" in names.params:
        return base + ".weight"
    if kind == "diff" and base in names.params:  # a bare parameter: `blocks.0.modulation`
        return base
    return None


def _check_group(file: _LoraFile, group: _Group, names: ModuleNames) -> None:
    keys, parts = group.keys, len(group.targets)
    if ("down" in keys) != ("up" in keys):
        have, lack = ("down", "up") if "down" in keys else ("up", "down")
        raise LoraError(f"{file.name}: {keys[have]} has no matching {lack} tensor")
    if "alpha" in keys and "down" not in keys:
        raise LoraError(f"{file.name}: {keys['alpha']} belongs to no lora_down/lora_up pair")
    for kind in ("pair", "diff", "diff_b"):
        if not _has(group, kind):
            continue
        params = [_weight_name(names, base, kind) for base in group.targets]
        if any(p is None for p in params):
            what = "bias" if kind == "diff_b" else "weight matrix"
            key = keys["down" if kind == "pair" else kind]
            raise LoraError(f"{file.name}: {key} targets {group.targets[0]}, which has no {what}")
        _refuse_quantised(file, names.params[params[0]], params[0])
        want = tuple(names.params[params[0]].shape)
        if kind == "pair":
            _check_pair(file, group, want, parts, params[0])
        else:
            have = file.shape(keys[kind])
            fits = (squeezed(have) == squeezed(want) if parts == 1
                    else len(have) == len(want) and have[0] == parts * want[0] and have[1:] == want[1:])
            if not fits:
                raise LoraError(f"{file.name}: {keys[kind]} has shape {have}, which does not fit "
                                f"{_parts_text(params, parts)} of shape {want} (a LoRA for another model?)")


def _check_pair(file: _LoraFile, group: _Group, want: tuple[int, ...], parts: int, param: str) -> None:
    keys = group.keys
    down, up = file.shape(keys["down"]), file.shape(keys["up"])
    if len(down) < 2 or len(up) < 2 or up[1] != down[0] or any(n != 1 for n in up[2:]):
        raise LoraError(f"{file.name}: {keys['down']} {down} and {keys['up']} {up} are not a LoRA pair "
                        "(their ranks differ)")
    if len(want) < 2 or up[0] != parts * want[0] or math.prod(down[1:]) != math.prod(want[1:]):
        delta = (up[0], *down[1:])
        raise LoraError(f"{file.name}: {group.raw} gives a delta of shape {delta}, which does not fit "
                        f"{_parts_text([param], parts)} of shape {want} "
                        "(a LoRA for another model?)")
    if "alpha" in keys and math.prod(file.shape(keys["alpha"])) != 1:
        raise LoraError(f"{file.name}: {keys['alpha']} has shape {file.shape(keys['alpha'])}; alpha is one number")


def _parts_text(params: list[str], parts: int) -> str:
    return params[0] if parts == 1 else f"{parts} parts like {params[0]}"


# ---------------------------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------------------------


def merge_loras(transformer: torch.nn.Module, loras) -> list[str]:
    """Merge LoRA files into `transformer`'s parameters, in place; one report line per file.

    `loras`: (path, strength) pairs, merged in order. Each delta is added in float32 and the sum
    cast back to the parameter's dtype, one tensor at a time. Every file is read and checked
    first; a LoraError (missing or unreadable file, no LoRA tensors, unknown keys, shapes that do
    not fit) leaves the model unchanged. A strength of 0 checks the file and changes nothing.
    """
    names = ModuleNames(transformer)
    plans = []
    for path, strength in loras:
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise LoraError(f"{path}: strength must be a number, got {strength!r}") from None
        if not math.isfinite(strength):
            raise LoraError(f"{path}: strength must be finite, got {strength}")
        plans.append(_plan(_LoraFile(Path(path)), strength, names))
    reports = []
    for plan in plans:
        if plan.strength != 0:
            _apply(plan, names)
        note = " (not applied)" if plan.strength == 0 else ""
        reports.append(f"{plan.file.name}: {plan.layers} layers, strength {plan.strength:g}{note}")
    return reports


def _refuse_quantised(file: _LoraFile, param: torch.Tensor, name: str) -> None:
    """A LoRA cannot be added to GGUF block-quantised weights (there is no requantiser for the
    K-quants): say so before anything changes, rather than silently dequantising the model."""
    if hasattr(param, "quant_type"):
        kind = getattr(param.quant_type, "name", param.quant_type)
        raise LoraError(f"{file.path}: cannot be merged into a GGUF-quantised transformer ({name} is {kind}); "
                        "use the fp16 or fp8_scaled transformer file with LoRAs")


@torch.no_grad()
def _apply(plan: _Plan, names: ModuleNames) -> None:
    file, strength = plan.file, plan.strength
    for group in plan.groups:
        keys, targets, parts = group.keys, group.targets, len(group.targets)
        if "down" in keys:
            down = file.tensor(keys["down"]).float()
            up = file.tensor(keys["up"]).float()
            rank = down.shape[0]
            scale = float(file.tensor(keys["alpha"]).float().item()) / rank if "alpha" in keys else 1.0
            down = down.flatten(1)
            for up_part, base in zip(up.flatten(1).chunk(parts, dim=0), targets):
                _add(names.params[base + ".weight"], (up_part @ down) * (strength * scale))
            del down, up
        for kind in ("diff", "diff_b"):
            if kind in keys:
                diff = file.tensor(keys[kind]).float()
                pieces = diff.chunk(parts, dim=0) if parts > 1 else (diff,)
                for piece, base in zip(pieces, targets):
                    _add(names.params[_weight_name(names, base, kind)], piece * strength)
                del diff


def _add(param: torch.nn.Parameter, delta: torch.Tensor) -> None:
    """param += delta, in float32, stored back in param's dtype as a new tensor (the old one may
    be a memory-mapped view of the checkpoint, which must not be written)."""
    merged = param.detach().float() + delta.to(param.device).reshape(param.shape)
    param.data = merged.to(param.dtype)


def lora_specs(loras: list[dict]) -> list[tuple[str, float]]:
    """`JobSpec.loras` ({"path", "strength"} dicts; strength defaults to 1) as merge_loras pairs."""
    pairs = []
    for entry in loras:
        if not isinstance(entry, dict) or not entry.get("path"):
            raise LoraError(f"a LoRA entry needs a path, got {json.dumps(entry, default=str)}")
        pairs.append((str(entry["path"]), entry.get("strength", 1.0)))
    return pairs
