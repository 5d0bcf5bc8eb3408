"""The per-document steps, run over batches in a pool of worker processes.

Steps that look at one document at a time (html, format, quality, safety, pii) are pure, so any
process can run them on any batch; each batch comes back with its own counters, which the main
process merges. Results come back in the order the batches went out, so the output does not
depend on the number of workers, and at most a few batches are in flight, so memory is bounded.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from lmsmith.data.document import Document
from lmsmith.data.step import Step, StepStats


@dataclass
class BatchResult:
    kept: list[Document]
    dropped: list[tuple[Document, str, str]]  # (document, step, reason); empty unless dropped are kept
    stats: dict[str, StepStats]


def run_steps(steps: list[Step], docs: list[Document], keep_dropped: bool) -> BatchResult:
    """Run `steps` in order over one batch: what survives each step goes to the next."""
    stats: dict[str, StepStats] = {}
    dropped: list[tuple[Document, str, str]] = []
    for step in steps:
        step_stats = stats[step.name] = StepStats(step.name)
        start = time.perf_counter()
        docs, step_dropped = step(docs, step_stats)
        step_stats.seconds += time.perf_counter() - start
        if keep_dropped:
            dropped += [(doc, step.name, reason) for doc, reason in step_dropped]
    return BatchResult(docs, dropped, stats)


# Each worker builds its steps once, from the pickled list it was started with.
_worker_steps: list[Step] = []
_worker_keep_dropped = False


def _start_worker(steps: list[Step], keep_dropped: bool) -> None:
    global _worker_steps, _worker_keep_dropped
    _worker_steps, _worker_keep_dropped = steps, keep_dropped


def _run_in_worker(docs: list[Document]) -> BatchResult:
    return run_steps(_worker_steps, docs, _worker_keep_dropped)


class StepRunner:
    """Maps batches through the steps, in order, in `workers` processes (or inline for one)."""

    def __init__(self, steps: list[Step], workers: int, keep_dropped: bool):
        self.steps = steps
        self.workers = workers
        self.keep_dropped = keep_dropped
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> StepRunner:
        if self.workers > 1:
            # spawn, not fork: the main process may hold threads (progress bar, Arrow) by now.
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.steps, self.keep_dropped),
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, batches: Iterable[list[Document]]) -> Iterator[BatchResult]:
        if self._pool is None:
            for batch in batches:
                yield run_steps(self.steps, batch, self.keep_dropped)
            return
        in_flight: deque[Future] = deque()
        for batch in batches:
            in_flight.append(self._pool.submit(_run_in_worker, batch))
            if len(in_flight) >= 2 * self.workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
