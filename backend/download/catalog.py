"""Every file `backend download` can fetch: its repository, its path there, its size, where it lands.

The names and sizes are facts read from the repositories' own listings; docs/weights.md says where
each one came from. Sizes here are what the plan shows before anything starts (an approximate size
is marked so); the download itself takes each file's exact size and SHA-256 from the hub.

Files land in ComfyUI's layout (`diffusion_models/`, `text_encoders/`, `clip_vision/`, `vae/`,
`loras/`), which the loaders read (`loaders.inventory`) and ComfyUI reads too. The umT5 tokenizer
goes to `text_encoders/umt5-xxl/`, where `loaders.tokenizers` looks beside the text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

COMFY_SCAIL2 = "Comfy-Org/SCAIL-2"
COMFY_WAN21 = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
GGUF_SCAIL2 = "realrebelai/SCAIL-2_GGUF"
KIJAI_WAN = "Kijai/WanVideo_comfy"
UMT5_TOKENIZER = "google/umt5-xxl"
SAM3_REPO = "facebook/sam3"  # gated: access is granted per account on its model page


@dataclass(frozen=True)
class WeightsFile:
    """One file: `repo`/`filename` on the hub, `folder` it lands in, `part` of SCAIL-2 it serves."""

    key: str
    repo: str
    filename: str
    folder: str
    part: str  # "transformer", "text_encoder", "image_encoder", "vae", "tokenizer", "lora", "sam3"
    size_bytes: int
    exact_size: bool = True  # False: rounded from the listing ("32.8 GB"); the hub gives the exact one
    gated: bool = False

    @property
    def name(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def path(self) -> str:
        """Where it lands, relative to the weights folder."""
        return f"{self.folder}/{self.name}"


FILES = {f.key: f for f in (
    WeightsFile("transformer-fp16", COMFY_SCAIL2, "diffusion_models/wan2.1_14B_SCAIL_2_fp16.safetensors",
                "diffusion_models", "transformer", 32_800_000_000, exact_size=False),
    WeightsFile("transformer-fp8", COMFY_SCAIL2, "diffusion_models/wan2.1_14B_SCAIL_2_fp8_scaled.safetensors",
                "diffusion_models", "transformer", 17_694_586_857),
    WeightsFile("transformer-gguf-q4", GGUF_SCAIL2, "SCAIL-2-Q4_K_M.gguf",
                "diffusion_models", "transformer", 10_900_000_000, exact_size=False),
    WeightsFile("text-encoder-fp16", COMFY_WAN21, "split_files/text_encoders/umt5_xxl_fp16.safetensors",
                "text_encoders", "text_encoder", 11_400_000_000, exact_size=False),
    WeightsFile("text-encoder-fp8", COMFY_WAN21, "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                "text_encoders", "text_encoder", 6_735_906_897),
    WeightsFile("image-encoder", COMFY_WAN21, "split_files/clip_vision/clip_vision_h.safetensors",
                "clip_vision", "image_encoder", 1_264_219_396),
    WeightsFile("vae", COMFY_WAN21, "split_files/vae/wan_2.1_vae.safetensors", "vae", "vae", 253_815_318),
    WeightsFile("tokenizer", UMT5_TOKENIZER, "tokenizer.json", "text_encoders/umt5-xxl", "tokenizer", 16_837_417),
    WeightsFile("tokenizer-config", UMT5_TOKENIZER, "tokenizer_config.json", "text_encoders/umt5-xxl", "tokenizer",
                6_840, exact_size=False),
    WeightsFile("lora-lightx2v", KIJAI_WAN, "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
                "loras", "lora", 738_005_744),
    WeightsFile("lora-dpo", COMFY_SCAIL2, "loras/wan2.1_SCAIL_2_DPO_lora_bf16.safetensors", "loras", "lora",
                1_226_936_552),
)}

# The encoders, VAE, tokenizer and the fast preset's LoRA every plan needs besides its transformer.
COMMON = ("image-encoder", "vae", "tokenizer", "tokenizer-config", "lora-lightx2v")


@dataclass(frozen=True)
class Variant:
    """A named set of files: the transformer and text encoder at one precision, plus `COMMON`.

    `storage` is how `doctor` estimates its memory ("bf16", "fp8", "gguf"), `label` how the plan's
    reason names it for the artist.
    """

    name: str
    transformer: str
    text_encoder: str
    storage: str
    label: str

    def keys(self, extras: tuple[str, ...] = ()) -> tuple[str, ...]:
        return (self.transformer, self.text_encoder, *COMMON, *extras)

    def files(self, extras: tuple[str, ...] = ()) -> list[WeightsFile]:
        return [FILES[key] for key in self.keys(extras)]


# Most precise first: `plan.choose_variant` takes the first one that fits the GPU.
VARIANTS = {v.name: v for v in (
    Variant("fp16", "transformer-fp16", "text-encoder-fp16", "bf16", "fp16 transformer, fp16 text encoder"),
    Variant("fp8", "transformer-fp8", "text-encoder-fp8", "fp8", "fp8_scaled transformer, fp8 text encoder"),
    Variant("gguf-q4", "transformer-gguf-q4", "text-encoder-fp8", "gguf",
            "GGUF Q4_K_M transformer, fp8 text encoder"),
)}
PLANS = ("auto", *VARIANTS)
EXTRAS = {"dpo": "lora-dpo"}  # optional files: --with dpo
# Optional whole repositories (--with sam3): their file list is asked from the hub when the download starts,
# so a gated one (SAM 3) says what to do before anything else is fetched. {name: (repository, folder)}.
REPOSITORY_EXTRAS = {"sam3": (SAM3_REPO, "sam3")}
