"""Scoring a take: every score, its flags, and the manifest's `review` written back.

`score_job_folder` is what `python -m backend score JOB_DIR` and the end of every generation run.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from protocol import MANIFEST_NAME, ManifestReview, TakeScores, read_json_file

from ..pipeline.durable import write_json_atomic
from . import SCORER
from .flags import take_flags
from .flow import TakeFlows
from .scores import background, faces, identity, motion, temporal
from .scores.identity import Embedder
from .take import Take, TakeError, load_take


def score_take(take: Take, embed: Embedder | None = None) -> TakeScores:
    """Every score of `take` and its flags; `embed` adds CLIP similarity to the identity score."""
    start = time.perf_counter()
    flows = TakeFlows(take)
    scores = [motion.measure(flows), temporal.measure(flows), identity.measure(flows, embed),
              background.measure(flows), faces.measure(flows)]
    if take.notes:  # what could not be loaded limits every score that needed it; say it once, on each
        scores = [_with_note(s, take.notes) for s in scores]
    return TakeScores(scores, take_flags(scores), round(time.perf_counter() - start, 3), SCORER)


def _with_note(score, notes):
    return replace(score, details={**score.details, "inputs": list(notes)})


def read_manifest(job_dir: Path) -> dict:
    manifest = read_json_file(Path(job_dir) / MANIFEST_NAME, "manifest")
    if not isinstance(manifest, dict):
        raise TakeError(f"{job_dir}: the manifest is not a JSON object")
    return manifest


def score_job_folder(job_dir: Path, embed: Embedder | None = None) -> TakeScores:
    """(Re)compute the scores of a finished job folder and write them into its manifest's `review`
    (an atomic rewrite; every other field kept). TakeError / ProtocolError in one line."""
    job_dir = Path(job_dir)
    manifest = read_manifest(job_dir)
    if manifest.get("status") != "done":
        raise TakeError(f"{job_dir}: the job is not finished (status {manifest.get('status')!r}); score it when done")
    scores = score_take(load_take(job_dir, manifest), embed)
    write_review(job_dir, scores)
    return scores


def write_review(job_dir: Path, scores: TakeScores) -> None:
    """Put `scores` into manifest.json's `review`, re-reading the manifest just before the rewrite."""
    manifest = read_manifest(job_dir)
    manifest["review"] = ManifestReview(scores=scores).to_dict()
    write_json_atomic(Path(job_dir) / MANIFEST_NAME, manifest)
