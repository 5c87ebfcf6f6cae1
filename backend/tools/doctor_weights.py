"""The per-component part of `doctor`'s text report: which file serves each part of SCAIL-2, and why.

Reads the "components" record of `loaders.resolve.resolve_components` (also in `doctor --json`,
which the add-on's Check Weights shows) and writes one line per part, with the skipped files
and the quantisation of the transformer below it.
"""

from __future__ import annotations

PART_LABELS = {"transformer": "transformer", "text_encoder": "text encoder", "tokenizer": "tokenizer",
               "image_encoder": "image encoder", "vae": "vae"}
MAX_FAMILIES = 4


def quantization_line(record: dict) -> str:
    """One line for a transformer's quantisation record (GGUF: its type and the main families)."""
    if not record:
        return ""
    if record.get("format") != "gguf":
        return ""  # the precision on the line above says it all
    families = record.get("families", {})
    shown = [f"{name} {kind}" for name, kind in families.items() if name.startswith("blocks.")][:MAX_FAMILIES]
    more = ", ..." if len(families) > len(shown) else ""
    return f"GGUF {record.get('file_type', '?')} ({', '.join(shown)}{more})"


def component_lines(components: dict) -> list[str]:
    """The text report's lines for `components` (indented under "weights")."""
    if "error" in components:
        return [f"  components:    not checked: {components['error']}"]
    lines = []
    for part, label in PART_LABELS.items():
        entry = components.get(part) or {}
        chosen = entry.get("chosen")
        head = f"  {label + ':':<15}"
        if chosen is None:
            lines.append(f"{head}MISSING: {entry.get('missing') or 'not found'}")
        elif chosen.get("problem"):
            verdict = "REFUSED" if chosen.get("status") == "code" else str(chosen.get("status", "")).upper()
            lines.append(f"{head}{verdict}: {chosen['problem']}")
        else:
            what = ", ".join(x for x in (chosen.get("precision"), chosen.get("layout") and
                                         f"{chosen['layout']} layout") if x)
            lines.append(f"{head}{chosen['path']}" + (f" ({what})" if what else "") + f": {chosen.get('reason', '')}")
            quantization = quantization_line(chosen.get("quantization") or {})
            if part == "transformer" and quantization:
                lines.append(f"{'':17}quantisation: {quantization}")
        lines.extend(f"{'':17}skipped {skip['path']}: {skip['why']}" for skip in entry.get("skipped", []))
    loras = components.get("loras", [])
    if loras:
        names = ", ".join(lora["path"].rsplit("/", 1)[-1] for lora in loras)
        lines.append(f"  {'loras:':<15}{len(loras)} file(s): {names}")
    return lines


def component_advice(components: dict) -> list[str]:
    """What to download for each missing part."""
    if "error" in components:
        return []
    return [f"download {entry['missing']}" if not entry["missing"].startswith("the umT5 tokenizer")
            else entry["missing"]
            for part in PART_LABELS if (entry := components.get(part) or {}).get("missing")
            and part != "transformer"]
