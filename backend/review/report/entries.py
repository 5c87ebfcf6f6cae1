"""What one take brings to the review page: its folder, manifest, review, scores and recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol import Recipe, TakeReview, TakeScores

MARKER = "<!-- scail2 review report -->"  # a file starting with it was written by this command


@dataclass
class TakeEntry:
    job_dir: Path
    manifest: dict
    review: TakeReview | None
    scores: TakeScores | None
    recipe: Recipe | None

    @property
    def job_id(self) -> str:
        return self.review.job_id if self.review else str(self.manifest.get("id") or self.job_dir.name)

    @property
    def label(self) -> str:
        name = self.review.label if self.review and self.review.label else self.job_id
        return f"{self.review.version_label} {name}" if self.review and self.review.version else name

    @property
    def shot(self) -> str:
        """The add-on's shot name when it numbered the take; else the driving clip's hash and frame range."""
        if self.review and self.review.shot:
            return self.review.shot
        job = self.manifest.get("job") or {}
        driving = str(job.get("driving", ""))
        digest = (self.manifest.get("inputs") or {}).get(driving, "")[:12]
        end = job.get("frame_end")
        return f"{Path(driving).name} {digest} frames {job.get('frame_start', 0)}-{'end' if end is None else end - 1}"
