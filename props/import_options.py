# SPDX-License-Identifier: GPL-3.0-or-later
"""How a finished job is brought into the scene: the options Import Result and the scene's job settings share.

Declared once as a property mix-in with its own drawing, as Blender's bundled
``bl_operators/image_as_planes.py`` shares its material and texture options:
``operators.import_result`` (the operator's options) and ``props.job_settings``
(what Generate brings back) both inherit :class:`ImportOptions` and draw them
with its ``draw_*`` functions (called on the class, as the bundled operators do,
so any ``self`` with the properties draws). Each names its camera its own way:
a name for the operator (searched among the scene's objects), an object for the
scene.
"""

__all__ = (
    "FORM_ITEMS",
    "ImportOptions",
)

from bpy.props import BoolProperty, EnumProperty, FloatProperty

FORM_ITEMS = (
    ('STRIP', "Image Strip", "An image strip in the sequencer, above the driving strip"),
    ('PLANE', "Camera Plane", "A plane parented to the camera, filling its view"),
    ('BOTH', "Both", "An image strip and a camera plane"),
)


class ImportOptions:
    """Mix-in: the form of an import and the camera plane's framing and look."""

    form: EnumProperty(name="Import As", items=FORM_ITEMS, default='STRIP')
    distance: FloatProperty(
        name="Distance",
        description="How far in front of the camera the plane stands",
        default=10.0, min=0.001, soft_max=1000.0, subtype='DISTANCE', unit='LENGTH',
    )
    fill_mode: EnumProperty(
        name="Framing",
        items=(
            ('FILL', "Fill", "Cover the camera frame; the image spills over two sides when aspects differ"),
            ('FIT', "Fit", "Show the whole image inside the camera frame"),
        ),
        default='FILL',
    )
    shading: EnumProperty(
        name="Shading",
        items=(
            ('EMISSION', "Emission", "Show the frames as they are, unaffected by lights, casting no shadow"),
            ('SHADED', "Shaded", "Principled shading: the frames are lit by the scene"),
        ),
        default='EMISSION',
    )
    use_alpha: BoolProperty(
        name="Use Alpha",
        description="Use the frames' alpha channel for transparency, when they have one",
        default=True,
    )

    def import_settings(self):
        """The options as the plain values a job's history keeps (``runtime.generation.import_job`` reads them)."""
        return {"form": self.form, "distance": self.distance, "fill_mode": self.fill_mode,
                "shading": self.shading, "use_alpha": self.use_alpha}

    def draw_form(self, layout):
        layout.prop(self, "form")

    def draw_plane_options(self, layout, context):
        """The camera plane's options, when the form has a plane."""
        if self.form == 'STRIP':
            return
        if self.bl_rna.properties["camera"].type == 'POINTER':
            layout.prop(self, "camera")
        else:
            layout.prop_search(self, "camera", context.scene, "objects")
        layout.prop(self, "distance")
        layout.prop(self, "fill_mode")
        layout.prop(self, "shading")
        layout.prop(self, "use_alpha")
