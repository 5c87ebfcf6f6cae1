"""The model's history between segments, kept in the job folder for a resumed job.

A segment after the first conditions on the last frames the VAE decoded for the segment before
(`docs/model.md`, "Segments and overlap"): the decoder's float output as it is, neither the 8-bit
frames written to disk nor their colour-matched version, rounded to the compute dtype as the
official code rounds them before encoding. `HistoryStore` keeps that tail of the newest finished
segment in `history/segment_NNNNNN.safetensors`, so a resumed job conditions on exactly what an
uninterrupted run would.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from .job_folder import HISTORY_FOLDER
from .durable import write_bytes_atomic
from .segments import Segment

_NAME = re.compile(r"segment_(\d{6})\.safetensors")


def history_tail(video: torch.Tensor, segment: Segment, overlap: int, dtype: torch.dtype) -> torch.Tensor:
    """The next segment's history: the last `overlap` decoded frames of `segment` [3, overlap, H, W]
    (padding repeats left out), cast to `dtype` (the official code casts them to its bf16 compute
    dtype before the VAE encode; float32 runs keep float32)."""
    return video[:, segment.length - overlap : segment.length].to(dtype).contiguous()


class HistoryStore:
    """The decoded tail of the newest finished segment, on disk beside the frames."""

    def __init__(self, job_dir: Path):
        self.folder = Path(job_dir) / HISTORY_FOLDER

    def path(self, index: int) -> Path:
        return self.folder / f"segment_{index:06d}.safetensors"

    def save(self, index: int, tail: torch.Tensor) -> None:
        """Write segment `index`'s tail atomically (OSError on a failed write)."""
        self.folder.mkdir(exist_ok=True)
        write_bytes_atomic(self.path(index), save({"tail": tail.detach().cpu().contiguous()}))

    def forget_before(self, index: int) -> None:
        """Remove the tails of segments before `index` (only files this store wrote); called once the
        job's state records segment `index` as finished, so a resume always finds the tail it needs."""
        try:
            names = [p.name for p in self.folder.iterdir()]
        except OSError:
            return
        for name in names:
            match = _NAME.fullmatch(name)
            if match and int(match.group(1)) < index:
                try:
                    (self.folder / name).unlink()
                except OSError:
                    pass

    def remove_folder(self) -> None:
        """Remove the folder once it is empty (the job is done); anything else in it is kept."""
        try:
            self.folder.rmdir()
        except OSError:
            pass

    def load(self, index: int) -> torch.Tensor | None:
        """Segment `index`'s tail, or None when it is missing or unreadable (the caller falls back)."""
        try:
            return load(self.path(index).read_bytes())["tail"]
        except (OSError, KeyError, SafetensorError):
            return None
