"""The synth tests' documents, and a real `lmsmith serve` of a tiny test-made model as the teacher."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "serve"))  # the serving tests' model and process

TOPICS = ["invoice", "refund", "password", "printer", "badge", "parking", "laptop", "holiday", "expense", "meeting",
          "backup", "network", "contract", "shipping", "warranty", "training"]


def passage(topic: str) -> str:
    """A paragraph of a policy manual about one topic, long enough to be asked about."""
    return (f"The {topic} policy: every {topic} request goes to the {topic} desk on floor {len(topic)}. "
            f"A {topic} request is answered within {len(topic) + 1} days. Ask the {topic} desk about "
            f"exceptions to the {topic} rules, and always keep the {topic} receipt.")


@pytest.fixture
def docs(tmp_path) -> Path:
    """A folder of four manuals, each one passage, and one note too short to ask about."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for topic in TOPICS[:4]:
        (folder / f"{topic}.md").write_text(passage(topic) + "\n", encoding="utf-8")
    (folder / "note.txt").write_text("Too short.\n", encoding="utf-8")
    return folder
