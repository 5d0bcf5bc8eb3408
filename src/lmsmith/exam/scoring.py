"""Scoring one model on one task: every item asked in batches, then checked, then summed up honestly.

An item's score is 0..1: 1 or 0 for a single answer; with `samples: k`, pass@k by the unbiased
estimator (pass@1 is the fraction of the k answers that were right). A task's score is the mean
over its scored items, with its standard error and item count; skipped lines score null.

Besides its main metric, a task keeps some per-item side metrics: acc_norm and acc_bytes for
multiple choice, and exact match for SQL (the number fine-tuning reported before execution
accuracy existed, kept so the two can be put side by side).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmsmith.exam import checkers
from lmsmith.exam.items import CHOICE, GENERATION, JSON, PYTHON, SQL, Item, Task
from lmsmith.exam.models import ExamModel, Prompt
from lmsmith.exam.stats import mean, stderr
from lmsmith.schema.exam import ExamConfig

DELIMITER = " "  # between a question and each choice: lm-evaluation-harness's default target_delimiter
METRICS = {CHOICE: "acc", GENERATION: "exact_match", JSON: "schema_valid", SQL: "execution_accuracy",
           PYTHON: "pass@1"}


@dataclass
class TaskResult:
    name: str
    metric: str
    item_scores: list[float | None]  # file order; None for a skipped line
    items: list[dict | None]  # what each item got: outputs, scores
    side: dict[str, list[float | None]] = field(default_factory=dict)  # side metric -> per-item values
    contaminated: list[bool] | None = None  # per item: 13-grams in the training data; None: not checked

    @property
    def contaminated_count(self) -> int | None:
        return None if self.contaminated is None else sum(self.contaminated)

    @property
    def scored(self) -> list[float]:
        return [s for s in self.item_scores if s is not None]

    def summary(self) -> dict:
        """The object scripts rely on (`--json`): metric, score, stderr, n and every item's score."""
        return {"metric": self.metric, "score": mean(self.scored), "stderr": stderr(self.scored),
                "n": len(self.scored), "item_scores": self.item_scores}

    def side_summary(self) -> dict:
        return {name: {"score": mean([v for v in values if v is not None]),
                       "stderr": stderr([v for v in values if v is not None])} for name, values in self.side.items()}


def task_metric(items: list[Item], config: ExamConfig) -> str:
    kinds = {item.kind for item in items}
    sampled = any(item.samples > 1 for item in items if item.kind != CHOICE)
    if len(kinds) > 1:
        return "score"
    kind = kinds.pop()
    if kind == PYTHON or (sampled and kind != CHOICE):
        return f"pass@{config.pass_k}"
    return METRICS[kind]


def score_choices(model: ExamModel, items: list[Item]) -> list[dict]:
    """Every choice of every item in one batched call; each item's log-likelihoods and accuracies."""
    pairs = [(item.fields["question"], DELIMITER + choice) for item in items for choice in item.fields["choices"]]
    lls = model.loglikelihoods(pairs)
    results, at = [], 0
    for item in items:
        mine = lls[at:at + len(item.fields["choices"])]
        at += len(mine)
        results.append({"loglikelihoods": mine, **checkers.choice_scores(item, mine)})
    return results


def score_answers(model: ExamModel, items: list[Item], config: ExamConfig) -> list[dict]:
    """Every generated item's answers in one batched call, each checked by its kind's checker."""
    prompts = [Prompt(item.fields.get("prompt"), item.fields.get("messages"), item.samples) for item in items]
    outputs = model.answers(prompts)
    results = []
    for item, answers in zip(items, outputs):
        check = checkers.checker(item.kind, ignore_case=config.ignore_case, timeout=config.timeout,
                                 memory_mb=config.memory_mb)
        right = [check(item, a) for a in answers]
        k = min(config.pass_k, len(answers))
        record = {"outputs": answers, "right": right,
                  "score": checkers.pass_at_k(len(answers), int(sum(right)), k)}
        if item.kind == SQL:
            record["exact_match"] = float(checkers.normalise(answers[0]) == checkers.normalise(item.fields["sql"]))
            record["reference_rows"] = len(checkers.sql_rows(item.fields["db"], item.fields["sql"]) or [])
        results.append(record)
    return results


def score_task(model: ExamModel, task: Task, config: ExamConfig) -> TaskResult:
    scored = task.scored
    choice = [item for item in scored if item.kind == CHOICE]
    generated = [item for item in scored if item.kind != CHOICE]
    by_item = dict(zip(map(id, choice), score_choices(model, choice))) if choice else {}
    if generated:
        by_item.update(zip(map(id, generated), score_answers(model, generated, config)))
    result = TaskResult(task.name, task_metric(scored, config), [], [])
    side_names = (["acc_norm", "acc_bytes"] if choice else []) + (["exact_match"] if any(
        i.kind == SQL for i in scored) else [])
    result.side = {name: [] for name in side_names}
    for item in task.items:
        record = by_item.get(id(item)) if item is not None else None
        if record is not None:
            record = {"where": item.where, "kind": item.kind, **record}
            record.setdefault("score", record.get("acc"))
        result.items.append(record)
        result.item_scores.append(None if record is None else record["score"])
        for name in side_names:
            result.side[name].append(None if record is None else record.get(name))
    return result
