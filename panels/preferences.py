# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's preferences: what they store (where the backend lives, how it runs) and how they are drawn.

The rest of the add-on reads them through ``preferences.py`` (``get_preferences``
and the ``resolved_*`` paths).
"""

__all__ = (
    "SCAIL2_AddonPreferences",
    "apply_machine_defaults",
    "classes",
)

import textwrap

import bpy

from bpy.props import (
    BoolProperty,
    EnumProperty,
    IntProperty,
    StringProperty,
)
from bpy.types import AddonPreferences

from ..core import checks
from ..core import setup as backend_setup
from ..core import weights_download
from ..core.job import parse_address
from ..runtime import session, setup
from ..runtime import weights
from .common import label_wrapped
from ..preferences import ADDON_ID, effective_output_dir, resolved_python, resolved_weights_dir


class SCAIL2_AddonPreferences(AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python",
        description=(
            "Python program of the SCAIL-2 backend environment, the one with PyTorch installed "
            "(for example .venvs/backend/bin/python, or python.exe on Windows)"
        ),
        subtype='FILE_PATH',
    )
    weights_dir: StringProperty(
        name="Weights Folder",
        description="Folder holding the downloaded SCAIL-2 model weights",
        subtype='DIR_PATH',
    )
    sam3_weights_dir: StringProperty(
        name="SAM 3 Weights",
        description="Folder holding facebook/sam3 for Auto Masks and Matte "
                    "(empty: the Hugging Face cache of the backend's environment)",
        subtype='DIR_PATH',
    )
    sam2_weights_dir: StringProperty(
        name="SAM 2 Weights",
        description="Folder holding facebook/sam2.1-hiera-large, for subjects marked by hand "
                    "(empty: the Hugging Face cache of the backend's environment)",
        subtype='DIR_PATH',
    )
    weights_plan: EnumProperty(
        name="Download",
        description="Which weights Get Weights downloads",
        items=(
            ('AUTO', "Best for This GPU", "Chosen from the graphics card's memory (or the GPU Memory below)"),
            ('FP16', "Full Precision (fp16)", "The full model, 32.8 GB: best quality, needs a 48 GB or larger GPU"),
            ('FP8', "FP8 (fp8_scaled)", "Half the size, 17.7 GB, nearly the same quality: 24 GB GPUs"),
            ('GGUF_Q4', "Small (GGUF Q4_K_M)", "About 10.9 GB, somewhat lower quality: 16 GB GPUs"),
        ),
        default='AUTO',
    )
    weights_gpu_memory: IntProperty(
        name="GPU Memory (GB)",
        description="Plan for a graphics card with this much memory (0: the one in this computer), for example "
                    "when the weights are for a remote worker",
        min=0, max=1024, default=0,
    )
    weights_with_dpo: BoolProperty(
        name="DPO LoRA",
        description="Also download the release's DPO LoRA (1.2 GB), which improves hands and faces",
        default=False,
    )
    weights_with_sam3: BoolProperty(
        name="SAM 3",
        description="Also download facebook/sam3 for Auto Masks and Matte (gated: request access on its Hugging "
                    "Face page first, and enter your token below)",
        default=False,
    )
    hf_token: StringProperty(
        name="Hugging Face Token",
        description="Your Hugging Face access token, for repositories that need one (SAM 3). Kept in Blender's "
                    "preferences, never in .blend files",
        subtype='PASSWORD',
    )
    output_dir: StringProperty(
        name="Output Folder",
        description=(
            "Folder where generated frames and videos are saved. "
            "Leave empty to use the add-on's own folder in your Blender user directory"
        ),
        subtype='DIR_PATH',
    )
    worker_location: EnumProperty(
        name="Worker",
        description="Where the SCAIL-2 model runs",
        items=(
            ('LOCAL', "This Computer", "Start the backend here, with the backend Python below"),
            ('REMOTE', "Remote Worker",
             "Send jobs to a worker started elsewhere with `python -m backend serve --listen HOST:PORT`; "
             "off this computer the connection is encrypted and your files are sent over it"),
        ),
        default='LOCAL',
    )
    remote_address: StringProperty(
        name="Address",
        description="The remote worker's HOST:PORT, for example 192.168.1.20:7860",
    )
    remote_token: StringProperty(
        name="Token",
        description="Your own token for the remote worker (a shared worker gives each artist one), or the secret "
                    "it was started with (--token); kept in the preferences, never in the .blend",
        subtype='PASSWORD',
    )
    remote_fingerprint: StringProperty(
        name="Certificate",
        description="The SHA-256 fingerprint the remote worker printed when it started; the add-on talks only to "
                    "a worker whose certificate has it",
    )
    remote_seen_fingerprint: StringProperty(
        name="Shown",
        description="The fingerprint the worker's certificate has now: compare it with the one the worker printed",
        options={'SKIP_SAVE'},
    )
    remote_certificate_note: StringProperty(options={'SKIP_SAVE'})
    compile_model: BoolProperty(
        name="Compile Model",
        description="Compile the model's blocks for faster steps. The first job at a new size waits while "
                    "they compile; the compiled code is kept on disk for later jobs",
        default=False,
    )
    resume_automatically: BoolProperty(
        name="Resume Automatically",
        description="When the worker stops in the middle of a generation (killed, out of memory), start it again "
                    "once and continue the job in its folder, keeping the segments already made",
        default=False,
    )
    model_source: EnumProperty(
        name="Model",
        description="Which model the worker runs",
        items=(
            ('WEIGHTS', "SCAIL-2 Weights", "The SCAIL-2 model from the weights folder"),
            ('TINY', "Test Model",
             "A tiny model with random weights: the frames are noise. Checks the whole setup in seconds, "
             "without the weights or a GPU"),
        ),
        default='WEIGHTS',
    )
    device: EnumProperty(
        name="Device",
        description="Hardware that runs the model",
        items=(
            ('CUDA', "NVIDIA GPU (CUDA)", "Run on the graphics card; needed for practical speed"),
            ('CPU', "CPU", "Run on the processor; very slow, for testing only"),
        ),
        default='CUDA',
    )
    memory_mode: EnumProperty(
        name="Memory Mode",
        description="Trade speed for graphics memory when the model does not fit on the GPU",
        items=(
            ('FULL_BF16', "Full (bf16)",
             "Keep the whole model on the GPU in bf16: fastest, needs the most graphics memory"),
            ('FP8_STORAGE', "FP8 Storage",
             "Store weights in fp8 and compute in bf16: about half the graphics memory, "
             "slightly lower quality"),
            ('FP8_COMPUTE', "FP8 Compute",
             "Store weights in fp8 and multiply in fp8 too (RTX 40 series, Ada and Hopper GPUs): "
             "about half the graphics memory and faster steps, slightly lower quality"),
            ('GROUP_OFFLOAD', "Group Offload",
             "Keep weights in system memory and move them to the GPU group by group: "
             "least graphics memory, slowest"),
        ),
        default='FP8_STORAGE',
    )

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False

        col = layout.column(heading="Worker")
        col.prop(self, "worker_location", expand=True)
        if self.worker_location == 'REMOTE':
            col.prop(self, "remote_address")
            try:
                refusal = session.remote_refusal(*parse_address(self.remote_address))
            except ValueError:  # said when it is used
                refusal = None
            if refusal:
                label_wrapped(col, context, refusal, icon='ERROR')
            col.prop(self, "remote_token")
            row = col.row(align=True)
            row.prop(self, "remote_fingerprint")
            row.operator("scail2.show_worker_certificate", text="", icon='LOCKED')
            if self.remote_seen_fingerprint:
                box = col.box()
                box.label(text="The worker shows this certificate; compare it with the one it printed:")
                box.label(text=self.remote_seen_fingerprint)
                box.operator("scail2.trust_worker_certificate", icon='CHECKMARK')
            elif self.remote_certificate_note:
                col.label(text=self.remote_certificate_note, icon='INFO')

        col = layout.column(heading="Backend")
        col.prop(self, "python_path")
        row = col.row(align=True)
        row.operator("scail2.check_backend", icon='CHECKMARK')
        row.operator("scail2.setup_backend", icon='CONSOLE')
        result = setup.last_check(resolved_python(self))
        if result is not None:
            col.label(text=result.message, icon='CHECKMARK' if result.ok else 'ERROR', translate=False)
        _draw_setup(col, context, setup.setup_state())

        col = layout.column(heading="Model")
        col.prop(self, "model_source")
        for hint in first_run_hints(self, setup.nvidia_driver_found()):
            col.label(text=hint, icon='INFO')
        col.prop(self, "weights_dir")
        col.operator("scail2.check_weights", icon='VIEWZOOM')
        _draw_get_weights(col, self)
        col.prop(self, "sam3_weights_dir")
        col.prop(self, "sam2_weights_dir")
        _draw_doctor(col, context, setup.doctor_state(resolved_python(self), resolved_weights_dir(self)))

        col = layout.column(heading="Output")
        col.prop(self, "output_dir")
        if not self.output_dir.strip():
            col.label(text="Default: " + effective_output_dir(self), icon='INFO', translate=False)

        col = layout.column(heading="Performance")
        col.prop(self, "device")
        if self.device == 'CPU':
            # Memory Mode chooses how the model sits in graphics memory: nothing of it applies on the CPU.
            row = col.row()
            row.active = False
            row.label(text="Memory Mode: not used on the CPU")
        else:
            col.prop(self, "memory_mode")
        col.prop(self, "compile_model")
        col.prop(self, "resume_automatically")
        col.operator("scail2.stop_worker", icon='CANCEL')


def apply_machine_defaults(prefs, nvidia_driver):
    """On a machine without an NVIDIA GPU a fresh install runs on the CPU: Device defaults to what is here.

    Only a Device the artist never set is changed (``is_property_set``), so a saved choice stays.
    """
    if not nvidia_driver and not prefs.is_property_set("device"):
        prefs.device = 'CPU'


def first_run_hints(prefs, nvidia_driver):
    """What a fresh install needs said: the SCAIL-2 weights and an NVIDIA GPU are the defaults."""
    if prefs.model_source != 'WEIGHTS' or prefs.worker_location == 'REMOTE':
        return []
    hints = []
    if not prefs.weights_dir.strip():
        hints.append("No weights folder yet: press Get Weights below, or pick Test Model to try the add-on")
    if prefs.device == 'CUDA' and not nvidia_driver:
        hints.append("No NVIDIA GPU found here: use a remote worker, or the Test Model on the CPU")
    return hints


# Icons per run status of the setup and the weights check.
_RUN_ICONS = {"running": 'SORTTIME', "done": 'CHECKMARK', "failed": 'ERROR', "cancelled": 'CANCEL'}
SETUP_LOG_LINES = 8
DOCTOR_LINE_CHARS = 110


def _draw_get_weights(layout, prefs):
    box = layout.box()
    col = box.column()
    col.prop(prefs, "weights_plan")
    col.prop(prefs, "weights_gpu_memory")
    row = col.row(heading="Also")
    row.prop(prefs, "weights_with_dpo")
    row.prop(prefs, "weights_with_sam3")
    col.prop(prefs, "hf_token")
    row = col.row(align=True)
    row.operator("scail2.show_weights_plan", icon='INFO')
    row.operator("scail2.get_weights", icon='IMPORT')
    if not bpy.app.online_access:
        col.label(text=weights_download.ONLINE_ACCESS_OFF, icon='ERROR')
    state = weights.latest_state()
    if state is None:
        return
    run = state["run"]
    view = weights_download.DownloadView(run.lines())
    lines = col.column(align=True)
    lines.scale_y = 0.8
    for i, line in enumerate(view.plan_lines()):
        for j, part in enumerate(textwrap.wrap(line, DOCTOR_LINE_CHARS) or [""]):
            lines.label(text=part, icon='INFO' if i == 0 and j == 0 else 'BLANK1', translate=False)
    if weights.plan_running():
        col.label(text="Planning\u2026", icon='SORTTIME')
    if state is weights.download_state():
        _draw_download(col, run, view)
    elif run.finished and run.status != "done":
        col.label(text=run.message, icon='ERROR', translate=False)


def _draw_download(col, run, view):
    if run.status == "running":
        text = weights_download.progress_text(view.progress) if view.progress else "Asking Hugging Face\u2026"
        col.progress(factor=view.factor, type='BAR', text=text)
        col.operator("scail2.cancel_get_weights", icon='CANCEL')
    elif view.end is not None:
        icon = {"done": 'CHECKMARK', "cancelled": 'CANCEL'}.get(view.end.event, 'ERROR')
        for i, part in enumerate(textwrap.wrap(view.end.message, DOCTOR_LINE_CHARS) or [""]):
            col.label(text=part, icon=icon if i == 0 else 'BLANK1', translate=False)
    else:
        col.label(text=run.message, icon=_RUN_ICONS[run.status], translate=False)


def _draw_setup(layout, context, state):
    if state is None:
        return
    run = state["run"]
    box = layout.box()
    col = box.column(align=True)
    col.label(text=state["cuda"], icon='INFO', translate=False)
    if run.status == "running":
        col.label(text="Step {:d}/{:d}: {:s}".format(run.step_index + 1, len(run.steps), run.message),
                  icon=_RUN_ICONS["running"], translate=False)
        col.operator("scail2.cancel_setup_backend", icon='CANCEL')
    elif run.status == "done":
        col.label(text="Backend set up: " + state["python"], icon='CHECKMARK', translate=False)
    else:
        # Wrapped, never cut: the end of a failure says what to do.
        label_wrapped(col, context, run.message, _RUN_ICONS[run.status])
    lines = box.column(align=True)
    lines.scale_y = 0.7
    for line in run.lines(SETUP_LOG_LINES):
        lines.label(text=line[-140:], translate=False)


def _draw_doctor(layout, context, state):
    if state is None:
        return
    run = state["run"]
    box = layout.box()
    col = box.column(align=True)
    if run.status == "running":
        col.label(text="Checking the weights\u2026", icon='SORTTIME')
        return
    if run.status != "done":
        label_wrapped(col, context, run.message, _RUN_ICONS[run.status])
    for part in checks.weights_components(run.lines()):
        icon = 'CHECKMARK' if part.state == 'OK' else 'ERROR'
        for i, text in enumerate(textwrap.wrap("{:s}: {:s}".format(part.label.capitalize(), part.value),
                                               DOCTOR_LINE_CHARS) or [""]):
            col.label(text=text, icon=icon if i == 0 else 'BLANK1', translate=False)
        for note in part.notes:
            col.label(text=note[:DOCTOR_LINE_CHARS * 2], icon='BLANK1', translate=False)
    for line in backend_setup.doctor_findings(run.lines()):
        icon = 'ERROR' if "MISSING" in line else 'NONE'
        for i, part in enumerate(textwrap.wrap(line, DOCTOR_LINE_CHARS) or [""]):
            col.label(text=part, icon=icon if i == 0 else 'BLANK1', translate=False)


classes = (
    SCAIL2_AddonPreferences,
)
