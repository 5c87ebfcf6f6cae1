"""Where the umT5 tokenizer is, and what to download when it is nowhere.

SCAIL-2 tokenises prompts with google/umt5-xxl's tokenizer. It is looked for, in order:

1. beside the text encoder file, or in a ``tokenizer/``, ``umt5-xxl/`` or ``google/umt5-xxl/``
   folder next to it (where a ComfyUI user puts it);
2. in the weights folder's ``tokenizer/`` (the Wan2.1-I2V diffusers layout), ``umt5-xxl/`` (the
   official SCAIL-2 release) or ``google/umt5-xxl/`` (the Wan 2.1 release);
3. in the Hugging Face hub cache: google/umt5-xxl, or the ``tokenizer/`` of a Wan2.1-I2V
   diffusers repository.

A folder counts when it holds ``tokenizer.json`` (what transformers reads without sentencepiece)
or ``spiece.model``. ComfyUI itself keeps the tokenizer inside its umT5 file (a ``spiece_model``
tensor, sentencepiece's bytes); reading that needs the sentencepiece package, which this backend
does not install, so such a file alone still needs the download below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

UMT5_REPO = "google/umt5-xxl"
DIFFUSERS_REPOS = ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
DOWNLOAD_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model")


@dataclass(frozen=True)
class TokenizerLocation:
    """Where the tokenizer was found (`path`, `where` in words), or what to download (`advice`)."""

    path: Path | None
    where: str = ""
    advice: str = ""

    @property
    def found(self) -> bool:
        return self.path is not None

    def as_dict(self) -> dict:
        return {"path": None if self.path is None else str(self.path), "where": self.where, "advice": self.advice}


def has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


def hub_cache() -> Path:
    """The Hugging Face hub cache folder (HF_HUB_CACHE / HF_HOME respected)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def _cached(repo: str, subfolder: str = "") -> list[Path]:
    snapshots = hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return []
    return [s / subfolder if subfolder else s for s in sorted(snapshots.iterdir(), reverse=True)]


def candidates(weights_dir: Path | None, text_encoder: Path | None = None) -> list[tuple[Path, str]]:
    """(folder, where in words) in the order they are looked at (see module doc)."""
    found: list[tuple[Path, str]] = []
    if text_encoder is not None:
        parent = Path(text_encoder).parent
        found.append((parent, "beside the text encoder file"))
        found += [(parent / sub, f"in {sub}/ beside the text encoder file")
                  for sub in ("tokenizer", "umt5-xxl", "google/umt5-xxl")]
    if weights_dir is not None:
        weights_dir = Path(weights_dir)
        found += [(weights_dir / "tokenizer", "in the diffusers layout's tokenizer/ folder"),
                  (weights_dir / "umt5-xxl", "in the official release's umt5-xxl/ folder"),
                  (weights_dir / "google" / "umt5-xxl", "in the Wan 2.1 release's google/umt5-xxl/ folder")]
    found += [(path, f"in the Hugging Face cache ({UMT5_REPO})") for path in _cached(UMT5_REPO)]
    for repo in DIFFUSERS_REPOS:
        found += [(path, f"in the Hugging Face cache ({repo}, tokenizer/)") for path in _cached(repo, "tokenizer")]
    return found


def find_in(places: list[tuple[Path, str]], target: Path) -> TokenizerLocation:
    """The first of `places` ((folder, where in words)) holding the tokenizer, else the download into `target`."""
    for folder, where in places:
        if has_tokenizer(folder):
            return TokenizerLocation(folder, where)
    return TokenizerLocation(None, "", download_advice(target))


def download_advice(target: Path, embedded: str = "") -> str:
    return (f"the umT5 tokenizer is missing{embedded}: download it (about 20 MB) with "
            f"`hf download {UMT5_REPO} {' '.join(DOWNLOAD_FILES)} --local-dir {target}`")


def find_umt5_tokenizer(weights_dir: Path | None, text_encoder: Path | None = None) -> TokenizerLocation:
    """The first folder holding the umT5 tokenizer (`candidates`), or the download that fixes it."""
    for folder, where in candidates(weights_dir, text_encoder):
        if has_tokenizer(folder):
            return TokenizerLocation(folder, where)
    target = (Path(text_encoder).parent if text_encoder is not None else Path(weights_dir or ".")) / "umt5-xxl"
    embedded = " (the text encoder file embeds ComfyUI's copy, which needs the sentencepiece package)" \
        if text_encoder is not None and _embeds_spiece(Path(text_encoder)) else ""
    return TokenizerLocation(None, "", download_advice(target, embedded))


def _embeds_spiece(path: Path) -> bool:
    if path.suffix.lower() not in (".safetensors", ".sft") or not path.is_file():
        return False
    try:
        from .inventory import safetensors_entries

        return "spiece_model" in safetensors_entries(path)
    except (OSError, ValueError):
        return False
