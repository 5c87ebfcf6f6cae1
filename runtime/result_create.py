# SPDX-License-Identifier: GPL-3.0-or-later
"""Creating an imported SCAIL-2 result from an ``ImportPlan``: the image strip, the camera plane and its material.

:func:`create_import` undoes its own work if anything fails half-way, so a failed
import leaves the scene as it was.
"""

__all__ = (
    "create_import",
    "viewport_hint",
    "use_image_alpha",
)

import json
import os

import bpy
from mathutils import Matrix

from .. import compat
from ..core import results
from ..props import RESULT_PROP

# IDProperty integers are 32-bit.
_INT32 = range(-2 ** 31, 2 ** 31)


def _id_properties(result):
    """The custom properties stored on what an import creates."""
    props = {
        "job_id": result.job_id,
        "job_dir": result.job_dir,
        "manifest": result.manifest_path,
        "settings": json.dumps(result.settings, sort_keys=True),
        "matte": result.matte,
    }
    if result.seed is not None:
        props["seed"] = result.seed if result.seed in _INT32 else str(result.seed)
    return props


# --------------------------------------------------------------------------------------------
# Creating.

def _add_strip(plan, created):
    result, scene, timed = plan.result, plan.strip_scene, plan.strip_timed
    if scene.sequence_editor is None:
        scene.sequence_editor_create()
        created.append(("editor", scene))
    editor = scene.sequence_editor
    frames = [result.frames[i] for i in timed.indices]
    strip = editor.strips.new_image(
        plan.name, frames[0].path, plan.channel, timed.first_frame,
        fit_method='ORIGINAL' if plan.overlay else 'FIT',
    )
    created.append(("strip", strip))
    for frame in frames[1:]:
        strip.elements.append(os.path.basename(frame.path))
    if plan.visible is not None:
        compat.set_strip_handles(strip, *plan.visible)
    if result.matte:  # RGBA frames: the character over what lies below
        strip.blend_type = 'ALPHA_OVER'
    if plan.overlay is not None:
        overlay = dict(plan.overlay)
        strip.use_flip_x = overlay.pop("use_flip_x")
        strip.use_flip_y = overlay.pop("use_flip_y")
        for key, value in overlay.items():
            setattr(strip.transform, key, value)
    props = _id_properties(result)
    if plan.driving is not None:
        props["driving_strip"] = plan.driving.name
    strip[RESULT_PROP] = props
    return strip


def _select_strip(strip):
    """Make ``strip`` the only selected strip and the active one, as adding a strip does."""
    editor = strip.id_data.sequence_editor
    for other in editor.strips_all:
        other.select = False
    strip.select = True
    editor.active_strip = strip


SHOWN_NODE = "SCAIL2 Shown"


def use_image_alpha(material, shader, texture, blended):
    """The image's alpha into the shader's; ``blended`` for a matte's soft edges, else dithered (cut-out)."""
    material.node_tree.links.new(shader.inputs["Alpha"], texture.outputs["Alpha"])
    material.use_transparent_shadow = True
    material.surface_render_method = 'BLENDED' if blended else 'DITHERED'


def _show_only_during(tree, shader, output, timed, created):
    """Outside the job's frames the plane shows nothing, as the strip does (the image sequence would hold its
    first and last frame): the surface mixes to a Transparent BSDF by a factor keyed 0 before and after them.

    Keyed in the material, not on the object: the plane stays selectable and in its place at any frame. Four keys
    with the interpolation Blender gives them: between two equal keys a curve stays flat, so every scene frame is
    exactly 0 or 1.
    """
    clear = tree.nodes.new('ShaderNodeBsdfTransparent')
    shown = tree.nodes.new('ShaderNodeMixShader')
    shown.name = shown.label = SHOWN_NODE
    clear.location, shown.location = (0, 150), (150, 0)
    tree.links.new(shown.inputs[1], clear.outputs["BSDF"])
    tree.links.new(shown.inputs[2], shader.outputs["BSDF"])
    tree.links.new(output.inputs["Surface"], shown.outputs["Shader"])
    factor = shown.inputs["Fac"]
    for frame, value in ((timed.first_frame - 1, 0.0), (timed.first_frame, 1.0), (timed.end_frame - 1, 1.0),
                         (timed.end_frame, 0.0)):
        factor.default_value = value
        factor.keyframe_insert("default_value", frame=frame)
    created.append(("action", tree.animation_data.action))


def _build_material(material, image, timed, shading, use_alpha, blended=False, created=None):
    tree = compat.material_node_tree(material)
    tree.nodes.clear()
    output = tree.nodes.new('ShaderNodeOutputMaterial')
    shader = tree.nodes.new('ShaderNodeBsdfPrincipled')
    texture = tree.nodes.new('ShaderNodeTexImage')
    output.location = (400, 0)
    texture.location = (-400, 0)
    texture.image = image
    texture.show_texture = True  # what Solid shading shows with Color set to Texture
    texture.extension = 'EXTEND'
    user = texture.image_user
    user.frame_start = timed.first_frame
    user.frame_duration = len(timed.indices)
    user.frame_offset = 0
    user.use_cyclic = False
    user.use_auto_refresh = True
    if shading == 'EMISSION':
        shader.inputs["Base Color"].default_value = (0.0, 0.0, 0.0, 1.0)
        shader.inputs["Specular IOR Level"].default_value = 0.0
        shader.inputs["Roughness"].default_value = 1.0
        shader.inputs["Emission Strength"].default_value = 1.0
        tree.links.new(shader.inputs["Emission Color"], texture.outputs["Color"])
    else:
        tree.links.new(shader.inputs["Base Color"], texture.outputs["Color"])
    if use_alpha:
        use_image_alpha(material, shader, texture, blended)
    else:
        material.surface_render_method = 'DITHERED'
    _show_only_during(tree, shader, output, timed, created if created is not None else [])
    material.use_transparent_shadow = True  # no shadow where the plane shows nothing
    return texture


def _add_plane(plan, created, context, shading, use_alpha):
    result, scene, timed = plan.result, plan.plane_scene, plan.plane_timed
    use_alpha = use_alpha and result.has_alpha

    image = bpy.data.images.load(plan.sequence_path, check_existing=False)
    created.append(("image", image))
    image.name = plan.name
    image.source = 'SEQUENCE'
    if not use_alpha:
        image.alpha_mode = 'NONE'

    material = bpy.data.materials.new(plan.name)
    created.append(("material", material))
    _build_material(material, image, timed, shading, use_alpha, blended=use_alpha and result.matte, created=created)

    width, height = plan.plane_size
    mesh = bpy.data.meshes.new(plan.name)
    created.append(("mesh", mesh))
    mesh.from_pydata(
        [(-width / 2, -height / 2, 0.0), (width / 2, -height / 2, 0.0),
         (width / 2, height / 2, 0.0), (-width / 2, height / 2, 0.0)],
        [], [(0, 1, 2, 3)],
    )
    uv_layer = mesh.uv_layers.new(name="UVMap")
    for loop, uv in zip(uv_layer.data, ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))):
        loop.uv = uv
    mesh.materials.append(material)
    mesh.update()

    plane = bpy.data.objects.new(plan.name, mesh)
    created.append(("object", plane))
    # The active collection (it belongs to the context's scene, the plane's scene).
    (context.collection or scene.collection).objects.link(plane)
    plane.parent = plan.camera
    plane.matrix_parent_inverse = Matrix.Identity(4)
    plane.matrix_basis = plan.plane_matrix
    if shading == 'EMISSION':
        plane.visible_shadow = False
    plane[RESULT_PROP] = _id_properties(result)
    return plane


def _select_plane(plane, context):
    """Make ``plane`` the only selected object and the active one, as adding an object does."""
    view_layer = context.view_layer
    if view_layer is None:
        return
    for other in view_layer.objects:
        other.select_set(False, view_layer=view_layer)
    try:
        plane.select_set(True, view_layer=view_layer)
        view_layer.objects.active = plane
    except RuntimeError:
        pass  # Not in this view layer (its collection is excluded): nothing to select.


def _undo_created(created):
    """Remove what a failed import created, newest first."""
    for kind, item in reversed(created):
        try:
            if kind == "strip":
                item.id_data.sequence_editor.strips.remove(item)
            elif kind == "editor":
                item.sequence_editor_clear()
            elif kind == "object":
                bpy.data.objects.remove(item)
            elif kind == "mesh":
                bpy.data.meshes.remove(item)
            elif kind == "material":
                bpy.data.materials.remove(item)
            elif kind == "image":
                bpy.data.images.remove(item)
            elif kind == "action":
                bpy.data.actions.remove(item)
        except (ReferenceError, RuntimeError):
            pass


def create_import(plan, context, *, shading='EMISSION', use_alpha=True):
    """Create what ``plan`` describes; returns (strip or None, plane or None). All or nothing."""
    if plan.plane_scene is not None and not plan.sequence_path:
        # Files on disk, before any Blender data: a failure here leaves the scene as it was.
        plan.sequence_path = results.ensure_scene_rate_sequence(plan.result, plan.plane_timed)
    created = []
    try:
        strip = _add_strip(plan, created) if plan.strip_scene is not None else None
        plane = _add_plane(plan, created, context, shading, use_alpha) if plan.plane_scene is not None else None
    except BaseException:
        _undo_created(created)
        raise
    # Selection last: a failed import must not change it either.
    if strip is not None:
        _select_strip(strip)
    if plane is not None:
        _select_plane(plane, context)
    return strip, plane


def viewport_hint(context):
    """One line on how to see an imported plane's frames when a 3D viewport would show it plain grey, or ""."""
    screen = getattr(context, "screen", None)
    for area in screen.areas if screen is not None else ():
        if area.type == 'VIEW_3D':
            shading = area.spaces.active.shading
            if shading.type == 'SOLID' and shading.color_type != 'TEXTURE':
                return ("The plane shows its frames in Material Preview and Rendered shading; in Solid shading set "
                        "Color to Texture (viewport header, Shading popover)")
    return ""
