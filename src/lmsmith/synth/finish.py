"""From the journal to the final files: passage order, the budget, the checks, and what each check dropped."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from lmsmith.schema.synth import SynthConfig
from lmsmith.synth.checks import duplicate_positions, exam_overlapping, support
from lmsmith.synth.journal import Journal, entry_key
from lmsmith.synth.kinds import Kind
from lmsmith.synth.passages import Passage
from lmsmith.synth.prompts import VERIFY, PromptTemplate
from lmsmith.synth.teacher import Teacher, parse_json_answer

VERDICT_SCHEMA = {"type": "object", "properties": {"supported": {"type": "boolean"}}, "required": ["supported"],
                  "additionalProperties": False}


@dataclass
class Result:
    kept: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # each line with its "reason"
    drops: Counter = field(default_factory=Counter)


def lines_in_order(passages: list[Passage], journal: Journal, kind: Kind, max_items: int | None) -> list[dict]:
    """Every journaled line of these passages, in passage order, cut to the item budget."""
    lines = []
    for passage in passages:
        entry = journal.entries.get(entry_key(passage.hash, kind.name))
        if entry is not None:
            lines += entry.lines
    return lines[:max_items] if max_items is not None else lines


def lexically_supported(lines: list[dict], texts: dict[str, str], kind: Kind, least: float) -> list[bool]:
    return [support(kind.supported_text(line), texts[line["source"]]) >= least for line in lines]


def teacher_supported(lines: list[dict], texts: dict[str, str], kind: Kind, teacher: Teacher,
                      cfg: SynthConfig) -> list[bool]:
    """The teacher's verdict on each line; an answer that does not parse counts as not supported."""
    template = PromptTemplate(VERIFY)

    def verdict(line: dict) -> bool:
        prompt = template.render(passage=texts[line["source"]], question=kind.question_text(line),
                                 answer=kind.supported_text(line))
        parsed = parse_json_answer(teacher.ask(prompt, VERDICT_SCHEMA).text)
        return bool(parsed and parsed.get("supported") is True)

    with ThreadPoolExecutor(cfg.concurrency) as pool:
        return list(pool.map(verdict, lines))


def check_lines(lines: list[dict], passages: list[Passage], kind: Kind, cfg: SynthConfig,
                teacher: Teacher | None) -> Result:
    """Drop exam leaks and duplicates first (so the teacher is not asked to verify them), then unsupported answers."""
    result = Result()
    duplicates = duplicate_positions([kind.line_text(line) for line in lines], cfg.dedup_threshold)
    if cfg.exclude_exam:
        leaks = exam_overlapping([kind.line_text(line) for line in lines], cfg.exclude_exam)
        duplicates.update({i: "exam_overlap" for i, leak in enumerate(leaks) if leak})
    unique = []
    for i, line in enumerate(lines):
        if i in duplicates:
            result.dropped.append({**line, "reason": duplicates[i]})
            result.drops[duplicates[i]] += 1
        else:
            unique.append(line)
    texts = {p.id: p.text for p in passages}
    if kind.supported_text is None:
        verdicts = [True] * len(unique)
    elif cfg.verify and teacher is not None:
        verdicts = teacher_supported(unique, texts, kind, teacher, cfg)
    else:
        verdicts = lexically_supported(unique, texts, kind, cfg.min_support)
    for line, ok in zip(unique, verdicts):
        if ok:
            result.kept.append(line)
        else:
            result.dropped.append({**line, "reason": "unsupported"})
            result.drops["unsupported"] += 1
    return result
