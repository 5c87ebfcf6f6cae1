"""`python -m backend masks` and `python -m backend matte`: one line on stderr and exit code 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from protocol import MATTE_FOLDER, ProtocolError, SegmentSpec

from ..progress_line import ProgressLine

EXIT_BAD_INPUT = 2


def segmenters_from_args(args: argparse.Namespace):
    from .run import Segmenters

    return Segmenters(tiny=getattr(args, "model", None) == "tiny", sam3_weights=args.sam3_weights,
                      sam2_weights=args.sam2_weights, device=args.device)


def _frame_of(fields: dict) -> str | None:
    return f"{fields['phase']} {fields['frame']}/{fields['frames']}" if fields.get("frames") else None


def _run(spec_fields: dict, out: Path, args: argparse.Namespace) -> int:
    from ..pipeline.probe import MediaError
    from . import SegmentationError
    from .run import record_summary, run_segment_job

    progress = ProgressLine(_frame_of, to_stderr=True)
    try:
        spec = SegmentSpec.from_dict(spec_fields)
        record = run_segment_job(spec, out, segmenters_from_args(args), events=progress)
    except (ProtocolError, SegmentationError, MediaError) as exc:
        progress.end()
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the folder's disk: full, read-only, gone meanwhile (what was written is kept)
        progress.end()
        print(f"error: cannot write {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    progress.end()
    for warning in record["warnings"]:
        print(f"warning: {warning}")
    print(f"{record_summary(record)}: {out}")
    return 0


def run_masks(args: argparse.Namespace) -> int:
    fields = dict(task="masks", source=args.video or args.image, still=args.image is not None, prompt=args.prompt,
                  mode=args.mode, max_identities=args.max_identities, pick=args.pick, subjects=args.subjects,
                  frame_start=args.frame_start, frame_end=args.frame_end)
    return _run(fields, args.out, args)


def run_matte(args: argparse.Namespace) -> int:
    if args.job is not None:
        source, out = str(args.job / "frames"), args.out or args.job / MATTE_FOLDER
    elif args.out is None:
        print("error: --frames needs --out (the folder for the RGBA frames)", file=sys.stderr)
        return EXIT_BAD_INPUT
    else:
        source, out = args.frames, args.out
    fields = dict(task="matte", source=source, prompt=args.prompt, frame_start=args.frame_start,
                  frame_end=args.frame_end)
    return _run(fields, out, args)
