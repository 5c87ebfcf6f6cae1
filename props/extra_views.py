# SPDX-License-Identifier: GPL-3.0-or-later
"""The Extra Views list: more views of the character besides the reference (``Scene.scail2_extra_views``).

Each view comes from the same sources as the reference (an image file, an Image, a strip's frame, a
render through a camera) or from a turnaround around a character object, with its colour mask.
"""

__all__ = (
    "SCAIL2_ExtraView",
    "SCAIL2_ExtraViews",
    "TURNAROUND_PRESETS",
    "classes",
    "get_extra_views",
    "parse_angles",
)

import math

import bpy
from bpy.props import (
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup

from ..core.extra_views import MAX_EXTRA_VIEWS
from ..core.inputs import ExportError
from ..protocol import MAX_IDENTITIES

SCENE_PROPERTY = "scail2_extra_views"

# Angles (degrees from the character's front, turning to its left) a turnaround starts with.
TURNAROUND_PRESETS = "45 90 135 180"

_ENGINES = (
    ('WORKBENCH', "Workbench", "Fast solid shading"),
    ('EEVEE', "EEVEE", "EEVEE at a low sample count"),
    ('SCENE', "Scene", "The scene's own render engine and settings"),
)


def _is_camera(_self, obj):
    return obj.type == 'CAMERA'


class SCAIL2_ExtraView(PropertyGroup):
    """One more view of the character, with its mask"""

    source: EnumProperty(
        name="Source",
        items=(
            ('FILE', "Image File", "An image file"),
            ('IMAGE', "Image", "An image in the blend file (saved out when packed or generated)"),
            ('STRIP', "Strip Frame", "The frame a strip shows at a scene frame"),
            ('CAMERA', "Camera", "A render of the scene through a camera, with a transparent background"),
            ('TURNAROUND', "Turnaround", "A render around a character object, through a temporary camera"),
        ),
        default='FILE',
    )
    file: StringProperty(name="Image", subtype='FILE_PATH')
    image: PointerProperty(name="Image", type=bpy.types.Image)
    strip: StringProperty(name="Strip", description="Name of the strip showing the view")
    frame: IntProperty(name="Frame", description="The scene frame the view is taken at (strip, camera, turnaround)",
                       default=1)
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera)
    target: PointerProperty(name="Character", type=bpy.types.Object,
                            description="The character object the turnaround camera circles")
    angle: FloatProperty(name="Angle", subtype='ANGLE', default=math.radians(180.0),
                         description="Where the turnaround camera stands: 0 in front of the character, "
                                     "90 degrees at its left side, 180 behind it")
    engine: EnumProperty(name="Engine", description="How a camera or turnaround view is rendered",
                         items=_ENGINES, default='WORKBENCH')
    mask_source: EnumProperty(
        name="Mask",
        description="The view's colour mask (camera and turnaround views render the assigned identities)",
        items=(
            ('ALPHA', "Alpha", "The image's alpha is the identity below (the whole image when it has none)"),
            ('FILE', "Mask File", "A colour mask of the view (palette colours on the reference background)"),
        ),
        default='ALPHA',
    )
    mask_file: StringProperty(name="Mask File", subtype='FILE_PATH')
    identity: IntProperty(name="Identity", description="Which character the view's alpha shows",
                          min=1, max=MAX_IDENTITIES, default=1)
    # Set by each press of Render Turnaround, so its views render again even when nothing the fingerprint
    # sees changed (an edited model, new materials).
    take: IntProperty(options={'HIDDEN'})


class SCAIL2_ExtraViews(PropertyGroup):
    """Extra views of the character, and the turnaround that renders them from a 3D model"""

    views: CollectionProperty(type=SCAIL2_ExtraView)
    active_index: IntProperty(name="Active View", min=0)
    turnaround_object: PointerProperty(
        name="Character", type=bpy.types.Object,
        description="The character to render views around (assign it an identity first)")
    turnaround_angles: StringProperty(
        name="Angles",
        description="Degrees from the character's front, turning to its left: 45 three-quarter, 90 side, "
                    "180 back; one view per angle (up to {:d})".format(MAX_EXTRA_VIEWS),
        default=TURNAROUND_PRESETS,
    )
    turnaround_engine: EnumProperty(name="Engine", description="How the turnaround views are rendered",
                                    items=_ENGINES, default='WORKBENCH')

    @classmethod
    def register(cls):
        setattr(bpy.types.Scene, SCENE_PROPERTY, PointerProperty(type=cls))

    @classmethod
    def unregister(cls):
        delattr(bpy.types.Scene, SCENE_PROPERTY)


def get_extra_views(scene):
    return getattr(scene, SCENE_PROPERTY)


def parse_angles(text):
    """Turnaround angles in degrees from ``"45, 90 180"``; ExportError with one line when unreadable."""
    parts = text.replace(",", " ").split()
    try:
        angles = [float(part) for part in parts]
    except ValueError:
        raise ExportError("Turnaround angles are numbers of degrees, such as 45 90 180: {!r}".format(text)) from None
    if not angles:
        raise ExportError("Give the turnaround at least one angle, such as 180 for the back")
    if len(angles) > MAX_EXTRA_VIEWS:
        raise ExportError("A job takes at most {:d} extra views; {:d} angles were given".format(
            MAX_EXTRA_VIEWS, len(angles)))
    return angles


classes = (
    SCAIL2_ExtraView,
    SCAIL2_ExtraViews,
)
