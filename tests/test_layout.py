"""The layout's rules (STYLE.md), checked by parsing the source with ``ast``, so a lazy import
inside a function cannot hide:

* imports point down: apps -> captioner, vqa, charlm -> data_prep -> core (charlm reads
  plain text and needs core only);
* the tasks (captioner, vqa, charlm) never import each other; core imports no other package
  of the project; data_prep imports only core (no task's model or metrics); the library never
  imports the apps or streamlit;
* no two modules import each other;
* the tasks are symmetric: the same file names for the same roles.
"""

from __future__ import annotations

import ast
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("captioner", "vqa", "charlm")
LIBRARY = ("core", "data_prep", *TASKS)
PACKAGES = (*LIBRARY, "apps", "attend")
FORBIDDEN = {  # "attend" only gathers the tasks' public names: nothing of the library imports it
    "core": {"apps", "streamlit", "attend", "data_prep", *TASKS},
    "data_prep": {"apps", "streamlit", "attend", *TASKS},
    "captioner": {"apps", "streamlit", "attend", "vqa", "charlm"},
    "vqa": {"apps", "streamlit", "attend", "captioner", "charlm"},
    "charlm": {"apps", "streamlit", "attend", "captioner", "vqa", "data_prep"},  # plain text: core only
    "attend": {"apps", "streamlit"},
}
TASK_ROLES = {"model.py", "data.py", "train.py", "checkpoint.py", "inference.py", "bench.py", "metrics.py"}


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module named by an import statement anywhere in ``source`` (also inside
    functions and ``if TYPE_CHECKING``), relative imports resolved against ``module``."""
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: max(0, len(parts) - node.level + 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module
            found.add(name)
            # `from captioner import vqa_thing` names modules too: keep `pkg.name` candidates.
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def _library_files(packages=LIBRARY):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield package, path, ".".join(parts), relative.name == "__init__"


def test_the_checker_sees_every_form_of_import():
    source = """
import os, streamlit as st
from . import decode
from .model import AttentionDecoder
from ..apps.cli import main
def later():
    from vqa.model import VQAModel
    import importlib; importlib.import_module("data_prep.scenes")
"""
    found = imported_modules(source, "captioner.inference")
    assert {
        "os",
        "streamlit",
        "captioner",
        "captioner.decode",
        "captioner.model",
        "apps.cli",
        "vqa.model",
        "data_prep.scenes",
    } <= found
    assert imported_modules("from . import x", "captioner", is_package=True) >= {"captioner", "captioner.x"}


def test_library_files_are_found():
    files = {name for _, _, name, _ in _library_files()}
    assert {
        "core.encoder",
        "core.features",
        "captioner.train",
        "vqa.model",
        "data_prep.coco",
        "data_prep.scenes",
        "data_prep.scenes.measures",
        "charlm.model",
        "charlm.train",
    } <= files
    inference = ROOT / "captioner" / "inference.py"
    assert {"captioner.checkpoint", "core.encoder"} <= imported_modules(inference.read_text(), "captioner.inference")


@pytest.mark.parametrize("package", LIBRARY)
def test_imports_point_one_way(package):
    offences = []
    for owner, path, module, is_package in _library_files():
        if owner != package:
            continue
        for name in imported_modules(path.read_text(), module, is_package):
            top = name.split(".")[0]
            if top in FORBIDDEN[package]:
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []


def test_no_two_modules_import_each_other():
    modules = {name: (path, is_package) for _, path, name, is_package in _library_files(PACKAGES)}
    imports = {
        name: {m for m in imported_modules(path.read_text(), name, is_package) if m in modules and m != name}
        for name, (path, is_package) in modules.items()
    }
    circles = sorted({tuple(sorted((a, b))) for a, names in imports.items() for b in names if a in imports[b]})
    assert circles == []


def test_the_tasks_are_symmetric():
    for task in TASKS:
        assert TASK_ROLES <= {p.name for p in (ROOT / task).glob("*.py")}, task


def test_console_script_is_apps_cli_main():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["attend"] == "apps.cli:main"
    (installed,) = entry_points(group="console_scripts", name="attend")
    assert installed.value == "apps.cli:main"
    from apps.cli import main

    assert installed.load() is main
