# SPDX-License-Identifier: GPL-3.0-or-later
"""A temporary camera circling a character object, for turnaround views.

The camera is orthographic, as on a character sheet: every view shows the character at one scale,
whatever the angle, and it is framed from the character's bounding box (with its children) at the
frame rendered. Angle 0 stands in front of the character (on its -Y axis, Blender's front), 90
degrees at its left side, 180 behind it. The camera lives only while the views render: it is
removed, with its data, when the ``with`` block ends, whatever happens inside it.
"""

__all__ = (
    "degrees",
    "turnaround_camera",
)

import contextlib
import math

import bpy
from mathutils import Matrix, Vector

from ..core.inputs import ExportError

MARGIN = 1.1  # room around the character in the frame


def _character_points(obj, depsgraph):
    """World-space corners of the evaluated bounding boxes of ``obj`` and its children."""
    points = []
    for part in (obj, *obj.children_recursive):
        if part.type not in {'MESH', 'CURVE', 'SURFACE', 'META', 'FONT', 'CURVES', 'POINTCLOUD', 'VOLUME',
                             'GREASEPENCIL', 'GPENCIL', 'ARMATURE'}:
            continue
        evaluated = part.evaluated_get(depsgraph)
        points += [evaluated.matrix_world @ Vector(corner) for corner in evaluated.bound_box]
    if not points:
        raise ExportError("{:s} has no geometry to frame in a turnaround".format(obj.name))
    return points


def _framing(obj, depsgraph, angle, aspect):
    """``(location, rotation matrix, orthographic scale, depth)`` of a camera looking at ``obj`` from ``angle``."""
    points = _character_points(obj, depsgraph)
    low = Vector(tuple(min(p[i] for p in points) for i in range(3)))
    high = Vector(tuple(max(p[i] for p in points) for i in range(3)))
    centre = (low + high) / 2
    front = obj.matrix_world.to_3x3() @ Vector((0.0, -1.0, 0.0))
    front.z = 0.0
    if front.length < 1e-6:
        front = Vector((0.0, -1.0, 0.0))  # a character lying face down or up: the world's front
    direction = Matrix.Rotation(angle, 3, 'Z') @ front.normalized()
    radius = max((Vector((p.x, p.y, 0.0)) - Vector((centre.x, centre.y, 0.0))).length for p in points)
    width, height = 2.0 * radius * MARGIN, (high.z - low.z) * MARGIN
    # Blender fits the orthographic scale to the frame's longer side.
    scale = max(width, height * aspect) if aspect >= 1.0 else max(width / aspect, height)
    depth = 2.0 * radius + (high.z - low.z) + 1.0
    location = centre + direction * depth
    rotation = (-direction).to_track_quat('-Z', 'Y').to_matrix()
    return location, rotation, max(scale, 1e-3), depth


@contextlib.contextmanager
def turnaround_camera(scene, obj, angle, aspect):
    """A camera in ``scene`` looking at ``obj`` from ``angle`` (radians), framed for a picture ``aspect``
    (width / height) wide; removed on exit."""
    if obj is None:
        raise ExportError("Choose the character object to render views around")
    if scene.objects.get(obj.name) is None:
        raise ExportError("{:s} is not in the scene {:s}".format(obj.name, scene.name))
    depsgraph = bpy.context.evaluated_depsgraph_get()
    location, rotation, scale, depth = _framing(obj, depsgraph, angle, aspect)
    data = bpy.data.cameras.new("SCAIL2 turnaround")
    camera = bpy.data.objects.new("SCAIL2 turnaround", data)
    try:
        data.type = 'ORTHO'
        data.ortho_scale = scale
        data.clip_start, data.clip_end = 0.01, 2.0 * depth + scale
        camera.matrix_world = Matrix.Translation(location) @ rotation.to_4x4()
        scene.collection.objects.link(camera)
        yield camera
    finally:
        bpy.data.objects.remove(camera)
        bpy.data.cameras.remove(data)


def degrees(angle):
    """An angle in radians as whole degrees, for names and notes."""
    return int(round(math.degrees(angle))) % 360
