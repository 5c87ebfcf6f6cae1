"""`python -m backend farm bundle|run|status`: the render-farm command line.

    farm bundle SPEC.json [SPEC.json ...] --out FARM_DIR   one bundle per spec ("-": one spec on stdin),
                                                          then FARM_DIR's OpenJD template and Flamenco job
    farm run BUNDLE_DIR (--model tiny | --weights DIR)    what each farm task runs
    farm status FARM_DIR                                  each bundle's state

Bad input is one line on stderr and exit code 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import protocol

from ..pipeline.job_folder import folder_state
from .bundle import BundleError, bundles_in, check_name, name_from, plan_bundle, read_spec, write_planned
from .run import EXIT_BAD_INPUT, run_bundle
from .templates import MODELS, OFFLOADS, STORAGES, TaskDefaults, check_job_descriptions, write_job_descriptions


def _task_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Model, device and memory: what `run` runs with, or what `bundle` writes as the job's defaults."""
    group = parser.add_argument_group("model, device and memory" + (" (the farm job's defaults)" if defaults else ""))
    group.add_argument("--model", choices=MODELS, default="scail2",
                       help="scail2: the weights folder (--weights); tiny: the built-in test profile")
    group.add_argument("--weights", default="", help="the SCAIL-2 weights folder (on the workers)")
    group.add_argument("--device", default="cuda", help="cuda, cuda:1 or cpu (default cuda)")
    group.add_argument("--storage", choices=STORAGES, default="bf16", help="weight storage (fp8 halves memory)")
    group.add_argument("--offload", choices=OFFLOADS, default="none", help="keep weights in CPU memory")
    group.add_argument("--extra", default="", metavar="OPTIONS",
                       help="more generate options as one line, e.g. '--attention sage --vae-tiling'")


def add_farm_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="farm_command", required=True, metavar="{bundle,run,status}")
    bundle = commands.add_parser(
        "bundle", help="write a self-contained bundle per job spec, and the farm folder's job descriptions",
        description="Write one bundle per job spec (inputs copied in, as clones where the file system can; "
                    "paths made bundle-relative) into FARM_DIR, then FARM_DIR/template.json (OpenJD, one step per bundle) and "
                    "FARM_DIR/flamenco-job.json (Flamenco job type scail2, one task per bundle). Whole shots and "
                    "characters run in parallel; the segments of one shot never split.")
    bundle.add_argument("specs", nargs="+", metavar="SPEC", help="job spec JSON file (the worker's JobSpec); "
                        "'-' reads one from stdin")
    bundle.add_argument("--out", required=True, type=Path, help="the farm folder (on storage the workers share)")
    bundle.add_argument("--name", action="append", default=[],
                        help="bundle name, once per spec in order (default: the spec file's name)")
    bundle.add_argument("--python", default=TaskDefaults.python, help="the backend's Python on the workers "
                        "(default: this one)")
    bundle.add_argument("--backend-dir", default=TaskDefaults.backend_dir,
                        help="the folder holding the backend package on the workers (default: this one's)")
    bundle.add_argument("--json", action="store_true", help="print what was written as one JSON line")
    bundle.add_argument("--strict", action="store_true",
                        help="refuse (write nothing) when an input check of any spec fails or warns; without it "
                             "the checks are printed and recorded in each bundle.json")
    _task_options(bundle, defaults=True)
    bundle.set_defaults(farm_handler=_run_bundle_command)

    run = commands.add_parser("run", help="run one bundle's job (what a farm task runs)",
                              description="Check the bundle's inputs against their hashes, then generate into "
                                          "BUNDLE/output, resuming what an earlier attempt finished.")
    run.add_argument("bundle", help="the bundle folder")
    run.add_argument("--dry-run", action="store_true", help="check the bundle and print the generate command only")
    _task_options(run, defaults=False)
    run.set_defaults(farm_handler=_run_run_command)

    status = commands.add_parser("status", help="each bundle of a farm folder and the state of its job")
    status.add_argument("farm_dir", type=Path)
    status.set_defaults(farm_handler=_run_status_command)


def run_farm(args: argparse.Namespace, main: Callable[[list[str]], int]) -> int:
    return args.farm_handler(args, main)


def _bad_input(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load_specs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(name, JobSpec) of every spec argument, all checked before anything is written."""
    if args.name and len(args.name) != len(args.specs):
        raise BundleError(f"give one --name per spec ({len(args.specs)}), or none")
    if args.specs.count("-") > 1:
        raise BundleError("only one spec can come from stdin")
    loaded = []
    for i, source in enumerate(args.specs):
        name = args.name[i] if args.name else (None if source == "-" else name_from(Path(source).stem))
        if name is None:
            raise BundleError("a spec from stdin needs --name")
        try:  # any damage (not UTF-8, not JSON, unreadable) is one line, as for every JSON file read
            if source == "-":
                data = protocol.parse_json_bytes(sys.stdin.buffer.read(), "job spec -")
            else:
                data = protocol.read_json_file(source, "job spec")
        except protocol.ProtocolError as exc:
            raise BundleError(str(exc)) from None
        loaded.append((check_name(name), read_spec(data)))
    names = [name for name, _spec in loaded]
    if len(set(names)) != len(names):
        raise BundleError(f"two specs would share a bundle name ({', '.join(sorted(names))}); use --name")
    return loaded


def _run_bundle_command(args: argparse.Namespace, _main) -> int:
    defaults = TaskDefaults(python=args.python, backend_dir=args.backend_dir, model=args.model, weights=args.weights,
                            device=args.device, storage=args.storage, offload=args.offload, extra_args=args.extra)
    try:
        specs = _load_specs(args)
        plans = [plan_bundle(spec, args.out, name) for name, spec in specs]  # every spec checked first
        check_job_descriptions(args.out)
        checks = [_input_checks(name, spec, args.strict) for name, spec in specs]
        written = [write_planned(plan, report) for plan, report in zip(plans, checks)]
        everything = bundles_in(args.out)
        descriptions = write_job_descriptions(args.out, everything, defaults)
    except BundleError as exc:
        return _bad_input(str(exc))
    except OSError as exc:
        return _bad_input(f"cannot write the farm folder {args.out}: {exc.strerror or exc}")
    if args.json:
        print(json.dumps({
            "farm_dir": str(Path(args.out).resolve()),
            "bundles": [{"name": b.name, "folder": str(b.folder.resolve()), "job_dir": str(b.job_dir.resolve()),
                         "seed": b.spec.seed, "reused": b.reused, "input_checks": b.record.get("input_checks")}
                        for b in written],
            **{kind: str(path.resolve()) for kind, path in descriptions.items()}}))
        return 0
    for bundle in written:
        files = [f for entry in bundle.record["inputs"] for f in entry["files"]]
        cloned = sum(1 for f in files if f.get("cloned"))
        state = "unchanged" if bundle.reused else f"{len(files)} input files copied, {cloned} of them as clones"
        print(f"bundle {bundle.name}: {bundle.folder} ({state}); results land in {bundle.job_dir}")
    print(f"OpenJD job template ({len(everything)} steps): {descriptions['openjd']}")
    print(f"Flamenco job (type scail2, {len(everything)} tasks): {descriptions['flamenco']}")
    return 0


def _input_checks(name: str, spec, strict: bool) -> dict | None:
    """The input checks of one bundle's spec, as bundle.json keeps them; BundleError when --strict and a check
    fails or warns. A spec whose inputs cannot be prepared is refused by the task itself; here it is noted, as
    is a host without the backend's packages (bundling itself needs neither numpy nor torch)."""
    try:
        from ..input_checks.run import check_inputs, refusal
        from ..pipeline.inputs import InputError
    except ImportError as exc:
        if strict:
            raise BundleError(f"--strict needs the input checks, which need the backend's packages: {exc}") from None
        print(f"note: bundle {name}: no input checks on this host ({exc})", file=sys.stderr)
        return None

    try:
        report = check_inputs(spec, strict=strict)
    except InputError as exc:
        if strict:
            raise BundleError(f"bundle {name}: {exc}") from None
        print(f"note: bundle {name}: the input checks could not run: {exc}", file=sys.stderr)
        return None
    stopping = refusal(report)
    if strict and stopping:
        raise BundleError(f"bundle {name}: {stopping}")
    for check in report.checks:
        if check.verdict != "ok":
            print(f"bundle {name}: {check.verdict}: {check.message}", file=sys.stderr)
    return report.to_dict()


def _run_run_command(args: argparse.Namespace, main) -> int:
    return run_bundle(args.bundle, main, dry_run=args.dry_run, model=args.model, weights=args.weights,
                      device=args.device, storage=args.storage, offload=args.offload, extra=args.extra)


def _run_status_command(args: argparse.Namespace, _main) -> int:
    try:
        bundles = bundles_in(args.farm_dir)
    except BundleError as exc:
        return _bad_input(str(exc))
    if not bundles:
        return _bad_input(f"{args.farm_dir} holds no bundles")
    for bundle in bundles:
        print(f"{bundle.name}: {folder_state(bundle.job_dir) or 'not started'}")
    return 0
