"""`lmsmith curate`: sources -> html -> format -> quality -> safety -> pii -> dedup -> split -> write.

The main process reads the sources and cuts the stream into batches. The per-document steps run
on the batches in worker processes; what survives comes back in order to the main process,
which runs the steps that must see everything (dedup, and the optional boilerplate-line pass),
assigns splits and writes shards. Everything is written inside a temporary directory that
replaces the output directory only when the run has finished, so an interrupted run leaves
nothing a later stage would take for curated data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from lmsmith.core.atomic import write_json
from lmsmith.core.config import section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import read_manifest
from lmsmith.core.output import stage_directory, write_manifest
from lmsmith.core.progress import progress_bar
from lmsmith.data.bias import BiasTally
from lmsmith.data.chain import document_steps
from lmsmith.data.dedup import BoilerplateRemover, Deduplicator, LineFrequencyCounter
from lmsmith.data.document import Document
from lmsmith.data.mixture import Mixture
from lmsmith.data.report import build_report, nothing_survived_message, print_summary
from lmsmith.data.sources import Skipped, Source, open_inputs
from lmsmith.data.split import heldout_overlap, split_of
from lmsmith.data.step import Step, StepStats
from lmsmith.data.workers import StepRunner
from lmsmith.data.write import DOC_SCHEMA, CurateWriter, ShardWriter, document_row
from lmsmith.schema.curate import SPLITS, CurateConfig, resolve_config

REPORT = "report.json"
_SPOOL = ".spool"


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------
# Reading


class Reader:
    """Turns the sources into batches of documents; counts what was read and what was skipped."""

    def __init__(self, sources: list[Source], config: CurateConfig, on_skip: Callable[[Skipped], None],
                 on_progress: Callable[[int, int], None]):
        self.sources = sources
        self.config = config
        self.on_skip = on_skip
        self.on_progress = on_progress  # (bytes, documents) read since the last call
        self.stats = StepStats("read")
        self.issues: list[dict] = []

    def _items(self) -> Iterator[Document]:
        limit = self.config.sources.max_docs
        for source in self.sources:
            for item in source.items():
                if isinstance(item, Skipped):
                    self._skipped(item)
                    continue
                n_bytes = item.n_bytes
                self.stats.docs_in += 1
                self.stats.bytes_in += n_bytes
                self.stats.docs_kept += 1
                self.stats.bytes_kept += n_bytes
                self.on_progress(n_bytes, 1)
                yield item
                if limit is not None and self.stats.docs_kept >= limit:
                    return

    def _skipped(self, item: Skipped) -> None:
        stats = self.stats
        stats.docs_in += 1
        stats.bytes_in += item.n_bytes
        stats.dropped_docs[item.reason] += 1
        stats.dropped_bytes[item.reason] += item.n_bytes
        if len(self.issues) < 1000:
            self.issues.append({"source": item.source, **item.meta, "reason": item.reason, "detail": item.detail})
        self.on_progress(item.n_bytes, 0)
        self.on_skip(item)

    def batches(self) -> Iterator[list[Document]]:
        max_docs, max_bytes = self.config.batch_docs, self.config.batch_mb * 1e6
        batch: list[Document] = []
        size = 0
        start = time.perf_counter()
        for doc in self._items():
            batch.append(doc)
            size += len(doc.text)
            if len(batch) >= max_docs or size >= max_bytes:
                self.stats.seconds += time.perf_counter() - start
                yield batch
                start = time.perf_counter()
                batch, size = [], 0
        self.stats.seconds += time.perf_counter() - start
        if batch:
            yield batch


# ---------------------------------------------------------------------------------------------
# The run


class CurateRun:
    """One curate run into the temporary directory `root`."""

    def __init__(self, sources: list[Source], config: CurateConfig, root: Path, *, keep_dropped: bool,
                 workers: int, progress: Progress):
        self.sources = sources
        self.config = config
        self.root = root
        self.workers = workers
        self.progress = progress
        self.writer = CurateWriter(root, config.output, keep_dropped)
        self.stats: dict[str, StepStats] = {}
        self.dedup = Deduplicator(config.dedup) if config.dedup.enabled else None
        boilerplate = config.dedup.boilerplate
        self.line_counter = LineFrequencyCounter(boilerplate) if boilerplate.enabled else None
        self.spool = ShardWriter(root / _SPOOL, DOC_SCHEMA, config.output) if self.line_counter else None
        self.heldout: dict[str, list[str]] = {"val": [], "test": []}
        self.bias = BiasTally(config.bias) if config.bias.enabled else None
        self.mixture = Mixture(config.mixture, [s.spec for s in sources]) if config.mixture else None
        sizes = [source.total_bytes() for source in sources]
        total = None if None in sizes else sum(sizes)  # unknown for streamed datasets: no ETA then
        self.task = progress.add_task("curate", total=total, docs=0)
        self.docs_read = 0

    def _count(self, name: str, stats: StepStats) -> None:
        self.stats.setdefault(name, StepStats(name)).merge(stats)

    def _advance(self, n_bytes: int, n_docs: int) -> None:
        self.docs_read += n_docs
        self.progress.update(self.task, advance=n_bytes, docs=self.docs_read)

    def run(self) -> Reader:
        reader = Reader(self.sources, self.config, self._skip, self._advance)
        steps = document_steps(self.config)
        self.stats["read"] = reader.stats
        for step in steps:
            self.stats[step.name] = StepStats(step.name)
        if self.dedup is not None:
            self.stats[self.dedup.name] = StepStats(self.dedup.name)
        with StepRunner(steps, self.workers, self.writer.dropped is not None) as runner:
            for result in runner.map(reader.batches()):
                for name, stats in result.stats.items():
                    self._count(name, stats)
                for doc, step, reason in result.dropped:
                    self.writer.write_dropped(doc, step, reason)
                self._after_document_steps(result.kept)
        if self.spool is not None:
            self._boilerplate_pass()
        return reader

    def _skip(self, item: Skipped) -> None:
        self.writer.write_dropped(item.as_document(), "read", item.reason)

    def _run_main_step(self, step: Step, docs: list[Document]) -> list[Document]:
        stats = StepStats(step.name)
        start = time.perf_counter()
        kept, dropped = step(docs, stats)
        stats.seconds = time.perf_counter() - start
        self._count(step.name, stats)
        for doc, reason in dropped:
            self.writer.write_dropped(doc, step.name, reason)
        return kept

    def _after_document_steps(self, docs: list[Document]) -> None:
        if self.dedup is not None and docs:
            docs = self._run_main_step(self.dedup, docs)
        if self.spool is not None:
            self.line_counter.add_documents(docs)
            for doc in docs:
                self.spool.add(document_row(doc), doc.n_bytes)
            return
        self._split_and_write(docs)

    def _boilerplate_pass(self) -> None:
        """Second pass over the spooled survivors: remove the lines found in many documents."""
        self.spool.close()
        remover = BoilerplateRemover(self.config.dedup.boilerplate, self.line_counter.frequent_lines())
        self.stats[remover.name] = StepStats(remover.name)
        for path in self.spool.files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=self.config.batch_docs):
                docs = [Document(row["id"], row["text"], row["source"], json.loads(row["meta"]))
                        for row in batch.to_pylist()]
                self._split_and_write(self._run_main_step(remover, docs))
            path.unlink()
        (self.root / _SPOOL).rmdir()

    def _split_and_write(self, docs: list[Document]) -> None:
        for doc in docs:
            split = split_of(doc.text, self.config.split)
            if self.bias is not None:
                self.bias.add(split, doc)
            copies = self.mixture.copies(doc) if self.mixture is not None and split == "train" else 1
            for _ in range(copies):
                self.writer.write(split, doc)
            if split != "train" and self.config.split.overlap_ngram:
                self.heldout[split].append(doc.text)

    def overlap(self) -> dict | None:
        """The held-out/train n-gram overlap, read back from the train shards just written."""
        if not self.config.split.overlap_ngram or not any(self.heldout.values()):
            return None

        def train_texts() -> Iterator[str]:
            for path in self.writer.splits["train"].files:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["text"]):
                    yield from batch.column(0).to_pylist()

        return heldout_overlap(self.heldout, train_texts(), self.config.split)


def _progress(quiet: bool) -> Progress:
    return progress_bar(TextColumn("[bold]curate"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[docs]:,} docs"), quiet=quiet)


def curate(inputs: list[str], out: str | Path, config: CurateConfig | dict | str | Path | None = None, *,
           keep_dropped: bool = False, quiet: bool = False, workers: int | None = None,
           overrides: list[str] = ()) -> dict[str, Any]:
    """Curate `inputs` into the directory `out`; returns the report (also written to out/report.json).

    `config` is a CurateConfig, a plain dict of the curate section, a YAML path, or None for the
    defaults. Raises UserError for bad inputs or config, and when no document survives.
    """
    cfg = resolve_config(config, list(overrides))
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    n_workers = workers or cfg.workers or default_workers()
    sources = open_inputs([str(i) for i in inputs], cfg.sources)
    out = Path(out).expanduser()
    started = time.perf_counter()
    with stage_directory(out, "curate", reads=[s.spec for s in sources]) as root:
        with _progress(quiet) as progress:
            run = CurateRun(sources, cfg, root, keep_dropped=keep_dropped or cfg.keep_dropped, workers=n_workers,
                            progress=progress)
            if cfg.engine == "ray":
                from lmsmith.data.ray_engine import run_on_ray

                reader = run_on_ray(run, cfg.address, keep_dropped or cfg.keep_dropped)
            else:
                reader = run.run()
            sizes = run.writer.close()
        overlap = run.overlap()
        report = build_report(
            inputs=[s.spec for s in sources], stats=run.stats, issues=reader.issues, sizes=sizes,
            overlap=overlap, seconds=time.perf_counter() - started, workers=n_workers, out=out,
            bias=run.bias.report(run.stats.get("safety")) if run.bias is not None else None,
        )
        if run.mixture is not None:
            report["mixture"] = run.mixture.report()
        if not quiet:
            print_summary(report, Console())
        kept = sum(sizes[s]["docs"] for s in SPLITS)
        if kept == 0:
            raise UserError(nothing_survived_message(report))
        write_json(root / REPORT, report)
        counts = {f"{s}_{k}": sizes[s][k] for s in SPLITS for k in ("docs", "bytes")}
        counts.update(docs_in=report["totals"]["docs_in"], bytes_in=report["totals"]["bytes_in"])
        if "mixture" in report:
            counts["mixture_written"] = {spec: m["train_docs_written"] for spec, m in report["mixture"].items()}
        if "exam_excluded" in report:
            counts["exam_excluded"] = report["exam_excluded"]["docs"]
        write_manifest(root, "curate", config=section_to_dict(cfg), counts=counts,
                       inputs={s.spec: s.fingerprint() for s in sources})
    return report


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False) -> dict:
    """The curate stage: the sources (`inputs["sources"]`, else `curate.inputs`) into `out/`; returns the manifest."""
    cfg: CurateConfig = config.curate
    sources = [str(s) for s in (inputs.get("sources") or cfg.inputs)]
    if not sources:
        raise UserError("nothing to curate: name files, folders, hf:DATASET or stdlib (lmsmith curate INPUT... -o OUT)")
    curate(sources, out, cfg, keep_dropped=cfg.keep_dropped, quiet=quiet)
    return read_manifest(out, "curate")
