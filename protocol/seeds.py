"""The seed rule, once: which seeds a job may name, and how "pick one" (-1) picks.

A job may name any seed torch can take (64 bits). A seed the project picks is drawn below
2**31 so that the add-on's Seed field (a Blender IntProperty, 32-bit signed) can show it and
an artist can lock it again; every picker (the add-on, the backend, the farm bundle) calls
`pick_seed`.
"""

from __future__ import annotations

import secrets

PICK_SEED = -1  # a job's seed that means "pick one and record it"
SEED_LIMIT = 1 << 64  # torch seeds a generator with 64 bits
PICKED_SEED_LIMIT = 1 << 31  # picked seeds fit Blender's Seed field


def is_seed(value: object) -> bool:
    """Whether `value` is a seed a job can run with (not "pick one")."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT


def pick_seed() -> int:
    """A fresh seed for a job that asks for one (seed -1)."""
    return secrets.randbelow(PICKED_SEED_LIMIT)
