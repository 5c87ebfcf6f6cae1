# SPDX-License-Identifier: GPL-3.0-or-later
"""What the add-on stores in the .blend: property groups on the scene.

* :mod:`.input_settings`: the inputs the artist chose (``Scene.scail2_sources``), the identity assignment;
* :mod:`.job_settings`: generation settings and the history (``Scene.scail2_job``);
* the custom properties put on what the add-on creates, so it knows them again.
"""

__all__ = (
    "MASKS_PROP",
    "RESULT_PROP",
    "classes",
)

from . import job_settings
from . import input_settings
from . import extra_views

# Custom property (a group) on imported strips and planes: where they came from (job, manifest, matte).
RESULT_PROP = "scail2"
# Custom property (a group) on the strips Auto Masks adds: the footage strip, the job, the prompt.
MASKS_PROP = "scail2_masks"

classes = (
    *job_settings.classes,
    *input_settings.classes,
    *extra_views.classes,
)
