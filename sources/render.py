# SPDX-License-Identifier: GPL-3.0-or-later
"""Rendering without touching the user's scene: temporary scene copies, stills, pixels.

Every render of this package happens in a *copy* of the user's scene
(``Scene.copy()``: its own render, output, colour management and sequencer
settings; the same objects, collections and data). Whatever an export sets
(engine, resolution, camera, world, muted strips) is set on the copy, which is
removed afterwards, so the user's scene is never changed. What the copy shares
and an export must change (object colours, mask layer visibility) is changed
through :class:`Restorer`, which puts every value back.
"""

__all__ = (
    "DEFAULT_MAX_SIZE",
    "Restorer",
    "abspath",
    "drain",
    "image_info",
    "movie_frame_count",
    "movie_info",
    "neutral_colour",
    "output_size",
    "prepare_folder",
    "read_pixels",
    "render_still",
    "scene_fps",
    "set_png_output",
    "temporary_scene",
)

import array
import contextlib
import os

import bpy

from .. import compat
from ..core.inputs import INPUTS_NAME, ExportError
from ..core.util import operator_error_line

# Longest side of what an export renders by default: the model's largest tier is 1280 wide.
DEFAULT_MAX_SIZE = 1280
# The files an export writes into its folders (and removes again before writing anew).
OWN_PREFIXES = ("frame_", "mask_", ".blank")
# In every folder an export fills: its frame_ and mask_ files are the add-on's to replace.
EXPORT_MARKER = ".scail2-export"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp"})


def scene_fps(scene):
    return scene.render.fps / scene.render.fps_base


def abspath(path, id_data=None):
    """``path`` (maybe ``//``-relative, maybe from a library) as a normalised absolute path."""
    if not path:
        return ""
    library = getattr(id_data, "library", None)
    return os.path.normpath(bpy.path.abspath(path, library=library))


def output_size(scene, max_size=DEFAULT_MAX_SIZE, size=None):
    """``(width, height)`` to render at: ``size``, else the scene's resolution, shrunk to fit ``max_size``."""
    if size is not None:
        width, height = int(size[0]), int(size[1])
    else:
        percent = scene.render.resolution_percentage / 100.0
        width = max(1, int(scene.render.resolution_x * percent))
        height = max(1, int(scene.render.resolution_y * percent))
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    if width < 2 or height < 2:
        raise ExportError("The render size {:d}x{:d} is too small".format(width, height))
    return width, height


def prepare_folder(folder):
    """Create ``folder``, removing what an earlier export wrote there; refuse folders with other images.

    A job reads every image of a folder, so a folder with images of its own is
    never used for frames. Only a folder an export filled before (it holds
    :data:`EXPORT_MARKER`, or lies in an inputs folder the add-on records) has its
    ``frame_``/``mask_`` files removed: anyone else's files are never deleted.
    """
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, EXPORT_MARKER)
    ours = os.path.isfile(marker) or os.path.isfile(os.path.join(os.path.dirname(folder), INPUTS_NAME))
    if ours:
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(OWN_PREFIXES) and os.path.isfile(path):
                os.remove(path)
    strangers = sorted(
        name for name in os.listdir(folder)
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")
    )
    if strangers:
        raise ExportError("The folder {:s} already holds other images ({:s}); choose an empty folder".format(
            folder, strangers[0]))
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write("Frames written by the SCAIL-2 add-on's exports: exporting again replaces them.\n")
    return folder


@contextlib.contextmanager
def temporary_scene(scene):
    """A copy of ``scene`` to render from, removed (with what was made for it) on exit.

    Yields ``(copy, made)``: append datablocks created for the copy (a world,
    images) to ``made`` and they are removed too. Frames are chosen with
    ``copy.frame_current`` and left to the render to evaluate. A render writes
    the animated values of its frame into the objects the copy shares with
    ``scene``; on exit ``scene`` is evaluated at its own frame again, which
    puts them back (Blender does so where ``scene`` is shown in a window, and
    whenever it is shown again otherwise).
    """
    copy = scene.copy()
    copy.name = "SCAIL2 export ({:s})".format(scene.name)
    made = []
    try:
        copy.render.use_stamp = False  # burnt-in notes would land in the frames
        copy.render.use_border = False
        copy.render.use_multiview = False
        copy.render.resolution_percentage = 100
        copy.render.use_compositing = False
        copy.render.use_freestyle = False
        for marker in copy.timeline_markers:
            marker.camera = None  # cameras bound to markers would override the chosen one
        yield copy, made
    finally:
        bpy.data.scenes.remove(copy)
        # A render writes the animated values of the frame it rendered into the objects it
        # shares with the user's scene: evaluate the user's frame again to put them back.
        scene.frame_set(scene.frame_current, subframe=scene.frame_subframe)
        for block in made:
            collection = {
                bpy.types.World: bpy.data.worlds,
                bpy.types.Image: bpy.data.images,
                bpy.types.Mask: bpy.data.masks,
            }.get(type(block))
            try:
                collection.remove(block)
            except (ReferenceError, RuntimeError, AttributeError):
                pass  # already gone


def neutral_colour(scene):
    """Colour management that leaves colours as they are: Standard, no look, no exposure, no dither."""
    view = scene.view_settings
    view.view_transform = 'Standard'
    view.look = 'None'
    view.exposure = 0.0
    view.gamma = 1.0
    view.use_curve_mapping = False
    scene.display_settings.display_device = 'sRGB'
    scene.render.dither_intensity = 0.0


def set_png_output(scene, color_mode='RGB'):
    """8-bit PNG stills, ``color_mode`` 'RGB' or 'RGBA', with the scene's own colour management."""
    settings = scene.render.image_settings
    compat.set_image_output(settings, 'PNG')
    settings.color_mode = color_mode
    settings.color_depth = '8'
    settings.compression = 15
    scene.render.use_file_extension = True


def drain(steps):
    """Run an export's ``iter_*`` steps to their end; their return value.

    The ``iter_*`` exports are generators that pause after each rendered frame, yielding
    ``(frames done, frames in all)``, so a timer can render the inputs a frame at a time while
    Blender stays responsive; the plain exports run them through here in one go.
    """
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def render_still(scene, path):
    """Render ``scene`` at its current frame to ``path`` (a still); return ``path``."""
    scene.render.filepath = path
    try:
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.render.render(write_still=True)
    except RuntimeError as ex:  # Blender's own refusal ("Cannot render, no camera"), as one line
        raise ExportError("Blender could not render {:s}: {:s}".format(path, operator_error_line(ex))) from None
    if result != {'FINISHED'} or not os.path.isfile(path):
        raise ExportError("Blender could not render {:s}".format(path))
    return path


def read_pixels(path):
    """``(pixels, width, height)`` of an image file: a flat RGBA ``array('f')``, rows bottom-up."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height = image.size
        pixels = array.array('f', bytes(4 * 4 * width * height))
        image.pixels.foreach_get(pixels)
        return pixels, width, height
    finally:
        bpy.data.images.remove(image)


def movie_info(path):
    """``(frames, width, height)`` of the movie at ``path`` as Blender reads it (through a movie clip)."""
    before = set(bpy.data.movieclips)
    try:
        clip = bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError as ex:
        raise ExportError("Cannot read the movie {:s}: {:s}".format(
            path, str(ex).strip().splitlines()[-1])) from None
    try:
        return clip.frame_duration, clip.size[0], clip.size[1]
    finally:
        if clip not in before:
            bpy.data.movieclips.remove(clip)


def movie_frame_count(path):
    """Frames of the movie at ``path`` as Blender reads it."""
    return movie_info(path)[0]


def image_info(path):
    """``(width, height, has_alpha)`` of the image file at ``path``."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height = image.size
        # Bits per pixel: 32 (8-bit RGBA), 64 (16-bit RGBA) and 128 (float RGBA) have alpha.
        return width, height, image.depth in (32, 64, 128)
    finally:
        bpy.data.images.remove(image)


class Restorer:
    """Set attributes and put the old values back on :meth:`restore` (last change first)."""

    def __init__(self):
        self._saved = []

    def set(self, owner, name, value):
        old = getattr(owner, name)
        if hasattr(old, "__len__") and not isinstance(old, str):
            old = tuple(old)
        self._saved.append((owner, name, old))
        setattr(owner, name, value)

    def restore(self):
        while self._saved:
            owner, name, old = self._saved.pop()
            try:
                setattr(owner, name, old)
            except (ReferenceError, AttributeError, TypeError):
                pass  # removed meanwhile: nothing left to restore

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False
