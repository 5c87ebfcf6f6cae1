# SPDX-License-Identifier: GPL-3.0-or-later
"""Differences between the Blender releases this add-on supports.

The add-on supports Blender 4.5 LTS up to 5.2 (``blender_version_min`` in
``blender_manifest.toml``). Whenever an API it uses differs between those
releases, the difference lives here and nowhere else:

* The rest of the add-on never compares ``bpy.app.version`` and never probes
  for attributes with ``hasattr``; it calls a function from this module.
* Each function prefers the newest API and keeps the older one as the fallback,
  and names the release that made the change. When ``blender_version_min``
  moves past that release, the fallback branch is deleted (and the function
  too, if it no longer hides anything).
* Only what the add-on actually uses is added; this is not a general-purpose
  compatibility layer.

Differences handled without a function, by always using the spelling that
every supported release understands:

* Sequencer strips: ``SequenceEditor.strips`` / ``strips_all`` exist since
  4.4, and the old ``sequences`` / ``sequences_all`` are gone in 5.0. Use
  ``strips`` only; never ``sequences``. ``strips.new_image`` / ``new_movie``
  (name, filepath, channel, frame_start, fit_method) and
  ``Strip.strip_elem_from_frame`` are the same in 4.5 and 5.0.
* Material transparency: ``Material.surface_render_method`` ('DITHERED' or
  'BLENDED') exists since 4.2; the older ``blend_method`` is deprecated. Use
  ``surface_render_method`` only.
"""

import bpy

__all__ = (
    "material_node_tree",
    "movie_position_rounding",
    "new_effect_strip",
    "sequencer_scene",
    "set_strip_handles",
)

# Blender 5.0 lets a workspace show a different scene in the Video Sequencer
# than the one in the 3D Viewport (``WorkSpace.sequencer_scene``).
_HAS_SEQUENCER_SCENE = bpy.app.version >= (5, 0, 0)
# Blender 5.0 truncates fractional movie positions (4.5 rounds them).
_MOVIE_POSITIONS_TRUNCATED = bpy.app.version >= (5, 0, 0)
# Blender 5.0 makes every material node-based (``Material.use_nodes`` deprecated).
_MATERIALS_ALWAYS_USE_NODES = bpy.app.version >= (5, 0, 0)


def sequencer_scene(context):
    """Return the scene whose strips the Video Sequencer edits, or None.

    Blender 5.0+: ``context.sequencer_scene``, which is None when the
    workspace has no sequencer scene. Before 5.0 the sequencer always edits
    ``context.scene``.
    """
    if _HAS_SEQUENCER_SCENE:
        return context.sequencer_scene
    return context.scene


def movie_position_rounding():
    """How a movie strip turns a fractional footage position into the frame it shows.

    A movie strip whose file rate differs from the scene's (added in the
    interface, with "Adjust Playback Rate") is at fractional footage positions
    on most scene frames. Observed by rendering such strips (16 fps footage in
    24, 25, 30 and 32 fps scenes) against the footage's own frames:

    * 'ROUND' (Blender 4.5): the nearest frame, halves up;
    * 'FLOOR' (Blender 5.0): the frame at or before the position. (5.0 decodes
      fractional positions through a seek that can land one frame later, on a
      few frames and depending on the order frames are asked for; in playback
      order at 24, 30 and 32 fps it is exactly the frame before.)

    Whole positions (movies at the scene's rate, image strips) show exactly
    that frame in both.
    """
    if _MOVIE_POSITIONS_TRUNCATED:
        return 'FLOOR'
    return 'ROUND'


def material_node_tree(material):
    """The shader node tree of ``material``, making the material use nodes first where needed.

    Blender 5.0+: every material uses nodes (``Material.use_nodes`` is
    deprecated, to be removed in 6.0). Before 5.0 a new material has no node
    tree until ``use_nodes`` is set.
    """
    if _MATERIALS_ALWAYS_USE_NODES:
        return material.node_tree
    material.use_nodes = True
    return material.node_tree


# --- Sources: strips, render output and engines (used by ``sources``).
# Handled without a function: ``Action.fcurves`` is gone in 5.0; F-curves are
# read through ``bpy_extras.anim_utils.action_get_channelbag_for_slot`` (4.4+)
# everywhere.

# Blender 5.1 renamed the strip timing fields (the old names stay, deprecated,
# until 6.0): frame_start -> content_start, frame_duration -> content_duration,
# frame_final_start/end -> left_handle/right_handle.
_HAS_STRIP_HANDLE_NAMES = bpy.app.version >= (5, 1, 0)
# Blender 5.0 renamed EEVEE Next back to EEVEE.
_EEVEE_ENGINE = 'BLENDER_EEVEE' if bpy.app.version >= (5, 0, 0) else 'BLENDER_EEVEE_NEXT'
# Blender 5.0 groups output formats by ImageFormatSettings.media_type.
_HAS_MEDIA_TYPE = bpy.app.version >= (5, 0, 0)
# Blender 5.0: StripsTopLevel.new_effect takes the length instead of frame_end.
_EFFECT_TAKES_LENGTH = bpy.app.version >= (5, 0, 0)
# Blender 5.0 replaces StripModifier.mute with StripModifier.enable.
_HAS_MODIFIER_ENABLE = bpy.app.version >= (5, 0, 0)


def strip_content_start(strip):
    """Timeline frame (float) where the strip's content begins.

    Blender 5.1+: ``Strip.content_start``; before: ``Strip.frame_start``.
    """
    if _HAS_STRIP_HANDLE_NAMES:
        return strip.content_start
    return strip.frame_start


def strip_content_duration(strip):
    """Length of the strip's content in timeline frames, without the handles.

    Blender 5.1+: ``Strip.content_duration``; before: ``Strip.frame_duration``.
    """
    if _HAS_STRIP_HANDLE_NAMES:
        return strip.content_duration
    return strip.frame_duration


def strip_handles(strip):
    """``(left, right)``: the first visible timeline frame and the first frame after it.

    Blender 5.1+: ``Strip.left_handle`` / ``right_handle``; before:
    ``Strip.frame_final_start`` / ``frame_final_end``.
    """
    if _HAS_STRIP_HANDLE_NAMES:
        return strip.left_handle, strip.right_handle
    return strip.frame_final_start, strip.frame_final_end


def set_strip_handles(strip, left, right):
    """Trim ``strip`` to show timeline frames [left, right), its content staying where it is.

    Blender 5.1+: ``Strip.left_handle`` / ``right_handle``; before:
    ``Strip.frame_final_start`` / ``frame_final_end``.
    """
    if _HAS_STRIP_HANDLE_NAMES:
        strip.left_handle, strip.right_handle = left, right
    else:
        strip.frame_final_start, strip.frame_final_end = left, right


def new_effect_strip(strips, name, kind, channel, start, end, **inputs):
    """An effect strip over timeline frames [start, end) (``input1``/``input2`` as ``inputs``).

    Blender 5.0+: ``new_effect(..., length=)``; before: ``new_effect(..., frame_end=)``.
    """
    span = {"length": end - start} if _EFFECT_TAKES_LENGTH else {"frame_end": end}
    return strips.new_effect(name, kind, channel, frame_start=start, **span, **inputs)


def strip_modifier_enabled(modifier):
    """Whether a strip modifier takes part in rendering.

    Blender 5.0+: ``StripModifier.enable``; before: ``not StripModifier.mute``.
    """
    if _HAS_MODIFIER_ENABLE:
        return modifier.enable
    return not modifier.mute


def eevee_engine():
    """The render engine identifier of EEVEE.

    Blender 5.0+: ``'BLENDER_EEVEE'``; 4.2 to 4.5: ``'BLENDER_EEVEE_NEXT'``.
    """
    return _EEVEE_ENGINE


def set_image_output(image_settings, file_format):
    """Make ``image_settings`` write still images in ``file_format`` (e.g. ``'PNG'``).

    Blender 5.0+ only offers the image formats while ``media_type`` is
    ``'IMAGE'`` (a scene set to write a video refuses ``'PNG'`` otherwise);
    before 5.0 every format is in one list.
    """
    if _HAS_MEDIA_TYPE:
        image_settings.media_type = 'IMAGE'
    image_settings.file_format = file_format
