"""The report's HTML: per shot, what the scores mean, then the takes side by side (contact sheet,
status, rating, score charts, flags, notes, recipe). Plain HTML and CSS, no script, so any browser shows it the same way offline."""

from __future__ import annotations

import json
from html import escape

from .entries import MARKER, TakeEntry
from .charts import sparkline
from .sheets import contact_sheet

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1f23;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.takes{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.take{border:1px solid #ccd;border-radius:6px;padding:10px;flex:1 1 380px;max-width:640px;min-width:0;
background:#fafbfc}
.take h3{margin:0 0 6px;font-size:16px}.sheet{display:block;max-width:100%;border:1px solid #ccc}
.status{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px}
.new{background:#667}.approved{background:#1a7f37}.rejected{background:#c62828}.on_hold{background:#b26a00}
table{border-collapse:collapse;margin:6px 0}td,th{padding:2px 6px;text-align:left;vertical-align:middle}
.limits{color:#555;font-size:12px}.about dt{font-weight:bold;margin-top:4px}.about dd{margin:0 0 0 12px}.flags li{color:#a21b1b}pre{white-space:pre-wrap;font-size:11px;
background:#f0f1f3;padding:6px;max-height:220px;overflow:auto}
"""


def _stars(rating: int) -> str:
    return "&#9733;" * rating + "&#9734;" * (5 - rating) if rating else "not rated"


def _scores_table(entry: TakeEntry) -> str:
    if entry.scores is None:
        return "<p class='limits'>Not scored yet: <code>python -m backend score JOB_DIR</code>.</p>"
    rows = []
    for score in entry.scores.scores:
        flagged = {f.frame for f in entry.scores.flags if f.score == score.name}
        value = "&ndash;" if score.value is None else f"{score.value:.2f}"
        rows.append(f"<tr><th>{escape(score.name)}</th><td>{value}</td>"
                    f"<td>{sparkline(score.per_frame, flagged, f'{score.name} per frame')}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _about_scores(takes: list[TakeEntry]) -> str:
    """What each score measures and cannot see, once per shot (from its first scored take)."""
    scored = next((e for e in takes if e.scores is not None), None)
    if scored is None:
        return ""
    items = "".join(f"<dt>{escape(s.name)}</dt><dd>{escape(s.what)}<br><span class='limits'><i>Limits:</i> "
                    f"{escape(s.limits)}</span></dd>" for s in scored.scores.scores)
    return (f"<details class='about'><summary>What the scores measure, and what they cannot see</summary>"
            f"<dl>{items}</dl></details>")


def _flags(entry: TakeEntry) -> str:
    if entry.scores is None:
        return ""
    if not entry.scores.flags:
        return "<p>No flags.</p>"
    items = "".join(f"<li>frame {f.frame}: {escape(f.reason)}</li>" for f in entry.scores.flags[:40])
    more = f"<li>and {len(entry.scores.flags) - 40} more</li>" if len(entry.scores.flags) > 40 else ""
    return f"<p><b>Flags</b></p><ul class='flags'>{items}{more}</ul>"


def _notes(entry: TakeEntry) -> str:
    notes = entry.review.notes if entry.review else []
    if not notes:
        return "<p>No notes.</p>"
    items = "".join(f"<li>frame {n.frame}: {escape(n.text)}"
                    f"{' (' + escape(n.author) + ')' if n.author else ''}</li>" for n in notes)
    return f"<p><b>Notes</b></p><ul>{items}</ul>"


def _take(entry: TakeEntry) -> str:
    flagged = {f.frame for f in entry.scores.flags} if entry.scores else set()
    files = [f["file"] for f in entry.manifest.get("frames", [])]
    sheet = ""
    if files:
        uri, picks = contact_sheet(entry.job_dir, files, flagged)
        sheet = (f"<img class='sheet' src='{uri}' alt='contact sheet of {escape(entry.label)}: frames "
                 f"{', '.join(map(str, picks))}'>")
    status = entry.review.status if entry.review else "new"
    rating = entry.review.rating if entry.review else 0
    derived = (f"<p>Remade on changed inputs from take {escape(entry.review.derived_from)}.</p>"
               if entry.review and entry.review.derived_from else "")
    recipe = json.dumps(entry.recipe.to_dict(), indent=1) if entry.recipe else "no recipe"
    seed = entry.recipe.seed if entry.recipe else entry.manifest.get("seed")
    return (f"<section class='take' data-take='{escape(entry.job_id)}'><h3>{escape(entry.label)}</h3>"
            f"<p><span class='status {escape(status)}'>{escape(status.replace('_', ' '))}</span> "
            f"{_stars(rating)} &middot; seed {seed} &middot; {len(files)} frames</p>{derived}{sheet}"
            f"{_scores_table(entry)}{_flags(entry)}{_notes(entry)}"
            f"<details><summary>Recipe</summary><pre>{escape(recipe)}</pre></details></section>")


def render_page(shots: dict[str, list[TakeEntry]]) -> str:
    body = "".join(f"<h2>Shot: {escape(shot)}</h2>{_about_scores(takes)}"
                   f"<div class='takes'>{''.join(_take(e) for e in takes)}</div>" for shot, takes in shots.items())
    count = sum(len(t) for t in shots.values())
    return (f"{MARKER}\n<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>SCAIL-2 review</title><style>{STYLE}</style></head><body>"
            f"<h1>SCAIL-2 review</h1><p>{count} takes in {len(shots)} shot{'s' if len(shots) != 1 else ''}. "
            f"Hands are not checked by any score yet.</p>{body}</body></html>")
