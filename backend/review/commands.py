"""`score`, `report` and `generate --recipe`: the review's command-line side.

Importable without numpy, torch or OpenCV (`--help` must answer fast anywhere): the work is imported
when a command runs. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protocol import REVIEW_NAME, ProtocolError, TakeReview, read_record

EXIT_BAD_INPUT = 2


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_dir", type=Path, metavar="JOB_DIR", help="a finished job folder (its manifest.json)")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON (the manifest's review.scores)")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_dirs", type=Path, nargs="+", metavar="JOB_DIR", help="finished job folders (takes)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.html", help="the HTML page to write")


def _refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_score(args: argparse.Namespace) -> int:
    """(Re)compute a job folder's scores into its manifest, write review.json if it has none, print them."""
    from ..pipeline.probe import MediaError
    from .recipe import RecipeError, software_versions, write_take_review
    from .scoring import read_manifest, score_job_folder
    from .take import TakeError

    try:
        scores = score_job_folder(args.job_dir)
        write_take_review(args.job_dir, read_manifest(args.job_dir), software_versions())
    except (TakeError, ProtocolError, RecipeError, MediaError, OSError) as exc:
        return _refuse(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if args.json:
        print(json.dumps(scores.to_dict()))
        return 0
    print(f"{args.job_dir}: scored in {scores.seconds:.1f} s ({scores.scorer})")
    for score in scores.scores:
        value = "  -  " if score.value is None else f"{score.value:.3f}"
        print(f"  {score.name:<11} {value}  {score.what}")
        print(f"  {'':<11}        limits: {score.limits}")
    print(f"  flags: {len(scores.flags) or 'none'}")
    for flag in scores.flags:
        print(f"    frame {flag.frame:>4}  {flag.score:<10} {flag.reason}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .report import ReportError, distinct_folders, write_report

    try:
        shots = write_report(args.out, args.job_dirs)
    except (ReportError, ProtocolError) as exc:
        return _refuse(str(exc).splitlines()[0])
    except OSError as exc:
        return _refuse(f"cannot write {args.out}: {exc.strerror or exc}")
    takes = len(distinct_folders(args.job_dirs))
    print(f"review of {takes} take{'s' if takes != 1 else ''} in {shots} shot{'s' if shots != 1 else ''}: {args.out}")
    return 0


def recipe_job(args: argparse.Namespace):
    """(JobSpec, output folder, the id of the take it derives from or "") for `generate --recipe`; raises
    RecipeError / ProtocolError (one line) for a recipe that cannot be run, an input changed included."""
    from .recipe import changed_inputs, changed_weights, describe_change, read_recipe, redo_folder, spec_from_recipe

    recipe, job_id, take_dir = read_recipe(args.recipe)
    spec = spec_from_recipe(recipe)
    changed = changed_inputs(recipe)
    if changed and not args.accept_changed_inputs:
        item, now = changed[0]
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ProtocolError(f"{describe_change(item, now, job_id)}{more}; the take cannot be made again as it was: "
                            "restore the file, or pass --accept-changed-inputs for a new take from it")
    for item, now in changed:
        if now is None:  # accepting a change still needs a file to run on
            raise ProtocolError(describe_change(item, now, job_id))
    for line in changed_weights(recipe):
        print(f"warning: {line}")
    out = args.out if args.out is not None else redo_folder(take_dir, job_id)
    return spec, out, job_id if changed else ""


def mark_derived(job_dir: Path, derived_from: str) -> None:
    """The new take's review.json (written by this run) says which take it was remade from."""
    from dataclasses import replace

    from ..pipeline.durable import write_json_atomic

    path = Path(job_dir) / REVIEW_NAME
    review = read_record(path, TakeReview)
    write_json_atomic(path, replace(review, derived_from=derived_from).to_dict())
