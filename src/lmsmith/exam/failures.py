"""The items a model got wrong, each with its wrong answer: `lmsmith exam ... --failures FILE`.

One JSON line per failed item of each model (a task's items in file order, models in the order
given), the item's own fields first, then:

    "model", "task", "where"   which model missed which item (file:line)
    "score"                    the item's score (below 1)
    "rejected"                 the model's wrong answer (with samples: its first wrong one)
    "chosen"                   the item's reference answer, where it has one: the "sql" of a SQL item,
                               the "answer" of an exact-match item (regex, schema and tests items have none)

So the failures of SQL and exact-match items are preference pairs as they stand, the reference
preferred to the model's own mistake: `lmsmith finetune MODEL --method dpo --data FILE` reads them.
That is how a team turns its exam's failures into preference data; use questions the model may
learn from (training questions), never the held-out exam, or the exam stops measuring anything.
A multiple-choice item has no generated answer: its line names the choice the model picked.
An item's file paths (its "db", a "schema" file) are written resolved, so the lines work from anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmsmith.core.atomic import write_text
from lmsmith.exam.items import CHOICE, GENERATION, SQL, Item, Task
from lmsmith.exam.scoring import TaskResult


def reference_answer(item: Item) -> str | None:
    """The answer a failed item should have given, when its task holds one."""
    if item.kind == SQL:
        return item.fields["sql"]
    if item.kind == GENERATION and "answer" in item.fields:
        return item.fields["answer"]
    return None


def failure_line(model: str, task: Task, item: Item, record: dict) -> dict:
    line = {**item.fields, "model": model, "task": task.name, "where": item.where, "score": record["score"]}
    if item.kind == CHOICE:
        line["picked"] = max(range(len(record["loglikelihoods"])), key=lambda i: (record["loglikelihoods"][i], -i))
        return line
    line["rejected"] = next(out for out, right in zip(record["outputs"], record["right"]) if right < 1)
    chosen = reference_answer(item)
    if chosen is not None:
        line["chosen"] = chosen
    return line


def failures(results: dict[str, dict[str, TaskResult]], tasks: list[Task]) -> list[dict]:
    """Every item some model scored below 1 on, as a line of the failures file."""
    lines = []
    for model, by_task in results.items():
        for task in tasks:
            result = by_task[task.name]
            for item, record, score in zip(task.items, result.items, result.item_scores):
                if item is not None and record is not None and score is not None and score < 1:
                    lines.append(failure_line(model, task, item, record))
    return lines


def write_failures(path: str | Path, lines: list[dict]) -> None:
    """The failures as JSONL, written whole or not at all."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
