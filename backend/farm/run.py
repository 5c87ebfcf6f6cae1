"""What a farm task runs: one bundle's job, by the `generate` command, inside the bundle.

`generate_argv` is the `generate` command line of a JobSpec (every field, so the spec `generate`
rebuilds from it is the same spec). `run_bundle` checks the bundle's inputs against their recorded
hashes, skips a bundle whose job is already done (a requeued task costs no model time), then runs
`generate` with the bundle as the working directory: the spec's paths stay bundle-relative, so the
job folder's manifest names the same job whichever worker and mount point picks the task up again,
and a retried task resumes from the last finished segment. (A relative weights folder is made
absolute first; paths in the extra options should be absolute.)
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable

import protocol

from ..pipeline.job_folder import folder_state
from .bundle import OUTPUT_FOLDER, BundleError, read_bundle

EXIT_BAD_INPUT = 2


def _value(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def generate_argv(spec: protocol.JobSpec, out: str) -> list[str]:
    """`generate` arguments asking for exactly `spec`, into the job folder `out` (`--opt=value`, so a
    prompt starting with '-' stays a value)."""
    args = [f"--driving={spec.driving}", f"--reference={spec.reference}", f"--out={out}", f"--mode={spec.mode}",
            f"--prompt={spec.prompt}", f"--negative-prompt={spec.negative_prompt}", f"--preset={spec.preset}",
            f"--resolution={spec.resolution}", f"--height={spec.height}", f"--width={spec.width}",
            f"--seed={spec.seed}", f"--fps={_value(spec.model_fps)}", f"--start={spec.frame_start}",
            f"--matte-prompt={spec.matte_prompt}", f"--max-input-pixels={spec.max_input_pixels}"]
    for option, value in (("--driving-mask", spec.driving_mask), ("--reference-mask", spec.reference_mask),
                          ("--steps", spec.steps), ("--guidance", spec.guidance), ("--shift", spec.shift),
                          ("--sampler", spec.sampler), ("--driving-fps", spec.driving_fps),
                          ("--end", spec.frame_end)):
        if value is not None:
            args.append(f"{option}={_value(value)}")
    args += [f"--extra-reference={path}" for path in spec.extra_references]
    args += [f"--extra-reference-mask={path}" for path in spec.extra_reference_masks]
    args += [f"--lora={lora['path']}:{_value(float(lora['strength']))}" for lora in spec.loras]
    args += [flag for flag, on in (("--no-color-match", not spec.color_match), ("--pose-driven", spec.pose_driven),
                                   ("--matte", spec.matte)) if on]
    return args


def task_argv(bundle_spec: protocol.JobSpec, *, model: str, weights: str, device: str, storage: str, offload: str,
              extra: str) -> list[str]:
    """The whole `generate` command line of a farm task (run inside the bundle); BundleError if incomplete."""
    if model == "tiny":
        model_args = ["--model=tiny"]
    elif weights.strip():
        model_args = [f"--weights={weights}"]
    else:
        raise BundleError("no weights folder given (--weights, or the farm job's Weights parameter)")
    try:
        more = shlex.split(extra or "")
    except ValueError as exc:
        raise BundleError(f"cannot read the extra generate options {extra!r}: {exc}") from None
    device_args = [f"--device={device}"] if device.strip() else []
    return ["generate", *generate_argv(bundle_spec, OUTPUT_FOLDER), *model_args, *device_args,
            f"--storage={storage}", f"--offload={offload}", *more]


def run_bundle(folder: str, main: Callable[[list[str]], int], *, dry_run: bool = False, **task) -> int:
    """Run the bundle in `folder` with `main` (the backend's command line); its exit code."""
    if task.get("weights", "").strip():
        task["weights"] = os.path.abspath(task["weights"])  # given from where the task started, not the bundle
    try:
        bundle = read_bundle(folder)
        argv = task_argv(bundle.spec, **task)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if dry_run:
        print(shlex.join(argv))
        return 0
    if folder_state(bundle.job_dir) == "done":
        print(f"bundle {bundle.name}: already done ({bundle.job_dir})")
        return 0
    print(f"bundle {bundle.name}: generating into {bundle.job_dir}", flush=True)
    os.chdir(bundle.folder)
    return main(argv)
