"""Flow-matching sampling of one SCAIL-2 segment, with CFG and history overwrite.

`docs/model.md`, sections "Sampler settings", "Segments and overlap" and "Matching the official code".

The schedulers are diffusers'; what is SCAIL-2-specific is the schedule the
reference uses, the text-only unconditional branch, and clean history latents
written over the first latent frames before every model call and after every
step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

import protocol

from ..models.transformer_scail2 import SCAIL2Transformer3DModel

SOLVERS = protocol.SAMPLERS  # ("unipc", "dpm++", "euler")


class Cancelled(Exception):
    """The job was cancelled between two denoising steps."""


@dataclass(frozen=True)
class SamplerSettings:
    steps: int
    guidance: float
    shift: float
    solver: str = "unipc"


@dataclass
class SegmentConditioning:
    """Everything the network sees for one segment besides the noisy latents.

    Shapes (latent grid T x H x W at 1/8 of the pixels): pose_latents [16, T, H/2, W/2];
    driving_masks [28, T, H/2, W/2]; ref_latents [16, 1, H, W]; ref_masks [28, 1+T, H, W];
    clip [1, 257, 1280]; context / negative_context: [L, text_dim];
    extra_ref_latents [16, N, H, W] and extra_ref_masks [28, N, H, W] or None;
    history_latents [16, K, H, W] (clean latents of the previous segment's tail) or None.
    """

    pose_latents: torch.Tensor
    driving_masks: torch.Tensor
    ref_latents: torch.Tensor
    ref_masks: torch.Tensor
    clip: torch.Tensor
    context: torch.Tensor
    negative_context: torch.Tensor
    replace: bool = False
    extra_ref_latents: torch.Tensor | None = None
    extra_ref_masks: torch.Tensor | None = None
    history_latents: torch.Tensor | None = None


def flow_sigmas(steps: int, shift: float, start: float) -> np.ndarray:
    """n evenly spaced sigmas from `start` down towards 0 (0 itself left out), flow-shifted by `shift`."""
    sigma = np.linspace(start, 0.0, steps + 1)[:steps]
    return shift * sigma / (1 + (shift - 1) * sigma)


def _dpm_solver(steps: int, shift: float) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2nd order, midpoint, first order at the last step, final sigma 0) on the official
    wan-scail2 schedule: sigmas from 1.0 shifted once, timesteps 1000 sigma truncated to integers.

    diffusers' own flow schedule for this solver starts at 0.999 and it takes no custom sigmas, so
    the schedule is set after `set_timesteps` (which resets the solver's history).
    """
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        euler_at_final=False, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(steps)
    sigmas = flow_sigmas(steps, shift, 1.0)
    scheduler.timesteps = torch.from_numpy(sigmas * 1000).to(torch.int64)
    scheduler.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
    return scheduler


def make_scheduler(settings: SamplerSettings):
    """A diffusers scheduler set to the reference's shifted flow sigmas."""
    n = settings.steps
    if settings.solver == "unipc":
        scheduler = UniPCMultistepScheduler(
            num_train_timesteps=1000, prediction_type="flow_prediction",
            use_flow_sigmas=True, flow_shift=settings.shift,
        )
        scheduler.set_timesteps(sigmas=np.linspace(0.999, 0.0, n + 1)[:n])
    elif settings.solver == "dpm++":
        scheduler = _dpm_solver(n, settings.shift)
    elif settings.solver == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=settings.shift)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, n + 1)[:n])
    else:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {settings.solver!r}")
    # The schedule is stepped from its first timestep. Left to find where it starts, a diffusers scheduler looks
    # the first timestep up and takes its *second* place when it is there twice (made for img2img), which the
    # integer timesteps of a long schedule are: UniPC then ran one step short and failed its last from 501 steps.
    scheduler.set_begin_index(0)
    return scheduler


def uses_cfg(guidance: float) -> bool:
    """Whether the unconditional pass runs: for every scale but 1, where uncond + 1 (cond - uncond)
    is exactly the conditional prediction (the official SAT guider applies the formula at every
    scale; `docs/model.md`, "Matching the official code")."""
    return guidance != 1.0


def sample_segment(
    transformer,
    cond: SegmentConditioning,
    noise: torch.Tensor,
    settings: SamplerSettings,
    on_step: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Denoise `noise` [16, T, H, W] into clean latents [16, T, H, W] (float32)."""
    device = noise.device
    scheduler = make_scheduler(settings)
    latents = noise.float()
    history_mask = None
    if cond.history_latents is not None:
        kept = cond.history_latents.shape[1]
        history_mask = torch.zeros(4, *latents.shape[1:], device=device)
        history_mask[:, :kept] = 1.0

    def with_history(x):
        if cond.history_latents is None:
            return x
        x = x.clone()
        x[:, : cond.history_latents.shape[1]] = cond.history_latents
        return x

    use_cfg = uses_cfg(settings.guidance)
    contexts = [cond.context, cond.negative_context] if use_cfg else [cond.context]
    batch = len(contexts)

    def conditioning(n):
        """The call's inputs besides x and t, for a batch of n (CFG's passes share all but the text)."""
        return dict(
            context=contexts,
            pose_latents=[cond.pose_latents] * n,
            driving_masks=[cond.driving_masks] * n,
            ref_latents=[cond.ref_latents] * n,
            ref_masks=[cond.ref_masks] * n,
            clip_fea=cond.clip,
            replace_flag=cond.replace,
            history_mask=None if history_mask is None else [history_mask] * n,
            additional_ref_latents=None if cond.extra_ref_latents is None else [cond.extra_ref_latents] * n,
            additional_ref_masks=None if cond.extra_ref_masks is None else [cond.extra_ref_masks] * n,
        )

    if isinstance(transformer, SCAIL2Transformer3DModel):
        # What does not change between steps is embedded once (`forward` without x), for the whole
        # batch so that every step computes exactly what a whole call would; CFG's passes then share
        # one sample's tensors. Under --gpus the transformer is rank 0's shared call, which relays
        # whole calls.
        with torch.no_grad():
            step_inputs = dict(conditioning=transformer(**conditioning(batch)).first_sample())
    else:
        step_inputs = conditioning(batch)
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        latents = with_history(latents)
        with torch.no_grad():
            velocity = transformer(x=[latents] * batch, t=t.to(device).expand(batch), **step_inputs)
        if use_cfg:
            cond_v, uncond_v = velocity
            velocity = uncond_v + settings.guidance * (cond_v - uncond_v)
        else:
            velocity = velocity[0]
        latents = scheduler.step(velocity.float().unsqueeze(0), t, latents.unsqueeze(0), return_dict=False)[0][0]
        latents = with_history(latents)
        if on_step is not None:
            on_step(i + 1, len(timesteps))
    return latents
