"""The worker's task types, one function each: a generation, and a masks or matte job.

`worker.Worker` picks the function for a job's `task` (`TASKS`) and turns what it raises into
the job's `cancelled` or `error` event. Each function runs its job to the end, reporting through
`emit` (worker events of this job) and `on_event` (the pipeline's events, which also check for
cancellation), and sets `job.status` to "done".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import protocol

from .jobs import Job, log

if TYPE_CHECKING:
    from .ports import ModelHost

EventSink = Callable[..., None]


def run_generation(worker: ModelHost, job: Job, emit: EventSink, on_event: EventSink) -> None:
    """A generation: inputs, LoRA files and folder checked, the folder claimed, the kept model
    (re)loaded, every unfinished segment generated. Nothing cheap is checked after the model loads."""
    from ..loaders.lora import lora_specs
    from ..pipeline.generate import GenerationJob
    from ..pipeline.inputs import InputError, prepare_inputs
    from ..pipeline.job_folder import FolderClaim, check_folder
    from ..pipeline.preflight import check_lora_files
    from ..pipeline.sampler import Cancelled
    from ..review.finish import review_finished_take

    try:
        spec = protocol.JobSpec.from_dict(job.spec)
    except protocol.ProtocolError as exc:
        raise InputError(str(exc)) from None
    inputs = prepare_inputs(spec)
    _record_input_checks(inputs)
    loras = lora_specs(spec.loras)
    check_lora_files(loras)
    check_folder(job.job_dir, spec.to_dict())
    if job.cancel.is_set():
        raise Cancelled()
    with FolderClaim(job.job_dir) as claim:  # another process writing this folder is refused here
        components = worker.components_for(emit, loras)
        generation = GenerationJob(inputs, components, job.job_dir, events=on_event, segmenters=worker.segmenters,
                                   claim=claim, after_finish=review_finished_take)
        generation.open_folder()
        if claim.interrupted:
            log(f"job {job.id}: the last run on {job.job_dir} stopped without finishing; resuming")
        emit("started", job_dir=str(job.job_dir), frames=len(inputs.frame_times),
             segments=len(generation.segments), completed_segments=generation.completed,
             interrupted=claim.interrupted, missing_frames=generation.missing_frames,
             size=[inputs.height, inputs.width], noise_only=components.noise_only, warnings=inputs.warnings)
        generation.run(should_cancel=job.cancel.is_set)
    job.status = "done"
    log(f"job {job.id} done")


def _record_input_checks(inputs) -> None:
    """The input checks, kept for the job's manifest (`input_checks`); a check that breaks is logged, never
    a reason to stop the job (the add-on has shown the checklist before submitting)."""
    from ..input_checks.run import run_checks
    from ..pipeline.inputs import InputError

    try:
        inputs.input_checks = run_checks(inputs).to_dict()
    except InputError:
        raise
    except Exception as exc:  # an advisory step of ours must not stop a job it cannot judge
        log(f"the input checks could not run: {exc}")


def run_segmentation(worker: ModelHost, job: Job, emit: EventSink, on_event: EventSink) -> None:
    """A masks or matte job; its events mirror a generation's (started, progress, done)."""
    from ..segmentation.run import run_segment_job

    spec = protocol.SegmentSpec.from_dict(job.spec)
    record = run_segment_job(spec, job.job_dir, worker.segmenters, events=on_event, should_cancel=job.cancel.is_set)
    job.status = "done"
    on_event("done", task=job.task, frames=record["frame_count"], identities=record["identities"],
             warnings=record["warnings"], record=str(job.job_dir / protocol.SEGMENT_RECORD))
    log(f"job {job.id} done")


# Task name (protocol.TASKS) -> the function that runs it.
TASKS: dict[str, Callable[[ModelHost, Job, EventSink, EventSink], None]] = {
    "generate": run_generation,
    "masks": run_segmentation,
    "matte": run_segmentation,
}

