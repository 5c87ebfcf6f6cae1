"""Segmentation: SCAIL-2 colour masks of real footage, and alpha mattes of results.

What the masks mean is `docs/model.md`, section "Masks and identities".

* identities: which instances become identities, ordered left to right, painted with the palette
* tracks: instances through a clip as low-resolution mask logits
* sam3: text prompts ("person", "dog", ...) with SAM 3; sam2: subjects marked by hand with SAM 2
* weights: a local folder or the Hugging Face hub cache, never a download
* run: masks and matte jobs (commands, worker, a generation's matte); commands: the CLI

Nothing heavy is imported here, so `backend.segmentation.weights` (and the command line's help,
which names the repositories) stays light.
"""

from ..errors import UserError


class SegmentationError(UserError):
    """Segmentation that cannot run, as one line."""


__all__ = ["SegmentationError"]
