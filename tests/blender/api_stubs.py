"""A static check of the Blender API the add-on calls, against fake-bpy-module stubs of one release.

The stubs are read as text (never imported). What is checked, for the add-on's own
Blender-side files (not backend/, tests/, bench/, packaging/ ...):
  * every `bpy.ops.<module>.<operator>` exists in that release;
  * every name taken from `bpy.types` (attribute or `from bpy.types import`) exists;
  * every attribute name the code reads or writes exists on some bpy/mathutils type of
    that release, in the standard library, or in the add-on itself.
`compat.py` is exempt: it is where version differences are handled, behind hasattr checks.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOT_BLENDER_SIDE = {"backend", "tests", "bench", "demo", "docs", "packaging", ".venvs", ".git", "build", ".ci"}
EXEMPT = {"compat.py"}
OWN_OPERATORS = "scail2"  # bpy.ops.scail2.*: the add-on's own, checked by its registration tests


def blender_side_files() -> list[Path]:
    files = []
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if parts[0] in NOT_BLENDER_SIDE or path.name in EXEMPT or parts[0] == "protocol":
            continue
        files.append(path)
    return files


class Stubs:
    """Names defined by one release's stubs."""

    def __init__(self, root: Path):
        self.root = root / "bpy-stubs"
        if not self.root.is_dir():
            raise FileNotFoundError(f"no bpy stubs under {root} (run make setup)")

    @lru_cache(maxsize=None)
    def operators(self, module: str) -> set[str]:
        path = self.root / "ops" / module / "__init__.pyi"
        # Older stubs declare operators as functions, newer ones as classes.
        return set(re.findall(r"^(?:def|class) (\w+)\b", path.read_text(), re.M)) if path.exists() else set()

    @property
    def types(self) -> set[str]:
        return set(re.findall(r"^class (\w+)\b", self._types_text, re.M))

    @property
    def _types_text(self) -> str:
        return (self.root / "types" / "__init__.pyi").read_text()

    @lru_cache(maxsize=None)
    def attributes(self) -> set[str]:
        """Every member name of every class and module in the stubs (bpy, mathutils, bpy_extras, ...)."""
        names: set[str] = set()
        for path in self.root.parent.rglob("*.pyi"):
            text = path.read_text()
            names.update(re.findall(r"^\s+(\w+)\s*:", text, re.M))
            names.update(re.findall(r"^\s*def (\w+)\(", text, re.M))
            names.update(re.findall(r"^(\w+)\s*[:=]", text, re.M))
            names.update(re.findall(r"^class (\w+)\b", text, re.M))
        for package in self.root.parent.iterdir():
            if package.name.endswith("-stubs"):
                names.add(package.name[: -len("-stubs")])
                names.update(p.name for p in package.rglob("*") if p.is_dir())  # bpy.ops, bpy.app.timers, ...
        return names


def _attribute_chain(node: ast.AST) -> list[str] | None:
    """`bpy.ops.mod.op` -> ["bpy", "ops", "mod", "op"]; None if the chain does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _stdlib_names() -> set[str]:
    names = set(dir(builtins)) | {n for t in (str, bytes, list, dict, set, tuple, int, float, object) for n in dir(t)}
    for module_name in sorted(sys.stdlib_module_names):
        if module_name.startswith("_") or module_name in {"antigravity", "this", "idlelib", "tkinter", "turtle"}:
            continue
        try:
            module = __import__(module_name)
        except Exception:
            continue
        names.update(dir(module))
        for value in vars(module).values():
            if isinstance(value, type) or callable(value):
                names.update(dir(value))
    return names


@lru_cache(maxsize=None)
def stdlib_names() -> frozenset[str]:
    return frozenset(_stdlib_names())


def own_names(files: list[Path]) -> set[str]:
    """Names the add-on defines itself: functions, classes, attributes it assigns, parameters."""
    names: set[str] = set()
    for path in [*files, REPO / "compat.py", *sorted((REPO / "protocol").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                names.add(node.value)  # dict keys, getattr names: data, not API
    return names


def problems(stubs: Stubs, files: list[Path] | None = None) -> list[str]:
    """One line per API use that this release's stubs do not have."""
    files = files if files is not None else blender_side_files()
    known = stubs.attributes() | stdlib_names() | own_names(files)
    types = stubs.types
    found: list[str] = []
    for path in files:
        tree = ast.parse(path.read_text())
        where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "bpy.types":
                found += [f"{where}:{node.lineno}: bpy.types.{a.name}" for a in node.names if a.name not in types]
            if not isinstance(node, ast.Attribute):
                continue
            chain = _attribute_chain(node)
            if chain and chain[:2] == ["bpy", "ops"] and len(chain) == 4:
                if chain[2] != OWN_OPERATORS and chain[3] not in stubs.operators(chain[2]):
                    found.append(f"{where}:{node.lineno}: bpy.ops.{chain[2]}.{chain[3]}")
            elif chain and chain[:2] == ["bpy", "types"] and len(chain) == 3 and chain[2] not in types:
                found.append(f"{where}:{node.lineno}: bpy.types.{chain[2]}")
            elif node.attr not in known:
                found.append(f"{where}:{node.lineno}: .{node.attr}")
    return sorted(set(found))
