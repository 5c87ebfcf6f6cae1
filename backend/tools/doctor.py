"""`python -m backend doctor`: what this machine and weights folder can run, as a report.

Prints Python, torch and CUDA versions, the GPU and its free memory, the diffusers
attention backends usable here, the weights found under `--weights` and their
layouts, per part of SCAIL-2 the file chosen and why, what was skipped and what is
missing (`loaders.resolve`, `doctor_weights`), every weights file there judged by its header (truncated, damaged, or a
pickle carrying code: nothing is unpickled, `loaders.headers`), which memory presets
should fit this GPU, and what to install or download for whatever is missing. It always exits 0 (it is a report, also without a GPU);
only a crash gives another status.

The memory table is an estimate from parameter counts, not a measurement: weights
at their storage size, plus a rough working set for activations.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

from ..loaders.errors import first_line
from ..models.attention_choice import attention_backends
from .doctor_weights import component_advice, component_lines

GB = 1e9
# Parameter counts of the parts besides the transformer (the transformer is counted from its config).
TEXT_ENCODER_PARAMS = 5.7e9  # umT5-XXL encoder, stored and run in bf16
IMAGE_ENCODER_PARAMS = 0.63e9  # CLIP ViT-H/14 vision tower, bf16
VAE_PARAMS = 0.127e9  # Wan 2.1 VAE, float32
TRANSFORMER_PARAMS_FALLBACK = 16.4e9
ENCODE_WORKING_SET = 1.0 * GB  # encoders' activations for one prompt and one still
SAMPLE_WORKING_SET = {"512p": 3.0 * GB, "704p": 6.0 * GB}  # one 81-frame segment, CFG batch, VAE decode
GROUP_RESIDENT_BLOCKS = 2  # group offload: the block computing and the one being prefetched
MEMORY_PRESETS = (  # (storage, offload)
    ("bf16", "none"), ("fp8", "none"), ("bf16", "model"), ("fp8", "model"), ("bf16", "group"), ("fp8", "group"),
)
OFFLOAD_ORDER = ("none", "model", "group")
PYTORCH_INDEX = "https://download.pytorch.org/whl/"


# -- environment ----------------------------------------------------------------------------------


def cuda_info(device: str | None = None) -> dict:
    """CUDA availability, device name and free/total memory (bytes) of `device` or the default GPU."""
    import torch

    info = {"available": bool(torch.cuda.is_available()), "version": torch.version.cuda, "device": None,
            "index": None, "capability": None, "free_bytes": None, "total_bytes": None, "count": 0}
    if not info["available"]:
        return info
    try:
        index = torch.device(device).index if device and device.startswith("cuda") else None
        index = torch.cuda.current_device() if index is None else index
        free, total = torch.cuda.mem_get_info(index)
        info.update(device=torch.cuda.get_device_name(index), index=index, free_bytes=int(free),
                    total_bytes=int(total), capability=".".join(map(str, torch.cuda.get_device_capability(index))),
                    count=torch.cuda.device_count())
    except Exception as exc:  # a broken driver is part of the report, not a crash
        info["error"] = first_line(exc)
    return info


def fp8_compute_report(cuda: dict) -> dict:
    """Whether `--compute fp8` runs on the GPU reported (else the CPU): {"device", "supported", "reason"}."""
    from ..models.fp8_linear import fp8_compute_support

    device = f"cuda:{cuda['index']}" if cuda["available"] and cuda["index"] is not None else "cpu"
    reason = fp8_compute_support(device)
    return {"device": device, "supported": reason is None, "reason": reason}


def system_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


# -- weights --------------------------------------------------------------------------------------


def _inside(path: Path, target: Path) -> bool:
    return path == target or target in path.parents


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
MAX_CHECKED_FILES = 500


def checkpoint_files(folder: Path) -> list[Path]:
    """The weights files under `folder` (not in hidden folders), at most MAX_CHECKED_FILES."""
    if folder.is_file():
        return [folder]
    found = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix.lower() in CHECKPOINT_SUFFIXES and path.is_file():
            found.append(path)
            if len(found) >= MAX_CHECKED_FILES:
                break
    return found


def file_checks(folder: Path) -> list[dict]:
    """Every weights file under `folder` judged by its header (`loaders.headers`): never unpickled."""
    from ..loaders.headers import check_file

    checks = []
    for path in checkpoint_files(folder):
        check = check_file(path)
        checks.append({"path": check.path, "kind": check.kind, "status": check.status, "detail": check.detail,
                       "tensors": check.tensors})
    return checks


def weights_report(weights: Path | None) -> dict:
    """The transformer and encoders found in `weights`, their layouts, or why not; every weights
    file there checked by its header (truncated, damaged, carrying code); and per part of SCAIL-2
    ("components", `loaders.resolve`) the file chosen and why, what was skipped and why, what is missing."""
    if weights is None:
        return {"folder": None}
    from ..loaders import encoder_folders
    from ..loaders.layouts import detect_layout, find_transformer
    from ..loaders.resolve import resolve_components

    report: dict = {"folder": str(weights)}
    report["files"] = file_checks(weights) if weights.exists() else []
    try:
        path = find_transformer(weights)
        report["transformer"] = {"path": str(path), "layout": detect_layout(path),
                                 "size_bytes": _size_on_disk(path)}
        bad = [check for check in (report["files"] if weights.is_dir() else file_checks(path))
               if check["status"] != "ok" and _inside(Path(check["path"]), path)]
        if bad:  # the file is found, but it cannot be loaded: say why instead of only its layout
            report["transformer"]["problem"] = f"{bad[0]['path']}: {bad[0]['detail']}"
            report["transformer"]["status"] = bad[0]["status"]
    except (ValueError, OSError) as exc:
        report["transformer"] = {"error": first_line(exc)}
    try:
        report["encoders"] = {"layout": encoder_folders.detect_layout(weights)}
    except (ValueError, OSError) as exc:
        report["encoders"] = {"error": first_line(exc)}
    transformer_path = Path(report["transformer"].get("path", weights))
    bad = {check["path"]: check for check in report["files"] if check["status"] != "ok"}
    broken = [check for path, check in bad.items() if "path" not in report["transformer"]
              or not _inside(Path(path), transformer_path)]
    if broken and "layout" in report["encoders"]:  # a layout of files that cannot be read is no layout
        report["encoders"].update(problem=f"{broken[0]['path']}: {broken[0]['detail']}", status=broken[0]["status"])
    if weights.is_dir():
        try:
            report["components"] = resolve_components(weights)
        except (ValueError, OSError) as exc:  # a report, never a crash
            report["components"] = {"error": first_line(exc)}
        _mark_unreadable(report["components"], bad)
    return report


def _verdict(entry: dict) -> str:
    """What a file check's status reads as in the report: REFUSED for pickled code, else the status."""
    return "REFUSED" if entry["status"] == "code" else entry["status"].upper()


def _mark_unreadable(components: dict, bad: dict[str, dict]) -> None:
    """A chosen file that its header check found unusable (truncated, damaged, code) says so."""
    for entry in components.values():
        chosen = entry.get("chosen") if isinstance(entry, dict) else None
        if isinstance(chosen, dict) and chosen.get("path") in bad and not chosen.get("problem"):
            check = bad[chosen["path"]]
            chosen.update(problem=f"{check['path']}: {check['detail']}", status=check["status"])


def transformer_storage(report: dict) -> tuple[str, int | None]:
    """("gguf", its bytes) when the chosen transformer is a GGUF file, else ("", None)."""
    components = report.get("weights", {}).get("components") or {}
    chosen = (components.get("transformer") or {}).get("chosen") or {}
    if chosen.get("layout") == "gguf":
        return "gguf", int(chosen.get("size_bytes") or _size_on_disk(Path(chosen["path"])))
    return "", None


# -- memory estimates -----------------------------------------------------------------------------


def transformer_params() -> float:
    """Parameters of the SCAIL-2 14B transformer, counted on the meta device (no memory used)."""
    try:
        from ..loaders.checkpoints import meta_model
        from ..models.transformer_scail2 import SCAIL2_14B_CONFIG

        return float(sum(p.numel() for p in meta_model(SCAIL2_14B_CONFIG).parameters()))
    except Exception:
        return TRANSFORMER_PARAMS_FALLBACK


def estimate_peak_bytes(storage: str, offload: str, resolution: str, params: float,
                        transformer_bytes: float | None = None) -> float:
    """Rough peak GPU memory of a job: the larger of the encoding and the sampling phase.

    The encoders are on the GPU while the job's prompt and reference are encoded, then moved
    off; the transformer is resident throughout (none), only while sampling (model offload),
    or a couple of blocks at a time (group offload).
    """
    transformer = transformer_bytes if transformer_bytes is not None else params * (1 if storage == "fp8" else 2)
    block = transformer / 40
    encoders = TEXT_ENCODER_PARAMS * 2 + IMAGE_ENCODER_PARAMS * 2 + VAE_PARAMS * 4
    resident = {"none": (transformer, transformer), "model": (0.0, transformer),
                "group": (GROUP_RESIDENT_BLOCKS * block, GROUP_RESIDENT_BLOCKS * block)}[offload]
    encode_phase = encoders + resident[0] + ENCODE_WORKING_SET
    sample_phase = VAE_PARAMS * 4 + resident[1] + SAMPLE_WORKING_SET[resolution]
    return max(encode_phase, sample_phase)


def memory_table(gpu_total: int | None, params: float, gguf_bytes: int | None = None) -> list[dict]:
    """The memory presets with their estimated peaks. With a GGUF transformer (`gguf_bytes`, its
    size: the weights stay quantised in memory) the storage option does not apply, and the rows
    are its three offload modes."""
    presets = MEMORY_PRESETS if gguf_bytes is None else tuple(("gguf", offload) for offload in OFFLOAD_ORDER)
    rows = []
    for storage, offload in presets:
        flags = f"--offload {offload}" if storage == "gguf" else f"--storage {storage} --offload {offload}"
        row = {"storage": storage, "offload": offload, "flags": flags}
        weights = gguf_bytes if storage == "gguf" else params * (1 if storage == "fp8" else 2)
        for resolution in SAMPLE_WORKING_SET:
            peak = estimate_peak_bytes(storage, offload, resolution, params, gguf_bytes if storage == "gguf" else None)
            row[f"estimate_{resolution}_bytes"] = int(peak)
            row[f"fits_{resolution}"] = None if gpu_total is None else peak <= 0.95 * gpu_total
        row["cpu_ram_bytes"] = int(weights) if offload != "none" else 0
        rows.append(row)
    return rows


# -- the report -----------------------------------------------------------------------------------


def segmentation_report(sam3: Path | None = None, sam2: Path | None = None) -> dict:
    """Where the optional SAM 3 / SAM 2 weights are (a named folder or the hub cache), or why not."""
    from ..segmentation import SegmentationError
    from ..segmentation.weights import SAM2_REPO, SAM3_REPO, resolve_weights

    found = {}
    for name, folder, repo in (("sam3", sam3, SAM3_REPO), ("sam2", sam2, SAM2_REPO)):
        try:
            found[name] = {"folder": str(resolve_weights(folder, repo))}
        except SegmentationError as exc:
            found[name] = {"error": str(exc).split(": download")[0]}
    return found


def attention_report(cuda: dict) -> dict:
    """Probe the attention backends on the device jobs use and record the fastest for the worker."""
    import torch

    from ..models.attention_choice import probe_and_record

    device = torch.device(f"cuda:{cuda['index']}") if cuda["available"] else torch.device("cpu")
    try:
        return probe_and_record(device)
    except Exception as exc:  # a probe that fails is part of the report
        return {"choice": None, "error": first_line(exc)}


def attention_line(probe: dict) -> str:
    if probe.get("choice") is None:
        return f"attention: not probed ({probe.get('error', 'unknown error')})"
    timings = ", ".join(f"{name} {ms:g} ms" for name, ms in sorted(probe["milliseconds"].items(), key=lambda i: i[1]))
    size = probe["size"]
    line = (f"attention: {probe['choice']} is fastest here and jobs use it ({timings}; "
            f"{size['tokens']} tokens x {size['heads']} heads, {size['dtype']})")
    if probe["rejected"]:
        line += "; not usable: " + "; ".join(f"{name}: {why}" for name, why in probe["rejected"].items())
    return line


def build_report(weights: Path | None = None, device: str | None = None, sam3: Path | None = None,
                 sam2: Path | None = None) -> dict:
    import torch

    from .. import __version__

    cuda = cuda_info(device)
    params = transformer_params()
    report = {
        "backend": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda": cuda,
        "system_memory_bytes": system_memory_bytes(),
        "attention_backends": attention_backends(cuda["available"]),
        "attention_probe": attention_report(cuda),
        "fp8_compute": fp8_compute_report(cuda),
        "accelerate": importlib.util.find_spec("accelerate") is not None,
        "weights": weights_report(weights),
        "segmentation": segmentation_report(sam3, sam2),
        "transformer_params": params,
    }
    storage, gguf_bytes = transformer_storage(report)
    report["memory"] = memory_table(cuda["total_bytes"], params, gguf_bytes)
    report["memory_for"] = "the chosen GGUF transformer" if storage else "the SCAIL-2 14B transformer in bf16 / fp8"
    report["advice"] = advice(report)
    return report


def advice(report: dict) -> list[str]:
    """What to install or download for what is missing."""
    from ..segmentation.weights import SAM2_REPO, SAM3_REPO

    tips = []
    torch_version = report["torch"].split("+")[0]
    cuda = report["cuda"]
    if report["torch_cuda_build"] is None:
        tips.append(f"torch {report['torch']} is the CPU build: for a GPU install the CUDA build of the same version, "
                    f"e.g. pip install torch=={torch_version} --index-url {PYTORCH_INDEX}cu128 (pick your CUDA)")
    elif not cuda["available"]:
        tips.append("torch has CUDA but sees no GPU: check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
    if cuda.get("error"):
        tips.append(f"the GPU could not be queried: {cuda['error']}")
    if not report["accelerate"]:
        tips.append("pip install accelerate (diffusers needs it for group offload)")
    if cuda["available"] and not {"flash", "_flash_3", "sage"} & set(report["attention_backends"]):
        tips.append("optional, for faster attention: pip install flash-attn or sageattention, then --attention flash "
                    "or --attention sage")
    weights = report["weights"]
    if weights["folder"] is None:
        tips.append("pass --weights DIR to check a weights folder (README: Getting the weights)")
    else:
        if "error" in weights.get("transformer", {}):
            tips.append("download the SCAIL-2 transformer: the official release from Hugging Face zai-org/SCAIL-2 "
                        "(model/1/fsdp2_rank_0000_checkpoint.pt) or the single file "
                        "wan2.1_14B_SCAIL_2_fp16.safetensors from Comfy-Org/SCAIL-2, into the weights folder")
        for check in weights.get("files", []):
            if check["status"] == "code":
                tips.append(f"delete {check['path']}: it {check['detail'].split(';')[0]}; get the weights from the "
                            "official release instead")
            elif check["status"] in ("truncated", "damaged", "empty"):
                tips.append(f"download {check['path']} again: {check['detail'].split(' (')[0]}")
        tips.extend(component_advice(weights.get("components") or {}))
        if "error" in weights.get("encoders", {}) and not weights.get("components"):
            tips.append("download the encoders and VAE: from zai-org/SCAIL-2 (Wan2.1_VAE.pth, umt5-xxl/, the "
                        "open-clip ...-onlyvisual.pth) or the vae/, text_encoder/, tokenizer/ and image_encoder/ "
                        "folders of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
    for name, repo, use in (("sam3", SAM3_REPO, "automatic masks and mattes"),
                             ("sam2", SAM2_REPO, "masks of subjects marked by hand")):
        if "error" in report["segmentation"][name]:
            tips.append(f"optional, for {use}: download '{repo}' from Hugging Face into a folder and pass "
                        f"--{name}-weights (or the add-on preferences)")
    rows = report["memory"]
    if cuda["available"] and cuda["total_bytes"] and not any(r["fits_512p"] for r in rows):
        tips.append("no preset is estimated to fit this GPU: expect out-of-memory errors; a 16 GB GPU is about the "
                    "minimum (fp8 storage with group offload)")
    return tips


def _gb(value) -> str:
    return "?" if value is None else f"{value / GB:.1f} GB"


def format_report(report: dict) -> str:
    cuda = report["cuda"]
    lines = [
        f"SCAIL-2 backend {report['backend']}",
        f"Python   {report['python']} ({report['python_executable']})",
        f"torch    {report['torch']} (CUDA build: {report['torch_cuda_build'] or 'none'})",
    ]
    if cuda["available"] and cuda["device"]:
        lines.append(f"GPU      {cuda['device']} (cuda:{cuda['index']}, compute {cuda['capability']}), "
                     f"{_gb(cuda['free_bytes'])} free of {_gb(cuda['total_bytes'])}"
                     + (f"; {cuda['count']} GPUs" if cuda["count"] > 1 else ""))
    else:
        lines.append("GPU      none usable (CUDA not available): jobs run on the CPU, "
                     "only the tiny profile is practical")
    lines.append(f"RAM      {_gb(report['system_memory_bytes'])}")
    lines.append(f"attention backends: {', '.join(report['attention_backends'])}")
    lines.append(attention_line(report["attention_probe"]))
    fp8 = report["fp8_compute"]
    lines.append("fp8 compute: yes" if fp8["supported"] else f"fp8 compute: no ({fp8['reason']})")

    weights = report["weights"]
    if weights["folder"] is None:
        lines.append("weights  not checked (no --weights)")
    else:
        lines.append(f"weights  {weights['folder']}")
        transformer = weights["transformer"]
        if "error" in transformer:
            lines.append(f"  transformer: MISSING: {transformer['error']}")
        elif "problem" in transformer:
            lines.append(f"  transformer: {_verdict(transformer)}: {transformer['problem']}")
        else:
            lines.append(f"  transformer: {transformer['layout']} layout, {transformer['path']} "
                         f"({_gb(transformer['size_bytes'])})")
        encoders = weights["encoders"]
        if "error" in encoders:
            lines.append(f"  encoders:    MISSING: {encoders['error']}")
        elif "problem" in encoders:
            lines.append(f"  encoders:    {encoders['layout']} layout, {_verdict(encoders)}: {encoders['problem']}")
        else:
            lines.append(f"  encoders:    {encoders['layout']} layout")
        files = weights.get("files", [])
        bad = [check for check in files if check["status"] != "ok"]
        lines.append(f"  files:       {len(files)} weights files checked by their headers (nothing unpickled), "
                     + (f"{len(bad)} not usable:" if bad else "all intact"))
        lines.extend(f"    {check['status'].upper()}: {check['path']}: {check['detail']}" for check in bad)
        if "components" in weights:
            lines.append("  per component (the file each part is read from, and why):")
            lines.extend(component_lines(weights["components"]))

    for name, label in (("sam3", "SAM 3  "), ("sam2", "SAM 2  ")):
        seg = report["segmentation"][name]
        lines.append(f"{label}  {seg['folder']}" if "folder" in seg else f"{label}  not found ({seg['error']})")

    lines.append("")
    params = report["transformer_params"] / 1e9
    lines.append(f"memory presets for {report.get('memory_for', 'the transformer')} (ESTIMATES from parameter "
                 f"counts: transformer {params:.1f}B params, umT5 {TEXT_ENCODER_PARAMS / 1e9:.1f}B + CLIP {IMAGE_ENCODER_PARAMS / 1e9:.2f}B in bf16, "
                 f"VAE fp32, plus a rough working set):")
    lines.append(f"  {'flags':<34} {'512p':>9} {'704p':>9}  {'fits this GPU':<14} CPU RAM for weights")
    for row in report["memory"]:
        fits = row["fits_512p"], row["fits_704p"]
        verdict = ("no GPU" if fits[0] is None else "512p+704p" if fits[1] else "512p only" if fits[0] else "no")
        lines.append(f"  {row['flags']:<34} {_gb(row['estimate_512p_bytes']):>9} {_gb(row['estimate_704p_bytes']):>9}  "
                     f"{verdict:<14} {_gb(row['cpu_ram_bytes']) if row['cpu_ram_bytes'] else '-'}")
    if report["advice"]:
        lines.append("")
        lines.append("to do:")
        lines.extend(f"  - {tip}" for tip in report["advice"])
    return "\n".join(lines)


def run_doctor(args: argparse.Namespace) -> int:
    report = build_report(args.weights, args.device, args.sam3_weights, args.sam2_weights)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
