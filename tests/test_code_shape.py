"""The shape of the code (issue 13): short modules and functions, docks that do not reach
into each other, a core without napari or Qt. A failure names the file and what to split."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_unet_cells"
MAX_MODULE_LINES = 600
MAX_DOCK_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100
DOCKS = ("predict", "finetune", "annotate", "weightmap")  # widgets/<dock>_widget.py, <dock>/

MODULES = sorted(PACKAGE.rglob("*.py"))


def _dock_of(path: Path) -> str | None:
    """Which dock a widgets module belongs to (its _widget.py module or its subpackage)."""
    parts = path.relative_to(PACKAGE).parts
    if parts[0] != "widgets":
        return None
    for dock in DOCKS:
        if parts[1] == f"{dock}_widget.py" or parts[1] == dock:
            return dock
    return None


def _imported_modules(path: Path) -> list[str]:
    """Absolute dotted names of the package modules ``path`` imports (relative resolved)."""
    tree = ast.parse(path.read_text())
    package = ["napari_unet_cells", *path.relative_to(PACKAGE).parent.parts]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names += [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_short(path):
    lines = len(path.read_text().splitlines())
    limit = MAX_DOCK_MODULE_LINES if _dock_of(path) else MAX_MODULE_LINES
    assert lines <= limit, f"{path.name}: {lines} lines (at most {limit}); split it"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("dock", DOCKS)
def test_no_dock_imports_another_dock(dock):
    others = [d for d in DOCKS if d != dock]
    for path in MODULES:
        if _dock_of(path) != dock:
            continue
        for name in _imported_modules(path):
            for other in others:
                assert not (
                    name.startswith(f"napari_unet_cells.widgets.{other}_widget")
                    or name.startswith(f"napari_unet_cells.widgets.{other}.")
                    or name == f"napari_unet_cells.widgets.{other}"
                ), f"{path.relative_to(PACKAGE)} imports {name}: docks share state through "
                "workspace.py, not through each other"


def test_no_dock_opens_a_dock():
    """Docks never open docks (DESIGN.md): a request for a closed dock waits in the
    workspace."""
    for path in (PACKAGE / "widgets").rglob("*.py"):
        assert "add_plugin_dock_widget" not in path.read_text(), path.relative_to(PACKAGE)


def test_core_imports_no_napari_qt_or_widgets():
    for path in (PACKAGE / "core").rglob("*.py"):
        for name in _imported_modules(path):
            root = name.split(".")[0]
            assert root not in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6"), (
                f"{path.relative_to(PACKAGE)} imports {name}: the core stays headless"
            )
            assert not name.startswith("napari_unet_cells.widgets"), path
