"""The code is ruff clean, with the rules configured in pyproject.toml (CI runs this as part of the tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    if shutil.which("ruff") is None and subprocess.run([sys.executable, "-m", "ruff", "--version"],
                                                       capture_output=True).returncode != 0:
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    found = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "examples"], cwd=ROOT,
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stdout[-3000:]


def test_no_layer_imports_a_layer_above_it():
    """The import-linter contract in pyproject.toml: a new upward import fails here, naming the import."""
    pytest.importorskip("importlinter", reason="import-linter is a dev dependency: pip install -e '.[dev]'")
    found = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                            "lint_imports_command()", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, (found.stdout + found.stderr)[-3000:]


def strongly_connected(graph, modules: list[str]) -> list[list[str]]:
    """Tarjan's algorithm over the module import graph (imports inside functions included)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            groups.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return groups


def test_no_module_imports_itself_through_others():
    """No import cycle in src/: every group of modules that reach each other is a single module."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter: pip install -e '.[dev]'")
    graph = grimp.build_graph("lmsmith", cache_dir=None)
    cycles = [group for group in strongly_connected(graph, sorted(graph.modules)) if len(group) > 1]
    assert cycles == [], f"import cycles: {cycles}"
