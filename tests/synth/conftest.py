"""The synth tests' documents; the serving tests' folder on the path, for their tiny model and server process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "serve"))  # the serving tests' model and process

from synth_documents import TOPICS, passage  # noqa: E402


@pytest.fixture
def docs(tmp_path) -> Path:
    """A folder of four manuals, each one passage, and one note too short to ask about."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for topic in TOPICS[:4]:
        (folder / f"{topic}.md").write_text(passage(topic) + "\n", encoding="utf-8")
    (folder / "note.txt").write_text("Too short.\n", encoding="utf-8")
    return folder
