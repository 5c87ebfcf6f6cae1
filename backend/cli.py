"""`python -m backend ...`: generate, convert, demo, serve, doctor, masks, matte.

Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import protocol
from protocol import JobSpec

from . import __version__
from .loaders.convert import add_convert_arguments, run_convert
from .doctor import add_doctor_arguments, run_doctor
from .options import (
    add_device_arguments,
    add_masks_arguments,
    add_matte_arguments,
    add_model_arguments,
    add_segmenter_arguments,
    add_serve_arguments,
    memory_settings,
    model_name,
)

EXIT_BAD_INPUT = 2


def _lora(text: str) -> dict:
    """FILE or FILE:STRENGTH."""
    path, sep, strength = text.rpartition(":")
    try:
        return {"path": path, "strength": float(strength)} if sep else {"path": text, "strength": 1.0}
    except ValueError:
        return {"path": text, "strength": 1.0}


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--driving", required=True, help="driving clip: video file (mp4/mov/mkv/avi), folder of frames "
                    "or printf pattern (PNG/JPEG/EXR)")
    io.add_argument("--reference", required=True, help="reference still of the character (PNG/JPEG; alpha is its mask)")
    io.add_argument("--driving-mask", help="colour-coded mask video/sequence, one frame per driving frame")
    io.add_argument("--reference-mask", help="colour-coded mask image of the reference")
    io.add_argument("--extra-reference", action="append", default=[], metavar="IMAGE",
                    help="another view of the character(s); repeatable")
    io.add_argument("--extra-reference-mask", action="append", default=[], metavar="IMAGE",
                    help="mask of each extra view, in the same order")
    io.add_argument("--out", required=True, type=Path, help="job directory to create (or resume)")
    add_model_arguments(parser)
    add_segmenter_arguments(parser, standalone=False)

    gen = parser.add_argument_group("generation")
    gen.add_argument("--mode", choices=protocol.MODES, default="animate",
                     help="animate: background from the reference; replace: background from the driving clip")
    gen.add_argument("--prompt", default="", help="text prompt")
    gen.add_argument("--negative-prompt", default="", help="negative prompt (the unconditional branch)")
    gen.add_argument("--preset", choices=protocol.PRESETS, default="quality",
                     help="quality: UniPC 40 steps, CFG 5; fast: 8 steps, CFG 1 (use with the distillation LoRA)")
    gen.add_argument("--resolution", choices=sorted(protocol.RESOLUTIONS), default=None,
                     help="512p (512x896) or 704p (704x1280), orientation from the reference; default 512p, "
                          "704p with --pose-driven")
    gen.add_argument("--height", type=int, default=0, help="explicit height in pixels (multiple of 32)")
    gen.add_argument("--width", type=int, default=0, help="explicit width in pixels (multiple of 32)")
    gen.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the preset's)")
    gen.add_argument("--shift", type=float, help="flow shift (default: the preset's)")
    gen.add_argument("--sampler", choices=["unipc", "euler"], help="solver (default: the preset's)")
    gen.add_argument("--seed", type=int, default=-1, help="noise seed; -1 picks one and records it")
    gen.add_argument("--fps", type=float, default=protocol.MODEL_FPS, help="model frame rate (default 16)")
    gen.add_argument("--driving-fps", type=float, help="frame rate of an image-sequence driving clip")
    gen.add_argument("--start", type=int, default=0, help="first driving frame (0-based)")
    gen.add_argument("--end", type=int, help="driving frame to stop before (default: the end)")
    gen.add_argument("--no-color-match", action="store_true", help="do not colour-match segments of long clips")
    gen.add_argument("--lora", action="append", default=[], type=_lora, metavar="FILE[:STRENGTH]",
                     help="LoRA to merge (Wan-native, LightX2V or ComfyUI keys); repeatable")
    gen.add_argument("--pose-driven", action="store_true",
                     help="the driving clip is a pose/skeleton render (a label; selects 704p by default)")
    gen.add_argument("--matte", action="store_true",
                     help="also write RGBA frames (frames_rgba/) with the character's alpha, by SAM 3")
    gen.add_argument("--matte-prompt", default=protocol.DEFAULT_SEGMENT_PROMPT,
                     help="what the matte keeps (default: person)")

    add_device_arguments(parser)


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    return JobSpec(
        driving=args.driving, reference=args.reference, mode=args.mode,
        driving_mask=args.driving_mask, reference_mask=args.reference_mask,
        extra_references=args.extra_reference, extra_reference_masks=args.extra_reference_mask,
        prompt=args.prompt, negative_prompt=args.negative_prompt, preset=args.preset,
        resolution=args.resolution or ("704p" if args.pose_driven else "512p"),
        height=args.height, width=args.width, steps=args.steps, guidance=args.guidance, shift=args.shift,
        sampler=args.sampler, seed=args.seed, model_fps=args.fps, driving_fps=args.driving_fps,
        frame_start=args.start, frame_end=args.end, color_match=not args.no_color_match, loras=args.lora,
        pose_driven=args.pose_driven, matte=args.matte, matte_prompt=args.matte_prompt,
    )


def run_generate(args: argparse.Namespace) -> int:
    from .pipeline.inputs import InputError, prepare_inputs

    try:
        inputs = prepare_inputs(spec_from_args(args))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from .loaders.components import load_components
    from .pipeline.generate import NOISE_LABEL, GenerationJob, JobDirectoryError
    from .loaders.lora import lora_specs
    from .loaders.devices import memory_options, resolve_device
    from .segmentation import SegmentationError
    from .segmentation.run import Segmenters

    device = resolve_device(args.device)
    memory = memory_options(memory_settings(args), device)
    model = model_name(args)
    segmenters = Segmenters(tiny=model == "tiny", sam3_weights=args.sam3_weights, device=device)
    try:
        if inputs.spec.matte:
            segmenters.check()
    except SegmentationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        components = load_components(model, device, memory, loras=lora_specs(inputs.spec.loras))
    except (OSError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if components.noise_only:
        print(f"note: {NOISE_LABEL}")
    for line in components.loras:
        print(f"LoRA {line}")
    for warning in inputs.warnings:
        print(f"warning: {warning}")

    def report(kind, **fields):
        if kind == "progress" and fields.get("phase") == "sample":
            print(f"\rsegment {fields['segment']}/{fields['segments']} step {fields['step']}/{fields['steps']}",
                  end="", flush=True)

    try:
        manifest = GenerationJob(inputs, components, args.out, events=report, segmenters=segmenters).run()
    except (JobDirectoryError, SegmentationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"\nframes and manifest: {manifest}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo as demo

    return demo(args.out)


def run_masks(args: argparse.Namespace) -> int:
    from .segmentation.commands import run_masks as run

    return run(args)


def run_matte(args: argparse.Namespace) -> int:
    from .segmentation.commands import run_matte as run

    return run(args)


def run_serve(args: argparse.Namespace) -> int:
    from .service.jobs import default_jobs_root, log
    from .service.serve import TOKEN_ENV, is_loopback, parse_listen, serve_stdio, serve_tcp
    from .service.worker import Worker

    token = args.token or None
    listen = None
    if args.listen:
        try:
            listen = parse_listen(args.listen)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not is_loopback(listen[0]) and not token:
            print(f"error: listening on {listen[0]} (not loopback) requires --token (or ${TOKEN_ENV})",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
    jobs_root = args.jobs_root or default_jobs_root()
    memory_args = memory_settings(args)
    model = model_name(args)
    import torch  # noqa: F401  (imported up front so the first request is answered quickly)

    worker = Worker(model, args.device, memory_args, jobs_root, token=token,
                    segmentation_weights=(args.sam3_weights, args.sam2_weights))
    if listen is None:
        serve_stdio(worker)
    else:
        try:
            serve_tcp(worker, *listen)
        except OSError as exc:
            print(f"error: cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    log("stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="SCAIL-2 backend for the Blender add-on")
    parser.add_argument("--version", action="version", version=f"scail2-backend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="animate a reference still with a driving clip",
                                   description="Animate a reference still with a driving clip into a job directory.")
    add_generate_arguments(generate)
    generate.set_defaults(handler=run_generate)
    convert = commands.add_parser("convert", help="rewrite SCAIL-2 transformer weights as sharded safetensors",
                                  description="Rewrite a SCAIL-2 transformer checkpoint (official release or "
                                  "single file) as sharded safetensors, streaming tensor by tensor.")
    add_convert_arguments(convert)
    convert.set_defaults(handler=run_convert)
    demo = commands.add_parser("demo", help="generate from a built-in synthetic clip with the tiny profile")
    demo.add_argument("--out", type=Path, default=Path("build/demo"))
    demo.set_defaults(handler=run_demo)
    serve = commands.add_parser("serve", help="run the worker the Blender add-on drives (JSON lines)",
                                description="Run the job worker: one JSON request per line on stdin, events on "
                                "stdout (logs on stderr), or the same protocol over TCP with --listen.")
    add_serve_arguments(serve)
    serve.set_defaults(handler=run_serve)
    doctor = commands.add_parser("doctor", help="report Python, torch, GPU, attention backends, weights, presets",
                                 description="Report what this machine and weights folder can run (always exits 0).")
    add_doctor_arguments(doctor)
    doctor.set_defaults(handler=run_doctor)
    masks = commands.add_parser("masks", help="colour-coded masks of a clip or still (SAM 3 text prompt or SAM 2 "
                                "marks)", description="Segment a clip (driving mask frames) or a still (reference "
                                "mask): SCAIL-2 palette on the mode's background; found instances numbered left to right, "
                                "marked subjects in the order given.")
    add_masks_arguments(masks)
    masks.set_defaults(handler=run_masks)
    matte = commands.add_parser("matte", help="RGBA copies of frames with the character's alpha (SAM 3)",
                                description="Write straight-alpha RGBA PNGs of a generation job's frames (or any "
                                "clip), the alpha being the soft coverage of every instance of the prompt.")
    add_matte_arguments(matte)
    matte.set_defaults(handler=run_matte)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
