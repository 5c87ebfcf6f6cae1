"""Which file serves each part of SCAIL-2 in a weights folder, why, what was skipped, what is missing.

`resolve_components(weights)` answers for the transformer, the umT5 text encoder and its
tokenizer, the CLIP image encoder and the VAE, whatever the layout (official release, diffusers
folders, ComfyUI files), and lists the LoRA files found. Headers only: nothing is unpickled and
no tensor data is read, so `doctor` can call it on a 40 GB folder in a second. The loaders make
the same choices (`layouts.find_transformer`, `encoder_folders.load_encoders`).

Each part is a dict: ``chosen`` ({"path", "precision", "reason", ...} or None), ``skipped``
([{"path", "why"}]), ``missing`` (what to download, '' when nothing is).
"""

from __future__ import annotations

from pathlib import Path

from .errors import first_line
from .headers import check_file
from .inventory import COMPONENTS, LABELS, Inventory, classify
from .tokenizers import find_in, find_umt5_tokenizer

PARTS = ("transformer", "text_encoder", "tokenizer", "image_encoder", "vae")
TRANSFORMER_DOWNLOAD = ("the SCAIL-2 transformer: wan2.1_14B_SCAIL_2_fp16.safetensors (or _fp8_scaled, or a GGUF "
                        "quantisation) from Comfy-Org/SCAIL-2 into diffusion_models/, or the official release "
                        "zai-org/SCAIL-2 (model/1/fsdp2_rank_0000_checkpoint.pt)")
COMFY_DOWNLOADS = {
    "text_encoder": "umt5_xxl_fp16.safetensors (or umt5_xxl_fp8_e4m3fn_scaled.safetensors) from "
                    "Comfy-Org/Wan_2.1_ComfyUI_repackaged into text_encoders/",
    "image_encoder": "clip_vision_h.safetensors from Comfy-Org/Wan_2.1_ComfyUI_repackaged into clip_vision/",
    "vae": "wan_2.1_vae.safetensors from Comfy-Org/Wan_2.1_ComfyUI_repackaged into vae/",
}


def header_quantization(path: Path) -> dict:
    """How a transformer file stores its weights, from its header (GGUF: types per tensor family)."""
    path = Path(path)
    if path.is_file() and path.open("rb").read(4) == b"GGUF":
        from .gguf_files import file_type, read_gguf, summarize

        reader = read_gguf(path)
        prefix = next((p for p in ("model.diffusion_model.", "diffusion_model.", "")
                       if any(t.name.startswith(p + "blocks.") for t in reader.tensors)), "")
        types = {t.name.removeprefix(prefix): t.tensor_type.name for t in reader.tensors}
        return summarize(types, file_type(reader))
    if path.is_file() and path.suffix.lower() in (".safetensors", ".sft"):
        return {"format": classify(path).precision}
    return {}


def _entry(choice) -> dict:
    chosen = None
    if choice.file is not None:
        chosen = {"path": str(choice.file.path), "precision": choice.file.precision, "reason": choice.reason,
                  "size_bytes": choice.file.size}
    return {"chosen": chosen, "skipped": [{"path": str(f.path), "why": why} for f, why in choice.skipped],
            "missing": ""}


def _transformer(weights: Path, inventory: Inventory) -> dict:
    from .layouts import RELEASE_CHECKPOINT, detect_layout, find_transformer

    choice = inventory.choose("transformer")
    part = _entry(choice)
    try:
        path = find_transformer(weights)
    except (ValueError, OSError) as exc:
        part["missing"] = f"{first_line(exc)}; download {TRANSFORMER_DOWNLOAD}"
        return part
    if choice.file is None or choice.file.path != path:  # a converted folder or the release checkpoint
        reason = ("the official release checkpoint" if path.name == RELEASE_CHECKPOINT.name
                  else "a converted folder (python -m backend convert)")
        part["chosen"] = {"path": str(path), "precision": "", "reason": reason + ", which comes before single files"}
        if choice.file is not None:
            part["skipped"].insert(0, {"path": str(choice.file.path), "why": f"{reason} comes first"})
    part["chosen"]["layout"] = detect_layout(path)
    check = check_file(path) if path.is_file() else None
    if check is not None and not check.ok:  # found, but it cannot be loaded: say why
        part["chosen"].update(problem=check.line(), status=check.status)
        return part
    part["chosen"]["quantization"] = header_quantization(path)
    return part


def _encoders(weights: Path, layout: str, inventory: Inventory) -> dict:
    parts: dict = {}
    if layout == "comfyui":
        for component in ("text_encoder", "image_encoder", "vae"):
            parts[component] = _entry(inventory.choose(component))
            if parts[component]["chosen"] is None:
                parts[component]["missing"] = f"{LABELS[component]}: download {COMFY_DOWNLOADS[component]}"
        text = parts["text_encoder"]["chosen"]
        tokenizer = find_umt5_tokenizer(weights, Path(text["path"]) if text else None)
    else:
        from .encoder_folders import OFFICIAL_CLIP, OFFICIAL_T5, OFFICIAL_T5_DIR, OFFICIAL_VAE

        names = ({"text_encoder": "text_encoder", "image_encoder": "image_encoder", "vae": "vae"} if layout == "diffusers"
                 else {"text_encoder": f"{OFFICIAL_T5_DIR}/{OFFICIAL_T5}", "image_encoder": OFFICIAL_CLIP,
                       "vae": OFFICIAL_VAE})
        for component, name in names.items():
            path = weights / name
            found = path.exists()
            reason = "the Wan2.1-I2V diffusers folder" if layout == "diffusers" else "the official release file"
            parts[component] = {"chosen": {"path": str(path), "precision": "", "reason": reason} if found else None,
                                "skipped": [], "missing": "" if found else f"{LABELS[component]}: {name}"}
        # These layouts' loaders read the tokenizer from their own folder only.
        own = ([(weights / "tokenizer", "in the diffusers layout's tokenizer/ folder")] if layout == "diffusers" else
               [(weights / OFFICIAL_T5_DIR, "in the official release's umt5-xxl/ folder"),
                (weights / "google" / "umt5-xxl", "in the Wan 2.1 release's google/umt5-xxl/ folder")])
        tokenizer = find_in(own, own[0][0])
    parts["tokenizer"] = {"chosen": {"path": str(tokenizer.path), "reason": f"found {tokenizer.where}"}
                          if tokenizer.found else None, "skipped": [], "missing": tokenizer.advice}
    return parts


def resolve_components(weights: str | Path) -> dict:
    """Per part of SCAIL-2 (`PARTS`): the chosen file and why, what was skipped and why, what is
    missing; plus "loras" (every LoRA file found) and "encoders_layout"."""
    from .encoder_folders import detect_layout as encoder_layout

    weights = Path(weights)
    inventory = Inventory.scan(weights)
    report: dict = {"transformer": _transformer(weights, inventory)}
    try:
        layout = encoder_layout(weights)
    except (ValueError, OSError) as exc:
        layout = ""
        for component in ("text_encoder", "image_encoder", "vae"):
            report[component] = {"chosen": None, "skipped": [], "missing": f"{LABELS[component]}: {first_line(exc)}"}
        report["tokenizer"] = {"chosen": None, "skipped": [], "missing": find_umt5_tokenizer(weights).advice}
    else:
        report.update(_encoders(weights, layout, inventory))
    report["encoders_layout"] = layout
    report["loras"] = [{"path": str(f.path), "problem": f.problem} for f in inventory.loras()]
    others = [f for f in inventory.files if f.component not in (*COMPONENTS, "lora")]
    report["other_files"] = [{"path": str(f.path), "why": f.problem} for f in others]
    return report
