"""Command-line options: what each `python -m backend` command accepts (what it does is `cli`'s).

Shared groups (which model, which device, how much memory, the segmentation weights) and one
`add_<command>_arguments` per command; `convert`'s live with the converter
(`loaders.convert.add_convert_arguments`), which also has a command line of its own.

Kept free of torch imports, so building the parser (and `--version`) stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import protocol
from protocol import MATTE_FOLDER, MAX_IDENTITIES

from .segmentation.weights import SAM2_REPO, SAM3_REPO
from .service.jobs import default_jobs_root
from .service.quotas import DEFAULT_MAX_QUEUED
from .service.serve import AUTH_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_CONNECTIONS, MIN_TOKEN_CHARS, TOKEN_ENV

DEFAULT_PROMPT = "person"


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    model = parser.add_mutually_exclusive_group(required=required)
    model.add_argument("--weights", type=Path, help="folder with the SCAIL-2 weights (see README)")
    model.add_argument("--model", choices=["tiny"], help="built-in tiny profile: random weights, output is noise")


def model_name(args: argparse.Namespace) -> str:
    return "tiny" if args.model else str(args.weights)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("device and memory")
    run.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda if available)")
    run.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                     help="compute dtype (default: bf16 on CUDA, fp32 on CPU)")
    run.add_argument("--storage", choices=["bf16", "fp8"], default="bf16", help="weight storage (fp8 halves memory)")
    run.add_argument("--compute", choices=["bf16", "fp8"], default="bf16",
                     help="precision of the transformer blocks' matmuls: fp8 runs them on fp8 tensor cores "
                          "(faster, fp8 weights, slightly less accurate; needs compute capability 8.9+: "
                          "Ada, Hopper)")
    run.add_argument("--offload", choices=["none", "model", "group"], default="none",
                     help="keep weights in CPU memory: whole model or block groups (diffusers group offload)")
    run.add_argument("--vae-tiling", action="store_true", help="decode in tiles to save memory")
    run.add_argument("--attention", help="diffusers attention backend, e.g. native, flash, _flash_3, sage; auto: the "
                     "fastest that `doctor` probed here (the default on a GPU)")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile each transformer block (the first step of a new size compiles; the kernels "
                          "are cached on disk for later jobs)")


def memory_settings(args: argparse.Namespace) -> dict:
    """The device-and-memory options as plain data (what a worker keeps until it loads a model);
    `loaders.devices.memory_options` turns them into MemoryOptions."""
    return dict(dtype=args.dtype, storage=args.storage, offload=args.offload, vae_tiling=args.vae_tiling,
                attention_backend=args.attention, compile=args.compile, compute=args.compute)


def _lora(text: str) -> dict:
    """FILE or FILE:STRENGTH."""
    path, sep, strength = text.rpartition(":")
    try:
        return {"path": path, "strength": float(strength)} if sep else {"path": text, "strength": 1.0}
    except ValueError:
        return {"path": text, "strength": 1.0}


def add_generate_arguments(parser: argparse.ArgumentParser, checks_only: bool = False) -> None:
    """`generate`'s options; with `checks_only` (`check-inputs`) the output folder and the model are optional
    (accepted, so the same command line checks a job, and not used)."""
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--driving", help="driving clip: video file (mp4/mov/mkv/avi), folder of frames "
                    "or printf pattern (PNG/JPEG/EXR)")
    io.add_argument("--reference", help="reference still of the character (PNG/JPEG; alpha is its mask)")
    io.add_argument("--driving-mask", help="colour-coded mask video/sequence, one frame per driving frame")
    io.add_argument("--reference-mask", help="colour-coded mask image of the reference")
    io.add_argument("--extra-reference", action="append", default=[], metavar="IMAGE",
                    help="another view of the character(s); repeatable")
    io.add_argument("--extra-reference-mask", action="append", default=[], metavar="IMAGE",
                    help="mask of each extra view, in the same order")
    io.add_argument("--out", type=Path, help="job directory to create (or resume)")
    if not checks_only:
        io.add_argument("--recipe", type=Path, metavar="PATH",
                        help="make a take again from its review.json or manifest.json (same settings and seed); "
                             "--driving, --reference and --out are then taken from it (--out: beside it, <id>-redo)")
        io.add_argument("--accept-changed-inputs", action="store_true",
                        help="with --recipe: run even when an input changed since the take (a new take that says so)")
    io.add_argument("--max-input-pixels", type=int, default=protocol.DEFAULT_MAX_INPUT_PIXELS, metavar="PIXELS",
                    help="refuse any input frame or still with more pixels, read from its header before decoding "
                         f"(default {protocol.DEFAULT_MAX_INPUT_PIXELS}: 8192x8192)")
    io.add_argument("--strict", action="store_true",
                    help="refuse the job when an input check warns or fails (for farms); without it the checks "
                         "are printed and recorded in the manifest, and never stop a job")
    add_model_arguments(parser, required=not checks_only)
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
    gen.add_argument("--guidance", type=float,
                     help="classifier-free guidance scale, 0 to 20: uncond + g (cond - uncond); 1 runs one pass "
                          "(default: the preset's)")
    gen.add_argument("--shift", type=float, help="flow shift (default: the preset's)")
    gen.add_argument("--sampler", choices=protocol.SAMPLERS,
                     help="solver: unipc (the official default), dpm++ (the official alternative) or euler "
                          "(default: the preset's, unipc)")
    gen.add_argument("--seed", type=int, default=-1, help="noise seed; -1 picks one and records it")
    gen.add_argument("--fps", type=float, default=protocol.MODEL_FPS, help="model frame rate (default 16)")
    gen.add_argument("--driving-fps", type=float, help="frame rate of an image-sequence driving clip")
    gen.add_argument("--start", type=int, default=0, help="first driving frame (0-based)")
    gen.add_argument("--end", type=int, help="driving frame to stop before (default: the end)")
    gen.add_argument("--no-color-match", action="store_true",
                     help="do not colour-match the written frames of a long clip's later segments to the earlier "
                          "ones (a post-process: the model conditions on the decoded frames either way)")
    gen.add_argument("--lora", action="append", default=[], type=_lora, metavar="FILE[:STRENGTH]",
                     help="LoRA to merge (Wan-native, LightX2V or ComfyUI keys); repeatable")
    gen.add_argument("--pose-driven", action="store_true",
                     help="the driving clip is a pose/skeleton render (a label; selects 704p by default)")
    gen.add_argument("--matte", action="store_true",
                     help="also write RGBA frames (frames_rgba/) with the character's alpha, by SAM 3")
    gen.add_argument("--matte-prompt", default=protocol.DEFAULT_SEGMENT_PROMPT,
                     help="what the matte keeps (default: person)")

    add_device_arguments(parser)


def add_check_inputs_arguments(parser: argparse.ArgumentParser) -> None:
    """`generate`'s options (the job to check) and how to print the checklist."""
    add_generate_arguments(parser, checks_only=True)
    parser.add_argument("--json", action="store_true", help="print the report (protocol.InputCheckReport) as JSON")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    transport = parser.add_argument_group("transport")
    transport.add_argument("--listen", metavar="HOST:PORT",
                           help="serve over TCP instead of stdin/stdout (HOST defaults to 127.0.0.1; port 0 picks "
                                "one and logs it); any non-loopback HOST is served with TLS only")
    transport.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                           help=f"shared secret every request must carry as \"token\", at least {MIN_TOKEN_CHARS} characters "
                                f"(default: ${TOKEN_ENV}; with TLS and none given, a strong one is generated and "
                                "printed once)")
    transport.add_argument("--tokens", type=Path, metavar="FILE",
                           help="TCP: one token per artist, from FILE (made with `python -m backend tokens`): each "
                                "sees and cancels only their own jobs, an admin all; re-read when it changes")
    transport.add_argument("--max-queued-per-artist", type=int, default=DEFAULT_MAX_QUEUED, metavar="N",
                           help="jobs one artist (token) may have queued at once; admins and a private worker are "
                                f"not limited; 0: no limit (default {DEFAULT_MAX_QUEUED}). Artists take turns.")
    transport.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, metavar="N",
                           help=f"TCP: connections served at once; more are refused (default {MAX_CONNECTIONS})")
    transport.add_argument("--auth-timeout", type=float, default=AUTH_TIMEOUT_S, metavar="SECONDS",
                           help="TCP: a connection that makes no authorised request this long is closed "
                                f"(default {AUTH_TIMEOUT_S:g})")
    transport.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, metavar="SECONDS",
                           help="TCP: an authorised connection silent this long is closed (the add-on pings; "
                                f"default {IDLE_TIMEOUT_S:g})")
    transport.add_argument("--tls", action="store_true",
                           help="TCP: use TLS on a loopback address too (any other address always uses it)")
    transport.add_argument("--tls-cert", type=Path, metavar="PEM",
                           help="TLS certificate of your own (with --tls-key; default: a self-signed one, made on "
                                "first start, its fingerprint printed for the add-on to pin)")
    transport.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    transport.add_argument("--blob-cap-gb", type=float, default=20.0, metavar="GB",
                           help="TCP: the most the files remote clients upload may take under the jobs root; the "
                                "least recently used are removed beyond it (default 20)")
    parser.add_argument("--jobs-root", type=Path, default=None,
                        help="where job folders go when a submit names none, and the only place a remote "
                             "client's job folders may be; with --listen, where the queue is kept across a restart "
                             f"(one worker per jobs root) (default: {default_jobs_root()})")
    add_model_arguments(parser)
    add_device_arguments(parser)
    add_segmenter_arguments(parser, standalone=False)


def add_segmenter_arguments(parser: argparse.ArgumentParser, standalone: bool = True) -> None:
    """Where the segmentation models come from (`masks`, `matte`; generate and serve, which have their own
    --model and --device, only take the folders)."""
    seg = parser.add_argument_group("segmentation models (default: the Hugging Face hub cache)")
    seg.add_argument("--sam3-weights", type=Path, help=f"folder with '{SAM3_REPO}' (text prompts, mattes)")
    seg.add_argument("--sam2-weights", type=Path, help=f"folder with '{SAM2_REPO}' (subjects marked by hand)")
    if standalone:
        seg.add_argument("--model", choices=["tiny"], help="built-in tiny profile: random weights, arbitrary masks")
        seg.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")


def _subject(kind: str):
    """argparse type for --box X0,Y0,X1,Y1[@FRAME] and --point X,Y[@FRAME]."""

    def parse(text: str) -> dict:
        values, _, frame = text.partition("@")
        try:
            numbers = [float(v) for v in values.split(",")]
            subject = {"frame": int(frame) if frame else 0}
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind}: {text!r}") from None
        if kind == "box" and len(numbers) == 4:
            return subject | {"box": numbers}
        if kind == "point" and len(numbers) == 2:
            return subject | {"points": [numbers], "labels": [1]}
        raise argparse.ArgumentTypeError(f"not a {kind}: {text!r}")

    return parse


def add_frame_range_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frame-start", type=int, default=0, help="first source frame (default 0)")
    parser.add_argument("--frame-end", type=int, help="source frame to stop before (default: the end)")


def add_masks_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="driving clip: video file, folder of frames or printf pattern")
    source.add_argument("--image", help="a still (the reference image)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="what to segment (default: person)")
    parser.add_argument("--box", dest="subjects", action="append", type=_subject("box"), default=[],
                        metavar="X0,Y0,X1,Y1[@FRAME]", help="mark a subject by a box instead of the prompt (SAM 2); "
                        "repeat per subject")
    parser.add_argument("--point", dest="subjects", action="append", type=_subject("point"),
                        metavar="X,Y[@FRAME]", help="mark a subject by a point on it (SAM 2); repeat per subject")
    parser.add_argument("--mode", choices=["animate", "replace"], default="animate",
                        help="sets the background: animate = black driving / white reference, replace = the opposite")
    parser.add_argument("--out", required=True, type=Path, help="folder for the mask PNGs and segment.json")
    parser.add_argument("--max-identities", type=int, default=MAX_IDENTITIES,
                        help=f"keep the N largest instances (1..{MAX_IDENTITIES})")
    parser.add_argument("--pick", type=lambda s: [int(i) for i in s.split(",") if i.strip()],
                        help="comma-separated instance indices to keep instead (at most 6)")
    add_frame_range_arguments(parser)
    add_segmenter_arguments(parser)


def add_matte_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", type=Path, help=f"a generation job folder: its frames/ get RGBA copies in "
                        f"{MATTE_FOLDER}/")
    source.add_argument("--frames", help="any clip: video file, folder of frames or printf pattern")
    parser.add_argument("--out", type=Path, help="folder for the RGBA PNGs (required with --frames)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="what to keep (default: person)")
    add_frame_range_arguments(parser)
    add_segmenter_arguments(parser)


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, help="weights folder to check (layout of transformer and encoders)")
    parser.add_argument("--device", default=None, help="GPU to report on, e.g. cuda:1 (default: the current one)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_segmenter_arguments(parser, standalone=False)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
