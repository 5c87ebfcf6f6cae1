"""Driving footage, masks and reference stills from Blender (``sources``), with the real ``bpy``.

One child Python (``sources_script.py``) builds the scenes and runs every
export; the tests below read its report. The timing tests render the
sequencer at every scene frame and look up which footage frame it shows,
so "exactly the frames shown on the timeline" is checked against Blender
itself. Marked ``lts``: everything also runs on Blender 4.5.
"""

import json
import os
import struct
import subprocess
import sys
import zlib

import pytest

import blender_testing

pytestmark = [pytest.mark.lts]


from scail2.core import inputs as clip  # noqa: E402
from scail2.core import pixels  # noqa: E402


# --------------------------------------------------------------------------------------------
# Without Blender.

def test_plain_modules_have_no_blender_imports():
    for name in ("inputs.py", "pixels.py"):
        with open(os.path.join(blender_testing.REPO_ROOT, "core", name), encoding="utf-8") as fh:
            assert "import bpy" not in fh.read()


def picture(width, height, rects, background=(0, 0, 0)):
    """Flat RGBA floats, rows bottom-up as Image.pixels: ``rects`` are (colour, x0, y0, x1, y1) from the top left."""
    rows = [[background] * width for _ in range(height)]
    for colour, x0, y0, x1, y1 in rects:
        for y in range(y0, y1):
            rows[y][x0:x1] = [colour] * (x1 - x0)
    values = []
    for row in reversed(rows):  # Blender stores the bottom row first
        for r, g, b in row:
            values += [r / 255.0, g / 255.0, b / 255.0, 1.0]
    return values


def test_identity_boxes_of_a_two_colour_mask():
    # Blue spans x 2..5, y 1..6 (from the top); red is a single pixel at the bottom right corner.
    values = picture(10, 8, [((0, 0, 255), 2, 1, 6, 4), ((0, 0, 255), 3, 4, 4, 7), ((255, 0, 0), 9, 7, 10, 8)])
    assert pixels.identity_boxes(values, 10, 8) == {1: (2, 1, 6, 7), 2: (9, 7, 10, 8)}


def test_identity_boxes_read_colours_as_the_backend_does():
    # On white (replacement): only channels above 225 of 255 are on; an anti-aliased edge (200) is not blue.
    values = picture(6, 4, [((0, 0, 255), 1, 1, 3, 3), ((0, 0, 200), 3, 1, 5, 3), ((255, 0, 255), 5, 0, 6, 1),
                            ((0, 255, 0), 0, 3, 2, 4)], background=(255, 255, 255))
    assert pixels.identity_boxes(values, 6, 4) == {1: (1, 1, 3, 3), 3: (0, 3, 2, 4), 4: (5, 0, 6, 1)}
    assert pixels.identity_boxes(picture(4, 2, []), 4, 2) == {}
    with pytest.raises(ValueError, match="not 4x3x4"):
        pixels.identity_boxes(picture(4, 2, []), 4, 3)


def test_backgrounds_per_mode():
    assert clip.backgrounds("animate") == (clip.BLACK, clip.WHITE)
    assert clip.backgrounds("replace") == (clip.WHITE, clip.BLACK)
    with pytest.raises(clip.ExportError):
        clip.backgrounds("swap")


def test_palette_order_matches_the_backend():
    assert clip.PALETTE == ((0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 0))


def test_identity_check_lines():
    ok, line = clip.identity_check({1, 2}, {1, 2, 3})
    assert ok and line == "Every identity of the driving mask (1 (blue), 2 (red)) is in the reference mask"
    ok, line = clip.identity_check({1, 4}, {1})
    assert not ok
    assert line == ("Identity 4 (magenta) moves in the driving mask but is in no reference mask: "
                    "it is not bound to a character")
    ok, line = clip.identity_check({1, 2, 5}, {1}, extra_identities=[{2}])
    assert not ok and line.startswith("Identity 5 (cyan) moves")
    ok, line = clip.identity_check({2, 3}, set())
    assert not ok and line.startswith("Identities 2 (red), 3 (green) move")
    assert "\n" not in line


def test_exported_clip_round_trip_and_lookup():
    exported = clip.ExportedClip(
        path="/footage/dance.mp4", kind="movie", fps=16.0, frame_start=12, frame_end=15, frame_count=65,
        scene_frames=[17, 19, 20], scene_frame_start=17, shown=[0, 0, 1, 2], scene_fps=24.0,
    )
    again = clip.ExportedClip.from_dict(json.loads(json.dumps(exported.to_dict())))
    assert again == exported
    assert exported.count == 3 and exported.scene_frame_end == 21
    assert [exported.exported_at(f) for f in range(16, 22)] == [None, 0, 0, 1, 2, None]


def test_inputs_record_gives_job_fields(tmp_path):
    driving = clip.ExportedClip(
        path=str(tmp_path / "driving"), kind="sequence", fps=24.0, frame_start=0, frame_end=3, frame_count=3,
        scene_frames=[1, 2, 3], scene_frame_start=1, shown=[0, 1, 2], scene_fps=24.0, baked=True,
    )
    still = clip.ExportedStill(path=str(tmp_path / "ref.png"), mask_path=str(tmp_path / "ref_mask.png"))
    clip.save_inputs(str(tmp_path), driving=driving, reference=still, mode="replace")
    fields = clip.job_fields(clip.load_inputs(str(tmp_path)))
    assert fields == {
        "driving": str(tmp_path / "driving"), "driving_fps": 24.0, "frame_start": 0, "frame_end": 3,
        "reference": str(tmp_path / "ref.png"), "reference_mask": str(tmp_path / "ref_mask.png"),
        "mode": "replace",
    }
    clip.save_inputs(str(tmp_path), reference=None)
    assert "reference" not in clip.load_inputs(str(tmp_path))
    assert clip.load_inputs(str(tmp_path / "none")) == {"format": clip.INPUTS_FORMAT}


def test_classify_counts_palette_colours_and_exactness():
    rgba = [0, 0, 1, 1] * 3 + [1, 0, 0, 1] * 2 + [0, 0, 0, 1] * 4 + [1, 1, 1, 1]
    counts = pixels.classify(rgba)
    assert counts == {"identities": {1: 3, 2: 2}, "black": 4, "white": 1, "exact": True}
    blended = pixels.classify([0.5, 0.0, 0.5, 1.0, 0.9, 0.0, 0.9, 1.0])
    assert not blended["exact"]
    assert blended["identities"] == {4: 1}  # 230/255 is on, as the backend reads it
    assert pixels.classify([225 / 255, 0.0, 0.0, 1.0])["black"] == 1  # 225 is off


def test_compose_and_fill_layers():
    first = bytes([1, 1, 0, 0])
    second = bytes([0, 1, 1, 0])
    ids = pixels.compose_layers([(1, first), (2, second)], 4)
    assert ids == bytes([1, 2, 2, 0])
    r, g, b = pixels.fill(ids, (255, 255, 255))
    assert list(zip(r, g, b)) == [(0, 0, 255), (255, 0, 0), (255, 0, 0), (255, 255, 255)]


def read_png(path):
    """(width, height, colour type, rows top-down) of a PNG written with filter 0."""
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + payload)
        chunks[kind] = chunks.get(kind, b"") + payload
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8
    channels = {2: 3, 6: 4}[colour]
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * channels + 1
    rows = [raw[y * stride + 1:(y + 1) * stride] for y in range(height)]
    assert all(raw[y * stride] == 0 for y in range(height))
    return width, height, colour, rows


def test_write_png_flips_rows_to_top_down(tmp_path):
    path = str(tmp_path / "sub" / "mask.png")
    bottom, top = bytes((0, 0, 255)) * 2, bytes((255, 0, 0)) * 2
    pixels.write_png(path, 2, 2, bottom + top)
    width, height, colour, rows = read_png(path)
    assert (width, height, colour) == (2, 2, 2)
    assert rows == [top, bottom]
    assert os.listdir(tmp_path / "sub") == ["mask.png"]


# --------------------------------------------------------------------------------------------
# With Blender.

@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    user_dir = tmp / "blender-user"
    user_dir.mkdir()
    report_path = tmp / "report.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(blender_testing.HERE, "sources_script.py"),
         blender_testing.REPO_ROOT, str(tmp / "out"), str(report_path)],
        env=blender_testing.isolated_blender_env(str(user_dir)),
        cwd=str(tmp), capture_output=True, text=True, timeout=300,
    )
    output = "exit code {:d}\n--- stdout\n{:s}\n--- stderr\n{:s}".format(
        proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
    assert report_path.is_file(), output
    with open(report_path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["_output"] = output
    return data


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}".format(name, result["detail"])
    return result["detail"]


def test_an_export_never_deletes_files_it_did_not_write(report):
    detail = step(report, "export_folders_keep_other_files")
    assert "already holds other images (frame_000000.png)" in detail["refused"]
    assert detail["theirs_kept"] == ["frame_000000.png"]
    assert detail["ours_left"] == [".scail2-export"]


def test_movie_strip_is_read_from_its_file_with_the_timeline_timing(report):
    # 16 fps footage in a 24 fps scene (added from Python: one footage frame per scene frame),
    # content from frame 10, hard trims 5 and 3, handles moved in by 7 and 6.
    detail = step(report, "movie_strip_direct")
    exported = detail["clip"]
    assert exported["kind"] == "movie" and not exported["baked"]
    assert exported["path"] == report["footage"]
    assert exported["fps"] == 16.0 and exported["scene_fps"] == 24.0
    assert exported["frame_count"] == 65
    assert detail["handles"] == [17, 61]
    assert (exported["frame_start"], exported["frame_end"]) == (12, 56)
    assert exported["scene_frame_start"] == 17 and len(exported["shown"]) == 44
    assert exported["scene_frames"] == list(range(17, 61))
    # Rendering the sequencer at every scene frame shows exactly the exported footage frame.
    assert detail["check"]["frames_checked"] == 44
    assert detail["check"]["mismatches"] == {}
    assert detail["changed"] == []
    assert not detail["wrote"], "a direct export must not write frames"


def test_movie_strip_at_its_own_rate_is_read_with_the_timeline_timing(report):
    # Added in the interface ("Adjust Playback Rate"): the 16 fps footage plays in real time at 24 fps.
    detail = step(report, "movie_strip_adjusted_rate")
    if "skipped" in detail:
        pytest.skip(detail["skipped"])
    exported = detail["clip"]
    assert detail["content_duration"] == 90  # 60 footage frames * 24 / 16
    assert exported["fps"] == 16.0 and exported["kind"] == "movie"
    assert detail["check"]["frames_checked"] == len(exported["shown"]) > 60
    assert detail["check"]["mismatches"] == {}
    # Footage frames repeat on the timeline, and every exported frame is shown at its scene frame.
    assert len(set(exported["shown"])) == exported["frame_end"] - exported["frame_start"] < len(exported["shown"])
    for i, frame in enumerate(exported["scene_frames"]):
        assert exported["shown"][frame - exported["scene_frame_start"]] == i


def test_strip_with_effects_is_rendered_frame_for_frame(report):
    detail = step(report, "movie_strip_baked")
    baked = detail["baked"]
    assert baked["baked"] and baked["kind"] == "sequence"
    assert "adjustment layer" in baked["note"]
    assert baked["fps"] == 24.0
    assert (baked["frame_start"], baked["frame_end"], baked["frame_count"]) == (0, 44, 44)
    assert baked["scene_frames"] == list(range(17, 61))
    assert detail["listing"] == ["frame_{:06d}.png".format(i) for i in range(44)]
    # Each rendered frame is the footage frame the timeline shows there (and the red strip
    # below it, not part of the footage, was left out).
    assert detail["exported"] == detail["expected"]
    assert detail["changed"] == []


def test_meta_strip_and_sequencer_range_are_rendered_as_the_timeline_shows_them(report):
    detail = step(report, "meta_and_range")
    meta = detail["meta"]
    assert meta["baked"] and "meta strip" in meta["note"]
    assert detail["meta_handles"] == [17, 61] and meta["scene_frames"] == list(range(17, 61))
    assert detail["meta_shown"] == detail["meta_timeline"]
    assert all(len(found) == 1 for found in detail["meta_shown"].values())
    assert detail["inner_reasons"] == ["it is inside a meta strip"]
    # The sequencer output from two frames before the strip: black, then the footage frames it shows.
    output = detail["range"]
    assert output["baked"] and output["scene_frames"] == [15, 16, 17, 18, 19]
    assert detail["range_black"] == [True, True]
    assert detail["range_in"] == detail["range_expected"] == [[12], [13], [14]]
    assert detail["changed"] == []


def test_scene_strip_is_rendered(report):
    detail = step(report, "scene_strip")
    assert detail["reasons"] == ["it is a scene strip"]
    exported = detail["clip"]
    assert exported["baked"] and exported["scene_frames"] == [11, 12, 13]
    assert detail["distinct"] == 3 and all(detail["nonblack"])  # the animated shot, frame by frame


def test_image_strip_is_read_from_its_folder(report):
    detail = step(report, "image_strip_direct")
    exported = detail["clip"]
    assert exported["kind"] == "sequence" and not exported["baked"]
    assert exported["path"] == detail["folder"]
    assert exported["fps"] == 24.0
    assert detail["got"] == detail["expected"]
    assert (exported["frame_start"], exported["frame_end"], exported["frame_count"]) == (5, 10, 12)
    # With another image in the folder the strip's files are linked into a folder of their own.
    linked = detail["linked"]
    assert linked["path"] != detail["folder"]
    assert detail["linked_names"] == ["frame_{:06d}.png".format(i) for i in range(12)]
    assert detail["linked_listing"] == detail["linked_names"]
    assert detail["linked_same_bytes"]
    assert (linked["frame_start"], linked["frame_end"]) == (5, 10)


def test_identity_masks_have_exact_palette_colours_on_the_mode_background(report):
    detail = step(report, "identity_masks")
    for mode, background, other in (("animate", [0, 0, 0], "white"), ("replace", [255, 255, 255], "black")):
        mask = detail[mode]
        assert mask["identities"] == [1, 2]
        assert mask["frame_count"] == detail["driving"]["frame_count"] == 3
        assert mask["scene_frames"] == [1, 2, 3]
        for frame in detail[mode + "_frames"]:
            assert frame["exact"], frame  # no anti-aliased edges: only palette and background values
            assert set(map(int, frame["identities"])) == {1, 2}
            assert frame["at"] == {"Hero": [0, 0, 255], "Sidekick": [255, 0, 0]}, frame
            assert frame["corner"] == background
            assert frame[other] == 0
    # The characters move: the masks differ from frame to frame.
    assert len({json.dumps(f["identities"], sort_keys=True) for f in detail["animate_frames"]}) > 1
    reference = detail["reference_mask"]
    assert reference["exact"] and reference["corner"] == [255, 255, 255]  # animate: reference on white
    assert reference["at"] == {"Hero": [0, 0, 255], "Sidekick": [255, 0, 0]}
    assert detail["reference"]["identities"] == [1, 2]
    assert detail["check"] == [True, "Every identity of the driving mask (1 (blue), 2 (red)) is in the reference mask"]


def test_scene_is_left_as_it_was(report):
    for name in ("movie_strip_direct", "movie_strip_baked", "meta_and_range", "identity_masks",
                 "reference_render_alpha", "mask_strip"):
        assert step(report, name)["changed"] == [], name


def test_reference_render_keeps_alpha(report):
    detail = step(report, "reference_render_alpha")
    assert detail["still"]["has_alpha"]
    assert detail["alpha_at_hero"] >= 0.99 and detail["alpha_corner"] == 0.0
    assert detail["alphas"][0] == 0.0 and detail["alphas"][-1] >= 0.99
    # Replacement: the reference mask is on black.
    assert detail["mask_corner"] == [0, 0, 0] and detail["mask_at_hero"] == [0, 0, 255]


def test_mask_strip_renders_layers_in_palette_colours(report):
    detail = step(report, "mask_strip")
    animate, driving = detail["animate"], detail["driving"]
    # Aligned with the footage read directly: one mask per footage frame, blank outside the range.
    assert animate["frame_count"] == driving["frame_count"] == 65
    assert (animate["frame_start"], animate["frame_end"]) == (driving["frame_start"], driving["frame_end"])
    assert detail["listing"] == ["mask_{:06d}.png".format(i) for i in range(65)]
    assert animate["identities"] == [1, 2]
    for look in (detail["animate_first"], detail["animate_last"]):
        assert look["exact"] and set(map(int, look["identities"])) == {1, 2}
        assert look["left"] == [0, 0, 255] and look["right"] == [255, 0, 0] and look["corner"] == [0, 0, 0]
        assert look["size"][0] == 96  # the footage's aspect, 96 pixels wide
        assert abs(look["size"][1] - 96 * 1080 / 2048) <= 1
    assert detail["animate_pad"]["identities"] == {} and detail["animate_pad"]["corner"] == [0, 0, 0]
    assert detail["replace_first"]["corner"] == [255, 255, 255]
    assert detail["changed"] == []  # mask layers shown again, strips as they were
    # The same masks given as a mask folder: accepted for this driving clip, refused for another.
    as_file = detail["as_file"]
    assert not as_file["baked"] and as_file["identities"] == [1, 2]
    assert (as_file["frame_start"], as_file["frame_end"], as_file["frame_count"]) == (12, 56, 65)
    assert detail["mismatch"].startswith("The mask has 65 frames but the driving clip has 44: ")


def test_reference_stills(report):
    detail = step(report, "references")
    assert detail["image"]["has_alpha"] and detail["image_alpha"] == [0.0, 1.0]
    assert detail["image_size"] == [16, 8]
    assert detail["image_bottom"] == [255, 128, 0]
    assert detail["file"]["path"].endswith("scail_001_ref.jpg") and not detail["file"]["has_alpha"]
    assert detail["missing"].startswith("The reference image was not found: ")
    # A strip's frame: the image strip's own file (with its alpha), a movie strip's picture rendered.
    assert detail["from_image_strip"]["path"].endswith("still_2.png") and detail["from_image_strip"]["has_alpha"]
    assert detail["from_movie_strip"]["path"].endswith("reference.png")
    assert detail["movie_strip_is_footage_frame_4"]


def test_operators_write_inputs_a_job_accepts(report):
    detail = step(report, "operators_and_inputs")
    assert detail["assignment"][0][:2] == [1, "OBJECT"] and detail["assignment"][1][:2] == [3, "COLLECTION"]
    assert detail["results"] == {"driving": ["FINISHED"], "masks": ["FINISHED"], "reference": ["FINISHED"]}
    fields = detail["fields"]
    assert fields["driving_fps"] == 24.0 and (fields["frame_start"], fields["frame_end"]) == (0, 3)
    assert fields["driving_mask"].endswith("driving_mask") and fields["reference_mask"].endswith(".png")
    assert detail["spec_driving"] == fields["driving"]
    assert detail["check"] == "Every identity of the driving mask (1 (blue), 3 (green)) is in the reference mask"
    assert detail["warned"] == ("Identity 3 (green) moves in the driving mask but is in no reference mask: "
                                "it is not bound to a character")
    assert detail["other_mode"] == ("The driving mask was made for animate mode, the job is in replace mode: "
                                    "export it again")
    assert detail["left"] == 1


def test_blender_side_palette_is_the_protocols():
    """core/inputs.py takes the palette from protocol/, the one source of truth."""
    from scail2 import protocol

    assert clip.PALETTE == protocol.PALETTE
    assert clip.PALETTE_NAMES == protocol.PALETTE_NAMES
    assert clip.MODES == protocol.MODES and clip.MAX_IDENTITIES == protocol.MAX_IDENTITIES
