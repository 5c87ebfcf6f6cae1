"""Splitting a model-rate clip into SCAIL-2 segments without losing frames.

`docs/model.md`, section "Segments and overlap".

The reference drops the frames after its last full 81-frame segment (`protocol.SEGMENT_FRAMES`). Here
every frame gets an output: each segment after the first starts `overlap`
frames before the previous one ends (those frames are its history), and a
segment whose length is not 4k+1 is padded by repeating its last frame; the
padded outputs are discarded.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import SEGMENT_FRAMES, SEGMENT_OVERLAP

TEMPORAL_STRIDE = 4


@dataclass(frozen=True)
class Segment:
    """Model-rate frames [start, end) of the clip; the first `history` of them come from the previous segment."""

    index: int
    start: int
    end: int
    history: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def padded_length(self) -> int:
        """The 4k+1 frame count fed to the model."""
        return -(-(self.length - 1) // TEMPORAL_STRIDE) * TEMPORAL_STRIDE + 1

    @property
    def latent_frames(self) -> int:
        return (self.padded_length - 1) // TEMPORAL_STRIDE + 1

    @property
    def history_latent_frames(self) -> int:
        return 0 if not self.history else (self.history - 1) // TEMPORAL_STRIDE + 1

    @property
    def new_frames(self) -> range:
        """Clip frames this segment adds to the output."""
        return range(self.start + self.history, self.end)


def plan_segments(frame_count: int, segment_frames: int = SEGMENT_FRAMES, overlap: int = SEGMENT_OVERLAP
                  ) -> list[Segment]:
    """Cover frames [0, frame_count) with segments of at most `segment_frames` frames."""
    if frame_count < 1:
        raise ValueError("no frames to generate")
    if (segment_frames - 1) % TEMPORAL_STRIDE or (overlap - 1) % TEMPORAL_STRIDE:
        raise ValueError("segment length and overlap must both be 4k+1 frames")
    if overlap >= segment_frames:
        raise ValueError("the overlap must be shorter than a segment")
    segments = [Segment(0, 0, min(segment_frames, frame_count), 0)]
    while segments[-1].end < frame_count:
        start = segments[-1].end - overlap
        segments.append(Segment(len(segments), start, min(start + segment_frames, frame_count), overlap))
    return segments
