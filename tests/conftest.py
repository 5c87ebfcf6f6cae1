"""For every test, in both worlds: the fixtures are part of the repository, and no worker outlives its tests.

pytest puts this folder on sys.path (no __init__.py: rootdir-relative imports), so `process_guard`
imports by name from tests/backend and tests/blender alike.
"""

import os

import pytest

import namespaces
import process_guard

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# What the tests read; all of it ships in tests/fixtures (see its README.md).
REQUIRED_FIXTURES = (
    "footage/scail_001_driving.mp4", "footage/scail_001_ref.jpg", "footage/scail_001_rendered.mp4",
    "footage/scail_002_driving.mp4", "footage/scail_002_ref.jpg", "footage/mimicmotion_demo1.jpg",
    "scail2_parity/case_animate.safetensors", "scail2_parity/mask_T9_64x96.safetensors",
    "scail2_parity/tiny_scail2.safetensors",
)


def missing_fixtures(folder=FIXTURES):
    return [name for name in REQUIRED_FIXTURES if not os.path.isfile(os.path.join(folder, name))]


def pytest_sessionstart(session):
    """A missing fixture is an error before any test runs, never a skip."""
    missing = missing_fixtures()
    if missing:
        raise pytest.UsageError("missing test fixtures in {:s}: {:s} (they ship with the repository: restore them "
                                "with git checkout -- tests/fixtures)".format(FIXTURES, ", ".join(missing)))


def pytest_sessionfinish(session, exitstatus):
    left = process_guard.end_all()
    if left:
        print("\nprocess_guard: ended {:d} worker process(es) that failed tests left running".format(left))


def pytest_terminal_summary(terminalreporter):
    """Once per session: why the tests that need a private mount namespace were skipped."""
    if namespaces.why_not():
        terminalreporter.write_line("skipped the sealed-worker and full-disk tests: " + namespaces.why_not())
