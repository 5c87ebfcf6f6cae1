"""`__init__.py`'s reload list names every add-on module, each after the add-on modules it imports.

"Reload Scripts" reloads the modules in that order: a module left out stays stale, and one reloaded
before a module it imports keeps the old one's classes.
"""

import ast
import os

import pytest

import blender_testing

pytestmark = pytest.mark.lts

REPO = blender_testing.REPO_ROOT
PACKAGES = ("protocol", "core", "props", "sources", "runtime", "operators", "panels")
TOP_MODULES = ("compat", "preferences")


def addon_modules():
    """Dotted names (from the add-on's root) of every module the add-on ships."""
    names = set(TOP_MODULES)
    for package in PACKAGES:
        for entry in os.listdir(os.path.join(REPO, package)):
            if entry.endswith(".py"):
                names.add(package if entry == "__init__.py" else package + "." + entry[:-3])
    return names


def module_level_imports(name, known):
    """The add-on modules ``name`` imports when it is loaded (top-level statements, not inside functions)."""
    parts = name.split(".")
    is_package = os.path.isfile(os.path.join(REPO, *parts, "__init__.py"))
    path = os.path.join(REPO, *parts, "__init__.py") if is_package else os.path.join(REPO, *parts) + ".py"
    package = parts if is_package else parts[:-1]
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` and the like
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and inner.level:
                base = package[:len(package) - (inner.level - 1)]
                module = [*base, *(inner.module.split(".") if inner.module else [])]
                if inner.module:  # `from . import x` loads the package's x, not (first) the package
                    found.add(".".join(module))
                found.update(".".join([*module, alias.name]) for alias in inner.names)
            if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                break
    return (found & known) - {name}


def reload_list():
    with open(os.path.join(REPO, "__init__.py"), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_modules" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("__init__.py has no _modules list")


def test_every_addon_module_is_reloaded():
    listed = reload_list()
    assert sorted(addon_modules() - set(listed)) == []
    assert sorted(set(listed) - addon_modules()) == []
    assert len(listed) == len(set(listed))


def test_each_module_is_reloaded_after_the_addon_modules_it_imports():
    listed = reload_list()
    known = set(listed)
    late = {name: sorted(dep for dep in module_level_imports(name, known) if listed.index(dep) > listed.index(name))
            for name in listed}
    assert {name: deps for name, deps in late.items() if deps} == {}
