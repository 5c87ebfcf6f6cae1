# SPDX-License-Identifier: GPL-3.0-or-later
"""Reference stills: an image file, an Image datablock, a strip's frame, or a render through a camera.

The reference keeps its alpha wherever it has one: the backend reads an
image's alpha as its mask (identity 1 where opaque) when no mask file is
given. A render through a camera has a transparent background (Film >
Transparent), so the posed character is its own mask; with identities
assigned, a flat colour mask is rendered through the same camera as well.
"""

__all__ = (
    "REFERENCE_EXTENSIONS",
    "attach_reference_mask",
    "reference_from_file",
    "reference_from_image",
    "reference_from_strip",
    "render_reference",
)

import os

import bpy

from .. import compat
from ..core.inputs import ExportError, ExportedStill, identity_names
from ..core.pixels import classify
from .footage import ENGINES, bake_reasons
from .sequencer import keep_for, render_sequencer_frames
from .masks import render_reference_mask
from .render import (
    DEFAULT_MAX_SIZE,
    abspath,
    image_info,
    neutral_colour,
    output_size,
    read_pixels,
    render_still,
    set_png_output,
    temporary_scene,
)
from ..props.input_settings import assigned_objects

# What the backend reads as a still (backend/pipeline/media.py, IMAGE_EXTENSIONS).
REFERENCE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp"})
REFERENCE_NAME = "reference.png"
REFERENCE_MASK_NAME = "reference_mask.png"


def reference_from_file(path):
    """An image file used as it is."""
    path = abspath(path)
    if not os.path.isfile(path):
        raise ExportError("The reference image was not found: " + (path or "(none chosen)"))
    if os.path.splitext(path)[1].lower() not in REFERENCE_EXTENSIONS:
        raise ExportError("The reference must be a PNG, JPEG, EXR, TIFF, BMP or WebP image: " + path)
    width, height, has_alpha = image_info(path)
    return ExportedStill(
        path=path, has_alpha=has_alpha, source='file "{:s}"'.format(os.path.basename(path)),
        note="Image file used as it is ({:d}x{:d}{:s})".format(width, height, ", with alpha" if has_alpha else ""),
    )


def reference_from_image(image, folder):
    """An Image datablock: its file when that is what it shows, else its pixels saved as a PNG in ``folder``.

    Packed, generated, edited (unsaved) and render-result images are saved
    out, with their alpha, through a neutral colour transform.
    """
    if image is None:
        raise ExportError("Choose a reference image")
    path = abspath(image.filepath, image)
    if (
            image.source == 'FILE' and image.packed_file is None and not image.is_dirty
            and os.path.isfile(path) and os.path.splitext(path)[1].lower() in REFERENCE_EXTENSIONS
    ):
        still = reference_from_file(path)
        still.source = 'image "{:s}"'.format(image.name)
        return still
    if image.source not in {'FILE', 'GENERATED', 'VIEWER'}:
        raise ExportError("The image {:s} is a movie or a sequence; choose a still".format(image.name))
    if image.source == 'FILE' and not image.has_data and image.packed_file is None and not os.path.isfile(path):
        raise ExportError("The image {:s} has no pixels to save (its file is missing: {:s})".format(image.name, path))
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, REFERENCE_NAME)
    scene = bpy.data.scenes.new("SCAIL2 image export")
    try:
        neutral_colour(scene)
        set_png_output(scene, 'RGBA')
        image.save_render(target, scene=scene)
    except RuntimeError as ex:
        raise ExportError("Cannot save the image {:s}: {:s}".format(
            image.name, str(ex).strip().splitlines()[-1])) from None
    finally:
        bpy.data.scenes.remove(scene)
    width, height, has_alpha = image_info(target)
    return ExportedStill(
        path=target, has_alpha=has_alpha, source='image "{:s}"'.format(image.name),
        note="Saved image {:s} as a PNG ({:d}x{:d})".format(image.name, width, height),
    )


def reference_from_strip(scene, strip, frame, folder, *, max_size=DEFAULT_MAX_SIZE):
    """The picture ``strip`` shows at scene ``frame``: the image strip's file, else a sequencer render."""
    left, right = compat.strip_handles(strip)
    if not left <= frame < right:
        raise ExportError("The strip {:s} does not show frame {:d}".format(strip.name, frame))
    reasons = bake_reasons(scene, strip)
    if strip.type == 'IMAGE' and set(reasons) <= {"it is a single image", "it mixes image types"}:
        element = strip.strip_elem_from_frame(frame)
        still = reference_from_file(os.path.join(abspath(strip.directory, strip.id_data), element.filename))
        still.source = 'strip "{:s}" at frame {:d}'.format(strip.name, frame)
        return still
    os.makedirs(folder, exist_ok=True)
    [path] = render_sequencer_frames(
        scene, [frame], folder, keep=keep_for(scene, strip), max_size=max_size,
        name=REFERENCE_NAME, color_mode='RGBA',
    )
    width, height, has_alpha = image_info(path)
    return ExportedStill(
        path=path, has_alpha=has_alpha, source='strip "{:s}" at frame {:d}'.format(strip.name, frame),
        note="Rendered strip {:s} at frame {:d} through the sequencer ({:d}x{:d})".format(
            strip.name, frame, width, height),
    )


def render_reference(scene, camera, folder, mode, *, engine='SCENE', frame=None, size=None,
                     max_size=DEFAULT_MAX_SIZE, samples=32, with_mask=True):
    """Render the character posed in ``scene`` through ``camera`` with a transparent background.

    ``engine``: 'SCENE' (the scene's own engine and settings), 'WORKBENCH' or
    'EEVEE'. With identities assigned (and ``with_mask``) the reference mask is
    rendered through the same camera too, on ``mode``'s reference background.
    """
    if camera is None or camera.type != 'CAMERA':
        raise ExportError("Choose a camera to render the reference through")
    if engine not in ENGINES:
        raise ExportError("engine must be one of {:s}".format(", ".join(ENGINES)))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, REFERENCE_NAME)
    frame = scene.frame_current if frame is None else frame
    width, height = output_size(scene, max_size, size)
    with temporary_scene(scene) as (copy, _made):
        copy.render.resolution_x, copy.render.resolution_y = width, height
        copy.camera = camera
        copy.render.use_sequencer = False
        copy.render.film_transparent = True
        if engine == 'WORKBENCH':
            copy.render.engine = 'BLENDER_WORKBENCH'
        elif engine == 'EEVEE':
            copy.render.engine = compat.eevee_engine()
            copy.eevee.taa_render_samples = samples
        set_png_output(copy, 'RGBA')
        copy.frame_current = frame
        render_still(copy, path)
    still = ExportedStill(
        path=path, has_alpha=True, source='camera "{:s}" at frame {:d}'.format(camera.name, frame),
        note="Rendered through camera {:s} at frame {:d} ({:d}x{:d}, transparent background)".format(
            camera.name, frame, width, height),
    )
    if with_mask and assigned_objects(scene)[0]:
        mask_path = os.path.join(folder, REFERENCE_MASK_NAME)
        identities, warnings = render_reference_mask(
            scene, camera, mask_path, mode, frame=frame, size=(width, height), max_size=0)
        still.mask_path, still.identities = mask_path, identities
        still.note += "; mask of the assigned identities" + (" (" + "; ".join(warnings) + ")" if warnings else "")
    return still


def attach_reference_mask(still, path):
    """``(still, mode)``: ``still`` with the colour mask file at ``path``, and the mode it was painted for.

    The mode is read from the mask's background (white: animation, black:
    replacement); its identities from its colours.
    """
    path = abspath(path)
    if not os.path.isfile(path):
        raise ExportError("The reference mask was not found: " + path)
    pixels, width, height = read_pixels(path)
    ref_width, ref_height, _alpha = image_info(still.path)
    if abs(width / height - ref_width / ref_height) > 0.01:
        raise ExportError("The reference mask is {:d}x{:d} but the reference is {:d}x{:d}: {:s}".format(
            width, height, ref_width, ref_height, path))
    counts = classify(pixels)
    still.mask_path = path
    still.identities = sorted(counts["identities"])
    still.note += "; mask {:s}: identities {:s}".format(
        os.path.basename(path), identity_names(still.identities) or "none")
    return still, "animate" if counts["white"] >= counts["black"] else "replace"
