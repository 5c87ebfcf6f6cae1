"""The reference still reaches the VAE and CLIP as the official code gives it to them (issue 16,
"Official numerics"): resized as a float image (bicubic, antialiased, as torchvision resizes a float
tensor), overshoot beyond [-1, 1] kept, never rounded to 8 bits; a square one comes out portrait."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend.loaders.components import MemoryOptions, load_components
from backend.pipeline import durable, pixels
from backend.pipeline.conditioning import build_job_context, still_tensor
from backend.pipeline.inputs import prepare_inputs
from protocol import JobSpec


@pytest.fixture(scope="module")
def driving(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("driving") / "clip.mp4"
    durable.write_preview_mp4(path, np.full((3, 32, 64, 3), 90, np.uint8), 16.0)
    return str(path)


def checkerboard(tmp_path, size=(48, 48), cell=3) -> tuple[str, np.ndarray]:
    """Sharp black and white cells: bicubic rings past both ends of the range at every edge."""
    y, x = np.indices(size)
    rgb = np.repeat((((y // cell + x // cell) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    path = tmp_path / "checker.png"
    durable.write_png_atomic(path, rgb)
    return str(path), rgb


def official_resize(rgb: np.ndarray, height: int, width: int) -> torch.Tensor:
    """The official still: ToTensor * 2 - 1, resized to cover (bicubic, antialiased), centre crop, [3, H, W]."""
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    h, w = image.shape[2:]
    size = (height, int(w * height / h)) if w / h > width / height else (int(h * width / w), width)
    image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return image[:, top : top + height, left : left + width]


@pytest.mark.parametrize("shape, expected", [((48, 48), (896, 512)), ((47, 48), (512, 896)), ((48, 47), (896, 512))])
def test_a_square_reference_gives_portrait_as_the_official_sampler(tmp_path, driving, shape, expected):
    path, _ = checkerboard(tmp_path, shape)
    inputs = prepare_inputs(JobSpec(driving=driving, reference=path))
    assert (inputs.height, inputs.width) == expected


def test_the_reference_reaches_the_vae_and_clip_as_a_float_image(tmp_path, driving):
    path, rgb = checkerboard(tmp_path)
    inputs = prepare_inputs(JobSpec(driving=driving, reference=path, height=64, width=32, frame_end=1))
    still = still_tensor(inputs.reference)
    torch.testing.assert_close(still, official_resize(rgb, 64, 32), atol=1e-6, rtol=0)
    assert still.min() < -1.01 and still.max() > 1.01  # the bicubic overshoot is kept

    tiny = load_components("tiny", "cpu", MemoryOptions(dtype=torch.float32))
    context = build_job_context(tiny, inputs)
    vae, clip = tiny.encoders.vae, tiny.encoders.image
    torch.testing.assert_close(context.ref_latents, vae.encode(still[:, None]), atol=0, rtol=0)
    torch.testing.assert_close(context.clip, clip.encode(still), atol=0, rtol=0)
    rounded = pixels.to_model_tensor(pixels.from_model_tensor(still))  # what an 8-bit path would encode
    assert (vae.encode(rounded[:, None]) - context.ref_latents).abs().max() > 1e-4
