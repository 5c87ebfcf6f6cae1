"""The review step at the end of every generation (CLI, worker, farm task): score the take, then write
its review.json. It never fails the job: a take that cannot be scored is still a take (one warning line
on stderr, which is the log for the worker too)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..loaders.errors import first_line
from .recipe import software_versions, write_take_review
from .scoring import read_manifest, score_job_folder
from .scores.identity import Embedder


def clip_embedder(image_encoder) -> Embedder:
    """The model's own CLIP vision tower (already in memory) as an embedder: the class token of its
    penultimate layer, the features SCAIL-2 itself conditions on."""
    import torch

    def embed(crops: list[np.ndarray]) -> np.ndarray:
        out = []
        for crop in crops:
            image = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 127.5 - 1.0
            out.append(image_encoder.encode(image)[0, 0].float().cpu().numpy())
        return np.stack(out)

    return embed


def review_finished_take(job_dir: Path, components=None) -> None:
    """Scores into the manifest's `review`, then review.json if none exists; warnings instead of errors."""
    embed = None
    if components is not None and not components.noise_only:
        embed = clip_embedder(components.encoders.image)
    try:
        score_job_folder(job_dir, embed)
    except Exception as exc:  # noqa: BLE001  (a scoring failure never fails the job)
        print(f"warning: the take was not scored: {first_line(exc)}", file=sys.stderr)
    try:
        write_take_review(job_dir, read_manifest(job_dir), software_versions())
    except Exception as exc:  # noqa: BLE001
        print(f"warning: review.json was not written: {first_line(exc)}", file=sys.stderr)
