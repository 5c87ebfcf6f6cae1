"""The review loop in real bpy: a wedge of three tiny takes (a real worker, tiny model, CPU), their history rows,
scores and flags in the panel, status, rating, label and filter, a note marker, an A/B compare, Approve in one
undo step, Use Settings, a second artist's review, Redo refusing a changed input, Export Review.

One child Python (``review_script.py``) runs every step; the checks are here. Marked ``lts``: also runs on
Blender 4.5.
"""

import json
import os
import shutil
import subprocess

import pytest

import blender_testing

pytestmark = [
    pytest.mark.lts,
    pytest.mark.slow,
    pytest.mark.skipif(os.name == "nt", reason="POSIX paths of the backend environment"),
]

FOOTAGE, REFERENCE, BACKEND_PYTHON = blender_testing.FOOTAGE, blender_testing.REFERENCE, blender_testing.BACKEND_PYTHON


@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    for path in (FOOTAGE, REFERENCE, BACKEND_PYTHON):
        if not os.path.exists(path):
            pytest.skip("not found: " + path)
    work = tmp_path_factory.mktemp("review")
    (work / "blender-user").mkdir()
    reference = work / "reference.jpg"  # a copy: the test changes it
    shutil.copyfile(REFERENCE, reference)
    config = {"backend_python": BACKEND_PYTHON, "footage": FOOTAGE, "reference": str(reference)}
    (work / "config.json").write_text(json.dumps(config))
    return blender_testing.run_child_script("review_script.py", [built_zip, work, work / "report.json"], work,
                                            work / "blender-user")


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}\n{:s}".format(name, result["detail"], report["_output"])
    return result["detail"]


def test_operators_are_registered(report):
    assert {"wedge", "take_approve", "take_use_settings", "take_add_note", "take_show_notes", "take_refresh",
            "take_jump_flag", "compare", "compare_toggle", "compare_end", "export_review"} <= set(step(report, "install"))


def test_a_wedge_of_three_takes_of_one_shot(report):
    detail = step(report, "wedge_of_three")
    takes = detail["takes"]
    assert [t["version"] for t in takes] == [1, 2, 3]
    assert len({t["shot"] for t in takes}) == 1 and takes[0]["shot"].startswith("shot-")
    seeds = [t["seed"] for t in takes]
    assert seeds == detail["manifest_seeds"]  # the seed each take actually used
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]
    assert len({t["job_dir"] for t in takes}) == 3
    # One strip and one plane for the shot (the last take), not three stacked.
    layout = detail["layout"]
    assert [s["job_dir"] for s in layout["strips"]] == [takes[2]["job_dir"]]
    assert [p["job_dir"] for p in layout["planes"]] == [takes[2]["job_dir"]]
    # review.json beside each manifest, numbered; the Seed field shows the latest take's seed.
    assert [(r["version"], r["job_id"], r["status"]) for r in detail["reviews"]] == [
        (t["version"], t["job_id"], "new") for t in takes]
    assert detail["seed_field"] == seeds[2] and detail["locked"] is False


def test_history_rows_tell_the_takes_apart(report):
    rows = step(report, "history_rows")
    assert len(set(rows)) == 3, rows
    assert rows[0].startswith("v001") and rows[2].startswith("v003")
    assert all("seed " in row and "[DOT]" in row for row in rows)  # the status as its icon: New


def test_scores_and_flags_from_the_manifest(report):
    detail = step(report, "scores_in_the_panel")
    drawn = detail["drawn"]
    assert "label:Motion: 0.93" in drawn and "label:Stability: 0.41" in drawn, drawn
    assert "label:2 flagged frames" in drawn
    frame_map = detail["frame_map"]
    assert (detail["at_first"], detail["at_second"]) == (frame_map["3"], frame_map["6"])
    assert detail["stuck"] == ["CANCELLED"]  # no flag after the last one
    assert detail["back"] == ["FINISHED"] and detail["after_back"] == frame_map["3"]


def test_status_rating_label_and_the_status_filter(report):
    detail = step(report, "status_rating_label_and_filter")
    review = detail["review"]
    assert (review["status"], review["rating"], review["label"]) == ("rejected", 2, "too stiff")
    assert detail["shown"] == {"all": [True, True, True], "REJECTED": [False, False, True],
                               "APPROVED,ON_HOLD": [False, False, False]}


def test_a_note_is_a_marker_kept_with_the_take(report):
    detail = step(report, "note_on_a_frame")
    assert ["note: left hand pops", detail["scene_frame"]] in detail["markers"]
    assert detail["notes"] == [[4, "left hand pops"]]
    assert [(n["frame"], n["text"]) for n in detail["review"]["notes"]] == [(4, "left hand pops")]
    assert detail["review"]["notes"][0]["time"].endswith("Z")


def test_compare_as_a_wipe_and_side_by_side(report):
    detail = step(report, "compare_two_takes")
    first, second = detail["takes"]
    wipe = detail["wipe"]
    assert wipe["A"]["job_dir"] == first and wipe["B"]["job_dir"] == second
    assert wipe["WIPE"]["type"] == "WIPE" and wipe["WIPE"]["inputs"] == [wipe["A"]["name"], wipe["B"]["name"]]
    assert wipe["WIPE"]["fader"] == 0.5 and not any(wipe[role]["mute"] for role in ("A", "B", "WIPE"))
    assert wipe["A"]["handles"] == wipe["B"]["handles"] == wipe["WIPE"]["handles"]  # the same scene frames
    assert wipe["WIPE"]["channel"] > wipe["B"]["channel"] > wipe["A"]["channel"]
    # The layout's result strip is muted while the compare stands, unmuted when it ends.
    assert all(s["mute"] for s in detail["layout_during"]["strips"] if not s["compare"])
    side = detail["side"]
    assert side["WIPE"]["mute"] and not side["A"]["mute"] and not side["B"]["mute"]
    assert side["A"]["scale_x"] == pytest.approx(wipe["A"]["scale_x"] / 2)
    assert side["A"]["offset_x"] < 0 < side["B"]["offset_x"]
    assert detail["wipe_again"] == wipe
    assert detail["ended"]["parts"] == {} and detail["ended"]["layout"] == detail["before"]
    driving = detail["driving"]
    assert driving["B"]["type"] == "MOVIE"
    assert driving["A"]["handles"] == driving["B"]["handles"] == driving["WIPE"]["handles"]


def test_approve_replaces_strip_and_plane_in_place_in_one_undo_step(report):
    detail = step(report, "approve_in_one_undo_step")
    first, _second, third = detail["takes"][:3]
    before, after, undone = detail["before"], detail["after"], detail["undone"]
    assert [s["job_dir"] for s in before["strips"]] == [third]
    assert [s["job_dir"] for s in after["strips"]] == [first]
    assert after["strips"][0]["channel"] == before["strips"][0]["channel"]
    assert after["strips"][0]["offset_x"] == before["strips"][0]["offset_x"] == 12.0
    assert [p["job_dir"] for p in after["planes"]] == [first]
    assert after["planes"][0]["matrix"] == before["planes"][0]["matrix"]
    assert after["planes"][0]["parent"] == before["planes"][0]["parent"] == "ReviewCam"
    assert detail["status_after"][0] == "APPROVED" and detail["file_after"] == "approved"
    # One undo brings back the take shown before, strip and plane, and the review file follows.
    assert undone == before
    assert detail["status_undone"][0] == "NEW" and detail["file_undone"] == "new"
    assert detail["redone"] == after


def test_a_new_take_leaves_the_approved_take_in_the_layout(report):
    detail = step(report, "a_new_take_leaves_the_approved_one_in_place")
    assert detail["after"] == detail["before"]
    assert detail["version"] == 4 and detail["status"] == "DONE" and "approved" in detail["note"]


def test_use_settings_loads_the_take_and_its_seed(report):
    detail = step(report, "use_settings")
    assert detail["seed"] == detail["take_seed"] and detail["locked"] is True
    assert (detail["steps"], detail["prompt"], detail["width"], detail["height"]) == (2, "", 128, 64)
    assert detail["form"] == "BOTH" and detail["frames"] == [True, 1, 8]


def test_a_second_artist_sees_the_same_review(report):
    detail = step(report, "review_seen_by_a_second_artist")
    opened = detail["opened"]
    assert (opened["rating"], opened["status"], opened["name"]) == (5, "ON_HOLD", "keep for the hands")
    assert detail["refreshed"]["rating"] == 1


def test_redo_refuses_a_changed_input_or_makes_a_new_take_that_says_so(report):
    detail = step(report, "redo_refuses_a_changed_input")
    refused = detail["refused"]
    assert refused is not None and "\n" not in refused.strip()
    assert "Redo refused: the reference reference.jpg changed" in refused
    assert detail["after_refusal"] == detail["count"]
    assert detail["after_new"] == detail["count"] + 1
    assert detail["derived_from"] == detail["first"] and detail["review"]["derived_from"] == detail["first"]


def _backend_has_report():
    run = subprocess.run([BACKEND_PYTHON, "-m", "backend", "report", "--help"], cwd=blender_testing.REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    return run.returncode == 0


def test_export_review_runs_the_backend_report(report):
    detail = step(report, "export_review")
    if _backend_has_report():
        assert detail["returncode"] == 0 and detail["exists"], detail
        assert detail["message"].startswith("Review written: ")
    else:
        # This branch has no `backend report` yet: the failure comes back as one line, not a traceback.
        assert detail["returncode"] != 0 and detail["message"].startswith("Export Review failed: ")
        assert "\n" not in detail["message"]
    assert any(text.startswith("label:") and "Review" in text for text in detail["panel"]), detail["panel"]
