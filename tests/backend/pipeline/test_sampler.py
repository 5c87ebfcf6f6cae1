"""backend.pipeline.sampler against the official wan-scail2 sampler (issue 16, "Official numerics").

The official DPM++ path builds its schedule as n sigmas evenly spaced from 1 down towards 0,
flow-shifted once by s (s x / (1 + (s - 1) x)), timesteps 1000 sigma as int64 (truncated), and a
final sigma of 0; its guidance is uncond + g (cond - uncond).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.pipeline.sampler import SamplerSettings, SegmentConditioning, make_scheduler, sample_segment


def official_dpm_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    sigma = np.linspace(1, 0, steps + 1)[:steps]
    sigma = shift * sigma / (1 + (shift - 1) * sigma)
    timesteps = torch.from_numpy(sigma * 1000).to(torch.int64)
    return timesteps, torch.from_numpy(np.concatenate([sigma, [0.0]]).astype(np.float32))


@pytest.mark.parametrize("steps, shift", [(8, 3.0), (40, 5.0), (4, 12.0), (20, 1.0)])
def test_dpm_schedule_is_the_official_one(steps, shift):
    scheduler = make_scheduler(SamplerSettings(steps=steps, guidance=5.0, shift=shift, solver="dpm++"))
    timesteps, sigmas = official_dpm_schedule(steps, shift)
    assert torch.equal(scheduler.timesteps, timesteps)
    assert torch.equal(scheduler.sigmas, sigmas)
    assert scheduler.timesteps[0] == 1000  # the official DPM++ starts at sigma 1, UniPC at 0.999
    assert scheduler.config.algorithm_type == "dpmsolver++" and scheduler.config.solver_order == 2
    assert scheduler.config.prediction_type == "flow_prediction"


@pytest.mark.parametrize("solver", ["dpm++", "unipc", "euler"])
def test_every_solver_lands_on_the_clean_latents_of_an_exact_velocity(solver):
    # A network that knows the clean sample x0 predicts the flow velocity v = (x - x0) / sigma; every
    # flow solver must then end on x0, whatever its order, if it reads the output as a velocity.
    torch.manual_seed(0)
    x0, x = torch.randn(1, 16, 2, 3, 4), torch.randn(1, 16, 2, 3, 4)
    scheduler = make_scheduler(SamplerSettings(steps=6, guidance=1.0, shift=3.0, solver=solver))
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        x = scheduler.step((x - x0) / sigma, t, x, return_dict=False)[0]
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_a_long_schedule_whose_integer_timesteps_repeat_runs_every_step(solver):
    """Steps the job spec allows past the 1000 training timesteps (and UniPC's from 501, whose first timestep then
    appears twice) take every step from the first, with the solver's full order, and end finite."""
    torch.manual_seed(0)
    x0, x = torch.randn(1, 16, 1, 2, 2), torch.randn(1, 16, 1, 2, 2)
    for steps in (501, 2000):
        scheduler = make_scheduler(SamplerSettings(steps=steps, guidance=1.0, shift=3.0, solver=solver))
        sigmas = scheduler.sigmas
        latents = x.clone()
        for i, t in enumerate(scheduler.timesteps):
            assert scheduler.step_index in (None, i)  # stepped from the first timestep on, one by one
            latents = scheduler.step((latents - x0) / sigmas[i], t, latents, return_dict=False)[0]
        assert scheduler.step_index == steps
        torch.testing.assert_close(latents, x0, atol=1e-3, rtol=0)


class TextOnlyNetwork(torch.nn.Module):
    """Velocity 3 for the prompt's context, -1 for the negative prompt's; counts the samples it is asked for."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, t, context, **_):
        self.batches.append(len(x))
        return [torch.full_like(latent, 3.0 if c[0, 0] > 0 else -1.0) for latent, c in zip(x, context)]


def conditioning() -> SegmentConditioning:
    zeros = torch.zeros(1)
    return SegmentConditioning(pose_latents=zeros, driving_masks=zeros, ref_latents=zeros, ref_masks=zeros,
                               clip=zeros, context=torch.ones(3, 8), negative_context=-torch.ones(2, 8))


@pytest.mark.parametrize("guidance", [0.0, 0.5, 1.0, 5.0])
def test_guidance_is_uncond_plus_g_times_the_difference_at_every_scale(guidance):
    network, noise = TextOnlyNetwork(), torch.randn(16, 2, 3, 4)
    # Euler, one step from sigma 1 to 0: the result is noise - velocity.
    out = sample_segment(network, conditioning(), noise, SamplerSettings(steps=1, guidance=guidance, shift=1.0,
                                                                       solver="euler"))
    velocity = -1.0 + guidance * (3.0 - -1.0)
    torch.testing.assert_close(out, noise - velocity, atol=1e-6, rtol=0)
    # Only g = 1 skips the unconditional pass: there the formula is exactly the conditional velocity.
    assert network.batches == ([1] if guidance == 1.0 else [2])


def test_the_segment_is_embedded_once_and_samples_as_whole_calls_do():
    """With the real network the sampler embeds the conditioning once per segment; every step's
    velocity is exactly what a whole call (as a --gpus rank relays it) gives."""
    from scail_fixtures import tiny_model

    model = tiny_model()
    torch.manual_seed(0)
    t_lat, h, w, dim = 3, 4, 4, model.config.text_dim
    cond = SegmentConditioning(
        pose_latents=torch.randn(16, t_lat, h // 2, w // 2), driving_masks=torch.rand(28, t_lat, h // 2, w // 2),
        ref_latents=torch.randn(16, 1, h, w), ref_masks=torch.rand(28, 1 + t_lat, h, w),
        clip=torch.randn(1, 257, 1280), context=torch.randn(5, dim), negative_context=torch.randn(0, dim),
        history_latents=torch.randn(16, 1, h, w),
    )
    pose_calls = []
    model.patch_embedding_pose.register_forward_hook(lambda *_: pose_calls.append(1))
    noise = torch.randn(16, t_lat, h, w)
    settings = SamplerSettings(steps=4, guidance=5.0, shift=3.0)
    cached = sample_segment(model, cond, noise, settings)
    assert len(pose_calls) == 1
    whole_calls = sample_segment(lambda **kwargs: model(**kwargs), cond, noise, settings)
    assert len(pose_calls) == 1 + 4
    assert torch.equal(cached, whole_calls)
