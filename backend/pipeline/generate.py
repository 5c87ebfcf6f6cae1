"""Running one generation job: from prepared inputs to numbered frames, preview and manifest.

A job directory holds `manifest.json` (settings, inputs with hashes, the
frame-to-source-time map, timings, warnings), `state.json` (how many segments
are finished) and `frames/frame_NNNNNN.png`. Frames are written atomically as
each segment is decoded, so an interrupted job keeps what it finished and can
resume from its last completed segment with the same noise.
"""

from __future__ import annotations

import json
import resource
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import protocol

from ..loaders.components import Components
from . import media
from .inputs import PreparedInputs, fallback_mask
from .masks import encode_mask_video, to_signed_unit
from .media import write_json_atomic
from .sampler import Cancelled, SamplerSettings, SegmentConditioning, sample_segment
from .segments import Segment, plan_segments

NOISE_LABEL = "tiny profile: random weights, the frames are noise"
EventSink = Callable[..., None]


class JobDirectoryError(ValueError):
    """The output folder cannot take this job."""


def preset_settings(spec, short_side: int) -> SamplerSettings:
    """The preset's sampler settings (`docs/model.md`, section "Sampler settings"), overridden by any
    explicit value in the spec.

    quality: the official defaults, UniPC 40 steps, CFG 5, shift 3 at 512p and 5 above.
    fast: the official step-distilled recipe, 8 steps, no CFG, shift 1 (meant for the
    LightX2V distillation LoRA).
    """
    if spec.preset == "fast":
        defaults = SamplerSettings(steps=8, guidance=1.0, shift=1.0, solver="unipc")
    else:
        defaults = SamplerSettings(steps=40, guidance=5.0, shift=3.0 if short_side <= 512 else 5.0, solver="unipc")
    return SamplerSettings(
        steps=spec.steps or defaults.steps,
        guidance=defaults.guidance if spec.guidance is None else spec.guidance,
        shift=defaults.shift if spec.shift is None else spec.shift,
        solver=spec.sampler or defaults.solver,
    )


def frame_name(index: int) -> str:
    return f"frames/frame_{index:06d}.png"


def read_state(job_dir: Path) -> dict[str, Any]:
    path = job_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"status": "new", "completed_segments": 0}


@dataclass
class JobContext:
    """Per-job tensors that do not change between segments."""

    ref_latents: torch.Tensor
    ref_mask_latents: torch.Tensor  # [28, 1, H/8, W/8]
    clip: torch.Tensor
    context: torch.Tensor
    negative_context: torch.Tensor
    extra_ref_latents: torch.Tensor | None
    extra_ref_masks: torch.Tensor | None


def _mask_latents(rgb_uint8: np.ndarray) -> torch.Tensor:
    """Colour mask still [H, W, 3] -> [28, 1, H/8, W/8]."""
    return encode_mask_video(to_signed_unit(torch.from_numpy(rgb_uint8[None])))


def _paste_on_black(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replacement mode: the reference outside its character mask becomes black before encoding."""
    background = (mask > 225).all(axis=-1) | (mask <= 225).all(axis=-1)  # white or black pixels
    out = rgb.copy()
    out[background] = 0
    return out


def build_job_context(components: Components, inputs: PreparedInputs) -> JobContext:
    enc, device = components.encoders, components.device
    spec = inputs.spec
    reference = inputs.reference
    if spec.mode == "replace":
        reference = _paste_on_black(reference, inputs.reference_mask)
    # A worker keeps its models between jobs; the encoders went off the device after the last one.
    enc.text.to(device)
    enc.image.to(device)
    ref_video = media.to_model_tensor(reference[None]).to(device)
    ref_latents = enc.vae.encode(ref_video)
    clip = enc.image.encode(media.to_model_tensor(inputs.reference).to(device))
    context, negative = enc.text.encode([spec.prompt, spec.negative_prompt])
    extra_latents = extra_masks = None
    if inputs.extra_references:
        extra_latents = torch.cat(
            [enc.vae.encode(media.to_model_tensor(rgb[None]).to(device)) for rgb, _ in inputs.extra_references], dim=1
        )
        extra_masks = torch.cat([_mask_latents(mask) for _, mask in inputs.extra_references], dim=1).to(device)
    # The encoders' outputs exist now: their weights need no GPU memory for the rest of the job.
    enc.text.free()
    enc.image.free()
    return JobContext(
        ref_latents, _mask_latents(inputs.reference_mask).to(device), clip, context, negative,
        extra_latents, extra_masks,
    )


def _pad_to(frames: np.ndarray, length: int) -> np.ndarray:
    """Repeat the last frame so the segment has the model's 4k+1 frames."""
    if len(frames) == length:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], length - len(frames), axis=0)])


def _half_size(video: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] -> [3, T, H/2, W/2], bilinear as the reference."""
    return F.interpolate(video.transpose(0, 1), scale_factor=0.5, mode="bilinear", align_corners=False).transpose(0, 1)


def segment_driving(inputs: PreparedInputs, segment: Segment) -> tuple[np.ndarray, np.ndarray]:
    """Driving frames and colour-mask frames of a segment at the job's size, padded to 4k+1."""
    indices = [inputs.frame_times[k][0] for k in range(segment.start, segment.end)]
    frames = media.resize_cover_crop(media.read_frames(inputs.driving, indices), inputs.height, inputs.width)
    if inputs.driving_mask is not None:
        masks = media.read_frames(inputs.driving_mask, indices)
        # Like the reference: masks are resized as images; the encoding's >225 threshold cleans the edges.
        masks = media.resize_cover_crop(masks, inputs.height, inputs.width)
    else:
        masks = np.repeat(fallback_mask(inputs.height, inputs.width)[None], len(indices), axis=0)
    return _pad_to(frames, segment.padded_length), _pad_to(masks, segment.padded_length)


def match_colours(video: torch.Tensor, overlap: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Shift/scale each channel of `video` [3, T, H, W] so its overlap frames match the target's statistics."""
    dims = (1, 2, 3)
    scale = target.std(dim=dims, keepdim=True) / overlap.std(dim=dims, keepdim=True).clamp_min(1e-4)
    shift = target.mean(dim=dims, keepdim=True) - overlap.mean(dim=dims, keepdim=True) * scale
    return (video * scale + shift).clamp(-1, 1)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class GenerationJob:
    """One job directory being generated; `run()` can be called again after an interruption."""

    def __init__(self, inputs: PreparedInputs, components: Components, job_dir: Path, events: EventSink | None = None,
                 segmenters=None):
        """`segmenters` (segmentation.run.Segmenters, or anything with its `matte_generation`) makes the
        RGBA frames of a job whose spec asks for a matte."""
        if inputs.spec.matte and segmenters is None:
            raise ValueError("this job asks for a matte but no segmentation model was given")
        self.inputs, self.components, self.segmenters = inputs, components, segmenters
        self.job_dir = Path(job_dir)
        self.events = events or (lambda kind, **fields: None)
        self.segments = plan_segments(len(inputs.frame_times))
        self.settings = preset_settings(inputs.spec, min(inputs.height, inputs.width))
        self.state = read_state(self.job_dir)
        self.timings: dict[str, float] = dict(self.state.get("timings", {}))

    # -- manifest ---------------------------------------------------------------------------
    def _seed(self) -> int:
        if "seed" in self.state:
            return int(self.state["seed"])
        return self.inputs.spec.seed if self.inputs.spec.seed >= 0 else secrets.randbits(31)

    @cached_property
    def input_hashes(self) -> dict[str, str]:
        """SHA-256 of every input file, hashed once per run."""
        spec = self.inputs.spec
        files = [spec.driving, spec.reference, spec.driving_mask, spec.reference_mask, *spec.extra_references,
                 *spec.extra_reference_masks, *(lora["path"] for lora in spec.loras)]
        return {f: media.file_sha256(f) for f in files if f and Path(f).is_file()}

    def manifest(self, status: str) -> dict[str, Any]:
        inputs, spec = self.inputs, self.inputs.spec
        return {
            "format": protocol.MANIFEST_FORMAT,
            "id": self.job_dir.name,
            "status": status,
            "job": spec.to_dict(),
            "seed": self.state["seed"],
            "model": {"label": self.components.label, "noise_only": self.components.noise_only,
                      "files": self.components.files, "loras": self.components.loras},
            "sampler": vars(self.settings),
            "size": [inputs.height, inputs.width],
            "model_fps": spec.model_fps,
            "source": {"path": inputs.driving.path, "fps": inputs.driving.fps,
                       "frame_count": inputs.driving.frame_count},
            "inputs": self.input_hashes,
            "frames": [
                {"index": k, "file": frame_name(k), "source_frame": src, "source_time": t}
                for k, (src, t) in enumerate(inputs.frame_times)
            ],
            "segments": [vars(s) for s in self.segments],
            "preview": "preview.mp4",
            "matte": protocol.MATTE_FOLDER if spec.matte else None,
            "timings": self.timings,
            "peak_memory_bytes": _peak_memory(self.components.device),
            "warnings": self.warnings(),
        }

    def warnings(self) -> list[str]:
        warnings = [NOISE_LABEL] if self.components.noise_only else []
        if self.inputs.spec.preset == "fast" and not self.inputs.spec.loras and not self.components.noise_only:
            warnings.append("the fast preset expects the LightX2V step-distillation LoRA (--lora); without it "
                            "8 steps give a blurry result")
        return warnings + self.inputs.warnings

    def _save_state(self, **changes) -> None:
        self.state.update(changes, timings=self.timings)
        write_json_atomic(self.job_dir / "state.json", self.state)

    def _timed(self, stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
        return result

    # -- run ----------------------------------------------------------------------------------
    def check_resumable(self) -> None:
        """A job directory that holds another job's frames is never overwritten."""
        manifest = self.job_dir / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("job") != self.inputs.spec.to_dict():
            raise JobDirectoryError(f"{self.job_dir} holds a different job; choose another output folder")

    def run(self, should_cancel: Callable[[], bool] | None = None) -> Path:
        """Generate every unfinished segment; return the manifest path.

        Raises sampler.Cancelled when `should_cancel()` turns true (checked between denoising
        steps, segments and stages); state.json then says "cancelled" and the job resumes later.
        """
        should_cancel = should_cancel or (lambda: False)
        # 1. Check that the folder takes this job, then record it as running
        self.check_resumable()
        self._start()
        try:
            # 2. Generate every unfinished segment, writing its frames as it is decoded
            self._run_segments(should_cancel)
            # 3. RGBA copies of the frames, when the job asks for a matte
            if self.inputs.spec.matte:
                self._timed("matte", self._make_matte, should_cancel)
        except Cancelled:
            self._save_state(status="cancelled")
            raise
        except BaseException:
            self._save_state(status="failed")
            raise
        # 4. The preview video
        self._timed("preview", self._write_preview)
        # 5. Record the job as done
        return self._finish()

    def _start(self) -> None:
        """Create frames/, fix the seed, and write state.json and manifest.json as "running"."""
        (self.job_dir / "frames").mkdir(parents=True, exist_ok=True)
        self.state.setdefault("seed", self._seed())
        self._save_state(status="running")
        write_json_atomic(self.job_dir / "manifest.json", self.manifest("running"))
        if self.components.device.type == "cuda":  # the manifest's peak is this job's, not the process's
            torch.cuda.reset_peak_memory_stats(self.components.device)

    def _finish(self) -> Path:
        """state.json and manifest.json as "done", then the `done` event; returns the manifest path."""
        self._save_state(status="done")
        manifest = self.job_dir / "manifest.json"
        write_json_atomic(manifest, self.manifest("done"))
        self.events("done", manifest=str(manifest))
        return manifest

    def _make_matte(self, should_cancel: Callable[[], bool]) -> None:
        def progress(kind: str, **fields) -> None:
            # One generation, one `started`: the matte reports as a phase of this job.
            if kind == "progress" and fields["phase"] != "load":
                self.events("progress", phase="matte", stage=fields["phase"], frame=fields["frame"],
                            frames=fields["frames"])

        self.segmenters.matte_generation(self.job_dir, self.inputs.spec.matte_prompt, progress, should_cancel)

    def _run_segments(self, should_cancel: Callable[[], bool]) -> None:
        device = self.components.device
        # 1. Encode what every segment shares: the reference, its mask and the prompts
        self.events("progress", phase="encode", segment=0, segments=len(self.segments))
        context = self._timed("encode", build_job_context, self.components, self.inputs)
        generator = torch.Generator("cpu").manual_seed(self.state["seed"])
        done = self.state.get("completed_segments", 0)
        previous_tail = self._frames_from_disk(self.segments[done - 1]) if done else None

        for segment in self.segments:
            # 2. Draw the segment's noise: one generator draws every segment's in turn, so a
            #    resumed job draws the same noise for the segments it has left
            noise = torch.randn(
                16, segment.latent_frames, self.inputs.height // 8, self.inputs.width // 8, generator=generator
            ).to(device)
            if segment.index < done:
                continue
            if should_cancel():
                raise Cancelled()
            # 3. Generate the segment and write its new frames
            video = self._generate_segment(segment, context, noise, previous_tail, should_cancel)
            written = media.from_model_tensor(video[:, segment.history : segment.length])
            self._write_frames(segment, written)
            # 4. Keep its tail as the next segment's history: what was written (8-bit), so a resumed
            #    job continues exactly as an uninterrupted one
            previous_tail = media.to_model_tensor(written[-self._overlap() :])
            self._save_state(completed_segments=segment.index + 1)

    def _overlap(self) -> int:
        return self.segments[1].history if len(self.segments) > 1 else 5

    def _generate_segment(self, segment, context, noise, previous_tail, should_cancel) -> torch.Tensor:
        """Decoded video [3, padded_length, H, W] of one segment, history frames included."""
        # 1. Conditioning: driving frames and masks, the reference masks, the history latents
        cond = self._conditioning(segment, context, previous_tail)
        # 2. Denoise
        latents = self._sample(segment, cond, noise, should_cancel)
        if should_cancel():
            raise Cancelled()
        # 3. Decode
        self.events("progress", phase="decode", segment=segment.index + 1, segments=len(self.segments))
        video = self._timed("decode", self.components.encoders.vae.decode, latents).float().cpu()
        # 4. Colour-match: scale the video so its history frames match the previous segment's tail
        if segment.history and self.inputs.spec.color_match:
            video = match_colours(video, video[:, : segment.history], previous_tail.float().cpu())
        return video

    def _conditioning(self, segment: Segment, context: JobContext, previous_tail) -> SegmentConditioning:
        """Everything the network sees for `segment` besides the noisy latents."""
        enc, device = self.components.encoders, self.components.device
        frames, masks = self._timed("read", segment_driving, self.inputs, segment)
        driving = _half_size(media.to_model_tensor(frames).to(device))
        pose_latents = self._timed("encode", enc.vae.encode, driving)
        driving_masks = encode_mask_video(_half_size(to_signed_unit(torch.from_numpy(masks)))).to(device)
        ref_masks = torch.cat(
            [context.ref_mask_latents, context.ref_mask_latents.new_zeros(28, segment.latent_frames,
                                                                           *context.ref_mask_latents.shape[2:])],
            dim=1,
        )
        history = None
        if segment.history:
            history = self._timed("encode", enc.vae.encode, previous_tail.to(device))
        return SegmentConditioning(
            pose_latents=pose_latents, driving_masks=driving_masks, ref_latents=context.ref_latents,
            ref_masks=ref_masks, clip=context.clip, context=context.context,
            negative_context=context.negative_context, replace=self.inputs.spec.mode == "replace",
            extra_ref_latents=context.extra_ref_latents, extra_ref_masks=context.extra_ref_masks,
            history_latents=history,
        )

    def _sample(self, segment: Segment, cond: SegmentConditioning, noise: torch.Tensor,
                should_cancel: Callable[[], bool]) -> torch.Tensor:
        """Clean latents of `segment`, reporting every denoising step."""

        def on_step(step, steps):
            self.events("progress", phase="sample", segment=segment.index + 1, segments=len(self.segments),
                        step=step, steps=steps)

        with self.components.sampling() as transformer:
            return self._timed("sample", sample_segment, transformer, cond, noise, self.settings, on_step,
                               should_cancel)

    def _write_frames(self, segment: Segment, frames: np.ndarray) -> None:
        for k, rgb in zip(segment.new_frames, frames):
            path = self.job_dir / frame_name(k)
            media.write_png_atomic(path, rgb)
            self.events("frame_ready", index=k, path=str(path), source_time=self.inputs.frame_times[k][1])

    def _frames_from_disk(self, segment: Segment) -> torch.Tensor:
        """The last `overlap` frames written, as history for the next segment after a resume."""
        indices = range(segment.end - self._overlap(), segment.end)
        frames = np.stack([media.read_image(self.job_dir / frame_name(k))[0] for k in indices])
        return media.to_model_tensor(frames)

    def _write_preview(self) -> None:
        frames = np.stack(
            [media.read_image(self.job_dir / frame_name(k))[0] for k in range(len(self.inputs.frame_times))]
        )
        media.write_preview_mp4(self.job_dir / "preview.mp4", frames, self.inputs.spec.model_fps)
