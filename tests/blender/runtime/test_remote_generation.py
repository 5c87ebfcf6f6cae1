"""Generating from Blender on a remote worker that cannot see Blender's files: the built extension in
real bpy (``remote_script.py``), a real TLS worker (tiny model, CPU) in its own mount namespace with an
empty tmpfs over Blender's whole work folder. The artist accepts the certificate once, generates,
and the result comes back as a strip of local frames.
"""

import json
import os
import shutil

import pytest

import blender_testing
import namespaces
import process_guard

FOOTAGE, REFERENCE, BACKEND_PYTHON = blender_testing.FOOTAGE, blender_testing.REFERENCE, blender_testing.BACKEND_PYTHON


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(namespaces.private_mounts() is None, reason=namespaces.why_not())]


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """(work folder, worker folder, what the worker printed); the worker sees an empty work folder."""
    if not os.path.exists(BACKEND_PYTHON):  # the fixtures are checked for the session (tests/conftest.py)
        pytest.skip("not found: " + BACKEND_PYTHON)
    base = tmp_path_factory.mktemp("remote_generation")
    work, worker_dir = base / "work", base / "worker"
    for folder in (work, worker_dir, work / "blender-user"):
        folder.mkdir()
    shutil.copyfile(FOOTAGE, work / "driving.mp4")
    shutil.copyfile(REFERENCE, work / "ref.jpg")
    proc, found = blender_testing.sealed_tls_worker(BACKEND_PYTHON, work, worker_dir)
    yield work, worker_dir, found
    process_guard.end(proc)


@pytest.fixture(scope="module")
def report(built_zip, sealed):
    work, _worker_dir, found = sealed
    config = {"backend_python": BACKEND_PYTHON, "footage": str(work / "driving.mp4"),
              "reference": str(work / "ref.jpg"), "address": "127.0.0.1:{:d}".format(found["port"]), "token": found["token"]}
    (work / "config.json").write_text(json.dumps(config))
    return blender_testing.run_child_script("remote_script.py", [built_zip, work, work / "report.json"], work,
                                            work / "blender-user")


def step(report, name):
    assert report[name]["ok"], report[name]["detail"] + report["_output"]
    return report[name]["detail"]


def test_offline_a_worker_on_another_machine_is_refused_by_each_way_in(report):
    lines = step(report, "offline_no_worker_elsewhere_is_reached")
    refusal = ("Online access is off, so the add-on does not connect to the worker at 192.0.2.10:7860: allow it in "
               "Preferences > System > Network > Allow Online Access (a worker on this machine, 127.0.0.1 or an SSH "
               "tunnel's end, needs none)")
    assert refusal in lines["show_certificate"] and lines["queue"] == refusal, lines
    assert refusal in " ".join(" ".join(text or "" for text in lines["drawn"]).split()), lines["drawn"]  # wrapped
    assert lines["note"] == ""  # nothing was tried


def test_the_certificate_is_accepted_once_as_shown(report, sealed):
    detail = step(report, "accept_certificate_once")
    assert detail["seen"] == detail["pinned"] == sealed[2]["fingerprint"]


def test_generate_on_the_remote_worker_imports_local_frames(report, sealed):
    work, worker_dir, _found = sealed
    detail = step(report, "generate")
    assert detail["status"] == "done"
    assert "could not be checked" not in report["_output"]  # Generate's input checks ran on the worker
    assert detail["directory"].startswith(str(work / "output"))  # Blender's own folder, not the worker's
    assert detail["job_dir"].startswith(str(work / "output")) and os.path.isfile(detail["manifest"])
    assert detail["elements"] and set(detail["elements"]) <= set(detail["files"])
    assert detail["transfer"][0] in ("upload", "download") and detail["transfer"][1] == detail["transfer"][2]
    worker_jobs = [p for p in (worker_dir / "jobs").iterdir() if not p.name.startswith(".")]
    assert len(worker_jobs) == 1  # the worker wrote only under its jobs root
    for name in detail["elements"]:
        assert (worker_jobs[0] / "frames" / name).read_bytes() == open(
            os.path.join(detail["directory"], name), "rb").read()
    step(report, "close")


def test_the_queue_panel_lists_the_workers_jobs(report):
    detail = step(report, "list_worker_jobs")
    assert detail["jobs"] == []  # the one job is done: nothing queued or running there
    listed, another = detail["panel"]["listed"], detail["panel"]["another_artists"]
    assert ["label", "On the worker", "NETWORK_DRIVE", []] in listed
    assert ["operator", "", "FILE_REFRESH", ["scail2.list_worker_jobs"]] in listed
    assert ["label", "No job queued or running", "NONE", []] in listed
    assert ["label", "alice \u00b7 queued, 2 ahead \u00b7 take_01", "SORTTIME", []] in another
    assert ["label", "ben \u00b7 Generating: segment 1/2, step 14/40 \u00b7 take_00", "RENDER_ANIMATION", []] in another
    assert ["operator", "", "X", ["scail2.cancel_worker_job"]] in another  # its `job` set: checked by the stub
