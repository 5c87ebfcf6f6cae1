"""Every threshold of the input checks, in one table, with the reason for each.

A check compares its number with `LIMITS[name]`: at or past `warn` it warns, at or past `fail` it
fails (`fail` None: the check never fails). `below` says which side is bad: a small subject is bad
(below), a fast pan is bad (above). The numbers are measured on the job's own frames: the driving
clip resampled to the model's rate (16 fps) and framed as the job crops it, at `ANALYSIS_LONG_SIDE`
pixels on the long side, so a threshold means the same thing for 1080p and 512p footage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    warn: float
    fail: float | None
    unit: str
    below: bool  # True: values under the limit are bad; False: values over it
    why: str

    def verdict(self, value: float) -> str:
        """"ok", "warn" or "fail" for `value`."""
        past = (lambda limit: value < limit) if self.below else (lambda limit: value > limit)
        if self.fail is not None and past(self.fail):
            return "fail"
        return "warn" if past(self.warn) else "ok"


# The frames are analysed this small: enough for cuts, global motion, sharpness and a subject's box
# (a 1 % tall subject is still 3 pixels), and 81 frames take well under a second to analyse.
ANALYSIS_LONG_SIDE = 320

LIMITS: dict[str, Limit] = {
    # PySceneDetect's ContentDetector score (weighted HSV change, 0-255) between two job frames. 27 is
    # its own default for hard cuts at full frame rate; at 16 fps and 320 px a normal fast action shot
    # scores 5-15, a cut 40 and more. A cut inside a job always fails: the model carries the motion
    # and the previous segment's frames across it and morphs one shot into the other.
    "cut": Limit(27.0, 27.0, "score", False,
                 "a hard cut makes the model morph one shot into the other across it"),
    # Global (camera) motion between two job frames, as a share of the frame's width. The model sees
    # 16 frames a second: a pan of 4 % of the frame per frame crosses the frame in 1.5 s, the edge of
    # what it tracks (its training clips are mostly steady); 12 % is a whip pan, the background
    # smears and the subject is lost.
    "camera_pan": Limit(0.04, 0.12, "of the width per frame", False,
                        "a fast pan smears the background and loses the subject"),
    # Shake: the frame-to-frame motion a 5-frame running median does not follow, RMS, in width share.
    # Handheld footage that reads as steady stays under 0.5 %; 1.5 % jitters visibly in the take.
    "camera_shake": Limit(0.006, 0.02, "of the width (RMS jitter)", False,
                          "shake is copied into the take as jitter of the character and background"),
    # Zoom: the scale change from the first to the last frame (largest/smallest). A 25 % push-in
    # changes the subject's size enough to read as the character growing; 60 % is a crash zoom.
    "camera_zoom": Limit(1.25, 1.6, "x scale", False,
                         "a zoom reads as the character growing or shrinking"),
    # Sharpness: a frame's variance of the Laplacian relative to the clip's own median. Compression
    # and focus vary by 20-30 % along a clean clip; under 40 % of the median is a motion-blurred
    # or defocused frame whose pose the model cannot read (it guesses the limbs).
    "blur": Limit(0.4, None, "of the clip's median sharpness", True,
                  "blurred frames hide the pose: the model guesses the limbs there"),
    # Subject size: the subject's box height as a share of the job frame's height (the median over
    # the frames where it is present). At 512p a subject 15 % tall is about 130 px, its face about
    # 17 px: two cells of the VAE's 8 x 8 grid, and the identity is lost; at 33 % the face has 4-5
    # cells, where the official examples start.
    "subject_size": Limit(0.33, 0.15, "of the frame height", True,
                          "a small subject has too few pixels for the character's face and hands"),
    # Frames where an identity that is in the clip has no pixels in the mask: the model invents
    # its motion there. Any such frame warns; over a quarter of the frames fails.
    "subject_missing": Limit(0.0, 0.25, "of the frames", False,
                             "where a subject is missing from the mask the model invents its motion"),
    # Two identities overlapping: their boxes' intersection-over-union, or, where they touch, the share of
    # its usual area the one behind has lost (a colour mask has one identity per pixel). Over 0.2 one
    # clearly occludes the other and the two characters' limbs can swap or merge; touching shoulders stay under.
    "overlap": Limit(0.2, None, "overlap (box IoU or share hidden)", False,
                     "overlapping subjects can swap or merge limbs"),
    # Reference framing: the reference character's box height over the driving subject's (both as a
    # share of the job frame). In replace mode the reference's framing sets the character's size:
    # past 1.25x (or under 1/1.25) the character visibly comes out too large (too small); a public
    # report had one 1.7x too large until the reference was reframed.
    "reference_scale": Limit(1.25, None, "x the driving subject", False,
                             "the reference's framing sets the character's size in replace mode"),
    # The same in animate mode, where the reference is only the look: only a gross mismatch (a
    # head-and-shoulders reference for a full-body dance) matters.
    "reference_scale_animate": Limit(2.5, None, "x the driving subject", False,
                                     "a reference framed very differently loses detail of the body"),
    # Box aspect (width / height) of reference over driving subject: a seated or cropped reference
    # for a standing subject (1.6x) leaves the model to invent the missing body.
    "reference_aspect": Limit(1.6, None, "x the driving subject's aspect", False,
                              "a reference cropped or posed unlike the subject leaves body parts to invent"),
    # The last segment's new frames (after the 5 of history): a segment costs a model pass of its
    # padded length plus its history; under 12 new frames that pass is mostly overhead.
    # The job's length: the VAE packs 4 frames into one latent frame after the first, so under 5 frames
    # the model sees a single latent frame: the take is a still, not an animation (a still dropped in the
    # driving slot, or a frame range of a few frames). A posed still may be meant: it warns, never fails.
    "length": Limit(5, None, "frames", True, "under 5 frames the take is a still, not an animation"),
    "last_segment": Limit(12, None, "new frames", True,
                          "a very short last segment costs a pass for a few frames"),
    # Frame-time spread of a video: the largest step between frame timestamps over the median.
    # Constant-rate footage is 1.0 (1.5 allows timestamp rounding); a phone's variable rate is 2+.
    "frame_rate": Limit(1.5, None, "x the median frame step", False,
                        "a variable frame rate makes the resampled motion stutter"),
    # The driving clip's rate against the model's: under the model's 16 fps frames are repeated.
    "source_rate": Limit(1.0, None, "x the model's rate", True,
                         "footage slower than the model's rate repeats frames: the motion stutters"),
    # Missing numbers in an image sequence: any gap warns (a render skipped frames, or some were lost).
    "sequence_gaps": Limit(0, None, "missing frames", False,
                           "frames missing from a sequence make the motion jump"),
}

# Mask pixels an identity needs in a frame (at the analysis size) to count as present there: a few
# stray pixels of compression noise are not a subject.
MIN_SUBJECT_PIXELS = 12
# The camera's motion is measured on corners outside the subjects' masks when there are masks.
MAX_CORNERS = 200
# A zoom's frames: those whose scale changes by over 0.5 % from the previous one (steady footage stays
# within 0.3 % of 1 frame to frame).
ZOOM_STEP = 0.005
# Frames named in one check's message at most ("frames 3, 9, 14 and 12 more").
FRAMES_IN_MESSAGE = 4
