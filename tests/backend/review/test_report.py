"""The HTML review page, rendered by a real headless Chromium: the screenshot shows the contact sheets,
the DOM holds every take, its status, notes and recipe; nothing is loaded from outside the file."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace

import cv2
import numpy as np
import pytest
from scail_fixtures import FOOTAGE

from backend import cli
from backend.pipeline.durable import write_json_atomic
from protocol import REVIEW_NAME, Note, TakeReview, read_record

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SMALL = ["--height", "64", "--width", "128", "--steps", "2", "--end", "9", "--device", "cpu", "--model", "tiny"]
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    """Two tiny takes of one shot (seeds 1 and 2); the second approved, rated and noted as the add-on does."""
    root = tmp_path_factory.mktemp("shot")
    folders = []
    for seed in (1, 2):
        out = root / f"take_seed{seed}"
        assert cli.main(["generate", *SMALL, "--driving", str(FOOTAGE / "scail_001_driving.mp4"), "--reference",
                         str(FOOTAGE / "scail_001_ref.jpg"), "--seed", str(seed), "--out", str(out)]) == 0
        folders.append(out)
    review = read_record(folders[1] / REVIEW_NAME, TakeReview)
    noted = replace(review, status="approved", rating=4, label="keeper",
                    notes=[Note(3, "arm pops here", author="sup")])
    write_json_atomic(folders[1] / REVIEW_NAME, noted.to_dict())
    return folders


def chromium(tmp_path, page, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,1600", *args, page.as_uri()],
        capture_output=True, text=True, timeout=180)


def screenshot(tmp_path, page, name: str) -> np.ndarray:
    shot = tmp_path / name
    chromium(tmp_path, page, f"--screenshot={shot}")
    image = cv2.imread(str(shot))
    assert image is not None, f"chromium wrote no screenshot {shot}"
    return image


def test_the_report_renders_in_chromium_with_its_contact_sheets(takes, tmp_path):
    page = tmp_path / "review.html"
    assert cli.main(["report", "--out", str(page), *map(str, takes)]) == 0
    html = page.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # self-contained: nothing fetched
    dom = chromium(tmp_path, page, "--dump-dom").stdout
    for text in ("take_seed1", "keeper", "approved", "arm pops here", "Recipe", "motion", "Shot:"):
        assert text in dom, text
    assert dom.count("class=\"sheet\"") == 2 and dom.count("<svg") == 10  # 2 takes x 5 scores

    # The same page with its images blanked: what differs in the screenshots is the contact sheets.
    blank = tmp_path / "blank.html"
    blank.write_text(re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "data:,", html))
    real, blanked = screenshot(tmp_path, page, "real.png"), screenshot(tmp_path, blank, "blank.png")
    assert real.shape == blanked.shape
    differs = np.abs(real.astype(int) - blanked.astype(int)).max(axis=-1) > 24
    assert differs.sum() > 40_000  # two strips of 8 thumbnails, 96 px high, mostly visible
    assert real.std() > 20  # not a blank page


def test_the_report_never_replaces_a_file_it_did_not_write(takes, tmp_path, capsys):
    page = tmp_path / "notes.html"
    page.write_text("<p>somebody's notes</p>")
    assert cli.main(["report", "--out", str(page), str(takes[0])]) == cli.EXIT_BAD_INPUT
    assert "not a review report" in capsys.readouterr().err
    assert page.read_text() == "<p>somebody's notes</p>"


def test_a_report_into_a_new_folder_makes_it_and_a_take_named_twice_is_one_take(takes, tmp_path, capsys):
    page = tmp_path / "dailies" / "2026-12-07" / "review.html"
    assert cli.main(["report", "--out", str(page), str(takes[0]), str(takes[0]) + "/"]) == 0
    assert capsys.readouterr().out.strip() == f"review of 1 take in 1 shot: {page}"
    assert page.read_text(encoding="utf-8").count("<section class='take'") == 1
    a_file = tmp_path / "a_file"
    a_file.write_text("the user's")
    assert cli.main(["report", "--out", str(a_file / "review.html"), str(takes[0])]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == f"error: {a_file} is a file, not a folder; choose another place for the report"
