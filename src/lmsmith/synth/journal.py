"""The journal: one JSON line per passage asked about, appended and fsynced as each answer arrives.

It is what makes synth resumable. A line is keyed by the passage's hash and the kind, so a rerun
(after Ctrl-C, a crash or SIGKILL) skips every passage already answered and asks only the rest;
the final files are rebuilt from the journal each time, so nothing is written twice. A kill in
the middle of an append leaves at most one torn last line: it is cut off on open, and that
passage is asked again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

JOURNAL = "journal.jsonl"


def entry_key(passage_hash: str, kind: str) -> str:
    return f"{kind}:{passage_hash}"


@dataclass
class Entry:
    key: str
    passage: str  # the passage's id
    lines: list[dict]  # the output lines its answer became ([] when it did not parse)
    tokens: int
    parsed: bool

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "passage": self.passage, "lines": self.lines, "tokens": self.tokens,
                           "parsed": self.parsed}, ensure_ascii=False)


def _whole_lines(path: Path) -> tuple[list[Entry], int]:
    """The entries of every complete line, and the byte length they span (where a torn tail begins)."""
    entries, good = [], 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                obj = json.loads(raw)
                entries.append(Entry(obj["key"], obj["passage"], obj["lines"], int(obj["tokens"]), bool(obj["parsed"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                break
            good += len(raw)
    return entries, good


@dataclass
class Journal:
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def open(cls, directory: Path) -> Journal:
        path = directory / JOURNAL
        journal = cls(path)
        if path.is_file():
            entries, good = _whole_lines(path)
            if good < path.stat().st_size:
                os.truncate(path, good)  # a line torn by a kill: its passage is asked again
            journal.entries = {e.key: e for e in entries}
        return journal

    def add(self, entry: Entry) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(entry.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry.key] = entry

    @property
    def items(self) -> int:
        return sum(len(e.lines) for e in self.entries.values())

    @property
    def tokens(self) -> int:
        return sum(e.tokens for e in self.entries.values())
