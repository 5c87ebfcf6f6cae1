"""One module per score; each `measure(flows) -> protocol.Score` (values in [0, 1], higher is better)."""

from __future__ import annotations

import numpy as np


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def mean_of(per_frame: list[float | None]) -> float | None:
    values = [v for v in per_frame if v is not None]
    return rounded(float(np.mean(values))) if values else None
