"""Faults and bad inputs against the backend CLI (tiny model, CPU): is each one a clear line, with nothing lost?

    .venvs/backend/bin/python bench/faults.py [--only NAME ...] [--json OUT.json]

Each case sets up a folder, runs ``python -m backend ...`` as a user would, and is judged:

* ``clean``: it ended as the case expects (refused with exit status 2 and one error line, or done), no
  traceback on stderr, and every file the user owned before is byte-identical afterwards;
* ``traceback``: a Python traceback reached the user;
* ``lost``: a file the user owned was changed or deleted;
* ``wrong``: anything else (a wrong exit status, no error line, done when it should refuse, a hang).

The tally is the issue's "cases tried, handled cleanly, tracebacks, data lost" (recorded in RESULTS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO / "tests" / "fixtures" / "footage"
DRIVING = FOOTAGE / "scail_001_driving.mp4"
REFERENCE = FOOTAGE / "scail_001_ref.jpg"
TIMEOUT_S = 300
SMALL = ["--model", "tiny", "--device", "cpu", "--height", "64", "--width", "128", "--steps", "2", "--end", "5"]


def png(path: Path, width: int, height: int, rgb=(0, 0, 255)) -> Path:
    """A solid RGB PNG written with zlib (any size: the IDAT of a solid image compresses to little)."""
    row = b"\x00" + bytes(rgb) * width
    data = zlib.compress(row * height, 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def run(*args: str, cwd: Path) -> tuple[int, str, str, float]:
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=TIMEOUT_S, env=dict(os.environ, PYTHONPATH=str(REPO)))
        return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started
    except subprocess.TimeoutExpired:
        return -1, "", "timed out", time.monotonic() - started


def owned(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``: what the user owns before a case runs."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def generate(out: Path, *extra: str, driving: Path = DRIVING, reference: Path = REFERENCE) -> list[str]:
    return ["generate", "--driving", str(driving), "--reference", str(reference), "--out", str(out), *SMALL,
            *extra]


# --------------------------------------------------------------------------------------------
# The cases: (name, expected outcome, setup(tmp) -> argv, the user's files to keep (a folder) or None).

def case_out_not_a_job_folder(tmp):
    out = tmp / "shot"
    png(out / "frames" / "frame_000000.png", 8, 8)
    (out / "preview.mp4").write_bytes(b"the user's own preview")
    (out / "state.json").write_text('{"mine": true}')
    return generate(out), out


def case_out_is_a_file(tmp):
    out = tmp / "shot.txt"
    out.write_text("a file")
    return generate(out), tmp


def case_out_under_a_file(tmp):
    (tmp / "blocker").write_text("a file")
    return generate(tmp / "blocker" / "job"), tmp


def case_huge_size(tmp):
    return generate(tmp / "job", "--height", "32000", "--width", "32000"), None


def case_huge_reference(tmp):
    return generate(tmp / "job", reference=png(tmp / "huge.png", 20000, 20000)), None


def case_seed_beyond_64_bits(tmp):
    return generate(tmp / "job", "--seed", str(2 ** 70)), None


def case_guidance_inf(tmp):
    return generate(tmp / "job", "--guidance", "inf"), None


def case_guidance_nan(tmp):
    return generate(tmp / "job", "--guidance", "nan"), None


def case_shift_negative(tmp):
    return generate(tmp / "job", "--shift", "-1"), None


def _finished_job(tmp):
    out = tmp / "job"
    code, _out, err, _s = run(*generate(out), cwd=tmp)
    assert code == 0, err
    return out


def case_truncated_state(tmp):
    out = _finished_job(tmp)
    (out / "state.json").write_text('{"status": "run')
    return generate(out), None


def case_truncated_manifest(tmp):
    out = _finished_job(tmp)
    (out / "manifest.json").write_text('{"format": "scail2-')
    return generate(out), None


def case_frames_partly_deleted(tmp):
    out = _finished_job(tmp)
    frames = sorted((out / "frames").glob("frame_*.png"))
    frames[-1].unlink()
    return generate(out), None


def case_printf_pattern(tmp):
    for i in range(6):
        png(tmp / "seq" / "img_{:04d}.png".format(i), 64, 48, (i * 40, 0, 0))
    return generate(tmp / "job", driving=tmp / "seq" / "img_%04d.png"), None


def case_hash_pattern(tmp):
    for i in range(6):
        png(tmp / "seq" / "img_{:04d}.png".format(i), 64, 48, (i * 40, 0, 0))
    return generate(tmp / "job", driving=tmp / "seq" / "img_####.png"), None


def case_missing_lora(tmp):
    return generate(tmp / "job", "--lora", str(tmp / "no-such-lora.safetensors")), None


def case_missing_driving(tmp):
    return generate(tmp / "job", driving=tmp / "nothing.mp4"), None


def case_driving_not_a_video(tmp):
    (tmp / "notes.mp4").write_text("not a video")
    return generate(tmp / "job", driving=tmp / "notes.mp4"), None


def case_sequence_with_a_gap(tmp):
    for i in (0, 1, 2, 5):  # frames 3 and 4 missing: frame 2 is held, frame 5 keeps its moment (a warning)
        png(tmp / "seq" / "img_{:04d}.png".format(i), 64, 48, (i * 40, 0, 0))
    return generate(tmp / "job", driving=tmp / "seq" / "img_####.png"), None


def case_all_black_driving_mask(tmp):
    for i in range(6):
        png(tmp / "masks" / "m_{:04d}.png".format(i), 64, 48, (0, 0, 0))
        png(tmp / "seq" / "img_{:04d}.png".format(i), 64, 48, (i * 40, 0, 0))
    return generate(tmp / "job", "--driving-mask", str(tmp / "masks"), driving=tmp / "seq"), None


def case_farm_spec_not_json(tmp):
    spec = json.dumps({"driving": str(DRIVING), "reference": str(REFERENCE)})
    (tmp / "shot.json").write_bytes(b"\xff\xfe" + spec.encode("utf-16-le"))  # saved as UTF-16 by an editor
    return ["farm", "bundle", str(tmp / "shot.json"), "--out", str(tmp / "farm")], tmp


CASES = {
    # name: (function, expected: "refused" or "done")
    "out_not_a_job_folder": (case_out_not_a_job_folder, "refused"),
    "out_is_a_file": (case_out_is_a_file, "refused"),
    "out_under_a_file": (case_out_under_a_file, "refused"),
    "huge_size": (case_huge_size, "refused"),
    "huge_reference": (case_huge_reference, "refused"),
    "seed_beyond_64_bits": (case_seed_beyond_64_bits, "refused"),
    "guidance_inf": (case_guidance_inf, "refused"),
    "guidance_nan": (case_guidance_nan, "refused"),
    "shift_negative": (case_shift_negative, "refused"),
    "truncated_state": (case_truncated_state, "refused"),
    "truncated_manifest": (case_truncated_manifest, "refused"),
    "frames_partly_deleted": (case_frames_partly_deleted, "done"),
    "printf_pattern": (case_printf_pattern, "done"),
    "hash_pattern": (case_hash_pattern, "done"),
    "missing_lora": (case_missing_lora, "refused"),
    "missing_driving": (case_missing_driving, "refused"),
    "driving_not_a_video": (case_driving_not_a_video, "refused"),
    "sequence_with_a_gap": (case_sequence_with_a_gap, "done"),
    "all_black_driving_mask": (case_all_black_driving_mask, "done"),
    "farm_spec_not_json": (case_farm_spec_not_json, "refused"),
}


def judge(expected, code, err, before, after):
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if before is not None and any(after.get(name) != digest for name, digest in before.items()):
        return "lost"
    if expected == "done":
        return "clean" if code == 0 else "wrong"
    lines = [line for line in err.splitlines() if line.strip()]
    return "clean" if code == 2 and lines and lines[-1].startswith("error:") else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = {}
    for name, (setup, expected) in CASES.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="scail2-fault-") as folder:
            tmp = Path(folder)
            argv, keep = setup(tmp)
            before = owned(keep) if keep is not None else None
            code, _out, err, seconds = run(*argv, cwd=tmp)
            after = owned(keep) if keep is not None else None
            verdict = judge(expected, code, err, before, after)
            last = next((line for line in reversed(err.splitlines()) if line.strip()), "")
            results[name] = {"verdict": verdict, "exit": code, "seconds": round(seconds, 1), "line": last[:200]}
            print("{:24s} {:9s} exit {:3d} {:6.1f} s  {:s}".format(name, verdict, code, seconds, last[:110]),
                  flush=True)
    tally = {kind: sum(1 for r in results.values() if r["verdict"] == kind)
             for kind in ("clean", "traceback", "lost", "wrong")}
    print("tried {:d}: clean {clean}, tracebacks {traceback}, data lost {lost}, wrong {wrong}".format(
        len(results), **tally))
    if args.json:
        args.json.write_text(json.dumps({"cases": results, "tally": tally}, indent=1))


if __name__ == "__main__":
    main()
