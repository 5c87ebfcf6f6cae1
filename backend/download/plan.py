"""Which files run best on a GPU, which of them are already on disk, and what is left to fetch.

`choose_variant` walks the variants from the most precise down (`catalog.VARIANTS`) and, for each,
the memory presets from the fastest (weights on the GPU, then model offload), taking the first one
whose peak `doctor.estimate_peak_bytes` puts within the GPU's memory (the same 95 % margin as
doctor's table). When none fits that way, group offload with the smallest variant that fits; when
nothing fits at all, the smallest variant with group offload and a warning.

`find_present` counts a file as present when the loaders already find that part of SCAIL-2 in the
folder (any layout they read: ComfyUI folders, the official release, diffusers folders) at the
planned precision or better, when this command fetched and verified it before, or when the very
file is in the Hugging Face cache (then it is linked into the folder, not fetched again).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..loaders.inventory import PRECISION_RANK, WeightsFile as FoundFile
from ..tools.doctor import GB, estimate_peak_bytes
from .catalog import EXTRAS, FILES, VARIANTS, Variant, WeightsFile

FIT_MARGIN = 0.95  # doctor's table: a preset fits when its estimate is within 95 % of the GPU
FAST_OFFLOADS = ("none", "model")
RESOLUTION = "512p"
STATE_DIR = ".scail2-download"  # part files and the record of verified files, inside the weights folder
VERIFIED_NAME = "verified.json"
# The add-on's Memory Mode for a (storage, offload) pair, where it has one (`runtime.session.gpu_args`).
MEMORY_MODES = {("bf16", "none"): "FULL_BF16", ("fp8", "none"): "FP8_STORAGE", ("bf16", "group"): "GROUP_OFFLOAD",
                ("fp8", "group"): "GROUP_OFFLOAD", ("gguf", "group"): "GROUP_OFFLOAD"}
MODE_WORDS = {"none": "weights on the GPU", "model": "model offload", "group": "group offload"}
STORAGE_WORDS = {"bf16": "Full (bf16)", "fp8": "FP8 Storage", "gguf": "GGUF"}


@dataclass
class Plan:
    """The files for one GPU: the variant, the memory preset, why, and each file's state."""

    variant: Variant
    offload: str
    reason: str
    files: list[WeightsFile]
    gpu_bytes: float | None = None
    peak_bytes: float = 0.0
    fits: bool = True
    present: dict[str, str] = field(default_factory=dict)  # file key -> where it was found

    @property
    def storage(self) -> str:
        return self.variant.storage

    @property
    def memory_mode(self) -> str:
        return MEMORY_MODES.get((self.storage, self.offload), "")

    @property
    def flags(self) -> str:
        storage = "" if self.storage == "gguf" else f"--storage {self.storage} "
        return f"{storage}--offload {self.offload}"

    def missing(self) -> list[WeightsFile]:
        return [f for f in self.files if f.key not in self.present]


def transformer_bytes(variant: Variant) -> float | None:
    """A GGUF file stays quantised in memory: its size is what it takes (doctor's rule)."""
    return float(FILES[variant.transformer].size_bytes) if variant.storage == "gguf" else None


def peak(variant: Variant, offload: str, params: float) -> float:
    return estimate_peak_bytes(variant.storage, offload, RESOLUTION, params, transformer_bytes(variant))


def choose_variant(gpu_bytes: float, params: float) -> tuple[Variant, str, float, bool]:
    """(variant, offload, estimated peak, fits) for a GPU of `gpu_bytes` (see the module doc)."""
    limit = FIT_MARGIN * gpu_bytes
    for variant in VARIANTS.values():
        for offload in FAST_OFFLOADS:
            estimate = peak(variant, offload, params)
            if estimate <= limit:
                return variant, offload, estimate, True
    smallest_first = list(VARIANTS.values())[::-1]
    for variant in smallest_first:
        estimate = peak(variant, "group", params)
        if estimate <= limit:
            return variant, "group", estimate, True
    return smallest_first[0], "group", peak(smallest_first[0], "group", params), False


def make_plan(plan: str, gpu_bytes: float | None, params: float, extras: tuple[str, ...] = ()) -> Plan:
    """The plan named `plan` ("auto" chooses from `gpu_bytes`); ValueError when auto has no GPU size."""
    keys = tuple(EXTRAS[name] for name in extras)
    if plan == "auto":
        if gpu_bytes is None:
            raise ValueError("no NVIDIA GPU found here to plan for: give the GPU's memory (GPU Memory in the "
                             "add-on, --gpu-memory GB) or choose the set (Download, --plan fp8)")
        variant, offload, estimate, fits = choose_variant(gpu_bytes, params)
    else:
        variant = VARIANTS[plan]
        offload = next((o for o in (*FAST_OFFLOADS, "group") if gpu_bytes is None
                        or peak(variant, o, params) <= FIT_MARGIN * gpu_bytes), "group")
        estimate = peak(variant, offload, params)
        fits = gpu_bytes is None or estimate <= FIT_MARGIN * gpu_bytes
    result = Plan(variant, offload, "", variant.files(keys), gpu_bytes, estimate, fits)
    result.reason = reason_line(result)
    return result


def reason_line(plan: Plan) -> str:
    """One line for the artist: "24 GB: fp8_scaled transformer, fp8 text encoder, FP8 Storage with model offload"."""
    size = f"{plan.gpu_bytes / GB:.0f} GB" if plan.gpu_bytes else "GPU not checked"
    mode = STORAGE_WORDS[plan.storage] + ("" if plan.offload == "none" else f" with {MODE_WORDS[plan.offload]}")
    line = (f"{size}: {plan.variant.label}, {mode} ({plan.flags}); estimated peak "
            f"{plan.peak_bytes / GB:.1f} GB at {RESOLUTION}")
    if not plan.fits:
        line += ("; below the estimated minimum for SCAIL-2 (about 16 GB): expect out-of-memory errors, "
                 "or use a remote worker on a larger GPU")
    return line


# -- what is already there --------------------------------------------------------------------------


def verified_record(folder: Path) -> dict:
    path = folder / STATE_DIR / VERIFIED_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_verified(folder: Path, file: WeightsFile, sha256: str, size: int) -> None:
    """Remember that `file` was fetched and matched the hub's hash (written atomically)."""
    record = verified_record(folder)
    record[file.path] = {"repo": file.repo, "filename": file.filename, "sha256": sha256, "size_bytes": size}
    state = folder / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    temporary = state / (VERIFIED_NAME + ".tmp")
    temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(temporary, state / VERIFIED_NAME)


def is_verified(folder: Path, file: WeightsFile, record: dict | None = None) -> bool:
    """Whether `file` is in place as this command fetched and verified it (same size as then)."""
    entry = (verified_record(folder) if record is None else record).get(file.path)
    target = folder / file.path
    return bool(entry) and target.is_file() and target.stat().st_size == entry.get("size_bytes")


def _planned_rank(file: WeightsFile) -> int:
    """How precise the planned file is, in `loaders.inventory`'s ranks (lower is more precise)."""
    if file.filename.endswith(".gguf"):
        return FoundFile(Path(file.name), file.part, precision="gguf " + file.name.rsplit("-", 1)[-1]).rank
    return PRECISION_RANK["fp8_scaled" if "fp8" in file.name else "fp16"]


def _found_by_loaders(components: dict, file: WeightsFile) -> str:
    entry = components.get(file.part) if file.part in ("transformer", "text_encoder", "image_encoder", "vae",
                                                         "tokenizer") else None
    chosen = (entry or {}).get("chosen")
    if not chosen or chosen.get("problem"):
        return ""
    precision = chosen.get("precision") or ""
    if file.part in ("transformer", "text_encoder") and precision:
        rank = FoundFile(Path(chosen["path"]), file.part, precision=precision).rank
        if rank > _planned_rank(file):
            return ""  # a less precise file than planned: the planned one is fetched and preferred
    return f"found by the loaders: {chosen['path']}"


def _in_hub_cache(file: WeightsFile) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - the backend environment has it
        return None
    cached = try_to_load_from_cache(file.repo, file.filename)
    return cached if isinstance(cached, str) and os.path.isfile(cached) else None


def link_from_cache(cached: str, target: Path) -> None:
    """Put the hub cache's copy at `target` without a second download: a hard link, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source = os.path.realpath(cached)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def find_present(folder: Path, plan: Plan, link_cache: bool = False) -> dict[str, str]:
    """{file key: where it was found} for the plan's files already available (see the module doc)."""
    present: dict[str, str] = {}
    verified = verified_record(folder)
    components: dict = {}
    if folder.is_dir():
        from ..loaders.resolve import resolve_components

        try:
            components = resolve_components(folder)
        except (OSError, ValueError):
            components = {}
    lora_names = {Path(entry["path"]).name for entry in components.get("loras", []) if not entry.get("problem")}
    for file in plan.files:
        target = folder / file.path
        if is_verified(folder, file, verified):
            present[file.key] = f"fetched and verified before: {target}"
        elif file.part == "lora" and file.name in lora_names:
            present[file.key] = f"found by the loaders: {file.name}"
        elif file.part != "lora" and (where := _found_by_loaders(components, file)):
            present[file.key] = where
        elif (cached := _in_hub_cache(file)) is not None and (link_cache or target.is_file()):
            if not target.exists():
                link_from_cache(cached, target)
            present[file.key] = f"from the Hugging Face cache: {cached}"
        elif cached is not None:
            present[file.key] = f"in the Hugging Face cache (linked in when the download starts): {cached}"
    plan.present = present
    return present


def free_bytes(folder: Path) -> int:
    """Free space where `folder` is (or would be created)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
