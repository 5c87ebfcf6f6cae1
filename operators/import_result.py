# SPDX-License-Identifier: GPL-3.0-or-later
"""Import a finished SCAIL-2 job: an image strip timed to the driving strip, a camera plane, or both.

The operator stays thin: :mod:`results` (no ``bpy``) reads the job and does the
timing and framing maths. :func:`plan_import` reads the scene and checks
everything without changing any Blender data; only then does
:func:`create_import` add the strip and plane, undoing its own work if anything
fails half-way. The operator is one undo step.
"""

__all__ = (
    "PROP_KEY",
    "SCAIL2_OT_import_result",
    "classes",
    "create_import",
    "plan_import",
)

import json
import os
from dataclasses import dataclass, field

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    StringProperty,
)
from bpy.types import Operator
from mathutils import Matrix

from .. import compat
from .. import results
from ..results import ResultError

# Custom property (a group) on imported strips and planes: where they came from.
PROP_KEY = "scail2"

# IDProperty integers are 32-bit.
_INT32 = range(-2 ** 31, 2 ** 31)


@dataclass
class ImportPlan:
    """Everything an import will create, worked out before creating anything."""
    result: results.JobResult
    name: str
    warnings: list = field(default_factory=list)
    # Image strip.
    strip_scene: object = None
    driving: object = None  # the driving strip, or None
    strip_timed: object = None  # results.TimedFrames
    channel: int = 0
    visible: tuple = None  # (first, end) scene frames to trim the new strip to, or None
    overlay: dict = None  # transform values lining the strip up with the driving strip, or None
    # Camera plane.
    plane_scene: object = None
    camera: object = None
    plane_timed: object = None
    plane_matrix: object = None  # matrix_basis of the plane under the camera
    plane_size: tuple = None  # (width, height)
    sequence_path: str = ""  # number 1 of the scene-rate sequence


def _abspath(path):
    return os.path.normpath(bpy.path.abspath(path)) if path else ""


def _same_file(a, b):
    try:
        return bool(a and b) and os.path.samefile(a, b)
    except OSError:
        return False


def _scene_fps(scene):
    return scene.render.fps / scene.render.fps_base


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


def _movie_frame_count(path):
    """Frames of the movie at ``path``, as Blender reads it (through a movie clip, removed again)."""
    before = {clip.name for clip in bpy.data.movieclips}
    try:
        clip = bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError as ex:
        raise ResultError("Cannot read the driving strip's movie {:s}: {:s}".format(
            path, str(ex).strip().splitlines()[-1])) from None
    try:
        return clip.frame_duration
    finally:
        if clip.name not in before:
            bpy.data.movieclips.remove(clip)


def find_driving_strip(scene, name, result):
    """The named top-level strip; with no name, the one strip showing the job's driving clip, or None."""
    editor = scene.sequence_editor
    strips = list(editor.strips) if editor is not None else []
    if name:
        for strip in strips:
            if strip.name == name:
                return strip
        if editor is not None and editor.strips_all.get(name) is not None:
            raise ResultError("The driving strip {:s} is inside a meta strip; use a top-level strip".format(name))
        raise ResultError("No strip named {:s} in scene {:s}".format(name, scene.name))
    matches = [
        strip for strip in strips
        if strip.type == 'MOVIE' and PROP_KEY not in strip
        and _same_file(_abspath(strip.filepath), result.source_path)
    ]
    if len(matches) > 1:
        raise ResultError("Several strips show the job's driving clip ({:s}): choose one".format(
            ", ".join(strip.name for strip in matches)))
    return matches[0] if matches else None


def strip_playback(strip, scene, result, warnings):
    """How ``strip`` shows its footage (see :class:`results.StripPlayback`)."""
    if strip.type not in {'MOVIE', 'IMAGE'}:
        raise ResultError("The driving strip {:s} is a {:s} strip; use a movie or image strip".format(
            strip.name, strip.type.lower()))
    if len(strip.retiming_keys):
        raise ResultError("The driving strip {:s} is retimed; reset its retiming to import against it".format(
            strip.name))
    if strip.use_reverse_frames:
        raise ResultError("The driving strip {:s} plays backwards; turn off Reverse Frames".format(strip.name))
    if strip.strobe > 1.0:
        raise ResultError("The driving strip {:s} uses Strobe; set it to 1 to import against it".format(strip.name))
    offset = strip.animation_offset_start
    content_start = compat.strip_content_start(strip)
    content_frames = compat.strip_content_duration(strip)
    if strip.type == 'IMAGE':
        return results.StripPlayback(
            content_start=content_start,
            content_frames=content_frames,
            rate=1.0,
            footage_offset=offset,
            footage_frames=content_frames,
            footage_fps=result.source_fps,
        )
    path = _abspath(strip.filepath)
    media_fps = strip.fps
    if media_fps <= 0:
        raise ResultError("Cannot read the driving strip's movie: " + path)
    same = _same_file(path, result.source_path)
    if same and result.source_frame_count > 0:
        total = result.source_frame_count
    else:
        total = _movie_frame_count(path)
        if not same:
            warnings.append("The driving strip shows {:s}; the job was made from {:s}".format(
                os.path.basename(path), os.path.basename(result.source_path) or "another clip"))
    used = max(1, total - offset - strip.animation_offset_end)
    return results.StripPlayback(
        content_start=content_start,
        content_frames=content_frames,
        rate=results.movie_rate(content_frames, used, media_fps, _scene_fps(scene)),
        footage_offset=offset,
        footage_frames=used,
        footage_fps=result.source_fps if same else media_fps,
        rounding=compat.movie_position_rounding(),
    )


def _overlay(driving, result):
    """Transform values that put the generated frames over the footage they were cut from."""
    if driving is None or driving.type != 'MOVIE' or not len(driving.elements):
        return None
    element = driving.elements[0]
    if element.orig_width <= 0 or element.orig_height <= 0:
        return None
    scale = results.overlay_scale(element.orig_width, element.orig_height, result.width, result.height)
    transform = driving.transform
    return {
        "scale_x": transform.scale_x * scale,
        "scale_y": transform.scale_y * scale,
        "offset_x": transform.offset_x,
        "offset_y": transform.offset_y,
        "rotation": transform.rotation,
        "origin": tuple(transform.origin),
        "use_flip_x": driving.use_flip_x,
        "use_flip_y": driving.use_flip_y,
    }


def _plan_strip(plan, scene, driving_name, frame_start):
    result = plan.result
    plan.strip_scene = scene
    driving = find_driving_strip(scene, driving_name, result)
    plan.driving = driving
    editor = scene.sequence_editor
    strips = list(editor.strips) if editor is not None else []
    if driving is not None:
        playback = strip_playback(driving, scene, result, plan.warnings)
        timed = results.strip_frames(result, playback)
        if timed is None:
            raise ResultError("None of the generated frames ({:g}-{:g} s of the clip) is shown by strip {:s}".format(
                result.times[0], result.times[-1], driving.name))
        first, end = timed.first_frame, timed.end_frame
        left, right = compat.strip_handles(driving)
        visible = (max(first, left), min(end, right))
        if visible[0] < visible[1]:
            plan.visible = visible
            first, end = visible
        else:
            plan.warnings.append("The generated frames fall outside the visible part of strip " + driving.name)
        lowest = driving.channel + 1
    else:
        timed = results.real_time_frames(result, frame_start, _scene_fps(scene))
        first, end = timed.first_frame, timed.end_frame
        lowest = max((strip.channel for strip in strips), default=0) + 1
    channel = results.free_channel(
        ((strip.channel, *compat.strip_handles(strip)) for strip in strips),
        lowest, first, end,
    )
    if channel is None:
        raise ResultError("No free channel above channel {:d} for frames {:d}-{:d}".format(lowest - 1, first, end - 1))
    plan.strip_timed = timed
    plan.channel = channel
    plan.overlay = _overlay(driving, result)


def _plane_timing(plan, scene, driving_name, frame_start):
    """TimedFrames for the plane: the driving strip's when it is in the plane's scene, else real time."""
    result = plan.result
    if plan.strip_scene is None:
        # Plane only: time it to the driving strip of its own scene, if there is one.
        driving = find_driving_strip(scene, driving_name, result)
        if driving is not None:
            timed = results.strip_frames(result, strip_playback(driving, scene, result, plan.warnings))
            if timed is None:
                raise ResultError("None of the generated frames is shown by strip " + driving.name)
            return timed
    elif plan.driving is not None:
        if plan.strip_scene == scene:
            return plan.strip_timed
        plan.warnings.append("The plane's scene {:s} is not the sequencer scene: it plays in real time "
                             "from frame {:d}".format(scene.name, frame_start))
    return results.real_time_frames(result, frame_start, _scene_fps(scene))


def _plan_plane(plan, scene, depsgraph, camera_name, distance, fill_mode):
    result = plan.result
    plan.plane_scene = scene
    if camera_name:
        camera = scene.objects.get(camera_name)
        if camera is None:
            raise ResultError("No object named {:s} in scene {:s}".format(camera_name, scene.name))
    else:
        camera = scene.camera
        if camera is None:
            raise ResultError("Scene {:s} has no camera; choose one".format(scene.name))
    if camera.type != 'CAMERA':
        raise ResultError("{:s} is not a camera".format(camera.name))
    cam = camera.data
    if cam.type not in {'PERSP', 'ORTHO'}:
        raise ResultError("Camera {:s} is panoramic; use a perspective or orthographic camera".format(camera.name))
    if not cam.clip_start < distance < cam.clip_end:
        raise ResultError("Distance {:g} is outside camera {:s}'s clipping range ({:g}-{:g})".format(
            distance, camera.name, cam.clip_start, cam.clip_end))
    # Evaluated: a camera just moved by a script, constrained or animated is where it shows.
    world = camera.evaluated_get(depsgraph).matrix_world.copy()
    if abs(world.to_3x3().determinant()) < 1e-12:
        raise ResultError("Camera {:s} has zero scale".format(camera.name))
    render = scene.render
    center_x, center_y, view_w, view_h = results.camera_view(
        distance,
        ortho=cam.type == 'ORTHO',
        lens=cam.lens,
        ortho_scale=cam.ortho_scale,
        sensor_width=cam.sensor_width,
        sensor_height=cam.sensor_height,
        sensor_fit=cam.sensor_fit,
        resolution_x=render.resolution_x,
        resolution_y=render.resolution_y,
        pixel_aspect_x=render.pixel_aspect_x,
        pixel_aspect_y=render.pixel_aspect_y,
        shift_x=cam.shift_x,
        shift_y=cam.shift_y,
    )
    plan.camera = camera
    plan.plane_size = results.plane_size(view_w, view_h, result.width / result.height, fill_mode)
    # Under the camera, undoing the camera's own scale: the plane's size is in world units.
    plan.plane_matrix = world.inverted() @ world.normalized() @ Matrix.Translation((center_x, center_y, -distance))


def plan_import(context, *, filepath, form, driving_strip="", frame_start=None, camera="",
                distance=10.0, fill_mode='FILL'):
    """Check an import and work out everything it will create; a ResultError says what is wrong.

    Changes no Blender data. ``frame_start`` (None: the scene's current frame)
    places the result when there is no driving strip.
    """
    if form not in {'STRIP', 'PLANE', 'BOTH'}:
        raise ResultError("Unknown form {!r}".format(form))
    if not filepath:
        raise ResultError("Choose a job manifest (manifest.json) first")
    result = results.load_result(_abspath(filepath))
    plan = ImportPlan(result=result, name="SCAIL " + result.job_id)
    plan.warnings.extend(result.warnings)
    if form in {'STRIP', 'BOTH'}:
        scene = compat.sequencer_scene(context)
        if scene is None:
            raise ResultError("There is no sequencer scene to add the strip to")
        _plan_strip(plan, scene, driving_strip, scene.frame_current if frame_start is None else frame_start)
    if form in {'PLANE', 'BOTH'}:
        scene = context.scene
        start = scene.frame_current if frame_start is None else frame_start
        _plan_plane(plan, scene, context.evaluated_depsgraph_get(), camera, distance, fill_mode)
        plan.plane_timed = _plane_timing(plan, scene, driving_strip, start)
    return plan


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
    strip[PROP_KEY] = props
    return strip


def _select_strip(strip):
    """Make ``strip`` the only selected strip and the active one, as adding a strip does."""
    editor = strip.id_data.sequence_editor
    for other in editor.strips_all:
        other.select = False
    strip.select = True
    editor.active_strip = strip


def use_image_alpha(material, shader, texture, blended):
    """The image's alpha into the shader's; ``blended`` for a matte's soft edges, else dithered (cut-out)."""
    material.node_tree.links.new(shader.inputs["Alpha"], texture.outputs["Alpha"])
    material.use_transparent_shadow = True
    material.surface_render_method = 'BLENDED' if blended else 'DITHERED'


def _build_material(material, image, timed, shading, use_alpha, blended=False):
    tree = compat.material_node_tree(material)
    tree.nodes.clear()
    output = tree.nodes.new('ShaderNodeOutputMaterial')
    shader = tree.nodes.new('ShaderNodeBsdfPrincipled')
    texture = tree.nodes.new('ShaderNodeTexImage')
    output.location = (300, 0)
    texture.location = (-400, 0)
    texture.image = image
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
    tree.links.new(output.inputs["Surface"], shader.outputs["BSDF"])
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
    _build_material(material, image, timed, shading, use_alpha, blended=use_alpha and result.matte)

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
    plane[PROP_KEY] = _id_properties(result)
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


# --------------------------------------------------------------------------------------------
# The operator.

class SCAIL2_OT_import_result(Operator):
    """Bring a finished SCAIL-2 job into the scene as an image strip, a camera plane, or both"""
    bl_idname = "scail2.import_result"
    bl_label = "Import Result"
    bl_options = {'REGISTER', 'UNDO'}

    filepath: StringProperty(
        name="Manifest",
        description="The job's manifest.json (or its job folder)",
        subtype='FILE_PATH',
    )
    filter_glob: StringProperty(default="*.json", options={'HIDDEN'})
    form: EnumProperty(
        name="Import As",
        items=(
            ('STRIP', "Image Strip", "An image strip in the sequencer, above the driving strip"),
            ('PLANE', "Camera Plane", "A plane parented to the camera, filling its view"),
            ('BOTH', "Both", "An image strip and a camera plane"),
        ),
        default='STRIP',
    )
    driving_strip: StringProperty(
        name="Driving Strip",
        description=(
            "Strip the result is timed to, scene frame by scene frame. "
            "Empty: the strip that shows the job's driving clip, if there is one"
        ),
    )
    frame_start: IntProperty(
        name="Start Frame",
        description="Scene frame of the first generated frame when there is no driving strip "
                    "(default: the current frame)",
    )
    camera: StringProperty(
        name="Camera",
        description="Camera the plane is parented to. Empty: the scene's camera",
    )
    distance: FloatProperty(
        name="Distance",
        description="How far in front of the camera the plane stands",
        default=10.0, min=0.001, soft_max=1000.0,
        subtype='DISTANCE', unit='LENGTH',
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

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def invoke(self, context, event):
        if not self.properties.is_property_set("frame_start"):
            scene = compat.sequencer_scene(context) if self.form != 'PLANE' else context.scene
            self.frame_start = (scene or context.scene).frame_current
        if not self.filepath:
            context.window_manager.fileselect_add(self)
            return {'RUNNING_MODAL'}
        return self.execute(context)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(self, "form")
        if self.form != 'PLANE':
            scene = compat.sequencer_scene(context)
            if scene is not None and scene.sequence_editor is not None:
                layout.prop_search(self, "driving_strip", scene.sequence_editor, "strips")
            else:
                layout.prop(self, "driving_strip")
        layout.prop(self, "frame_start")
        if self.form != 'STRIP':
            layout.prop_search(self, "camera", context.scene, "objects")
            layout.prop(self, "distance")
            layout.prop(self, "fill_mode")
            layout.prop(self, "shading")
            layout.prop(self, "use_alpha")

    def execute(self, context):
        frame_start = self.frame_start if self.properties.is_property_set("frame_start") else None
        try:
            plan = plan_import(
                context,
                filepath=self.filepath,
                form=self.form,
                driving_strip=self.driving_strip,
                frame_start=frame_start,
                camera=self.camera,
                distance=self.distance,
                fill_mode=self.fill_mode,
            )
            strip, plane = create_import(plan, context, shading=self.shading, use_alpha=self.use_alpha)
        except ResultError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        for warning in plan.warnings:
            self.report({'WARNING'}, warning)
        done = []
        if strip is not None:
            left, right = compat.strip_handles(strip)
            done.append("strip {:s} on channel {:d}, frames {:d}-{:d}".format(
                strip.name, strip.channel, left, right - 1))
        if plane is not None:
            done.append("plane {:s} under camera {:s}".format(plane.name, plan.camera.name))
        self.report({'INFO'}, "Imported {:s}: {:s}".format(plan.result.job_id, "; ".join(done)))
        return {'FINISHED'}


classes = (
    SCAIL2_OT_import_result,
)
