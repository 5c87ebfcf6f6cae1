"""When each frame of a clip is on screen: a video's own timestamps, an image sequence's frame numbers.

A video's frames are timed by their presentation timestamps, read with PyAV from the container's
packets (demuxing only, no decoding). OpenCV reports one average rate, which puts the frames of a
variable-frame-rate clip (a phone recording, a screen capture) at the wrong moments; its decoder is
still what `media` decodes with, and it yields the same frames in the same presentation order.

An image sequence is timed by its frame numbers: files 0, 1, 2, 5 are frames 0..5 with frame 2 held
over the missing 3 and 4, so no later frame moves in time. The unit is the sequence's common step,
so a render with a frame step (1, 3, 5, ...) still plays one file per frame.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import reduce

import av

# Frame durations within this fraction of the typical one (plus one time-base tick of rounding)
# count as the same: 23.976 fps in a 1/90000 time base alternates 3753 and 3754 ticks.
_RATE_TOLERANCE = 0.01


@dataclass(frozen=True)
class VideoTiming:
    """Presentation times of a video's frames in seconds from its first frame, ascending."""

    times: tuple[float, ...]
    end: float  # when the last frame leaves the screen: its start plus the typical frame duration
    variable: bool  # True when the frame durations differ (beyond rounding)

    def rate_range(self) -> tuple[float, float]:
        """(slowest, fastest) frame rate between consecutive frames, in frames per second."""
        steps = [b - a for a, b in zip(self.times, self.times[1:]) if b > a] or [self.end - self.times[-1]]
        return 1.0 / max(steps), 1.0 / min(steps)


def video_timing(path: str, frame_count: int) -> VideoTiming | None:
    """The timestamps of a video's `frame_count` frames, or None when the container cannot tell them
    (a packet without a timestamp, another number of packets than OpenCV decodes, a PyAV error): such
    a clip is timed by its average rate, as before."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            ticks = []
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream flush packet
                    continue
                if packet.pts is None:
                    return None
                ticks.append(packet.pts)
            time_base = stream.time_base
    except (av.FFmpegError, OSError, ValueError):
        return None
    if len(ticks) != frame_count or frame_count < 2 or time_base is None:
        return None
    ticks.sort()  # packets come in decode order; frames are shown in presentation order
    steps = [b - a for a, b in zip(ticks, ticks[1:])]
    typical = sorted(steps)[len(steps) // 2]
    if typical <= 0:
        return None
    slack = typical * _RATE_TOLERANCE + 1
    variable = any(abs(step - typical) > slack for step in steps)
    seconds = float(time_base)
    times = tuple((t - ticks[0]) * seconds for t in ticks)
    return VideoTiming(times, times[-1] + typical * seconds, variable)


def variable_rate_warning(what: str, timing: VideoTiming) -> str:
    slowest, fastest = timing.rate_range()
    return (f"the {what} has a variable frame rate ({slowest:.3g} to {fastest:.3g} fps): each frame is timed "
            f"by its own timestamp")


# ---------------------------------------------------------------------------------------------
# Image sequences

_NUMBERED = re.compile(r"(.*?)(\d+)(\D*)\Z")


def frame_numbers(files: list[str]) -> list[int] | None:
    """The frame number of each file (the last number in its name), or None when the names do not
    share one prefix and suffix around it (then the files are simply played in order)."""
    parts = [_NUMBERED.match(os.path.basename(f)) for f in files]
    if not all(parts) or len({(m.group(1), m.group(3)) for m in parts}) != 1:
        return None
    numbers = [int(m.group(2)) for m in parts]
    return numbers if len(set(numbers)) == len(numbers) else None


@dataclass(frozen=True)
class SequenceTimeline:
    """An image sequence laid out by its frame numbers: one file per frame slot, a gap's slots holding
    the file before it."""

    files: tuple[str, ...]  # per frame slot
    missing: tuple[int, ...]  # the frame numbers no file has
    names: tuple[str, ...] = ()  # per frame slot: its file's name, or a held slot's own (frame number in it)


def sequence_timeline(files: list[str]) -> SequenceTimeline:
    """`files` (in number order) spread over their frame numbers in steps of their common step."""
    numbers = frame_numbers(files)
    if numbers is None or len(numbers) < 2:
        return SequenceTimeline(tuple(files), (), tuple(os.path.basename(f) for f in files))
    order = sorted(range(len(files)), key=numbers.__getitem__)
    numbers = [numbers[i] for i in order]
    files = [files[i] for i in order]
    step = reduce(math.gcd, (b - a for a, b in zip(numbers, numbers[1:])))
    slots, missing, names = [], [], []
    for (number, file), following in zip(zip(numbers, files), numbers[1:] + [numbers[-1] + step]):
        slots.append(file)
        names.append(os.path.basename(file))
        for held in range(number + step, following, step):
            slots.append(file)
            missing.append(held)
            names.append(_renumbered(os.path.basename(file), held))
    return SequenceTimeline(tuple(slots), tuple(missing), tuple(names))


def _renumbered(name: str, number: int) -> str:
    """`name` with its frame number replaced by `number`, padded as it was: img_0002.png -> img_0003.png."""
    match = _NUMBERED.match(name)
    return f"{match.group(1)}{number:0{len(match.group(2))}d}{match.group(3)}"


def gap_warning(what: str, missing: tuple[int, ...]) -> str:
    shown = ", ".join(str(n) for n in missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return (f"the {what} has no file for frame{'s' if len(missing) > 1 else ''} {shown}: the frame before each "
            f"gap is held, so no later frame moves in time")
