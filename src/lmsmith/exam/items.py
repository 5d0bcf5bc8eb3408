"""Tasks: JSONL files of items, one per line, each item's kind following from its fields.

    {"question": "...", "choices": ["...", "..."], "answer": 1}           multiple choice
    {"prompt": "..." | "messages": [...], "answer": "..." | "regex": "..."}  generation
    {"prompt" | "messages", "schema": {...}}                               JSON
    {"prompt" | "messages", "sql": "reference query", "db": "shop.sqlite"}  SQL
    {"prompt": "def f(x):\n", "tests": "assert f(1) == 2"}                 Python

A file may mix kinds. A line that is not a JSON object is counted and skipped (its score is
null), named by file:line; an object with none of the kinds' fields is refused, by line, because
it is a mistake in the task and not noise. Paths (`db`, a `schema` given as a file name) are read
relative to the task file, and a missing one is refused before any model runs.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lmsmith.core.errors import UserError

CHOICE, GENERATION, JSON, SQL, PYTHON = "choice", "generation", "json", "sql", "python"
# The first kind whose fields an item has wins: a SQL item may also carry an exact `answer`.
KIND_FIELDS = ((CHOICE, ("question", "choices", "answer")), (PYTHON, ("prompt", "tests")),
               (SQL, ("sql", "db")), (JSON, ("schema",)), (GENERATION, ("answer",)), (GENERATION, ("regex",)))
KIND_HELP = ("question+choices+answer (multiple choice), prompt+tests (Python), prompt|messages with sql+db (SQL), "
             "schema (JSON), or answer|regex (generation)")


class SkippedLineWarning(UserWarning):
    """A line of a task that is not a JSON object: counted, named, and left out."""


@dataclass
class Item:
    kind: str
    fields: dict
    where: str  # file:line, for messages

    @property
    def samples(self) -> int:
        return int(self.fields.get("samples", 1))


@dataclass
class Task:
    name: str  # the file's stem
    path: Path
    items: list[Item | None] = field(default_factory=list)  # None: a skipped line, in file order

    @property
    def skipped(self) -> int:
        return sum(item is None for item in self.items)

    @property
    def scored(self) -> list[Item]:
        return [item for item in self.items if item is not None]


def item_kind(fields: dict, where: str) -> str:
    for kind, needed in KIND_FIELDS:
        if all(name in fields for name in needed):
            return kind
    raise UserError(f"{where}: an item with none of the kinds' fields (it has {', '.join(sorted(fields)) or 'none'}): "
                    f"give {KIND_HELP}")


def _require_prompt(fields: dict, where: str) -> None:
    if not isinstance(fields.get("prompt"), str) and not isinstance(fields.get("messages"), list):
        raise UserError(f"{where}: give the item a \"prompt\" (text) or \"messages\" (a list of {{role, content}})")


def check_item(item: Item, folder: Path) -> None:
    """Refuse, by line, what no model could be scored on; resolve the files an item names."""
    f, where = item.fields, item.where
    if item.kind == CHOICE:
        choices, answer = f["choices"], f["answer"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise UserError(f"{where}: \"choices\" must be a list of at least two texts")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise UserError(f"{where}: \"answer\" must be the index of the right choice, 0 to {len(choices) - 1}, "
                            f"got {answer!r}")
        return
    _require_prompt(f, where)
    if item.kind == PYTHON and not isinstance(f.get("prompt"), str):
        raise UserError(f"{where}: a Python item's \"prompt\" is the code to complete, as text")
    samples = f.get("samples", 1)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise UserError(f"{where}: \"samples\" must be a whole number of answers to draw, at least 1, got {samples!r}")
    if item.kind == SQL:
        db = (folder / f["db"]).resolve()
        if not db.is_file():
            raise UserError(f"{where}: the database {db} does not exist: fix \"db\" (a SQLite file, relative to "
                            "the task file)")
        f["db"] = str(db)
    if item.kind == JSON and isinstance(f["schema"], str):
        schema = (folder / f["schema"]).resolve()
        try:
            f["schema"] = json.loads(schema.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}: cannot read the JSON schema {schema} ({exc}): fix \"schema\" (an object, "
                            "or a JSON file relative to the task file)") from None
    if item.kind == GENERATION and "answer" in f and not isinstance(f["answer"], str):
        f["answer"] = json.dumps(f["answer"]) if not isinstance(f["answer"], (int, float)) else str(f["answer"])


def read_task(path: str | Path, limit: int | None = None) -> Task:
    """The items of one JSONL file, in file order (the first `limit` lines that hold one); skipped lines stay None."""
    path = Path(path)
    task = Task(path.stem, path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the task {path} ({exc}): give a UTF-8 JSONL file") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if limit is not None and len(task.items) == limit:
            break
        where = f"{path}:{number}"
        try:
            fields = json.loads(line)
        except ValueError as exc:
            fields, reason = None, f"not JSON ({exc.msg})"
        else:
            reason = "not a JSON object"
        if not isinstance(fields, dict):
            warnings.warn(f"{where}: {reason}; skipped", SkippedLineWarning, stacklevel=2)
            task.items.append(None)
            continue
        item = Item(item_kind(fields, where), fields, where)
        check_item(item, path.parent)
        task.items.append(item)
    if not task.scored:
        raise UserError(f"{path} holds no items: write one JSON object per line ({KIND_HELP})")
    return task


def task_files(given: list[str]) -> list[Path]:
    """The JSONL files the user named: files as given, folders by their *.jsonl files in name order."""
    if not given:
        raise UserError("no tasks given: name JSONL task files or folders with --tasks (or exam.tasks)")
    files: list[Path] = []
    for name in given:
        path = Path(name).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise UserError(f"the folder {path} holds no .jsonl task files: give a folder of tasks or the files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"the task {path} does not exist: give a JSONL file or a folder of them")
    stems = [p.stem for p in files]
    twice = next((s for s in stems if stems.count(s) > 1), None)
    if twice:
        raise UserError(f"two tasks are named {twice} (results are keyed by the file's stem): rename one")
    return files
