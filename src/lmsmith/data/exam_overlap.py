"""Exams kept out of training: drop every document that shares a 13-gram of words with an exam item.

This is the contamination rule of the GPT-3 and Llama papers, applied at curation time so that a
team's own exam (`lmsmith exam --tasks`, or the items `lmsmith synth --kind exam` wrote) cannot leak
into the data a model is trained on. Words are lowercased `\\w+` runs; an n-gram is hashed with
xxhash, the same in every process, because the step runs in worker processes and on Ray.

The exam files are read here as plain JSONL (every text field of an item: question, prompt,
messages, choices, answer), not through lmsmith.exam: curation sits beside the exam in the layers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import xxhash

from lmsmith.core.errors import UserError, cannot_read
from lmsmith.data.document import Document
from lmsmith.data.ngrams import ngram_hashes
from lmsmith.data.step import Step, StepStats

_WORD = re.compile(r"\w+", re.UNICODE)
REASON = "exam_overlap"
EXCLUDED = "excluded:"  # counter prefix: one counter per dropped document id, so the report can name them
TASK = "task:"


def word_hashes(text: str) -> np.ndarray:
    words = _WORD.findall(text.lower())
    return np.fromiter((xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))


def item_text(item: dict) -> str:
    """Every text an exam item shows or expects, joined: what a leaked copy of it would contain."""
    parts = []
    for key in ("question", "prompt", "answer", "response", "chosen"):
        if isinstance(item.get(key), str):
            parts.append(item[key])
    for choice in item.get("choices") or []:
        if isinstance(choice, str):
            parts.append(choice)
    for message in item.get("messages") or []:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "\n".join(parts)


def task_files(given: list[str]) -> list[Path]:
    files = []
    for name in given:
        path = Path(name).expanduser()
        if path.is_dir():
            files += sorted(path.rglob("*.jsonl"))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"--exclude-exam {name}: no such file or folder (give exam task JSONL files or folders)")
    if not files:
        raise UserError(f"--exclude-exam {' '.join(given)}: no .jsonl task file there")
    return files


def task_items(path: Path) -> list[dict]:
    """The JSON objects of a task file; other lines are ignored (the exam counts them, nothing leaks from them)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise cannot_read(path, exc) from None
    items = []
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            items.append(obj)
    return items


def exam_ngrams(given: list[str], n: int) -> dict[str, np.ndarray]:
    """Task name -> the sorted distinct n-gram hashes of its items (an item shorter than n words adds none)."""
    by_task = {}
    for path in task_files(given):
        grams = [ngram_hashes(word_hashes(item_text(item)), n) for item in task_items(path)]
        by_task[path.stem] = np.unique(np.concatenate(grams)) if grams else np.empty(0, dtype=np.uint64)
    return by_task


class ExamOverlapFilter(Step):
    """Drops a document sharing an n-gram with any exam item; counts the drops by task and names each document."""

    name = "exam"

    def __init__(self, tasks: list[str], n: int = 13):
        self.n = n
        self.by_task = exam_ngrams(tasks, n)

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        grams = ngram_hashes(word_hashes(doc.text), self.n)
        if not len(grams):
            return None
        hit = [task for task, exam in self.by_task.items() if len(exam) and np.isin(grams, exam).any()]
        if not hit:
            return None
        stats.counters[f"{EXCLUDED}{doc.id}\t{doc.source}"] += 1
        for task in hit:
            stats.counters[f"{TASK}{task}"] += 1
        return REASON


def exclusion_report(counters: dict) -> dict:
    """How many documents the exam filter dropped, how many per task, and which."""
    named = sorted(key[len(EXCLUDED):].split("\t", 1) for key in counters if key.startswith(EXCLUDED))
    documents = [{"id": doc_id, "source": source} for doc_id, source in named]
    return {"docs": len(documents), "by_task": {key[len(TASK):]: n for key, n in counters.items()
                                                if key.startswith(TASK)}, "documents": documents}
