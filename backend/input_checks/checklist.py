"""Building one check: its verdict from the thresholds table, its frames named in its sentence."""

from __future__ import annotations

from protocol import InputCheck

from .thresholds import FRAMES_IN_MESSAGE, LIMITS


def frames_text(frames: list[int]) -> str:
    """"frame 3", "frames 3, 9 and 14", "frames 3, 9, 14, 20 and 12 more" (job frames)."""
    if len(frames) == 1:
        return f"frame {frames[0]}"
    shown = ", ".join(str(f) for f in frames[:FRAMES_IN_MESSAGE])
    rest = len(frames) - FRAMES_IN_MESSAGE
    if rest > 0:
        return f"frames {shown} and {rest} more"
    head, _, last = shown.rpartition(", ")
    return f"frames {head} and {last}"


def runs(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frames as (first, last) runs of consecutive frames."""
    out: list[tuple[int, int]] = []
    for frame in sorted(set(frames)):
        if out and frame == out[-1][1] + 1:
            out[-1] = (out[-1][0], frame)
        else:
            out.append((frame, frame))
    return out


def check(name: str, limit: str, value: float, message: str, frames=(), identity: int | None = None,
          verdict: str | None = None, unit: str | None = None) -> InputCheck:
    """The check `name`, its verdict by `LIMITS[limit]` (or `verdict` when given) and its number (in `unit`,
    by default the limit's)."""
    if unit is None:
        unit = LIMITS[limit].unit if limit else ""
    return InputCheck(name=name, verdict=verdict or LIMITS[limit].verdict(value), message=message,
                      value=round(float(value), 4), unit=unit,
                      frames=sorted({int(f) for f in frames}), identity=identity)


def passed(name: str, message: str, value: float | None = None, unit: str = "") -> InputCheck:
    return InputCheck(name=name, verdict="ok", message=message, value=value, unit=unit)
