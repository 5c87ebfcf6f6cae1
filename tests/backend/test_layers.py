"""The backend's floors point one way: no import circle in `service/` (type-checking imports included),
and nothing below the command line imports `cli` back up."""

from __future__ import annotations

import ast

import pytest
from scail_fixtures import REPO

BACKEND = REPO / "backend"
ENTRY_POINTS = {"cli.py", "__main__.py", "as_rank.py"}  # the top floor: these may import cli


def imported_modules(path) -> set[str]:
    """Dotted names (from the repository root) of the backend modules `path` imports, TYPE_CHECKING ones too."""
    package = path.parent.relative_to(REPO).parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            module = (*base, *(node.module.split(".") if node.module else ()))
            for alias in node.names:
                names.add(".".join((*module, alias.name)))
                names.add(".".join(module))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("backend"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("backend"))
    return names


def module_name(path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def test_the_service_modules_form_no_import_circle():
    modules = {module_name(p): p for p in (BACKEND / "service").glob("*.py") if p.name != "__init__.py"}
    edges = {name: sorted(imported_modules(path) & set(modules) - {name}) for name, path in modules.items()}

    def circle_from(start, node, trail):
        for nxt in edges[node]:
            if nxt == start:
                return [*trail, nxt]
            if nxt not in trail:
                found = circle_from(start, nxt, [*trail, nxt])
                if found:
                    return found
        return None

    circles = [circle for name in modules if (circle := circle_from(name, name, [name]))]
    assert not circles, circles[0]


@pytest.mark.parametrize("path", sorted(p for p in BACKEND.rglob("*.py") if p.name not in ENTRY_POINTS
                                        or p.parent != BACKEND), ids=lambda p: str(p.relative_to(BACKEND)))
def test_nothing_below_the_command_line_imports_it(path):
    assert "backend.cli" not in imported_modules(path)
