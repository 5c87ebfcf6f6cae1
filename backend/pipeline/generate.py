"""Running one generation job: from prepared inputs to numbered frames, preview and manifest.

Over 450 lines on purpose: `GenerationJob` is one recipe (`run`) over small named steps that share the
job's state; split, the steps would pass that state around instead.

A job directory holds `manifest.json` (settings, inputs with hashes, the
frame-to-source-time map, timings, warnings, numerics), `state.json` (how many
segments are finished), `frames/frame_NNNNNN.png` and `history/` (the decoded
tail the next segment conditions on). Frames are written atomically as each
segment is decoded, so an interrupted job keeps what it finished and can resume
from its last completed segment with the same noise and the same history. Which folder takes
a job, and the lock a run holds on it, are `job_folder`'s.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

import protocol

from ..loaders.components import Components
from ..parallel.leader import shared_transformer
from . import durable, media, pixels
from .conditioning import JobContext, build_job_context, half_size, match_colours, segment_driving
from .frame_output import FrameOutput, PreviewEncoder
from .history import HistoryStore, history_tail
from .inputs import PreparedInputs
from .job_folder import (
    FRAMES_FOLDER,
    MANIFEST_NAME,
    PREVIEW_NAME,
    STATE_NAME,
    FolderClaim,
    JobDirectoryError,
    OutputError,
    check_folder,
    output_error,
    recorded_seed,
)
from .masks import encode_mask_video, to_signed_unit
from .durable import write_json_atomic
from .numerics import compute_dtype, numerics_record
from .sampler import Cancelled, SamplerSettings, SegmentConditioning, sample_segment
from .segments import Segment, plan_segments

__all__ = ["NOISE_LABEL", "GenerationJob", "JobDirectoryError", "OutputError", "build_job_context", "match_colours",
           "preset_settings"]

NOISE_LABEL = "tiny profile: random weights, the frames are noise"
EventSink = Callable[..., None]


def preset_settings(spec, short_side: int) -> SamplerSettings:
    """The preset's sampler settings (`protocol.preset_sampling`, UniPC), overridden by any explicit
    value in the spec."""
    defaults = protocol.preset_sampling(spec.preset, short_side)
    return SamplerSettings(
        steps=spec.steps or defaults["steps"],
        guidance=defaults["guidance"] if spec.guidance is None else spec.guidance,
        shift=defaults["shift"] if spec.shift is None else spec.shift,
        solver=spec.sampler or "unipc",
    )


def frame_name(index: int) -> str:
    return f"{FRAMES_FOLDER}/frame_{index:06d}.png"


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class GenerationJob:
    """One job directory being generated; `run()` can be called again after an interruption."""

    def __init__(self, inputs: PreparedInputs, components: Components, job_dir: Path, events: EventSink | None = None,
                 segmenters=None, claim: FolderClaim | None = None,
                 after_finish: Callable[[Path, Components], None] | None = None):
        """`segmenters` (segmentation.run.Segmenters, or anything with its `matte_generation`) makes the
        RGBA frames of a job whose spec asks for a matte. `claim`: the folder, already claimed by the
        caller (who releases it if the job fails); without one, `run()` claims the folder itself. A
        job that finishes releases its folder before it reports `done`. `after_finish(job_dir, components)`
        runs once the manifest says done, before the folder is released (the CLI and the worker pass
        `review.finish.review_finished_take`, which never raises)."""
        if inputs.spec.matte and segmenters is None:
            raise ValueError("this job asks for a matte but no segmentation model was given")
        self.inputs, self.components, self.segmenters = inputs, components, segmenters
        self.after_finish = after_finish
        self.job_dir = Path(job_dir)
        self.events = events or (lambda kind, **fields: None)
        self.segments = plan_segments(len(inputs.frame_times))
        self.settings = preset_settings(inputs.spec, min(inputs.height, inputs.width))
        self.claim, self._own_claim = claim, claim is None
        self.state: dict[str, Any] = {"status": "new", "completed_segments": 0}
        self.completed = 0  # segments whose frames are all on disk, counted by open_folder()
        self.missing_frames = 0  # frames of segments recorded as finished that are no longer on disk
        self.timings: dict[str, float] = {}
        self.history = HistoryStore(self.job_dir)
        self._notes: list[str] = []  # warnings this run found (a resume without its history file)
        self._should_cancel: Callable[[], bool] = lambda: False
        self._opened = False
        self.output: FrameOutput | None = None  # this run's frame writers (pool and preview encoder)

    # -- the folder -----------------------------------------------------------------------------
    def open_folder(self) -> None:
        """Check that the folder takes this job, claim it, and find where the job stands.

        Raises JobDirectoryError (one line) for a folder that is a file, holds another job or
        other files, holds a damaged manifest or state, or is being written by another run.
        """
        if self._opened:
            return
        job = self.inputs.spec.to_dict()
        check_folder(self.job_dir, job)  # before the claim: a refused folder is never written
        if self.claim is None:
            self.claim = FolderClaim(self.job_dir)
        self.claim.claim()
        try:
            state = check_folder(self.job_dir, job)  # again, now that no other run can change it
        except BaseException:
            self._release()
            raise
        self.state = state or {"status": "new", "completed_segments": 0}
        if "seed" not in self.state and (seed := recorded_seed(self.job_dir)) is not None:
            self.state["seed"] = seed  # state.json deleted by hand: the manifest still knows the noise
        self.timings = dict(self.state.get("timings", {}))
        if state is None:
            # New, or state.json deleted by hand: the frames tell (only this job writes them, each
            # segment's after its decode).
            self.completed = self._finished_on_disk(len(self.segments))
        else:
            recorded = min(int(state.get("completed_segments", 0)), len(self.segments))
            self.completed = self._finished_on_disk(recorded)
            self.missing_frames = sum(not (self.job_dir / frame_name(k)).is_file()
                                      for s in self.segments[self.completed : recorded] for k in s.new_frames)
        self._opened = True

    def _finished_on_disk(self, recorded: int) -> int:
        """How many of the first `recorded` segments still have every frame (frames deleted by hand are made again)."""
        for segment in self.segments[:recorded]:
            if not all((self.job_dir / frame_name(k)).is_file() for k in segment.new_frames):
                return segment.index
        return recorded

    def _release(self) -> None:
        if self._own_claim and self.claim is not None:
            self.claim.release()

    # -- manifest ---------------------------------------------------------------------------
    def _seed(self) -> int:
        if "seed" in self.state:
            return int(self.state["seed"])
        return self.inputs.spec.seed if self.inputs.spec.seed != protocol.PICK_SEED else protocol.pick_seed()

    @cached_property
    def input_hashes(self) -> dict[str, str]:
        """SHA-256 of every input (files, and frame folders or patterns as one digest each), hashed once per run."""
        spec = self.inputs.spec
        paths = [spec.driving, spec.reference, spec.driving_mask, spec.reference_mask, *spec.extra_references,
                 *spec.extra_reference_masks, *(lora["path"] for lora in spec.loras)]
        hashes = {path: durable.input_sha256(path) for path in paths if path}
        return {path: digest for path, digest in hashes.items() if digest is not None}

    def manifest(self, status: str) -> protocol.Manifest:
        inputs, spec = self.inputs, self.inputs.spec
        return protocol.Manifest(
            format=protocol.MANIFEST_FORMAT,
            id=self.job_dir.name,
            status=status,
            job=spec.to_dict(),
            seed=self.state["seed"],
            model=protocol.ManifestModel(
                label=self.components.label, noise_only=self.components.noise_only, files=self.components.files,
                loras=list(self.components.loras), components=self.components.component_files,
                quantization=self.components.quantization),
            sampler=vars(self.settings),
            numerics=numerics_record(self.settings, self.components, spec.color_match),
            size=[inputs.height, inputs.width],
            model_fps=spec.model_fps,
            source=protocol.ManifestSource(path=inputs.driving.path, fps=inputs.driving.fps,
                                           frame_count=inputs.driving.frame_count,
                                           variable_rate=inputs.driving.variable_rate),
            inputs=self.input_hashes,
            frames=[protocol.ManifestFrame(index=k, file=frame_name(k), source_frame=src, source_time=t)
                    for k, (src, t) in enumerate(inputs.frame_times)],
            segments=[protocol.ManifestSegment(**vars(s)) for s in self.segments],
            preview=PREVIEW_NAME,
            matte=protocol.MATTE_FOLDER if spec.matte else None,
            timings=self.timings,
            peak_memory_bytes=_peak_memory(self.components.device),
            warnings=self.warnings(),
            # what the footage, masks and reference said before the run
            input_checks=(protocol.InputCheckReport.from_dict(inputs.input_checks)
                          if inputs.input_checks is not None else None),
        )

    def warnings(self) -> list[str]:
        warnings = [NOISE_LABEL] if self.components.noise_only else []
        if self.inputs.spec.preset == "fast" and not self.inputs.spec.loras and not self.components.noise_only:
            warnings.append("the fast preset expects the LightX2V step-distillation LoRA (--lora); without it "
                            "8 steps give a blurry result")
        return warnings + self.inputs.warnings + self._notes

    def _write_json(self, name: str, record: protocol.Record) -> None:
        """Write `record` (checked first: a field its reader would refuse is refused here)."""
        path = self.job_dir / name
        data = type(record).from_dict(record.to_dict()).to_dict()
        try:
            write_json_atomic(path, data)
        except OSError as exc:
            raise output_error(exc, path) from None

    def _save_state(self, **changes) -> None:
        self.state.update(changes, timings=self.timings)
        self._write_json(STATE_NAME, protocol.JobState(**self.state))

    def _save_end_state(self, status: str) -> None:
        """Record how the run ended, if the folder still takes a write (a full disk may not)."""
        try:
            self._save_state(status=status)
        except OutputError:
            pass

    def _timed(self, stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
        return result

    def _check_cancel(self) -> None:
        """Raise Cancelled when the job is to stop: between denoising steps, VAE chunks, stages and frames."""
        if self._should_cancel():
            raise Cancelled()

    # -- run ----------------------------------------------------------------------------------
    def run(self, should_cancel: Callable[[], bool] | None = None) -> Path:
        """Generate every unfinished segment; return the manifest path.

        Raises sampler.Cancelled when `should_cancel()` turns true (checked between denoising
        steps, VAE chunks, segments, stages and preview frames); state.json then says
        "cancelled" and the job resumes later. Raises JobDirectoryError (OutputError for a
        failed write) in one line.
        """
        self._should_cancel = should_cancel or (lambda: False)
        try:
            # 1. Check that the folder takes this job and claim it, then record the job as running
            self.open_folder()
            self._start()
            self.output = FrameOutput(self.job_dir, frame_name,
                                      PreviewEncoder(self.job_dir / PREVIEW_NAME, self.inputs.spec.model_fps))
            try:
                # 2. Generate every unfinished segment; its frames are written (and fed to the
                #    preview) on other threads while the next segment samples
                self._run_segments()
                # 3. The preview video: what is left of its encoding
                self._timed("preview", self._finish_preview)
                # 4. RGBA copies of the frames, when the job asks for a matte
                if self.inputs.spec.matte:
                    self._timed("matte", self._make_matte)
            except Cancelled:
                self._settle_written()
                self._close_output()
                self._save_end_state("cancelled")
                raise
            except BaseException:
                self._close_output()
                self._save_end_state("failed")
                raise
            # 5. Record the job as done, give the folder up, then say so
            manifest = self._finish()
            # 6. What the caller does with a finished take (the review: scores, review.json) while
            #    the folder is still this run's
            if self.after_finish is not None:
                self.after_finish(self.job_dir, self.components)
            self.claim.release()
            self.events("done", manifest=str(manifest))
            return manifest
        finally:
            self._release()

    def _start(self) -> None:
        """Fix the seed; write manifest.json (first: it marks the folder as this job's), state.json as
        "running", and frames/."""
        self.state.setdefault("seed", self._seed())
        self._write_json(MANIFEST_NAME, self.manifest("running"))
        self._save_state(status="running", completed_segments=self.completed)
        try:
            (self.job_dir / FRAMES_FOLDER).mkdir(exist_ok=True)
        except OSError as exc:
            raise output_error(exc, self.job_dir / FRAMES_FOLDER) from None
        if self.components.device.type == "cuda":  # the manifest's peak is this job's, not the process's
            torch.cuda.reset_peak_memory_stats(self.components.device)

    def _finish(self) -> Path:
        """state.json and manifest.json as "done"; returns the manifest path."""
        self._save_state(status="done")
        self._write_json(MANIFEST_NAME, self.manifest("done"))
        return self.job_dir / MANIFEST_NAME

    def _make_matte(self) -> None:
        def progress(kind: str, **fields) -> None:
            # One generation, one `started`: the matte reports as a phase of this job.
            if kind == "progress" and fields["phase"] != "load":
                self.events("progress", phase="matte", stage=fields["phase"], frame=fields["frame"],
                            frames=fields["frames"])

        self.segmenters.matte_generation(self.job_dir, self.inputs.spec.matte_prompt, progress, self._should_cancel)

    def _run_segments(self) -> None:
        device = self.components.device
        done = self.completed
        # A resumed job's preview starts with the frames already on disk.
        self.output.add_existing(k for segment in self.segments[:done] for k in segment.new_frames)
        if done == len(self.segments):
            return  # every frame is on disk: nothing to encode
        # 1. Encode what every segment shares: the reference, its mask and the prompts
        self.events("progress", phase="encode", segment=0, segments=len(self.segments))
        context = self._timed("encode", build_job_context, self.components, self.inputs, self._check_cancel)
        generator = torch.Generator("cpu").manual_seed(self.state["seed"])
        history, written_tail = self._resumed_tails(done) if done else (None, None)

        for segment in self.segments:
            # 2. Draw the segment's noise: one generator draws every segment's in turn, so a
            #    resumed job draws the same noise for the segments it has left
            noise = torch.randn(
                16, segment.latent_frames, self.inputs.height // 8, self.inputs.width // 8, generator=generator
            ).to(device)
            if segment.index < done:
                continue
            self._check_cancel()
            # 3. Generate the segment, conditioned on the previous one's decoded tail
            video = self._generate_segment(segment, context, noise, history)
            # 4. Write its new frames, colour-matched to what was written before: a post-process
            #    the model never sees
            if segment.history and self.inputs.spec.color_match:
                video_out = match_colours(video, video[:, : segment.history], written_tail.float())
            else:
                video_out = video
            written = pixels.from_model_tensor(video_out[:, segment.history : segment.length])
            self.output.add(segment.index, segment.new_frames, written)
            # 5. Keep the decoded tail as the next segment's history (as the official code does)
            #    and the written tail as the next colour-match target; the segment is recorded
            #    as done once its frames are all on disk (`_settle`)
            if segment.index + 1 < len(self.segments):
                history = history_tail(video, segment, self._overlap(), compute_dtype(self.components))
                written_tail = pixels.to_model_tensor(written[-self._overlap() :])
                self._save_history(segment.index, history)
            self._settle(wait=False)
        self._settle(wait=True)
        self.history.remove_folder()

    def _settle(self, wait: bool) -> None:
        """Say `frame_ready` for every frame now on disk and record each segment whose frames all are
        (with `wait`: once every frame handed over is written)."""
        try:
            settled = self.output.settle(wait)
        except OSError as exc:
            raise output_error(exc, Path(exc.filename or self.job_dir)) from None
        for index, frames in settled:
            for k, path in frames:
                self.events("frame_ready", index=k, path=str(path), source_time=self.inputs.frame_times[k][1])
            self._save_state(completed_segments=index + 1)
            self.history.forget_before(index)

    def _overlap(self) -> int:
        return self.segments[1].history if len(self.segments) > 1 else 5

    def _save_history(self, index: int, tail: torch.Tensor) -> None:
        try:
            self.history.save(index, tail)
        except OSError as exc:
            raise output_error(exc, self.history.path(index)) from None

    def _resumed_tails(self, done: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(history, colour-match target) for segment `done` of a resumed job: the decoded tail kept
        in history/, and the frames written last. A folder without that file (written by an older
        version, or emptied by hand) conditions on the written frames instead, with a warning."""
        written = self._frames_from_disk(self.segments[done - 1])
        history = self.history.load(done - 1)
        if history is None or tuple(history.shape) != tuple(written.shape):
            self._notes.append(f"{self.history.path(done - 1)} is missing: segment {done + 1} continues from the "
                               "written frames, so it may differ slightly from an uninterrupted run")
            history = written.to(compute_dtype(self.components))
        return history, written

    def _generate_segment(self, segment, context, noise, history) -> torch.Tensor:
        """Decoded video [3, padded_length, H, W] of one segment, history frames included (float, as decoded)."""
        # 1. Conditioning: driving frames and masks, the reference masks, the history latents
        cond = self._conditioning(segment, context, history)
        # 2. Denoise
        latents = self._sample(segment, cond, noise)
        self._check_cancel()
        # 3. Decode, latent frame by latent frame, stopping between them when cancelled
        self.events("progress", phase="decode", segment=segment.index + 1, segments=len(self.segments))
        return self._timed("decode", self.components.encoders.vae.decode, latents,
                           before_chunk=self._check_cancel).float().cpu()

    def _conditioning(self, segment: Segment, context: JobContext, history) -> SegmentConditioning:
        """Everything the network sees for `segment` besides the noisy latents."""
        enc, device = self.components.encoders, self.components.device
        frames, masks = self._timed("read", segment_driving, self.inputs, segment)
        self._check_cancel()
        driving = half_size(pixels.to_model_tensor(frames).to(device))
        pose_latents = self._timed("encode", enc.vae.encode, driving, before_chunk=self._check_cancel)
        driving_masks = encode_mask_video(half_size(to_signed_unit(torch.from_numpy(masks)))).to(device)
        ref_masks = torch.cat(
            [context.ref_mask_latents, context.ref_mask_latents.new_zeros(28, segment.latent_frames,
                                                                           *context.ref_mask_latents.shape[2:])],
            dim=1,
        )
        history_latents = None
        if segment.history:
            history_latents = self._timed("encode", enc.vae.encode, history.float().to(device),
                                          before_chunk=self._check_cancel)
        return SegmentConditioning(
            pose_latents=pose_latents, driving_masks=driving_masks, ref_latents=context.ref_latents,
            ref_masks=ref_masks, clip=context.clip, context=context.context,
            negative_context=context.negative_context, replace=self.inputs.spec.mode == "replace",
            extra_ref_latents=context.extra_ref_latents, extra_ref_masks=context.extra_ref_masks,
            history_latents=history_latents,
        )

    def _sample(self, segment: Segment, cond: SegmentConditioning, noise: torch.Tensor) -> torch.Tensor:
        """Clean latents of `segment`, reporting every denoising step."""

        def on_step(step, steps):
            self.events("progress", phase="sample", segment=segment.index + 1, segments=len(self.segments),
                        step=step, steps=steps)
            self._settle(wait=False)  # the previous segment's frames, written meanwhile

        with self.components.sampling() as transformer:
            transformer = shared_transformer(transformer)  # rank 0 of --gpus N: every rank takes the call
            return self._timed("sample", sample_segment, transformer, cond, noise, self.settings, on_step,
                               self._should_cancel)

    def _frames_from_disk(self, segment: Segment) -> torch.Tensor:
        """The last `overlap` frames written, as history for the next segment after a resume."""
        indices = range(segment.end - self._overlap(), segment.end)
        frames = np.stack([media.read_image(self.job_dir / frame_name(k))[0] for k in indices])
        return pixels.to_model_tensor(frames)

    def _finish_preview(self) -> None:
        path = self.job_dir / PREVIEW_NAME
        output, self.output = self.output, None
        try:
            output.close(keep_preview=True)
        except OSError as exc:
            raise output_error(exc, path) from None
        except media.MediaError as exc:  # OpenCV's writer reports no reason: most likely the disk
            raise OutputError(f"{exc}; is the disk full or the folder read-only? The frames are kept") from None

    def _settle_written(self) -> None:
        """On cancel: record the segments whose frames are already handed over, once they are written,
        so the resumed job does not make them again."""
        if self.output is not None:
            try:
                self._settle(wait=True)
            except OutputError:
                pass

    def _close_output(self) -> None:
        """A cancelled or failed run: let the writes in flight finish (each is atomic), drop the preview."""
        if self.output is not None:
            output, self.output = self.output, None
            try:
                output.close(keep_preview=False)
            except Exception:  # the run's own error is the one to report
                pass
