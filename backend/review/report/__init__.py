"""`python -m backend report`: one self-contained HTML page reviewing takes, shot by shot.

Self-contained on purpose: a page mailed to a supervisor or opened from a farm share must show
everything with no network and no files beside it, so frames are JPEG data: URIs and charts are
inline SVG.
"""

from __future__ import annotations

from pathlib import Path

from protocol import REVIEW_NAME, ManifestReview, ProtocolError, TakeReview, read_record

from ...pipeline.durable import write_bytes_atomic
from ..recipe import RecipeError, recipe_from_manifest
from ..scoring import read_manifest
from ..take import TakeError
from .entries import MARKER, TakeEntry


class ReportError(ValueError):
    """A report that cannot be written, as one line."""


def load_entry(job_dir: Path) -> TakeEntry:
    try:
        manifest = read_manifest(job_dir)
    except (TakeError, ProtocolError) as exc:
        raise ReportError(str(exc)) from None
    review = read_record(job_dir / REVIEW_NAME, TakeReview) if (job_dir / REVIEW_NAME).is_file() else None
    scores = None
    if manifest.get("review") is not None:
        try:
            scores = ManifestReview.from_dict(manifest["review"]).scores
        except ProtocolError as exc:
            raise ReportError(f"{job_dir}: the manifest's review: {exc}") from None
    recipe = review.recipe if review and review.recipe else None
    if recipe is None:
        try:
            recipe = recipe_from_manifest(manifest)
        except RecipeError:
            recipe = None
    return TakeEntry(Path(job_dir), manifest, review, scores, recipe)


def group_by_shot(entries: list[TakeEntry]) -> dict[str, list[TakeEntry]]:
    shots: dict[str, list[TakeEntry]] = {}
    for entry in entries:
        shots.setdefault(entry.shot, []).append(entry)
    for takes in shots.values():
        takes.sort(key=lambda e: (e.review.version if e.review else 0, e.job_id))
    return shots


def distinct_folders(job_dirs: list[Path]) -> list[Path]:
    """`job_dirs` in their order, each folder once (a shell glob and a typed name can name one take twice)."""
    seen: set[Path] = set()
    kept = []
    for folder in map(Path, job_dirs):
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            kept.append(folder)
    return kept


def write_report(out: Path, job_dirs: list[Path]) -> int:
    """Write the page (its folder made if new); returns how many shots it shows. Refuses to replace a file
    it did not write."""
    from .page import render_page

    out = Path(out)
    if out.exists() and (not out.is_file() or not out.read_bytes().startswith(MARKER.encode())):
        raise ReportError(f"{out} exists and is not a review report; choose another file")
    shots = group_by_shot([load_entry(d) for d in distinct_folders(job_dirs)])
    page = render_page(shots).encode("utf-8")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ReportError(f"{out.parent} is a file, not a folder; choose another place for the report") from None
    except OSError as exc:
        raise ReportError(f"cannot make the folder {out.parent} for the report: {exc.strerror or exc}") from None
    write_bytes_atomic(out, page)
    return len(shots)
