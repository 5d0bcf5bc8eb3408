"""Asking the teacher about every passage: bounded concurrency, budgets, and the journal as the record.

Requests run in a pool of `concurrency` threads, but at most that many are ever submitted, so a
budget (`max_items`, `max_tokens`) stops the asking as soon as it is reached: only the requests
already in flight finish after it. Answers are journaled as they arrive, in whatever order;
the final files are assembled later in passage order, so the output does not depend on timing.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from lmsmith.core.progress import progress_bar
from lmsmith.schema.synth import SynthConfig
from lmsmith.synth.journal import Entry, Journal, entry_key
from lmsmith.synth.kinds import Kind
from lmsmith.synth.passages import Passage
from lmsmith.synth.prompts import PromptTemplate
from lmsmith.synth.teacher import Teacher, parse_json_answer


@dataclass
class Asker:
    """Turns one passage into one journal entry through the teacher."""

    teacher: Teacher
    kind: Kind
    template: PromptTemplate
    cfg: SynthConfig

    def __call__(self, passage: Passage) -> Entry:
        n, chars = self.cfg.items_per_passage, self.cfg.max_field_chars
        prompt = self.template.render(passage=passage.text, n=n, max_chars=chars)
        answer = self.teacher.ask(prompt, self.kind.schema(n, chars))
        parsed = parse_json_answer(answer.text)
        lines = self.kind.lines(parsed, passage.id, passage.text) if parsed is not None else []
        if self.cfg.max_items is not None:
            lines = lines[:self.cfg.max_items]
        # An answer that is not JSON, or JSON of the wrong shape, yields nothing: one parse failure.
        return Entry(entry_key(passage.hash, self.kind.name), passage.id, lines, answer.tokens, bool(lines))


def budget_left(cfg: SynthConfig, journal: Journal) -> bool:
    return ((cfg.max_items is None or journal.items < cfg.max_items)
            and (cfg.max_tokens is None or journal.tokens < cfg.max_tokens))


def _rate(journal: Journal, start_items: int, started: float) -> str:
    seconds = max(time.perf_counter() - started, 1e-9)
    return f"{(journal.items - start_items) / seconds:.2f} items/s, {journal.tokens:,} tokens"


def ask_all(ask: Asker, passages: list[Passage], journal: Journal, *, quiet: bool) -> int:
    """Ask about every passage the journal lacks, within the budgets; return how many were asked now."""
    cfg = ask.cfg
    todo = iter([p for p in passages if entry_key(p.hash, ask.kind.name) not in journal.entries])
    remaining = sum(entry_key(p.hash, ask.kind.name) not in journal.entries for p in passages)
    start_items, started, asked = journal.items, time.perf_counter(), 0
    bar = progress_bar(TextColumn("synth {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), quiet=quiet)
    with bar, ThreadPoolExecutor(cfg.concurrency) as pool:
        task = bar.add_task(ask.kind.name, total=remaining, rate="")
        pending: dict[Future, Passage] = {}

        def fill() -> None:
            while len(pending) < cfg.concurrency and budget_left(cfg, journal):
                passage = next(todo, None)
                if passage is None:
                    return
                pending[pool.submit(ask, passage)] = passage

        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                del pending[future]
                try:
                    journal.add(future.result())
                except BaseException:
                    for other in pending:
                        other.cancel()
                    raise
                asked += 1
                bar.update(task, advance=1, rate=_rate(journal, start_items, started))
            fill()
    return asked
