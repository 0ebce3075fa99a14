"""Arrows point down: the registry imports ``cells/``, ``backends/`` and ``specs``; they never import it.

Checked on the source (every ``import`` statement, also inside functions), so a
lazy import back up cannot hide, and at run time in a fresh interpreter.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lstmkit

PACKAGE = Path(lstmkit.__file__).resolve().parent
LOWER = ["cells", "backends", "specs.py", "hookspecs.py", "_contain.py"]
ABOVE = {"registry", "_builtins", "cli", "commands", "config", "run", "tasks", "nn", "engine", "model", "testing"}


def _imports(path: Path, package: str | None = None) -> set[str]:
    """The ``lstmkit`` modules a file imports (relative imports resolved), at any depth of the file."""
    if package is None:
        package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "lstmkit" or m.startswith("lstmkit.")}


def _files(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("path", [p for entry in LOWER for p in _files(entry)], ids=lambda p: p.name)
def test_lower_layers_never_import_the_registry_or_anything_above(path):
    upward = sorted(m for m in _imports(path) if len(m.split(".")) > 1 and m.split(".")[1] in ABOVE)
    assert not upward, f"{path.relative_to(PACKAGE.parent)} imports {upward}: arrows point down only"


def test_the_checker_sees_lazy_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def get_cell(name):\n    from ..registry import get_cell\n\n    return get_cell(name)\n",
                      encoding="utf-8")
    assert "lstmkit.registry" in _imports(sample, package="lstmkit.cells")
    assert "lstmkit.cells.base" in _imports(PACKAGE / "cells" / "__init__.py")


def test_using_cells_and_backends_does_not_load_the_registry():
    code = ("import sys, numpy as np\n"
            "from lstmkit.backends import ReferenceBackend\n"
            "from lstmkit.cells import LSTMCellType\n"
            "from lstmkit.specs import CellSpec\n"
            "CellSpec('lstm', LSTMCellType); ReferenceBackend()\n"
            "assert 'lstmkit.registry' not in sys.modules, 'the registry was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
