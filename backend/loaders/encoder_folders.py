"""Loading SCAIL-2's three encoders from a weights folder, in either of the layouts users download.

* ``"diffusers"``: the ``vae/``, ``text_encoder/``, ``tokenizer/`` and ``image_encoder/`` folders of
  a Wan2.1-I2V diffusers repository, read with ``from_pretrained``;
* ``"official"``: the SCAIL-2 / Wan release files (``.pth``), mapped onto the same classes in
  `encoder_checkpoints`;
* ``"comfyui"``: single files as ComfyUI keeps them (``text_encoders/``, ``clip_vision/``,
  ``vae/``, or loose), found by their tensors (`inventory`) and read by `comfy_encoders`; the
  tokenizer is looked for by `tokenizers`.

What the encoders do with their inputs is `backend.models.encoders`; see also `docs/model.md`,
section "Encoders".
"""

from __future__ import annotations

from pathlib import Path

import torch

import protocol

from ..models.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    EncoderError,
    Encoders,
    ImageEncoder,
    TextEncoder,
    VideoVAE,
    image_dtype,
    module_to,
)
from .comfy_encoders import load_clip_vision_file, load_umt5_file, load_vae_file
from .errors import CheckpointError
from .encoder_checkpoints import load_open_clip_visual, load_wan_t5, load_wan_vae
from .inventory import LABELS, Inventory
from .tokenizers import find_umt5_tokenizer

DIFFUSERS_REPO = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
OFFICIAL_REPO = "zai-org/SCAIL-2"
OFFICIAL_VAE = "Wan2.1_VAE.pth"
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_T5_DIR = "umt5-xxl"
OFFICIAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth"
WAN_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"  # Wan 2.1 release: full CLIP
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
ENCODER_COMPONENTS = ("text_encoder", "image_encoder", "vae")
COMFY_FILES = {"text_encoder": "text_encoders/umt5_xxl_fp16.safetensors",
               "image_encoder": "clip_vision/clip_vision_h.safetensors", "vae": "vae/wan_2.1_vae.safetensors"}
COMFY_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"


def detect_layout(weights_dir: Path) -> str:
    """"diffusers" (Wan2.1-I2V diffusers folder), "official" (SCAIL-2 / Wan release files) or
    "comfyui" (ComfyUI's single files, found by their tensors)."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        what = "is a file, not a folder" if weights_dir.exists() else "does not exist"
        raise EncoderError(f"encoder weights folder {weights_dir} {what}")
    subfolders = ("vae", "text_encoder", "image_encoder")
    if (weights_dir / "model_index.json").is_file() or any(
        (weights_dir / name / "config.json").is_file() for name in subfolders
    ):
        return "diffusers"
    official = (OFFICIAL_VAE, OFFICIAL_T5, OFFICIAL_T5_DIR, OFFICIAL_CLIP, WAN_CLIP)
    if any((weights_dir / name).exists() for name in official):
        return "official"
    if any(Inventory.scan(weights_dir).of(component) for component in ENCODER_COMPONENTS):
        return "comfyui"
    raise EncoderError(
        f"no encoder weights in {weights_dir}: put there either the {OFFICIAL_REPO} release files "
        f"({OFFICIAL_VAE}, {OFFICIAL_T5_DIR}/{OFFICIAL_T5} with its tokenizer files, {OFFICIAL_CLIP}), "
        f"the vae/, text_encoder/, tokenizer/ and image_encoder/ folders of {DIFFUSERS_REPO}, "
        "or ComfyUI's umt5_xxl, clip_vision_h and wan_2.1_vae files (text_encoders/, clip_vision/, vae/)"
    )


def load_encoders(
    weights_dir: Path,
    device="cpu",
    dtype: torch.dtype = torch.bfloat16,
    *,
    vae_dtype: torch.dtype = torch.float32,
) -> Encoders:
    """Load the three encoders from `weights_dir` (layout detected), cast and moved to `device`.

    `dtype` is the text encoder's (the reference: bf16); the image encoder runs in
    `image_dtype(dtype)` (float16 beside bf16, as the reference); the VAE runs in `vae_dtype`
    (float32 as in the Wan reference).
    """
    weights_dir = Path(weights_dir)
    layout = detect_layout(weights_dir)
    if layout == "diffusers":
        text, image, vae = _load_diffusers(weights_dir, dtype, vae_dtype)
        label = f"Wan2.1-I2V encoders (diffusers folder {weights_dir})"
    elif layout == "comfyui":
        text, image, vae = _load_comfyui(weights_dir, dtype, vae_dtype)
        label = f"ComfyUI encoder files ({weights_dir})"
    else:
        text, image, vae = _load_official(weights_dir, dtype, vae_dtype)
        label = f"SCAIL-2 release encoders ({weights_dir})"
    return Encoders(text=text, image=image, vae=vae, label=label).to(device)


def _load_tokenizer(folder: Path, where: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - report any tokenizer failure as one clear line
        reason = f"{exc.__class__.__name__}: {exc}".replace("\n", " ")
        raise EncoderError(
            f"cannot load the umT5 tokenizer from {folder} ({reason}); "
            f"it needs the google/umt5-xxl tokenizer files (tokenizer.json, tokenizer_config.json, "
            f"special_tokens_map.json, spiece.model) from {where}"
        ) from exc


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))


def _missing_diffusers_parts(weights_dir: Path) -> list[str]:
    missing = []
    for name in ("vae", "text_encoder", "image_encoder"):
        folder = weights_dir / name
        if not (folder / "config.json").is_file() or not _has_weights(folder):
            missing.append(f"{name}/")
    if not any((weights_dir / "tokenizer" / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer/")
    return missing


def _clip_stats(weights_dir: Path):
    config = weights_dir / "image_processor" / "preprocessor_config.json"
    if config.is_file():
        try:
            data = protocol.read_json_file(config, "image processor config")
        except protocol.ProtocolError as exc:
            raise CheckpointError(str(exc)) from None
        if isinstance(data, dict) and "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return CLIP_MEAN, CLIP_STD


def _load_diffusers(weights_dir: Path, dtype, vae_dtype):
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionModel, UMT5EncoderModel

    missing = _missing_diffusers_parts(weights_dir)
    if missing:
        raise EncoderError(
            f"missing {', '.join(missing)} in {weights_dir}: download these folders (config.json and "
            f".safetensors weights; tokenizer files) of Hugging Face {DIFFUSERS_REPO} into {weights_dir}"
        )
    opts = dict(local_files_only=True, use_safetensors=True)
    vae = AutoencoderKLWan.from_pretrained(str(weights_dir / "vae"), torch_dtype=vae_dtype, **opts)
    text = UMT5EncoderModel.from_pretrained(str(weights_dir / "text_encoder"), dtype=dtype, **opts)
    image = CLIPVisionModel.from_pretrained(str(weights_dir / "image_encoder"), dtype=image_dtype(dtype), **opts)
    tokenizer = _load_tokenizer(weights_dir / "tokenizer", f"the tokenizer/ folder of {DIFFUSERS_REPO}")
    mean, std = _clip_stats(weights_dir)
    return TextEncoder(text, tokenizer), ImageEncoder(image, mean, std), VideoVAE(vae)


def _official_paths(weights_dir: Path) -> dict[str, Path]:
    """The release files (first existing candidate of each), or one EncoderError listing all missing ones."""
    wanted = {
        "vae": ([OFFICIAL_VAE], "Wan 2.1 VAE"),
        "t5": ([f"{OFFICIAL_T5_DIR}/{OFFICIAL_T5}", OFFICIAL_T5], "umT5-XXL text encoder"),
        "clip": ([OFFICIAL_CLIP, WAN_CLIP], "CLIP ViT-H/14 image encoder"),
    }
    found, missing = {}, []
    for key, (candidates, description) in wanted.items():
        path = next((weights_dir / c for c in candidates if (weights_dir / c).is_file()), None)
        if path is None:
            missing.append(f"{candidates[0]} ({description})")
        else:
            found[key] = path
    # SCAIL-2 keeps the tokenizer next to the T5 weights; the Wan 2.1 release in google/umt5-xxl/.
    folders = [weights_dir / OFFICIAL_T5_DIR, weights_dir / "google" / "umt5-xxl"]
    if "t5" in found:
        folders.insert(0, found["t5"].parent)
    tokenizer = next((d for d in folders if any((d / f).is_file() for f in TOKENIZER_FILES)), None)
    if tokenizer is None:
        missing.append(f"{OFFICIAL_T5_DIR}/tokenizer.json, tokenizer_config.json, special_tokens_map.json, "
                       "spiece.model (umT5 tokenizer)")
    if missing:
        raise EncoderError(
            f"missing {'; '.join(missing)} in {weights_dir}: download them from Hugging Face {OFFICIAL_REPO} "
            f"and put them at the same paths under {weights_dir}"
        )
    found["tokenizer"] = tokenizer
    return found


def _load_official(weights_dir: Path, dtype, vae_dtype):
    paths = _official_paths(weights_dir)
    tokenizer = _load_tokenizer(paths["tokenizer"], f"{OFFICIAL_REPO} {OFFICIAL_T5_DIR}/")
    vae = module_to(load_wan_vae(paths["vae"]), dtype=vae_dtype)
    text = module_to(load_wan_t5(paths["t5"]), dtype=dtype)
    image = module_to(load_open_clip_visual(paths["clip"]), dtype=image_dtype(dtype))
    return TextEncoder(text, tokenizer), ImageEncoder(image), VideoVAE(vae)


def comfy_encoder_files(weights_dir: Path) -> dict:
    """{component: `inventory.Choice`} for the encoders and VAE of a ComfyUI-style folder."""
    inventory = Inventory.scan(weights_dir)
    return {component: inventory.choose(component) for component in ENCODER_COMPONENTS}


def _load_comfyui(weights_dir: Path, dtype, vae_dtype):
    choices = comfy_encoder_files(weights_dir)
    missing = []
    for component, choice in choices.items():
        if choice.file is None:
            why = f" ({choice.skipped[0][0].path.name}: {choice.skipped[0][1]})" if choice.skipped else ""
            missing.append(f"{LABELS[component]}{why}")
    tokenizer = None
    if choices["text_encoder"].file is not None:
        tokenizer = find_umt5_tokenizer(weights_dir, choices["text_encoder"].file.path)
        if not tokenizer.found:
            missing.append(tokenizer.advice)
    if missing:
        raise EncoderError(
            f"missing in {weights_dir}: {'; '.join(missing)}; ComfyUI's files are on Hugging Face {COMFY_REPO} "
            f"({', '.join(COMFY_FILES.values())})"
        )
    text = module_to(load_umt5_file(choices["text_encoder"].file.path, dtype), dtype=dtype)
    image = module_to(load_clip_vision_file(choices["image_encoder"].file.path), dtype=dtype)
    vae = module_to(load_vae_file(choices["vae"].file.path), dtype=vae_dtype)
    tokenizer_model = _load_tokenizer(tokenizer.path, f"{tokenizer.path} ({tokenizer.where})")
    return TextEncoder(text, tokenizer_model), ImageEncoder(image), VideoVAE(vae)
