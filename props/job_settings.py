# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-scene job settings and the job history, saved in the .blend (``Scene.scail2_job``).

The mode (animate/replace) is not here: it lives with the inputs
(``Scene.scail2_sources.mode``), because the masks are exported for one mode.
"""

__all__ = (
    "SAMPLERS",
    "SCAIL2_JobHistoryItem",
    "SCAIL2_TakeNote",
    "SCAIL2_SceneJob",
    "classes",
    "get_job_settings",
)

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup

from .. import protocol
from .import_options import ImportOptions

SCENE_PROPERTY = "scail2_job"
# The frame limit's untouched values (Blender's default scene range).
FRAME_START, FRAME_END = 1, 250
MAX_SEED = protocol.PICKED_SEED_LIMIT - 1  # the Seed field is 32-bit; picked seeds fit it

# The Sampler choice -> protocol.SAMPLERS (enum identifiers stay plain words).
SAMPLERS = {'UNIPC': "unipc", 'DPMPP': "dpm++", 'EULER': "euler"}
SAMPLER_ITEMS = (
    ('UNIPC', "UniPC", "The official solver (both presets use it)"),
    ('DPMPP', "DPM++", "The official alternative: DPM-Solver++ (2nd order), as in the SCAIL-2 release"),
    ('EULER', "Euler", "Flow-matching Euler, as the paper's sampler and ComfyUI's SCAIL-2 template"),
)

def _start_limit_at_scene_range(settings, context):
    """Turning the frame limit on for the first time starts it at the scene's range, not at 1-250."""
    scene = settings.id_data
    if settings.use_frame_range and (settings.frame_start, settings.frame_end) == (FRAME_START, FRAME_END):
        settings.frame_start, settings.frame_end = scene.frame_start, scene.frame_end


def short_side(settings):
    """The short side in pixels of the frames a job with ``settings`` makes (the explicit size, or the tier's)."""
    if settings.width and settings.height:
        return min(settings.width, settings.height)
    return protocol.RESOLUTIONS[settings.resolution][0]


def preset_sampling(settings):
    """``{"steps", "guidance", "shift"}`` the chosen preset uses at the chosen size (``protocol.preset_sampling``)."""
    return protocol.preset_sampling(settings.preset, short_side(settings))


def _start_override_at_preset(settings, _context):
    """Turning the override on starts each value at what the preset was using, not at a stale number."""
    if settings.use_custom_sampling:
        values = preset_sampling(settings)
        settings.steps, settings.guidance, settings.shift = values["steps"], values["guidance"], values["shift"]


def _is_camera(_self, obj):
    return obj.type == 'CAMERA'


# The take statuses (protocol.TAKE_STATUSES) as enum identifiers, both ways.
TAKE_STATUS_ITEMS = (
    ('NEW', "New", "Not reviewed yet", 'DOT', 1),
    ('APPROVED', "Approved", "The take kept for the shot: the one in the layout", 'CHECKMARK', 2),
    ('REJECTED', "Rejected", "Not used (it stays in the history and on disk)", 'X', 4),
    ('ON_HOLD', "On Hold", "Kept aside for a later decision", 'PAUSE', 8),
)
TAKE_STATUS = {'NEW': "new", 'APPROVED': "approved", 'REJECTED': "rejected", 'ON_HOLD': "on_hold"}
TAKE_STATUS_ENUM = {value: key for key, value in TAKE_STATUS.items()}

# Set by runtime.review: writes a take's review.json after the artist changes it in the panel.
# (A hook, so these property definitions need not import the runtime layer above them.)
review_saver = None


def _review_changed(item, _context):
    if review_saver is not None:
        review_saver(item)


def _get_label(item):
    return item.name


def _set_label(item, value):
    item.name = value
    _review_changed(item, None)


_compare_choices = []  # Blender keeps no copy of a dynamic enum's strings: they must outlive the call


def _compare_items(settings, _context):
    _compare_choices[:] = [('DRIVING', "Driving Footage", "The footage the take was made from", 'SEQUENCE', 0)]
    for number, item in enumerate(settings.history, 1):
        text = "v{:03d} {:s}".format(item.version, item.name)
        _compare_choices.append((item.job_id or "take-{:d}".format(number), text, item.created, 'RENDER_RESULT', number))
    return _compare_choices


class SCAIL2_TakeNote(PropertyGroup):
    """A note on one frame of a take (shown as a timeline marker)"""

    frame: IntProperty(name="Frame", description="The take's own frame (0 = its first)", min=0)
    text: StringProperty(name="Note")
    author: StringProperty(name="Author")
    time: StringProperty(name="Written", description="When the note was written (UTC)")


class SCAIL2_JobHistoryItem(PropertyGroup):
    """A finished SCAIL-2 job of this scene"""

    # ``name`` (from PropertyGroup) holds the label shown in the list.
    job_id: StringProperty(name="Job", description="The job's identifier")
    job_dir: StringProperty(name="Job Folder", subtype='DIR_PATH')
    status: EnumProperty(
        name="Status",
        items=(
            ('IMPORTED', "Imported", "Finished and brought into the scene"),
            ('DONE', "Finished", "Finished; not imported (see the note)"),
        ),
        default='DONE',
    )
    note: StringProperty(name="Note", description="Why the job was not imported, if it was not")
    seed: IntProperty(name="Seed", description="The seed the job used", min=0)
    settings_json: StringProperty(
        name="Settings",
        description="Everything the job was run with (job specification and import settings), as JSON",
    )
    thumbnail: StringProperty(name="Thumbnail", description="The job's first frame", subtype='FILE_PATH')
    manifest: StringProperty(name="Manifest", description="The job's manifest.json", subtype='FILE_PATH')
    frames: IntProperty(name="Frames", description="Frames the job wrote")
    created: StringProperty(name="Finished", description="When the job finished (local time)")
    # The take's review (kept in review.json beside the manifest too, see runtime.review).
    shot: StringProperty(name="Shot", description="The take's shot: its driving footage and frame range")
    version: IntProperty(name="Version", description="The take's number within its shot (v001 = 1)", min=0)
    take_status: EnumProperty(name="Status", description="The review's verdict on this take",
                              items=TAKE_STATUS_ITEMS, default='NEW', update=_review_changed)
    rating: IntProperty(name="Rating", description="Stars, 0 (not rated) to 5", min=0,
                        max=protocol.MAX_RATING, update=_review_changed)
    label: StringProperty(name="Label", description="The take's name in the history and the review (the entry's "
                          "name; renaming it here writes review.json)", get=_get_label, set=_set_label)
    derived_from: StringProperty(name="Derived From",
                                 description="The take this one redid on a changed input (its job)")
    notes: CollectionProperty(type=SCAIL2_TakeNote)


class SCAIL2_SceneJob(ImportOptions, PropertyGroup):
    """How this scene's SCAIL-2 jobs are run and brought back, and the jobs run so far"""

    prompt: StringProperty(
        name="Prompt",
        description="Optional text describing the result (the reference and the motion matter most)",
    )
    negative_prompt: StringProperty(
        name="Negative Prompt",
        description="What the result should not look like (empty: the model's default)",
    )
    preset: EnumProperty(
        name="Preset",
        items=(
            ('quality', "Quality", "The official settings: 40 steps with guidance; slow"),
            ('fast', "Fast", "8 steps without guidance; needs the step-distillation LoRA for sharp results"),
        ),
        default='quality',
    )
    resolution: EnumProperty(
        name="Resolution",
        items=(
            ('512p', "512p", "512 pixels on the short side: faster, less memory"),
            ('704p', "704p", "704 pixels on the short side: sharper, needs more memory and time"),
        ),
        default='512p',
    )
    width: IntProperty(
        name="Width",
        description="Exact output width in pixels, a multiple of 32 (0: from the resolution and the reference)",
        min=0, max=protocol.MAX_JOB_SIDE, step=32, default=0, subtype='PIXEL',
    )
    height: IntProperty(
        name="Height",
        description="Exact output height in pixels, a multiple of 32 (0: from the resolution and the reference)",
        min=0, max=protocol.MAX_JOB_SIDE, step=32, default=0, subtype='PIXEL',
    )
    use_custom_sampling: BoolProperty(
        name="Override Preset",
        description="Set the steps, guidance and shift yourself instead of taking the preset's",
        default=False,
        update=_start_override_at_preset,
    )
    steps: IntProperty(
        name="Steps",
        description="Denoising steps: more is slower and finer (the quality preset uses 40, fast 8)",
        min=1, soft_max=100, max=1000, default=40,
    )
    guidance: FloatProperty(
        name="Guidance",
        description="How strongly the prompt and reference steer the result; 1 turns guidance off and halves "
                    "the time of a step (the quality preset uses 5, fast 1)",
        min=protocol.GUIDANCE_RANGE[0], soft_max=10.0, max=protocol.GUIDANCE_RANGE[1], default=5.0, precision=2,
    )
    shift: FloatProperty(
        name="Shift",
        description="Where the steps are spent: higher spends more on the overall motion, lower on detail "
                    "(the quality preset uses 3 at 512p and 5 at 704p, fast 1)",
        min=protocol.SHIFT_RANGE[0], soft_max=12.0, max=protocol.SHIFT_RANGE[1], default=3.0, precision=2,
    )
    sampler: EnumProperty(
        name="Sampler",
        description="The solver that denoises the frames",
        items=SAMPLER_ITEMS,
        default='UNIPC',
    )
    seed: IntProperty(
        name="Seed",
        description="Starting noise: the same seed and settings give the same result. Unlocked, each run picks "
                    "a new seed and this field shows the one the latest take used",
        min=0, max=MAX_SEED, default=0,
    )
    use_seed_lock: BoolProperty(
        name="Lock Seed",
        description="Use this seed for every run; when unlocked, each run picks a new seed (kept in the history)",
        default=False,
    )
    use_frame_range: BoolProperty(
        name="Limit Frames",
        description="Generate only part of the exported driving footage",
        default=False,
        update=_start_limit_at_scene_range,
    )
    frame_start: IntProperty(name="Start", description="First scene frame to generate", default=FRAME_START)
    frame_end: IntProperty(name="End", description="Last scene frame to generate", default=FRAME_END)
    use_matte: BoolProperty(
        name="Matte",
        description="Also cut the generated characters out: RGBA frames the strip and the camera plane "
                    "show over what is behind them",
        default=False,
    )
    # form, distance and the plane's options: ImportOptions (shared with Import Result).
    camera: PointerProperty(
        name="Camera",
        description="Camera the plane is parented to (empty: the scene's camera)",
        type=bpy.types.Object, poll=_is_camera,
    )
    history: CollectionProperty(type=SCAIL2_JobHistoryItem)
    active_history_index: IntProperty(name="Active Job", min=0)
    history_filter: EnumProperty(
        name="Show",
        description="Show only the takes of these statuses (none chosen: all)",
        items=TAKE_STATUS_ITEMS,
        options={'ENUM_FLAG'},
        default=set(),
    )
    # Wedge: one click, several takes of the shot.
    wedge_kind: EnumProperty(
        name="Vary",
        description="What the takes of a wedge try out",
        items=(
            ('SEED', "Seeds", "The same settings with consecutive seeds from the Seed field"),
            ('REFERENCE', "References", "One take per reference still (paths separated by ;)"),
            ('GUIDANCE', "Guidance", "One take per guidance value"),
            ('SAMPLER', "Sampler", "One take per solver (unipc, dpm++, euler)"),
            ('LORA', "LoRA Strength", "One take per strength of the job's LoRAs"),
        ),
        default='SEED',
    )
    wedge_count: IntProperty(name="Takes", description="How many seeds to try", min=1, max=32, default=3)
    wedge_values: StringProperty(
        name="Values",
        description="The values to try, separated by commas (reference stills: paths separated by ;)",
    )
    note_text: StringProperty(name="Note", description="The note to put on the current frame of the take")
    compare_with: EnumProperty(
        name="Compare With",
        description="The other side of the compare: another take, or the driving footage",
        items=_compare_items,
    )
    compare_mode: EnumProperty(
        name="Compare",
        items=(
            ('WIPE', "A/B Wipe", "Take A wiped over take B (Blender's Wipe effect strip)"),
            ('SIDE', "Side by Side", "A on the left, B on the right"),
        ),
        default='WIPE',
    )

    @classmethod
    def register(cls):
        setattr(bpy.types.Scene, SCENE_PROPERTY, PointerProperty(type=cls))

    @classmethod
    def unregister(cls):
        delattr(bpy.types.Scene, SCENE_PROPERTY)


def get_job_settings(scene):
    return getattr(scene, SCENE_PROPERTY)


classes = (
    SCAIL2_TakeNote,
    SCAIL2_JobHistoryItem,
    SCAIL2_SceneJob,
)
