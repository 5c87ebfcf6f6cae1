"""The add-on's layers point one way: core/ is plain Python, and nothing below the UI imports operators/ or panels/."""

import ast
import os
import sys

import pytest

import blender_testing

pytestmark = pytest.mark.lts

REPO = blender_testing.REPO_ROOT
BELOW_THE_UI = ("core", "props", "sources", "runtime")


def _imports(path):
    """``(absolute top-level names, add-on modules)`` ``path`` imports; add-on modules as dotted paths from the root."""
    package = os.path.relpath(os.path.dirname(path), REPO).replace(os.sep, ".").strip(".")
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    absolute, addon = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".") if package else []
            base = parts[:len(parts) - (node.level - 1)]
            for alias in node.names:
                addon.add(".".join([*base, *(node.module.split(".") if node.module else []), alias.name]))
    return absolute, addon


def _modules(folder):
    root = os.path.join(REPO, folder)
    return sorted(os.path.join(root, name) for name in os.listdir(root) if name.endswith(".py"))


@pytest.mark.parametrize("path", _modules("core"), ids=os.path.basename)
def test_core_is_plain_python(path):
    absolute, addon = _imports(path)
    assert absolute <= set(sys.stdlib_module_names), absolute - set(sys.stdlib_module_names)
    outside = {name for name in addon if name.split(".")[0] not in ("core", "protocol")}
    assert not outside, outside


@pytest.mark.parametrize("path", [p for folder in BELOW_THE_UI for p in _modules(folder)],
                         ids=lambda p: os.path.relpath(p, REPO))
def test_nothing_below_the_ui_imports_operators_or_panels(path):
    _absolute, addon = _imports(path)
    upward = {name for name in addon if name.split(".")[0] in ("operators", "panels")}
    assert not upward, upward
