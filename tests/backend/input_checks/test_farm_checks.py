"""`farm bundle` records each bundle's input checks; with --strict a failing spec is refused and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

from check_clips import steady, still, write_reference, write_sequence
from scail_fixtures import REPO

from protocol import InputCheckReport


def farm(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", "farm", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_bundles_keep_their_checks_and_strict_refuses_a_failing_one(tmp_path):
    cut = steady(still(), 5) + steady(still("scail_001_ref.jpg"), 5, seed=1)
    reference = str(write_reference(tmp_path / "reference.png", cut[0]))
    specs = {}
    for name, frames in (("cut010", cut), ("calm020", steady(still(), 10))):
        spec = {"driving": str(write_sequence(tmp_path / name, frames)), "driving_fps": 16.0, "reference": reference}
        specs[name] = tmp_path / f"{name}.json"
        specs[name].write_text(json.dumps(spec))

    strict = farm("bundle", specs["cut010"], specs["calm020"], "--out", tmp_path / "strict", "--strict")
    assert strict.returncode == 2 and strict.stderr.startswith("error: bundle cut010: the input checks")
    assert not (tmp_path / "strict").exists()
    calm = farm("bundle", specs["calm020"], "--out", tmp_path / "calm", "--strict", "--json")
    assert calm.returncode == 0, calm.stderr

    run = farm("bundle", specs["cut010"], "--out", tmp_path / "farm", "--json")
    assert run.returncode == 0, run.stderr
    [written] = json.loads(run.stdout.splitlines()[-1])["bundles"]
    assert InputCheckReport.from_dict(written["input_checks"]).verdict == "fail"
    record = json.loads((tmp_path / "farm" / "cut010" / "bundle.json").read_text())
    assert [c["frames"] for c in record["input_checks"]["checks"] if c["name"] == "cut"] == [[5]]
    assert "bundle cut010: fail: A shot cut at frame 5" in run.stderr
