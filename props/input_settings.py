# SPDX-License-Identifier: GPL-3.0-or-later
"""What the artist chooses for a job's inputs, stored on the scene (``Scene.scail2_sources``).

The identity assignment lives here too: which objects or collections are
identity 1..6 in the colour masks Blender renders.
"""

__all__ = (
    "SCAIL2_IdentityAssignment",
    "SCAIL2_SceneSources",
    "assign_identity",
    "assigned_objects",
    "classes",
    "get_settings",
)

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup

from ..protocol import MAX_IDENTITIES, PALETTE_NAMES

SCENE_PROPERTY = "scail2_sources"


def _is_camera(_self, obj):
    return obj.type == 'CAMERA'


class SCAIL2_IdentityAssignment(PropertyGroup):
    """An object (with its children) or a collection that is one identity of the colour masks"""

    identity: IntProperty(
        name="Identity",
        description="Which character this is: 1 blue, 2 red, 3 green, 4 magenta, 5 cyan, 6 yellow",
        min=1, max=MAX_IDENTITIES, default=1,
    )
    target: EnumProperty(
        name="Target",
        items=(
            ('OBJECT', "Object", "An object and its children", 'OBJECT_DATA', 0),
            ('COLLECTION', "Collection", "Every object of a collection", 'OUTLINER_COLLECTION', 1),
        ),
        default='OBJECT',
    )
    object: PointerProperty(name="Object", type=bpy.types.Object)
    collection: PointerProperty(name="Collection", type=bpy.types.Collection)


class SCAIL2_SceneSources(PropertyGroup):
    """Where a SCAIL-2 job's driving footage, reference and masks come from"""

    identities: CollectionProperty(type=SCAIL2_IdentityAssignment)
    active_identity_index: IntProperty(name="Active Identity", min=0)

    mode: EnumProperty(
        name="Mode",
        description="Where the result's background comes from; decides the masks' background colours",
        items=(
            ('animate', "Animate", "Background from the reference: driving mask on black, reference mask on white"),
            ('replace', "Replace", "Background from the footage: driving mask on white, reference mask on black"),
        ),
        default='animate',
    )
    driving_source: EnumProperty(
        name="Driving",
        items=(
            ('STRIP', "Active Strip", "The sequencer's active strip over its visible range"),
            ('SEQUENCER', "Sequencer Output", "The sequencer's output over the scene's frame range"),
            ('CAMERA', "3D Scene", "The 3D scene rendered through a camera over the scene's frame range"),
        ),
        default='STRIP',
    )
    driving_camera: PointerProperty(name="Driving Camera", type=bpy.types.Object, poll=_is_camera)
    engine: EnumProperty(
        name="Engine",
        description="How the 3D scene is rendered",
        items=(
            ('WORKBENCH', "Workbench", "Fast solid shading"),
            ('EEVEE', "EEVEE", "EEVEE at a low sample count"),
            ('SCENE', "Scene", "The scene's own render engine and settings"),
        ),
        default='WORKBENCH',
    )
    max_size: IntProperty(
        name="Render Size",
        description="Longest side in pixels of the footage, masks and reference as they are rendered or "
                    "saved for the job; the job scales them to its output size (Generate panel)",
        min=64, max=4096, default=1280, subtype='PIXEL',
    )
    mask_source: EnumProperty(
        name="Masks",
        items=(
            ('NONE', "None", "No driving mask: the backend uses the whole frame as identity 1"),
            ('IDENTITIES', "Identities", "Render the assigned objects and collections flat in the palette colours"),
            ('MASK_STRIP', "Mask Strip", "A mask strip: mask layer 1 is identity 1, layer 2 identity 2..."),
            ('FILE', "Mask Video", "A colour-mask video or image folder matching the driving footage"),
        ),
        default='NONE',
    )
    mask_strip: StringProperty(name="Mask Strip", description="Name of the mask strip")
    auto_mask_prompt: StringProperty(
        name="Find",
        description="What Auto Masks looks for in the footage and the reference: a person, an animal, an object",
        default="person",
    )
    auto_mask_identities: IntProperty(
        name="Identities",
        description="How many of the subjects found become identities 1-6 (the largest), numbered left to right",
        min=1, max=MAX_IDENTITIES, default=1,
    )
    mask_file: StringProperty(name="Mask Video", subtype='FILE_PATH')
    reference_source: EnumProperty(
        name="Reference",
        items=(
            ('FILE', "Image File", "An image file"),
            ('IMAGE', "Image", "An image in the blend file (saved out when packed or generated)"),
            ('STRIP', "Strip Frame", "The frame the active strip shows at the current frame"),
            ('CAMERA', "Camera", "A render of the scene through a camera, with a transparent background"),
        ),
        default='FILE',
    )
    reference_file: StringProperty(name="Reference Image", subtype='FILE_PATH')
    reference_image: PointerProperty(name="Reference Image", type=bpy.types.Image)
    reference_mask_file: StringProperty(
        name="Reference Mask",
        description="Colour mask of the reference image (palette colours on the reference background), "
                    "made by Auto Mask or elsewhere. Empty: the image's alpha, or the whole image, is identity 1",
        subtype='FILE_PATH',
    )
    reference_camera: PointerProperty(name="Reference Camera", type=bpy.types.Object, poll=_is_camera)
    reference_engine: EnumProperty(
        name="Reference Engine",
        description="How the reference is rendered through its camera",
        items=(
            ('SCENE', "Scene", "The scene's own render engine and settings"),
            ('EEVEE', "EEVEE", "EEVEE at a low sample count"),
            ('WORKBENCH', "Workbench", "Fast solid shading"),
        ),
        default='SCENE',
    )
    reference_mask: BoolProperty(
        name="Reference Mask",
        description="Also render the assigned identities through the reference camera as the reference's mask",
        default=True,
    )
    inputs_dir: StringProperty(
        name="Inputs Folder",
        description="Where exports write the job's inputs (empty: a folder per scene in the output folder)",
        subtype='DIR_PATH',
    )
    mask_preview: StringProperty(
        name="Mask Preview", description="The identity mask rendered at the current frame", subtype='FILE_PATH',
    )
    last_check: StringProperty(name="Identity Check", description="Result of the latest identity check")
    input_checks: StringProperty(
        name="Input Checks", description="The latest input checks of this scene's job (the report, as JSON)",
    )
    input_checks_state: StringProperty(
        name="Input Checks State", description="What the input checks are doing, or why they could not run",
    )

    @classmethod
    def register(cls):
        setattr(bpy.types.Scene, SCENE_PROPERTY, PointerProperty(type=cls))

    @classmethod
    def unregister(cls):
        delattr(bpy.types.Scene, SCENE_PROPERTY)


def assign_identity(items, targets, identity):
    """Bind each ``(kind, block)`` of ``targets`` (``'OBJECT'`` or ``'COLLECTION'``) to ``identity`` in the
    assignment ``items``, reusing a block's entry when it has one."""
    for kind, block in targets:
        item = next((i for i in items if i.target == kind and (i.object if kind == 'OBJECT' else i.collection)
                     == block), None)
        if item is None:
            item = items.add()
            item.target = kind
            if kind == 'OBJECT':
                item.object = block
            else:
                item.collection = block
        item.identity = identity


def get_settings(scene):
    return getattr(scene, SCENE_PROPERTY)


def assigned_objects(scene):
    """``({object: identity}, [warnings])`` from the scene's identity assignment.

    An object assigned twice keeps its first assignment (a warning says so);
    an object's children (and the objects of a collection it instances) and a
    collection's nested objects are included.
    """
    owner, warnings = {}, []
    for item in get_settings(scene).identities:
        if item.target == 'OBJECT':
            if item.object is None:
                continue
            objects = [item.object, *item.object.children_recursive]
            objects += [
                inner for obj in list(objects)
                if obj.instance_type == 'COLLECTION' and obj.instance_collection is not None
                for inner in obj.instance_collection.all_objects
            ]
        else:
            if item.collection is None:
                continue
            objects = list(item.collection.all_objects)
        for obj in objects:
            first = owner.setdefault(obj, item.identity)
            if first != item.identity:
                warnings.append("{:s} is identity {:d} ({:s}) and {:d}; kept {:d}".format(
                    obj.name, first, PALETTE_NAMES[first - 1], item.identity, first))
    return owner, warnings


classes = (
    SCAIL2_IdentityAssignment,
    SCAIL2_SceneSources,
)
