"""The extra views' record and identity check, without Blender (``core.extra_views``, ``core.inputs.job_fields``)."""

import pytest

from scail2 import protocol
from scail2.core import extra_views, inputs

pytestmark = pytest.mark.lts


def view(path, identities, mask="mask.png"):
    return inputs.ExportedStill(path=path, mask_path=mask, source='file "{:s}"'.format(path),
                                identities=identities).to_dict()


def recorded(driving_identities=None, views=()):
    data = {"format": inputs.INPUTS_FORMAT, "mode": "animate",
            "reference": inputs.ExportedStill(path="ref.png", identities=[1]).to_dict()}
    if driving_identities is not None:
        data["driving_mask"] = {"path": "mask.mp4", "identities": driving_identities}
    data[extra_views.EXTRA_VIEWS] = list(views)
    return data


def test_views_of_identities_the_driving_mask_moves_pass():
    assert extra_views.view_identity_problem(recorded([1, 2], [view("back.png", [1]), view("side.png", [2])])) == ""
    # Without a driving mask every driving frame is identity 1, as the backend reads it.
    assert extra_views.view_identity_problem(recorded(None, [view("back.png", [1])])) == ""
    assert extra_views.view_identity_problem(recorded([1])) == ""


def test_a_view_of_another_identity_is_one_line_naming_the_view():
    line = extra_views.view_identity_problem(recorded([1], [view("back.png", [1]), view("side.png", [1, 3])]))
    assert line.startswith('Extra view 2 (file "side.png") shows identity 3 (green)')
    assert "not in the driving mask (1 (blue))" in line and "\n" not in line
    assert "identities 2 (red), 3 (green)" in extra_views.view_identity_problem(
        recorded(None, [view("x.png", [2, 3])]))


def test_a_view_with_an_empty_mask_is_refused():
    assert "shows no identity" in extra_views.view_identity_problem(recorded([1], [view("clear.png", [])]))


def test_job_fields_pair_each_view_with_its_mask_and_the_spec_accepts_them():
    fields = inputs.job_fields(recorded(None, [view("a.png", [1], "a_mask.png"), view("b.png", [1], "b_mask.png")]))
    assert fields["extra_references"] == ["a.png", "b.png"]
    assert fields["extra_reference_masks"] == ["a_mask.png", "b_mask.png"]
    spec = protocol.JobSpec(driving="d.mp4", reference=fields["reference"], extra_references=fields["extra_references"],
                            extra_reference_masks=fields["extra_reference_masks"]).validate()
    assert spec.extra_reference_masks == ["a_mask.png", "b_mask.png"]
    assert "extra_references" not in inputs.job_fields(recorded(None))

