"""Where segmentation weights come from: a folder the user named, or the Hugging Face hub cache.

Nothing is ever downloaded here; a missing model is one line saying what to fetch and where.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import SegmentationError

SAM3_REPO = "facebook/sam3"
SAM2_REPO = "facebook/sam2.1-hiera-large"


def _problem(folder: Path) -> str | None:
    if not folder.is_dir():
        return "is not a folder"
    if not (folder / "config.json").is_file():
        return "has no config.json"
    if not any(folder.glob("*.safetensors")):
        return "has no *.safetensors"
    return None


def _missing(repo: str, where: str) -> SegmentationError:
    option = "--sam2-weights" if "sam2" in repo else "--sam3-weights"
    return SegmentationError(
        f"{where}: download '{repo}' from Hugging Face (config.json, model.safetensors, tokenizer and "
        f"processor files) into a folder and give it with {option} (in Blender: the add-on preferences), "
        f"or run `hf download {repo}` once where there is internet access to fill the hub cache"
    )


def resolve_weights(folder: os.PathLike | str | None, repo: str) -> Path:
    """The folder holding `repo`'s files: `folder` when given, else the hub cache's snapshot."""
    if folder is not None:
        folder = Path(folder).expanduser()
        problem = _problem(folder)
        if problem:
            raise _missing(repo, f"weights folder {folder} {problem}")
        return folder
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        raise _missing(repo, "no weights folder given and no Hugging Face hub library") from None
    try:
        cached = Path(snapshot_download(repo, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise _missing(repo, f"no weights folder given and '{repo}' is not in the Hugging Face hub cache") from None
    if _problem(cached):
        raise _missing(repo, f"the hub cache's copy of '{repo}' ({cached}) is incomplete")
    return cached
