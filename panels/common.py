# SPDX-License-Identifier: GPL-3.0-or-later
"""Drawing helpers the panels share."""

__all__ = (
    "label_wrapped",
)

import textwrap

# Rough width of one character of interface text, in pixels at scale 1.0.
_CHAR_WIDTH_PX = 7.0


def label_wrapped(layout, context, text, icon):
    """Draw ``text`` over as many lines as the sidebar's width needs."""
    region = context.region
    width = region.width if region is not None else 300
    scale = context.preferences.system.ui_scale or 1.0
    chars = max(16, int(width / (_CHAR_WIDTH_PX * scale)) - 4)
    col = layout.column(align=True)
    for i, line in enumerate(textwrap.wrap(text, chars) or [""]):
        col.label(text=line, icon=icon if i == 0 else 'BLANK1', translate=False)
