# SPDX-License-Identifier: GPL-3.0-or-later
"""Get Weights without Blender: the backend command, its environment, and what its JSON lines say.

The add-on runs ``python -m backend download --json`` in the background (``core.setup.CommandRun``)
and reads the ``protocol.DownloadEvent`` lines it prints: the plan, the progress (MB, MB/s, time
left), and how it ended. The Hugging Face token travels in the child's environment (HF_TOKEN,
what ``huggingface_hub`` reads), never on its command line, where other users could see it.
"""

__all__ = (
    "ONLINE_ACCESS_OFF",
    "PLANS",
    "DownloadView",
    "download_command",
    "download_env",
    "format_duration",
    "parse_events",
    "progress_text",
)

import json

from ..protocol import DownloadEvent, ProtocolError

PLANS = ("auto", "fp16", "fp8", "gguf-q4")
ONLINE_ACCESS_OFF = ("Online access is off: allow it in Preferences > System > Network > Allow Online Access, "
                     "then press Get Weights again")
MB = 1e6


def download_command(python, folder, plan="auto", gpu_memory_gb=0, dry_run=False, extras=()):
    """``python -m backend download --plan PLAN --to FOLDER --json`` with the chosen GPU size and extras."""
    if plan not in PLANS:
        raise ValueError("unknown plan {!r}".format(plan))
    argv = [python, "-m", "backend", "download", "--plan", plan, "--to", folder, "--json"]
    if gpu_memory_gb:
        argv += ["--gpu-memory", "{:g}".format(gpu_memory_gb)]
    for extra in extras:
        argv += ["--with", extra]
    if dry_run:
        argv.append("--dry-run")
    return tuple(argv)


def download_env(token):
    """The child's extra environment: the token, when there is one."""
    token = (token or "").strip()
    return {"HF_TOKEN": token} if token else {}


def parse_events(lines):
    """The ``DownloadEvent`` lines among a run's output lines (others are log lines, skipped)."""
    events = []
    for line in lines:
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            events.append(DownloadEvent.from_dict(json.loads(text)))
        except (ValueError, ProtocolError):
            continue  # a log line that happens to start with a brace
    return events


def format_duration(seconds):
    """"45 s", "12 min", "2 h 05 min"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return "{:d} s".format(seconds)
    if seconds < 3600:
        return "{:d} min".format(seconds // 60)
    return "{:d} h {:02d} min".format(seconds // 3600, seconds % 3600 // 60)


def progress_text(event):
    """"1234 of 26700 MB, 45.2 MB/s, 9 min left" for a progress event."""
    text = "{:.0f} of {:.0f} MB".format(event.done_bytes / MB, event.total_bytes / MB)
    if event.speed_bps > 0:
        text += ", {:.1f} MB/s".format(event.speed_bps / MB)
    if event.eta_s is not None:
        text += ", {:s} left".format(format_duration(event.eta_s))
    return text


class DownloadView:
    """What the preferences show of a run: the latest plan, the latest progress, and how it ended."""

    def __init__(self, lines):
        self.plan = self.progress = self.end = None
        for event in parse_events(lines):
            if event.event == "plan":
                self.plan = event
            elif event.event == "progress":
                self.progress = event
            elif event.event in ("done", "cancelled", "error"):
                self.end = event

    @property
    def factor(self):
        """How far the download is, 0 to 1."""
        if self.progress is None or not self.progress.total_bytes:
            return 0.0
        return min(1.0, self.progress.done_bytes / self.progress.total_bytes)

    def plan_lines(self):
        """The plan's reason, then one line per file: fetched or present, with its size."""
        if self.plan is None:
            return []
        lines = [self.plan.message]
        for f in self.plan.files:
            lines.append("{:s} {:s} ({:.2f} GB)".format("Present:" if f.present else "Fetch:", f.path,
                                                        f.size_bytes / 1e9))
        free = self.plan.free_bytes
        lines.append("To fetch: {:.1f} GB; free disk space: {:s}".format(
            self.plan.total_bytes / 1e9, "?" if free is None else "{:.1f} GB".format(free / 1e9)))
        return lines
