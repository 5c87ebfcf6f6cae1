"""`python -m backend ...`: generate, check-inputs, convert, demo, serve, tokens, jobs, doctor, download, masks,
matte, score, report, farm.

What each command does; what it accepts is `options`' (and `loaders.convert`'s for `convert`).
`COMMANDS` lists them in the order `--help` shows them. Bad input is one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from protocol import JobSpec, ProtocolError

from . import __version__
from .errors import UserError
from .farm.commands import add_farm_arguments
from .loaders.convert import add_convert_arguments, run_convert
from .loaders.errors import first_line
from .options import (
    add_check_inputs_arguments,
    add_demo_arguments,
    add_doctor_arguments,
    add_generate_arguments,
    add_masks_arguments,
    add_matte_arguments,
    add_serve_arguments,
    memory_settings,
    model_name,
)
from .parallel.launch import add_gpus_argument, launch, wants_launch
from .progress_line import ProgressLine
from .review.commands import add_report_arguments, add_score_arguments
from .service.job_commands import add_jobs_arguments, run_jobs  # no torch: quick commands
from .service.token_commands import add_tokens_arguments, run_tokens
from .stop_signals import StopSignals
from .tools.doctor import run_doctor

EXIT_BAD_INPUT = 2


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    # --max-input-pixels is new in options (the input limits); the guard keeps older parsers working.
    limits = {"max_input_pixels": args.max_input_pixels} if hasattr(args, "max_input_pixels") else {}
    return JobSpec(
        driving=args.driving, reference=args.reference, mode=args.mode,
        driving_mask=args.driving_mask, reference_mask=args.reference_mask,
        extra_references=args.extra_reference, extra_reference_masks=args.extra_reference_mask,
        prompt=args.prompt, negative_prompt=args.negative_prompt, preset=args.preset,
        resolution=args.resolution or ("704p" if args.pose_driven else "512p"),
        height=args.height, width=args.width, steps=args.steps, guidance=args.guidance, shift=args.shift,
        sampler=args.sampler, seed=args.seed, model_fps=args.fps, driving_fps=args.driving_fps,
        frame_start=args.start, frame_end=args.end, color_match=not args.no_color_match, loras=args.lora,
        pose_driven=args.pose_driven, matte=args.matte, matte_prompt=args.matte_prompt, **limits,
    )


def run_generate(args: argparse.Namespace) -> int:
    """Check everything cheap (inputs, LoRA files, the output folder) before the model loads, then generate."""
    derived_from = ""
    try:
        if getattr(args, "recipe", None):
            from .review.commands import recipe_job

            # the recipe's settings and seed, its inputs' SHA-256 checked (one line when one changed)
            spec, args.out, derived_from = recipe_job(args)
        elif not (args.driving and args.reference and args.out):
            return _bad_input(ValueError("--driving, --reference and --out are needed (or --recipe PATH)"))
        else:
            spec = spec_from_args(args).validate()  # the settings alone: refused before torch is even imported
    except ValueError as exc:  # ProtocolError, RecipeError
        return _bad_input(exc)
    from .loaders.devices import check_memory_settings, resolve_device
    from .loaders.lora import lora_specs
    from .pipeline.inputs import prepare_inputs
    from .pipeline.job_folder import FolderClaim, check_folder
    from .pipeline.preflight import check_lora_files

    try:
        check_memory_settings(memory_settings(args), resolve_device(args.device))
    except ValueError as exc:
        return _bad_input(exc)
    progress = ProgressLine(_sampling_step)
    try:
        inputs = prepare_inputs(spec)
        check_lora_files(lora_specs(inputs.spec.loras))
        check_folder(args.out, inputs.spec.to_dict())
        refused = _run_input_checks(inputs, args.strict)
    except UserError as exc:
        return _bad_input(exc)
    if refused:
        return _bad_input(refused)
    claim = FolderClaim(args.out)
    try:
        claim.claim()  # a second run on this folder is refused here, before any model time
        status = _generate_in(claim, inputs, args, progress)
        if status == 0 and derived_from:
            from .review.commands import mark_derived

            mark_derived(args.out, derived_from)
            print(f"note: a new take from changed inputs, derived from take {derived_from}")
        return status
    except UserError as exc:  # `errors`: your input, decided as the worker decides it
        return _bad_input(exc, progress)
    finally:
        claim.release()


def _run_input_checks(inputs, strict: bool) -> str | None:
    """The input checks, printed (what is not ok) and kept for the manifest; the line that refuses the job
    under --strict, else None. A check that breaks is a note, never a refusal: the checks advise."""
    from .input_checks.run import refusal, run_checks
    from .pipeline.inputs import InputError

    try:
        report = run_checks(inputs, strict=strict)
    except InputError:
        raise
    except Exception as exc:  # an advisory step of ours must not stop a job it cannot judge
        print(f"note: the input checks could not run: {first_line(exc)}")
        return None
    inputs.input_checks = report.to_dict()
    for check in report.checks:
        if check.verdict != "ok":
            print(f"{check.verdict}: {check.message}")
    return refusal(report) if strict else None


def run_check_inputs(args: argparse.Namespace) -> int:
    """Check a job's inputs (the files, then the footage, masks and reference) without running it.

    Exit 0 when nothing fails (nothing warns, with --strict), 1 when something does, 2 for bad input."""
    import json

    try:
        spec = spec_from_args(args).validate()
    except ProtocolError as exc:
        return _bad_input(exc)
    from .input_checks.run import check_inputs, refusal, report_lines
    from .pipeline.inputs import InputError

    try:
        report = check_inputs(spec, strict=args.strict)
    except InputError as exc:
        return _bad_input(exc)
    print(json.dumps(report.to_dict()) if args.json else "\n".join(report_lines(report)))
    return 1 if refusal(report) else 0


def _generate_in(claim, inputs, args: argparse.Namespace, progress: ProgressLine) -> int:
    """The model loaded and the job run in the claimed folder; raises the errors run_generate reports."""
    from .loaders.components import load_components, model_files_read
    from .loaders.devices import memory_options, resolve_device
    from .loaders.lora import lora_specs
    from .pipeline.generate import NOISE_LABEL, GenerationJob
    from .pipeline.sampler import Cancelled
    from .review.finish import review_finished_take
    from .segmentation.run import Segmenters

    device = resolve_device(args.device)
    memory = memory_options(memory_settings(args), device)  # checked in run_generate
    model = model_name(args)
    segmenters = Segmenters(tiny=model == "tiny", sam3_weights=args.sam3_weights, device=device)
    if inputs.spec.matte:
        segmenters.check()
    with model_files_read():  # a corrupt checkpoint is the user's input here and in the worker
        components = load_components(model, device, memory, loras=lora_specs(inputs.spec.loras))
    if components.noise_only:
        print(f"note: {NOISE_LABEL}")
    for line in components.loras:
        print(f"LoRA {line}")
    for warning in inputs.warnings:
        print(f"warning: {warning}")
    job = GenerationJob(inputs, components, args.out, segmenters=segmenters, claim=claim, events=progress,
                        after_finish=review_finished_take)
    job.open_folder()
    if claim.interrupted:
        print("note: the last run on this folder stopped without finishing (killed?); its finished segments are kept")
    if job.missing_frames:
        print(f"note: {job.missing_frames} frames of finished segments are missing; generating them again")
    if job.completed:
        print(f"resuming after segment {job.completed} of {len(job.segments)}")
    stop = StopSignals()
    with stop:
        try:
            manifest = job.run(should_cancel=stop.requested)
        except Cancelled:
            progress.end()
            print(f"stopped by {stop.name} after {job.completed} of {len(job.segments)} segments; "
                  "run the same command again to resume", file=sys.stderr)
            return 128 + stop.signum
    progress.end()
    print(f"frames and manifest: {manifest}")
    return 0


def _sampling_step(fields: dict) -> str | None:
    if fields.get("phase") != "sample":
        return None
    return f"segment {fields['segment']}/{fields['segments']} step {fields['step']}/{fields['steps']}"


def _bad_input(exc: BaseException, progress: ProgressLine | None = None) -> int:
    """One line on stderr (below the progress line, if one was printed); exit code 2."""
    if progress is not None:
        progress.end()
    print(f"error: {first_line(exc)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_demo(args: argparse.Namespace) -> int:
    from .tools.demo import run_demo as demo

    return demo(args.out, main)


def run_masks(args: argparse.Namespace) -> int:
    from .segmentation.commands import run_masks as run

    return run(args)


def run_matte(args: argparse.Namespace) -> int:
    from .segmentation.commands import run_matte as run

    return run(args)


def run_farm(args: argparse.Namespace) -> int:
    from .farm.commands import run_farm as run

    return run(args, main)


def run_score(args: argparse.Namespace) -> int:
    from .review.commands import run_score as run

    return run(args)


def run_report(args: argparse.Namespace) -> int:
    from .review.commands import run_report as run

    return run(args)


def run_serve(args: argparse.Namespace) -> int:
    from .service.serve_command import run_serve as run

    return run(args)


def _add_download_arguments(parser: argparse.ArgumentParser) -> None:
    from .download.command import add_download_arguments

    add_download_arguments(parser)


def _run_download(args: argparse.Namespace) -> int:
    from .download.command import run_download

    return run_download(args)


# name, help, description (None: the help), its options, what it does
COMMANDS = (
    ("generate", "animate a reference still with a driving clip",
     "Animate a reference still with a driving clip into a job directory.",
     add_generate_arguments, run_generate),
    ("check-inputs", "check a job's footage, masks and reference before any GPU time",
     "Check the inputs of a generate command line (same options; --out and the model are not needed): shot "
     "cuts, camera motion, blur, subjects and identities from the masks, reference framing, length and timing. "
     "Exit code 1 when a check fails (or warns, with --strict).",
     add_check_inputs_arguments, run_check_inputs),
    ("convert", "rewrite SCAIL-2 transformer weights as sharded safetensors",
     "Rewrite a SCAIL-2 transformer checkpoint (official release or single file) as sharded safetensors, "
     "streaming tensor by tensor.",
     add_convert_arguments, run_convert),
    ("demo", "generate from a built-in synthetic clip with the tiny profile", None,
     add_demo_arguments, run_demo),
    ("serve", "run the worker the Blender add-on drives (JSON lines)",
     "Run the job worker: one JSON request per line on stdin, events on stdout (logs on stderr), or the same "
     "protocol over TCP with --listen.",
     add_serve_arguments, run_serve),
    ("tokens", "the artists' tokens of a shared worker: add, list, revoke",
     "Manage the tokens file of `serve --tokens FILE`: one line per artist with a salted hash of their token. "
     "`add` prints the new token once; `revoke` takes effect at once, on open connections too, and cancels "
     "that artist's jobs.",
     add_tokens_arguments, run_tokens),
    ("jobs", "a running worker's queued and running jobs: list, cancel (an admin: every artist's)",
     "Connect to a running worker as an artist or an admin (the token from $SCAIL2_TOKEN or --token-file) and "
     "list its queued and running jobs in the order they start, or cancel some. On the worker's own machine its "
     "certificate is found on its own; from elsewhere give --fingerprint.",
     add_jobs_arguments, run_jobs),
    ("doctor", "report Python, torch, GPU, attention backends, weights, presets",
     "Report what this machine and weights folder can run (always exits 0).",
     add_doctor_arguments, run_doctor),
    ("download", "fetch the SCAIL-2 weights that fit this GPU from the Hugging Face Hub",
     "Plan the weights for this GPU (or --gpu-memory / --plan), show what is present and the sizes, and fetch "
     "the rest into a ComfyUI-layout folder: resumable, every file checked against the hub's SHA-256.",
     _add_download_arguments, _run_download),
    ("masks", "colour-coded masks of a clip or still (SAM 3 text prompt or SAM 2 marks)",
     "Segment a clip (driving mask frames) or a still (reference mask): SCAIL-2 palette on the mode's "
     "background; found instances numbered left to right, marked subjects in the order given.",
     add_masks_arguments, run_masks),
    ("matte", "RGBA copies of frames with the character's alpha (SAM 3)",
     "Write straight-alpha RGBA PNGs of a generation job's frames (or any clip), the alpha being the soft "
     "coverage of every instance of the prompt.",
     add_matte_arguments, run_matte),
    ("score", "measure a take: motion, temporal and identity stability, background, faces; flags",
     "(Re)compute a finished job folder's scores and flags into its manifest's review (and write its review.json "
     "if it has none); print them.",
     add_score_arguments, run_score),
    ("report", "a self-contained HTML review page of takes, per shot",
     "Write one HTML page (no external files: images and charts inline) comparing takes per shot: contact "
     "sheets, scores, flags, notes, status, rating and recipe.",
     add_report_arguments, run_report),
    ("farm", "render farms: job bundles per shot, OpenJD and Flamenco job descriptions, a bundle's task",
     "Bundle jobs for a render farm (one self-contained folder per shot or character, with an OpenJD job "
     "template and a Flamenco job), run one bundle as a farm task, or list a farm folder's bundles.",
     add_farm_arguments, run_farm),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="SCAIL-2 backend for the Blender add-on")
    parser.add_argument("--version", action="version", version=f"scail2-backend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text, description, add_arguments, handler in COMMANDS:
        command = commands.add_parser(name, help=help_text, description=description)
        add_arguments(command)
        if name in ("generate", "serve"):
            add_gpus_argument(command)
        command.set_defaults(handler=handler)
    return parser


def quiet_media_libraries() -> None:
    """Keep OpenCV's and FFmpeg's own log lines ("moov atom not found", "[ WARN:0@0.1] ...") off stderr:
    every failure they could explain is one error line of ours. Set before OpenCV first logs;
    a value already in the environment wins (to see them when debugging)."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if wants_launch(args):  # --gpus N: the same command line again, as N ranks
        return launch(sys.argv[1:] if argv is None else list(argv), args)
    quiet_media_libraries()
    return args.handler(args)
