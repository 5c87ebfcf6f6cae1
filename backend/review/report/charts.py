"""Scores as small inline SVG charts: one line per score over the take's frames, flags as red dots."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 280, 48, 3


def sparkline(per_frame: list[float | None], flagged: set[int], label: str) -> str:
    """An SVG of values in [0, 1] per frame (gaps where None), a dashed line at 0.5, red dots on flagged frames."""
    count = max(len(per_frame), 2)

    def x(k: int) -> float:
        return PAD + k * (WIDTH - 2 * PAD) / (count - 1)

    def y(v: float) -> float:
        return PAD + (1.0 - v) * (HEIGHT - 2 * PAD)

    runs, run = [], []
    for k, value in enumerate(per_frame):
        if value is None:
            runs, run = runs + [run] if run else runs, []
        else:
            run.append(f"{x(k):.1f},{y(value):.1f}")
    runs += [run] if run else []
    lines = "".join(f'<polyline points="{" ".join(r)}" fill="none" stroke="#2a6fdb" stroke-width="1.5"/>'
                    for r in runs)
    dots = "".join(f'<circle cx="{x(k):.1f}" cy="{y(per_frame[k]):.1f}" r="2.5" fill="#dc2828"/>'
                   for k in sorted(flagged) if k < len(per_frame) and per_frame[k] is not None)
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}">'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#f4f5f7"/>'
            f'<line x1="0" x2="{WIDTH}" y1="{y(0.5):.1f}" y2="{y(0.5):.1f}" stroke="#bbb" stroke-dasharray="3 3"/>'
            f"{lines}{dots}</svg>")
