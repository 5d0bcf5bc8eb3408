"""The synth tests' documents and served teacher; the serving tests' folder on the path, for their model and server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "serve"))  # the serving tests' model and process

from serve_models import ALPHABET, KEY  # noqa: E402
from synth_documents import TOPICS, passage  # noqa: E402

TEACHER = "teacher"  # the served model's name


@pytest.fixture
def docs(tmp_path) -> Path:
    """A folder of four manuals, each one passage, and one note too short to ask about."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for topic in TOPICS[:4]:
        (folder / f"{topic}.md").write_text(passage(topic) + "\n", encoding="utf-8")
    (folder / "note.txt").write_text("Too short.\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def served_teacher(tmp_path_factory):
    """`lmsmith serve` of a two-block random model with a 1024-token context and the chatml template, on loopback.

    It carries its model directory and key file (`.model`, `.key_file`) for tests that use them too.
    """
    for module in ("openai", "llguidance", "fastapi"):
        pytest.importorskip(module)
    from serve_models import tiny_model
    from serving import ServerProcess

    from lmsmith.model.directory import save_model_dir
    from lmsmith.text.tokenizer import train_char

    work = tmp_path_factory.mktemp("teacher")
    tokenizer = train_char([ALPHABET], show_progress=False)
    model = save_model_dir(work / "model", tiny_model(tokenizer.vocab_size, block_size=1024), tokenizer,
                           made_by="test")
    (work / "key").write_text(KEY + "\n")
    server = ServerProcess(model, "--api-key-file", str(work / "key"), "--template", "chatml", "--threads", "1",
                           "--max-batch", "8", "--model-name", TEACHER, log_file=work / "server.log")
    server.model, server.key_file = model, work / "key"
    yield server
    assert server.stop() == 0
