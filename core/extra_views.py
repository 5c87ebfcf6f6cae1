# SPDX-License-Identifier: GPL-3.0-or-later
"""Extra reference views: how many a job takes, and the check of the identities they show. Standard library only.

SCAIL-2 takes views of the character besides the main reference (``JobSpec.extra_references``, each with
its colour mask in ``extra_reference_masks``). They are recorded in ``inputs.json`` under
:data:`EXTRA_VIEWS` as a list of :class:`core.inputs.ExportedStill` dicts, in the order of the Extra
Views list.
"""

__all__ = (
    "EXTRA_VIEWS",
    "MAX_EXTRA_VIEWS",
    "view_identity_problem",
)

from .inputs import identity_names
from ..protocol import MAX_EXTRA_VIEWS  # noqa: F401  (re-exported for the panels and operators)

# The inputs.json entry (and the export key) of the extra views.
EXTRA_VIEWS = "extra_references"

# How many a job takes is the contract's rule (protocol.MAX_EXTRA_VIEWS, with the reason there).


def view_identity_problem(inputs):
    """One line when an extra view shows an identity the driving mask does not move, else ``""``.

    A view binds the identities of its mask to what it shows; an identity that no driving frame moves
    (a view of the wrong character, or a mask painted with the wrong colour) would be given a look the
    job never uses. Without a driving mask every driving frame is identity 1, as the backend reads it.
    ``inputs``: what ``core.inputs.load_inputs`` returns.
    """
    mask = inputs.get("driving_mask")
    driving = set(mask.get("identities") or ()) if mask else {1}
    for number, view in enumerate(inputs.get(EXTRA_VIEWS) or (), start=1):
        shown = set(view.get("identities") or ())
        what = "Extra view {:d} ({:s})".format(number, view.get("source") or "?")
        if not shown:
            return "{:s} shows no identity: its mask is empty".format(what)
        strangers = shown - driving
        if strangers:
            return "{:s} shows identit{:s} {:s}, not in the driving mask ({:s}): fix its mask or the masks".format(
                what, "y" if len(strangers) == 1 else "ies", identity_names(strangers),
                identity_names(driving) or "none")
    return ""
