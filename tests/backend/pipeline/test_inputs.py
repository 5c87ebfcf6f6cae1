"""backend.pipeline.inputs: a job's inputs checked before any model time (issue 14, items 5, 7, 8, 9).

The same checks are reached through `python -m backend generate` (in-process `cli.main`) and the
worker (its submit check and `prepare_inputs`, which its job thread runs before loading a model).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scail_fixtures import FOOTAGE
from test_probe import png_header_only

from backend import cli
from backend.pipeline import media
from backend.pipeline.inputs import InputError, check_input_files, misalignment, prepare_inputs
from protocol import PALETTE, JobSpec

DRIVING = FOOTAGE / "scail_001_driving.mp4"  # 2048x1080, 65 frames
REFERENCE = FOOTAGE / "scail_001_ref.jpg"  # 1920x1080
SMALL = dict(height=64, width=128, steps=1, seed=3, frame_end=3)


def _local_client():
    """A connection in paths mode (a local worker's stdio), as submits from Blender on this machine come."""
    from backend.service.serve import Output

    return Output(lambda data: None, "test")


def write_rgb(path, rgb: np.ndarray) -> str:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return str(path)


def palette_mask(height: int, width: int, background=(255, 255, 255), extra=None) -> np.ndarray:
    """Identity 1 (blue) on the left third, identity 2 (red) in the middle; `extra` = (colour, share of the
    width) paints a band of another colour on the right."""
    mask = np.empty((height, width, 3), np.uint8)
    mask[:] = background
    mask[:, width // 12 : width // 3] = PALETTE[0]
    mask[:, width // 3 + width // 12 : 2 * width // 3] = PALETTE[1]
    if extra is not None:
        colour, share = extra
        mask[:, width - int(width * share) :] = colour
    return mask


def sequence(folder, count: int, size=(48, 64), name="frame_{:04d}.png", frames=None) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(count):
        frame = np.full((*size, 3), 30 * i % 256, np.uint8) if frames is None else frames(i)
        write_rgb(folder / name.format(i + 1), frame)


@pytest.fixture()
def no_model(monkeypatch):
    import backend.loaders.components

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(backend.loaders.components, "load_components", refuse)


def generate(capsys, *args) -> tuple[int, str]:
    status = cli.main(["generate", "--model", "tiny", "--device", "cpu", *map(str, args)])
    return status, capsys.readouterr().err.strip()


# -- one line before any model time, through the CLI ---------------------------------------------


def test_impossible_numbers_and_sizes_are_one_line_before_any_model(tmp_path, capsys, no_model):
    big = tmp_path / "big.png"
    png_header_only(big, 20000, 20000)
    common = ["--driving", DRIVING, "--reference", REFERENCE, "--out", tmp_path / "out"]
    cases = {
        ("--guidance", "inf"): "guidance must be a finite number, got inf",
        ("--guidance", "nan"): "guidance must be a finite number, got nan",
        ("--shift", "-1"): "shift must be 0.1 to 20, got -1",
        ("--fps", "0"): "model frame rate must be 0.1 to 1000, got 0",
        ("--seed", str(2 ** 64)): "seed must be -1 (pick one) or 0 to 2**64 - 1",
        ("--height", "32000", "--width", "32000"): "size 32000x32000 is over the limit of 2048 pixels a side",
        ("--sampler", "euler", "--steps", str(10 ** 9)): "steps must be at least 1 and at most 10000",
        ("--reference", big): "reference image is 20000x20000 (400 MP), over the limit of 67.1 MP for inputs",
        ("--driving", tmp_path / "shot_%04d.png"): f"driving clip: no file in {tmp_path} matches the pattern",
        ("--lora", f"{tmp_path / 'style.safetensors'}:nan"): "LoRA strength must be a number from -10 to 10",
    }
    for override, message in cases.items():
        status, err = generate(capsys, *common, *override)
        assert status == cli.EXIT_BAD_INPUT and err.startswith("error: ") and "\n" not in err, (override, err)
        assert message in err, (override, err)
    assert not (tmp_path / "out").exists()


def test_the_worker_refuses_impossible_numbers_at_submit(tmp_path):
    from backend.service.jobs import BAD_INPUT, ProtocolFailure
    from backend.service.worker import Worker

    worker = Worker("tiny", "cpu", {}, tmp_path / "jobs")
    for changes, message in [({"guidance": float("nan")}, "guidance must be a finite number"),
                             ({"shift": -1.0}, "shift must be 0.1 to 20"), ({"seed": 2 ** 70}, "seed must be -1")]:
        job = JobSpec(driving=str(DRIVING), reference=str(REFERENCE)).to_dict() | changes
        with pytest.raises(ProtocolFailure, match=message) as info:
            worker._on_submit({"job": job}, _local_client())
        assert info.value.code == BAD_INPUT


# -- the input pixel limit -----------------------------------------------------------------------


def test_a_masks_job_reads_its_source_under_the_same_limit(tmp_path, capsys):
    big = tmp_path / "big.png"
    png_header_only(big, 20000, 20000)
    status = cli.main(["masks", "--model", "tiny", "--device", "cpu", "--image", str(big), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert status == cli.EXIT_BAD_INPUT and "\n" not in err, err
    assert err.startswith("error: image is 20000x20000 (400 MP), over the limit"), err


def test_the_input_limit_is_a_job_setting(tmp_path):
    spec = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), **SMALL)
    assert prepare_inputs(spec).driving.width == 2048
    with pytest.raises(InputError, match=r"^driving clip is 2048x1080 \(2.21 MP\), over the limit of 2.1 MP"):
        prepare_inputs(JobSpec(**spec.to_dict() | {"max_input_pixels": 2_100_000}))
    with pytest.raises(InputError, match=r"^reference image is 1920x1080 \(2.07 MP\), over the limit of 1 MP"):
        prepare_inputs(JobSpec(**spec.to_dict() | {"driving": str(FOOTAGE / "scail_001_rendered.mp4"),
                                                   "max_input_pixels": 1_000_000}))


def test_the_cli_sets_the_input_limit(tmp_path, capsys, no_model):
    status, err = generate(capsys, "--driving", DRIVING, "--reference", REFERENCE, "--out", tmp_path / "out",
                           "--max-input-pixels", "1000000")
    assert status == cli.EXIT_BAD_INPUT
    assert err == (f"error: driving clip is 2048x1080 (2.21 MP), over the limit of 1 MP for inputs (max_input_pixels): "
                   f"scale it down or raise the limit: {DRIVING}")


def test_the_worker_queues_patterns_and_refuses_a_pattern_without_files(tmp_path):
    from backend.service.jobs import BAD_INPUT, ProtocolFailure
    from backend.service.worker import Worker

    sequence(tmp_path / "shot", 3)
    worker = Worker("tiny", "cpu", {}, tmp_path / "jobs")  # not started: submits are answered, nothing runs
    for pattern in ("frame_%04d.png", "frame_####.png"):
        job = JobSpec(driving=str(tmp_path / "shot" / pattern), reference=str(REFERENCE)).to_dict()
        kind, reply = worker._on_submit({"job": job, "job_dir": str(tmp_path / pattern.replace("%", "p"))},
                                        _local_client())
        assert kind == "queued", reply
    job = JobSpec(driving=str(tmp_path / "shot" / "take_####.png"), reference=str(REFERENCE)).to_dict()
    with pytest.raises(ProtocolFailure, match="driving clip: no file in .* matches the pattern take_####.png") as info:
        worker._on_submit({"job": job}, _local_client())
    assert info.value.code == BAD_INPUT


def test_the_worker_checks_inputs_from_their_headers_at_submit(tmp_path):
    sequence(tmp_path / "shot", 3)
    big = tmp_path / "big.png"
    png_header_only(big, 20000, 20000)
    ok = JobSpec(driving=str(tmp_path / "shot" / "frame_####.png"), reference=str(REFERENCE))
    check_input_files(ok)
    check_input_files(JobSpec(**ok.to_dict() | {"driving": str(tmp_path / "shot" / "frame_%04d.png")}))
    cases = [
        ({"reference": str(big)}, "reference image is 20000x20000"),
        ({"reference_mask": str(tmp_path / "nope.png")}, "reference image mask not found"),
        ({"driving": str(tmp_path / "shot" / "take_%04d.png")}, "driving clip: no file in"),
        ({"driving": str(DRIVING), "max_input_pixels": 10 ** 6}, "driving clip is 2048x1080"),
        ({"driving_mask": str(tmp_path / "masks")}, "driving mask not found"),
    ]
    for changes, message in cases:
        with pytest.raises(InputError, match=message):
            check_input_files(JobSpec(**ok.to_dict() | changes))


# -- image-sequence patterns, end to end ---------------------------------------------------------


@pytest.mark.slow
def test_printf_and_hash_patterns_drive_a_whole_job_and_mask_warnings_reach_the_manifest(tmp_path, capsys):
    sequence(tmp_path / "shot", 3, size=(64, 128))
    # The driving mask: identities 1 and 2 on black, with an orange patch (off the palette).
    orange = palette_mask(64, 128, background=(0, 0, 0))
    orange[20:28, 100:108] = (255, 165, 0)  # 64 of 8192 pixels: a warning, not a refusal
    sequence(tmp_path / "masks", 3, size=(64, 128), name="mask.{:04d}.png", frames=lambda i: orange)
    status = cli.main(["generate", "--model", "tiny", "--device", "cpu", "--driving",
                       str(tmp_path / "shot" / "frame_%04d.png"), "--driving-mask",
                       str(tmp_path / "masks" / "mask.####.png"), "--reference", str(REFERENCE),
                       "--driving-fps", "16", "--height", "64", "--width", "128", "--steps", "1", "--seed", "3",
                       "--out", str(tmp_path / "job")])
    out = capsys.readouterr().out
    assert status == 0, out
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert len(manifest["frames"]) == 3 and manifest["source"]["frame_count"] == 3
    assert all((tmp_path / "job" / f["file"]).is_file() for f in manifest["frames"])
    line = next(w for w in manifest["warnings"] if "not a palette colour" in w)
    assert "of the driving mask is not a palette colour, e.g. (255, 165, 0), which is read as identity 2 (red)" in line
    assert f"warning: {line}" in out


# -- masks: aspect ratio and colours -------------------------------------------------------------


def test_a_mask_of_another_aspect_ratio_is_refused(tmp_path):
    ref_mask = tmp_path / "ref_mask.png"
    write_rgb(ref_mask, palette_mask(500, 500))
    spec = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), reference_mask=str(ref_mask), **SMALL)
    with pytest.raises(InputError) as info:
        prepare_inputs(spec)
    assert str(info.value) == ("the reference image mask is 500x500 but the reference image is 1920x1080: a mask must "
                               "have its image's aspect ratio, or the two are cropped differently and do not line up")
    write_rgb(ref_mask, palette_mask(540, 960))  # half the size, the same aspect: fine
    assert prepare_inputs(spec).warnings == ["no driving mask: every driving frame is used as identity 1"]

    sequence(tmp_path / "masks", 65, size=(1080, 1080), frames=lambda i: palette_mask(1080, 1080, (0, 0, 0)))
    with pytest.raises(InputError, match="the driving mask is 1080x1080 but the driving clip is 2048x1080"):
        prepare_inputs(JobSpec(**spec.to_dict() | {"driving_mask": str(tmp_path / "masks")}))


def test_masks_that_nearly_fit_are_accepted():
    assert misalignment((1080, 1920), (540, 960), (512, 896)) == 0.0
    assert misalignment((1080, 1920), (1088, 1920), (512, 896)) < 4  # a codec's padded height
    assert misalignment((1080, 1920), (1080, 1900), (512, 896)) > 4


def test_colours_off_the_palette_are_a_warning_or_refused(tmp_path):
    ref_mask = tmp_path / "ref_mask.png"
    spec = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), reference_mask=str(ref_mask),
                   **SMALL | dict(height=256, width=448))  # masks are checked at the job's size
    # A seventh identity in purple over a third of the width: it would be bound to identity 1.
    write_rgb(ref_mask, palette_mask(1080, 1920, extra=((128, 0, 255), 0.3)))
    with pytest.raises(InputError, match=r"^2\d.\d% of the reference image mask is not a palette colour, e.g. "
                                         r"\(128, 0, 255\), which is read as identity 1 \(blue\);"):
        prepare_inputs(spec)
    # A small one (a prop): the job runs, with a warning.
    small = palette_mask(1080, 1920)
    small[500:620, 1700:1820] = (255, 165, 0)
    write_rgb(ref_mask, small)
    warnings = prepare_inputs(spec).warnings
    assert any(w.startswith("0.5% of the reference image mask is not a palette colour, e.g. (255, 165, 0), which "
                            "is read as identity 2 (red)") for w in warnings), warnings
    # A mask made for the other mode: the reference's background is white in animate mode.
    write_rgb(ref_mask, palette_mask(1080, 1920, background=(0, 0, 0)))
    assert ("the reference image mask's background is black, but in animate mode it must be white: was it made for "
            "replace mode?") in prepare_inputs(spec).warnings
    assert not any("background" in w for w in prepare_inputs(JobSpec(**spec.to_dict() | {"mode": "replace"})).warnings)


def test_a_clean_lossy_mask_gives_no_warning(tmp_path):
    ref_mask = tmp_path / "ref_mask.jpg"
    mask = palette_mask(1080, 1920)
    cv2.circle(mask, (1500, 500), 200, PALETTE[2], -1, lineType=cv2.LINE_AA)
    assert cv2.imwrite(str(ref_mask), mask[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 75])
    spec = JobSpec(driving=str(DRIVING), reference=str(REFERENCE), reference_mask=str(ref_mask), **SMALL)
    assert prepare_inputs(spec).warnings == ["no driving mask: every driving frame is used as identity 1"]

