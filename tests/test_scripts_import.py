"""Every benchmark and example script imports: a name moved inside the package breaks them at the first line.

Nothing in the suite runs them whole (they take minutes, or need a GPU or a download), so a rename
would otherwise go unseen until someone measures.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_script_imports(script: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))  # benchmarks import their neighbours
    name = f"script_{script.parent.name}_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
