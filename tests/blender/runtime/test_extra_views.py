"""Extra reference views from Blender to the worker: the built extension in real bpy, a real tiny-model worker.

One child Python (``extra_views_script.py``) gives a shot two extra views from files and a four-view
turnaround of a character box (identity 1) rendered through a temporary camera, then generates on a
local worker and sends the shot to a farm bundle that ``openjd`` runs; a second child generates on a
TLS worker in its own mount namespace that cannot see Blender's files (root only). Marked ``lts``:
also runs on Blender 4.5.
"""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

import blender_testing

# Every test but the remote round trip also runs on 4.5 LTS (`lts`, below): that one runs on 5.0 only, as the
# other remote-worker tests do (two Blenders' worth of a sealed TLS worker would double the LTS run).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name == "nt", reason="POSIX paths of the backend environment"),
]

FOOTAGE, REFERENCE, BACKEND_PYTHON = blender_testing.FOOTAGE, blender_testing.REFERENCE, blender_testing.BACKEND_PYTHON
OPENJD = os.path.join(os.path.dirname(BACKEND_PYTHON), "openjd")


def can_unshare():
    if os.name == "nt" or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


def run(built_zip, work, mode, **config):
    (work / "blender-user").mkdir(exist_ok=True)
    settings = dict(backend_python=BACKEND_PYTHON, footage=str(FOOTAGE), reference=str(REFERENCE), openjd=OPENJD)
    settings.update(config)
    (work / "config.json").write_text(json.dumps(settings))
    return blender_testing.run_child_script("extra_views_script.py", [built_zip, work, work / "report.json", mode],
                                            work, work / "blender-user")


@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    for path in (FOOTAGE, REFERENCE, BACKEND_PYTHON, OPENJD):
        if not os.path.exists(path):
            pytest.skip("not found: " + path)
    return run(built_zip, tmp_path_factory.mktemp("extra_views"), "local")


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}\n{:s}".format(name, result["detail"], report["_output"])
    return result["detail"]


def sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.mark.lts
def test_two_views_from_files_get_their_masks(report):
    views = step(report, "views_from_files")["views"]
    assert len(views) == 2
    alpha, painted = views
    assert alpha["path"].endswith("side_alpha.png") and alpha["identities"] == [1]
    assert os.path.basename(alpha["mask_path"]) == "alpha_mask.png"  # written from its alpha, in the inputs folder
    assert painted["path"] == str(REFERENCE) and painted["mask_path"].endswith("ref_mask.png")
    assert painted["identities"] == [1]


@pytest.mark.lts
def test_turnaround_renders_four_views_with_exact_masks_and_leaves_the_scene(report):
    detail = step(report, "turnaround")
    assert detail["before"] == detail["after"]  # temporary camera gone, settings as they were
    assert [row[0] for row in detail["list"]] == ['FILE', 'FILE'] + ['TURNAROUND'] * 4
    assert len(detail["views"]) == 6
    shapes = detail["shapes"]
    for shape in shapes:
        assert shape["size"] == shape["mask_size"]
        assert shape["exact"] and shape["identities"] == [1] and shape["white"] > 0  # flat blue on white (animate)
        # The mask covers the character where the render does: the identity mask rendered exactly.
        assert shape["both"] >= 0.95 * max(shape["alpha_pixels"], shape["mask_pixels"]) > 0
    front, _three_quarter, side, back = (s["mask_pixels"] for s in shapes)
    assert side < 0.5 * front  # a box 1.6 wide and 0.4 deep seen from its side
    assert abs(front - back) <= 0.05 * front


@pytest.mark.lts
def test_the_views_reach_the_worker_and_the_manifest_lists_them_with_hashes(report):
    detail = step(report, "generate")
    assert detail["status"] == "done"
    job, views = detail["manifest"]["job"], detail["views"]
    assert job["extra_references"] == [v["path"] for v in views] and len(views) == 6
    assert job["extra_reference_masks"] == [v["mask_path"] for v in views]
    hashes = detail["manifest"]["inputs"]
    for view in views:  # the bytes Blender had exported when the job ran
        assert hashes[view["path"]] == detail["sha256"][view["path"]]
        assert hashes[view["mask_path"]] == detail["sha256"][view["mask_path"]]


@pytest.mark.lts
def test_a_changed_view_is_exported_again_and_the_others_kept(report):
    detail = step(report, "a_changed_view_is_exported_again")
    assert "extra_references" not in detail["stale_before"]
    assert detail["stale_after"] == ["extra_references"]
    first, second = detail["first"], detail["second"]
    assert second[0]["identities"] == [] and first[0]["identities"] == [1]  # the new, transparent picture
    assert second[1:] == first[1:]


@pytest.mark.lts
def test_a_view_of_an_identity_not_in_the_driving_mask_is_one_line_before_any_job(report):
    detail = step(report, "a_view_of_an_identity_not_in_the_driving_mask_is_one_line")
    assert detail["jobs_added"] == 0
    message = detail["message"].strip()
    assert "\n" not in message
    assert "Extra view 1" in message and "2 (red)" in message and "not in the driving mask" in message


@pytest.mark.lts
def test_a_farm_bundle_carries_the_views_and_the_farm_uses_them(report):
    detail = step(report, "farm_bundle")
    job, bundle = detail["job"], detail["bundle"]
    assert len(job["extra_references"]) == len(job["extra_reference_masks"]) == 6
    for path in job["extra_references"] + job["extra_reference_masks"]:
        assert not os.path.isabs(path) and os.path.isfile(os.path.join(bundle, path))
    # The bundle keeps the bytes that were sent, though a later turnaround renders views 3-4 again.
    for local, bundled in zip(detail["sha256"], job["extra_references"]):
        assert local == sha256(os.path.join(bundle, bundled))
    manifest = detail["manifest"]
    assert manifest["status"] == "done" and len(manifest["job"]["extra_references"]) == 6
    assert len(manifest["inputs"]) >= 2 + 6  # driving, reference and each distinct view file


@pytest.mark.lts
def test_the_extra_views_panel_draws_in_both_editors(report):
    drawn = step(report, "panels_draw")
    for editor in ("sequencer", "view3d"):
        calls = drawn["SCAIL2_PT_{:s}_extra_views".format(editor)]
        assert "label:Turnaround" in calls and "operator:scail2.render_turnaround" in calls
        assert "operator:scail2.add_extra_view" in calls and "operator:scail2.export_extra_views" in calls
        text = " ".join(call[len("label:"):] for call in calls if call.startswith("label:"))
        assert "up to 8" in text  # the model's limit, said where the views are added


@pytest.mark.lts
def test_the_turnaround_renders_from_a_timer_and_replaces_the_characters_views(report):
    detail = step(report, "turnaround_from_a_timer")
    assert detail["running"] and detail["result"] == ["FINISHED"]
    assert any("extra views" in text for text in detail["shown"])
    assert detail["before"] == detail["after"]
    # The character's four views were replaced by the two new angles; the file views stay.
    assert detail["list"] == 4 and len(detail["views"]) == 4
    assert detail["views"][2]["source"].startswith("Hero at 135 degrees")
    assert detail["views"][3]["source"].startswith("Hero at 270 degrees")


@pytest.fixture(scope="module")
def remote_report(built_zip, tmp_path_factory):
    if not can_unshare():
        pytest.skip("needs root and unshare -m")
    for path in (FOOTAGE, REFERENCE, BACKEND_PYTHON):
        if not os.path.exists(path):
            pytest.skip("not found: " + path)
    base = tmp_path_factory.mktemp("extra_views_remote")
    work, worker_dir = base / "work", base / "worker"
    work.mkdir(), worker_dir.mkdir()
    shutil.copyfile(FOOTAGE, work / "driving.mp4")
    shutil.copyfile(REFERENCE, work / "ref.jpg")
    proc, found = blender_testing.sealed_tls_worker(BACKEND_PYTHON, work, worker_dir)
    try:
        yield run(built_zip, work, "remote", address="127.0.0.1:{:d}".format(found["port"]), token=found["token"],
                  footage=str(work / "driving.mp4"), reference=str(work / "ref.jpg"))
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_views_travel_to_a_remote_worker_that_cannot_see_blenders_files(remote_report):
    detail = step(remote_report, "generate")
    assert detail["status"] == "done"
    job = detail["manifest"]["job"]
    assert len(job["extra_references"]) == len(job["extra_reference_masks"]) == 6
    hashes = detail["manifest"]["inputs"]
    local = [v["path"] for v in detail["views"]] + [v["mask_path"] for v in detail["views"]]
    # The worker read uploads (its own paths), with the same bytes as Blender's files.
    assert not set(job["extra_references"]) & set(local)
    assert set(detail["sha256"].values()) <= set(hashes.values())
