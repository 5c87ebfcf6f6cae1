# SPDX-License-Identifier: GPL-3.0-or-later
"""Which generated frame each scene frame shows. Standard library only.

The timing rule
---------------
Every generated frame ``k`` carries ``source_time``: the moment of the driving
clip it stands for, in seconds from the clip's first frame. A scene frame ``f``
must show the generated frame whose ``source_time`` is nearest to the moment of
the driving footage that the scene shows at ``f`` (ties go to the earlier frame).

*The moment shown at f*, with a driving strip, is the footage frame the strip
really shows there, divided by the footage's frame rate. Blender shows, at scene
frame ``f``, footage frame ``animation_offset_start + r(p)`` with

    p = (f - frame_start) * rate        (Blender's float32 maths, clamped to the footage)

where ``frame_start`` is the strip's content start and ``rate`` is footage
frames per scene frame:

* 1.0 for image strips and for movie strips added from Python
  (``strips.new_movie``): a 16 fps clip in a 24 fps scene plays one footage frame
  per scene frame, 1.5x too fast, and lasts 65 scene frames for 65 footage frames;
* ``movie fps / scene fps`` for movie strips added in the interface (its
  "Adjust Playback Rate" option is on by default): the same clip lasts
  int(65 * 24 / 16) = 97 scene frames and plays in real time. RNA does not expose
  that flag; the strip's length (``frame_duration``) against the footage's length
  tells the two apart (:func:`movie_rate`).

``r`` is how the release turns the fractional position into a frame: observed by
rendering, Blender 4.5 rounds to the nearest frame and 5.0 truncates (see
``compat.movie_position_rounding``). Retimed, reversed and strobed strips are
refused: RNA does not expose enough of them to know what they show.

Without a driving strip the generated frames play in real time from a chosen
scene frame: the moment shown at ``f`` is ``t0 + (f - start) / scene_fps``.

Frames outside the generated clip are not covered: a scene frame is covered when
its moment lies in ``[t_first, t_last + 1 / model_fps)``.
"""

__all__ = (
    "StripPlayback",
    "TimedFrames",
    "movie_rate",
    "nearest_frame",
    "real_time_frames",
    "strip_frames",
    "timed_frames",
)

import math
import struct
from dataclasses import dataclass

# Seconds: two moments closer than this are the same moment.
TIME_EPS = 1e-6


def _f32(value):
    """``value`` rounded to a C float, as Blender stores and computes strip timing."""
    return struct.unpack("f", struct.pack("f", value))[0]


# --------------------------------------------------------------------------------------------
# Time maps.

def nearest_frame(times, moment):
    """Index of the time in the sorted ``times`` nearest to ``moment``; ties go to the earlier."""
    lo, hi = 0, len(times)
    while lo < hi:  # first index with times[i] >= moment
        mid = (lo + hi) // 2
        if times[mid] < moment:
            lo = mid + 1
        else:
            hi = mid
    if lo == 0:
        return 0
    if lo == len(times):
        return len(times) - 1
    return lo - 1 if moment - times[lo - 1] <= times[lo] - moment + TIME_EPS else lo


@dataclass(frozen=True)
class TimedFrames:
    """Which generated frame each scene frame shows, from ``first_frame`` on, one per scene frame."""
    first_frame: int
    indices: tuple  # positions in JobResult.frames

    @property
    def end_frame(self):
        """The scene frame after the last one covered."""
        return self.first_frame + len(self.indices)

    def index_at(self, scene_frame):
        if self.first_frame <= scene_frame < self.end_frame:
            return self.indices[scene_frame - self.first_frame]
        return None


def timed_frames(times, model_fps, scene_frames, moment_at):
    """Pick, for each scene frame, the generated frame nearest to the moment it shows.

    ``scene_frames``: the scene frames to consider, ascending; ``moment_at(f)``:
    seconds of driving footage shown at scene frame ``f``, ascending in ``f``.
    Scene frames whose moment falls outside ``[times[0], times[-1] + 1 / model_fps)``
    are left out. Returns None when no scene frame is covered.
    """
    start, end = times[0] - TIME_EPS, times[-1] + 1.0 / model_fps - TIME_EPS
    first, indices = None, []
    for frame in scene_frames:
        moment = moment_at(frame)
        if moment < start:
            continue
        if moment >= end:
            break
        if first is None:
            first = frame
        indices.append(nearest_frame(times, moment))
    if first is None:
        return None
    return TimedFrames(first, tuple(indices))


def movie_rate(frame_duration, footage_frames, media_fps, scene_fps):
    """Footage frames per scene frame of a movie strip, as Blender computes it (float32).

    ``frame_duration``: the strip's content length in scene frames (RNA
    ``frame_duration``); ``footage_frames``: the movie's frames the strip uses
    (its frame count less ``animation_offset_start`` and ``animation_offset_end``).
    With "Adjust Playback Rate" Blender plays ``media_fps / scene_fps`` footage
    frames per scene frame and the strip lasts ``int(footage_frames / rate)``
    scene frames; without it, one per scene frame. Whichever length is nearer to
    ``frame_duration`` wins; when both fit, the adjusted rate (the interface's
    default) does.
    """
    if media_fps <= 0 or scene_fps <= 0:
        return 1.0
    rate = _f32(_f32(media_fps) / _f32(scene_fps))
    adjusted = int(_f32(footage_frames / rate))
    if abs(adjusted - frame_duration) <= abs(footage_frames - frame_duration):
        return rate
    return 1.0


@dataclass(frozen=True)
class StripPlayback:
    """What a movie or image strip shows: footage frame per scene frame, as Blender does it."""
    content_start: float  # RNA frame_start: the scene frame of content position 0
    content_frames: int  # RNA frame_duration: content length in scene frames
    rate: float  # footage frames per scene frame (see movie_rate)
    footage_offset: int  # RNA animation_offset_start
    footage_frames: int  # footage frames the strip uses
    footage_fps: float  # to turn footage frames into seconds
    rounding: str = 'FLOOR'  # 'FLOOR' or 'ROUND': how a fractional position becomes a frame

    def scene_frames(self):
        """The scene frames that show the strip's content (handles aside)."""
        first = math.ceil(self.content_start)
        return range(first, math.ceil(self.content_start + self.content_frames))

    def footage_frame(self, scene_frame):
        """The footage frame (from the file's first frame) shown at ``scene_frame``."""
        position = _f32(max(_f32(scene_frame - self.content_start), 0.0) * _f32(self.rate))
        position = min(position, float(self.footage_frames - 1))
        if self.rounding == 'ROUND':
            shown = math.floor(_f32(position + 0.5))
        else:
            shown = math.floor(position)
        return int(shown) + self.footage_offset

    def moment(self, scene_frame):
        """Seconds of footage shown at ``scene_frame``, from the footage's first frame."""
        return self.footage_frame(scene_frame) / self.footage_fps


def strip_frames(result, playback):
    """TimedFrames for a driving strip (see :class:`StripPlayback`), or None when nothing overlaps."""
    return timed_frames(result.times, result.model_fps, playback.scene_frames(), playback.moment)


def real_time_frames(result, start_frame, scene_fps):
    """TimedFrames playing the result in real time, its first frame at ``start_frame``."""
    times = result.times
    first = times[0]
    count = math.ceil((times[-1] - first + 1.0 / result.model_fps) * scene_fps) + 1
    return timed_frames(
        times, result.model_fps, range(start_frame, start_frame + count),
        lambda frame: first + (frame - start_frame) / scene_fps,
    )

