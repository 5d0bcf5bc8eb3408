"""`lmsmith curate --engine ray`: the same steps, run by Ray Data on a cluster.

The sources' files become a dataset; each file is read where it lands (`flat_map`), the
per-document steps and the MinHash hashing run over batches (`map_batches`), and the exact keys
and LSH band keys are grouped across the cluster in one shuffle (`groupby`), each group yielding
its pairs already confirmed (exact Jaccard of the shingle sets). The driver resolves which
documents go (the rule `NearDuplicateIndex` applies while streaming, see
`resolve_near_duplicates`), splits by hash and writes the same shards, report and manifest as
the local executor, through the same writer. Order is kept all along (a document's number is its
file's and its place in the file), so the output equals the local one document for document.

What stays on the driver: the list of files, the confirmed pairs, and the writing of the shards
(a single writer is what makes the shards the same). What is shuffled: per document its exact
key, and per band its key with the document's shingle set (so the check runs where the group is).
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmsmith.core.config import ConfigError
from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.data.dedup import FINGERPRINT_KEY, Fingerprint, band_keys, resolve_near_duplicates, sorted_set_jaccard
from lmsmith.data.document import Document
from lmsmith.data.sources.files import FileTreeSource
from lmsmith.data.sources.source import ContentDigest, Skipped
from lmsmith.data.step import StepStats

_ITEM_BITS = 32  # a document's number: file number << 32 | its place in the file


# ---------------------------------------------------------------------------------------------
# Connecting


def connect(address: str | None):
    """Ray, connected: to the cluster at `address` ("auto": the running one; "local": start one here)."""
    ray = require("ray", extra="ray", purpose="--engine ray", package="ray[data]")
    require("ray.data", extra="ray", purpose="--engine ray", package="ray[data]")
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address or "auto", log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        found = "no running Ray cluster found" if address in (None, "auto") else \
            f"no Ray cluster at --address {address} ({str(exc).split('.')[0][:100]})"
        raise UserError(f"{found}: start one with `ray start --head`, name it with --address HOST:PORT, "
                        "or use --address local to start one on this machine") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in seconds on an address where nothing listens (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise UserError(f"no Ray cluster at --address {address}: nothing answers there; start one with "
                        "`ray start --head`, or use --address local to start one on this machine") from None


def check_supported(config, sources) -> None:
    """What the Ray executor does not do yet, refused before any work starts."""
    if config.dedup.boilerplate.enabled:
        raise ConfigError("dedup.boilerplate is not supported with --engine ray yet: run it with --engine local")
    if config.sources.max_docs is not None:
        raise ConfigError("sources.max_docs is not supported with --engine ray: use --engine local for a quick look")
    for source in sources:
        if not isinstance(source, FileTreeSource):
            raise ConfigError(f"input '{source.spec}' is read by the local engine only: --engine ray reads files, "
                              "folders and stdlib")


# ---------------------------------------------------------------------------------------------
# In the workers: reading


class _RecordingDigest(ContentDigest):
    """A file's digest entries, kept to be replayed into its source's digest on the driver, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[str, str]] = []

    def add(self, name: str, content_sha256: str) -> None:
        super().add(name, content_sha256)
        self.entries.append((name, content_sha256))


def _row(kind: str, seq: int, **values) -> dict:
    row = {"kind": kind, "seq": seq, "id": "", "text": "", "source": "", "meta": "{}", "n_bytes": 0, "step": "",
           "reason": "", "detail": "", "exact": 0, "bands": b"", "evidence": b""}
    row.update(values)
    return row


def read_file_rows(task: dict, source_args: list[dict], source_config) -> list[dict]:
    """One file's documents and skips as rows, then one row with its digest entries."""
    args = source_args[task["source"]]
    reader = FileTreeSource(args["spec"], args["root"], source_config, label=args["label"],
                            include=args["include"], exclude=args["exclude"])
    reader.digest = _RecordingDigest()
    reader._files = [(Path(task["path"]), task["rel"])]  # this one file of the walk the driver did
    base = task["file"] << _ITEM_BITS
    rows = []
    for number, item in enumerate(reader.items()):
        if isinstance(item, Skipped):
            rows.append(_row("skip", base + number, text=item.text, source=item.source, n_bytes=item.n_bytes,
                             reason=item.reason, detail=item.detail, meta=json.dumps(item.meta, default=str)))
        else:
            rows.append(_row("doc", base + number, id=item.id, text=item.text, source=item.source,
                             meta=json.dumps(item.meta, default=str), n_bytes=item.n_bytes))
    rows.append(_row("digest", base + len(rows), meta=json.dumps(reader.digest.entries)))
    return rows


# ---------------------------------------------------------------------------------------------
# In the workers: the steps and the hashing

_WORKER_STEPS: dict[str, tuple] = {}  # config (as JSON) -> (steps, bands, rows), built once a process


def _steps_for(config_json: str):
    if config_json not in _WORKER_STEPS:
        from lmsmith.data.chain import document_steps
        from lmsmith.schema.curate import resolve_config

        config = resolve_config(json.loads(config_json))
        bands, rows = config.dedup.bands_rows()
        _WORKER_STEPS[config_json] = (document_steps(config), bands, rows, config)
    return _WORKER_STEPS[config_json]


def _fingerprint_columns(fingerprint: Fingerprint | None, bands: int, rows: int, config) -> dict:
    if fingerprint is None:
        return {}
    out = {"exact": int(np.uint64(fingerprint.exact).view(np.int64))}
    if fingerprint.signature is not None:
        out["bands"] = band_keys(fingerprint.signature[None, :], bands, rows, config.dedup.seed)[0].tobytes()
        evidence = fingerprint.shingles if config.dedup.verify == "jaccard" else fingerprint.signature
        out["evidence"] = b"" if evidence is None else evidence.astype(np.uint32).tobytes()
    return out


def run_steps_on_batch(batch: dict, config_json: str, keep_dropped: bool) -> dict:
    """The per-document steps over one batch of rows; other rows pass through; a stats row is added."""
    from lmsmith.data.workers import run_steps

    steps, bands, rows, config = _steps_for(config_json)
    columns = list(batch)
    records = [dict(zip(columns, values)) for values in zip(*(list(batch[c]) for c in columns))]
    for record in records:  # numpy scalars to plain Python, so that documents read as they do locally
        for key, value in record.items():
            record[key] = value.item() if isinstance(value, np.generic) else value
    docs, order = [], {}
    for i, record in enumerate(records):
        if record["kind"] == "doc":
            doc = Document(record["id"], record["text"], record["source"], json.loads(record["meta"]))
            order[id(doc)] = i
            docs.append(doc)
    result = run_steps(steps, docs, True)
    out = [r for r in records if r["kind"] != "doc"]
    for doc in result.kept:
        fingerprint = doc.meta.pop(FINGERPRINT_KEY, None)
        meta = {k: v for k, v in doc.meta.items() if not k.startswith("_")}
        out.append({**records[order[id(doc)]], "kind": "kept", "text": doc.text, "meta": json.dumps(meta, default=str),
                    **_fingerprint_columns(fingerprint, bands, rows, config)})
    for doc, step, reason in result.dropped:
        meta = {k: v for k, v in doc.meta.items() if not k.startswith("_")}
        text = doc.text if keep_dropped else ""
        out.append({**records[order[id(doc)]], "kind": "dropped", "text": text, "step": step, "reason": reason,
                    "meta": json.dumps(meta, default=str)})
    stats = {name: s.to_dict() for name, s in result.stats.items()}
    out.sort(key=lambda r: r["seq"])
    out.append(_row("stats", out[-1]["seq"] if out else 0, meta=json.dumps(stats)))
    return {c: [r[c] for r in out] for c in columns}


EXACT, SIMILAR, REJECTED = 0, 1, 2  # what a pair found in a group is


def _evidence(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint32)


def pairs_of_group(group: dict, config_json: str) -> dict:
    """The pairs one group of documents yields, each confirmed here, in the cluster.

    An exact-key group yields (first, each later one). A band-key group yields every pair of
    its distinct texts (a later copy of an earlier text is an exact duplicate, never compared),
    confirmed as SIMILAR or REJECTED by the exact Jaccard similarity of their shingle sets.
    """
    _, _, _, config = _steps_for(config_json)
    order = np.argsort(group["seq"], kind="stable")
    seqs = [int(group["seq"][i]) for i in order]
    if int(group["tag"][0]) == EXACT:
        return {"a": [seqs[0]] * (len(seqs) - 1), "b": seqs[1:], "what": [EXACT] * (len(seqs) - 1)}
    members, seen = [], set()
    for i, seq in zip(order, seqs):
        exact = int(group["exact"][i]) if config.dedup.exact else seq  # without exact dedup copies are near ones
        if exact not in seen:
            seen.add(exact)
            members.append((seq, _evidence(group["evidence"][i])))
    out: dict = {"a": [], "b": [], "what": []}
    for k, (a, evidence_a) in enumerate(members):
        for b, evidence_b in members[k + 1 :]:
            out["a"].append(a)
            out["b"].append(b)
            out["what"].append(SIMILAR if _similar(evidence_a, evidence_b, config) else REJECTED)
    return out


def _group_rows(batch: dict, near: bool) -> dict:
    """Per kept document: one row under its exact key, and (for near dedup) one under each of its band keys."""
    out: dict = {"tag": [], "key": [], "seq": [], "exact": [], "evidence": []}
    for kind, seq, exact, raw_bands, evidence in zip(batch["kind"], batch["seq"], batch["exact"], batch["bands"],
                                                     batch["evidence"]):
        if kind != "kept":
            continue
        keys = [(EXACT, int(exact))]
        if near:
            keys += [(SIMILAR, k) for k in np.frombuffer(raw_bands, dtype=np.int64).tolist()]
        for tag, key in keys:
            out["tag"].append(tag)
            out["key"].append(key)
            out["seq"].append(int(seq))
            out["exact"].append(int(exact))
            out["evidence"].append(b"" if tag == EXACT else evidence)
    return out


# ---------------------------------------------------------------------------------------------
# On the driver


@dataclass
class NearDecisions:
    duplicate_of: dict[int, int] = field(default_factory=dict)  # document -> the kept document it duplicates
    candidates: int = 0
    rejected: int = 0


def _similar(a: np.ndarray, b: np.ndarray, config) -> bool:
    if config.dedup.verify == "none":
        return True
    if config.dedup.verify == "jaccard":
        return sorted_set_jaccard(a, b) >= config.dedup.threshold
    return float(np.mean(a == b)) >= config.dedup.threshold


def resolve_pairs(pairs: list[tuple[int, int, int]], exact: bool = True) -> tuple[set[int], int, NearDecisions]:
    """Exact duplicates, then near ones in document order, counted as the local Deduplicator counts them.

    Returns the exact duplicates, the number of texts that had one, and the near decisions. The
    local index compares a document with the kept documents it shares a band with: the
    candidates counted here are the pairs of exact survivors whose earlier document was kept.
    """
    exact_dropped = {b for a, b, what in pairs if what == EXACT} if exact else set()
    exact_roots = {a for a, b, what in pairs if what == EXACT} if exact else set()
    near_pairs = sorted({(a, b, what) for a, b, what in pairs
                         if what != EXACT and a not in exact_dropped and b not in exact_dropped})
    decisions = NearDecisions(resolve_near_duplicates(0, [(a, b) for a, b, what in near_pairs if what == SIMILAR]))
    for a, _, what in near_pairs:
        if a not in decisions.duplicate_of:
            decisions.candidates += 1
            decisions.rejected += what == REJECTED
    return exact_dropped, len(exact_roots), decisions


class RayReadStats:
    """What the local Reader counts, counted from the rows: read statistics and the first issues."""

    def __init__(self) -> None:
        self.stats = StepStats("read")
        self.issues: list[dict] = []

    def document(self, n_bytes: int) -> None:
        self.stats.docs_in += 1
        self.stats.bytes_in += n_bytes
        self.stats.docs_kept += 1
        self.stats.bytes_kept += n_bytes

    def skipped(self, item: Skipped) -> None:
        self.stats.docs_in += 1
        self.stats.bytes_in += item.n_bytes
        self.stats.dropped_docs[item.reason] += 1
        self.stats.dropped_bytes[item.reason] += item.n_bytes
        if len(self.issues) < 1000:
            self.issues.append({"source": item.source, **item.meta, "reason": item.reason, "detail": item.detail})


def _source_args(sources: list[FileTreeSource]) -> list[dict]:
    return [{"spec": s.spec, "root": s.root, "label": s.label, "include": s.include, "exclude": s.exclude}
            for s in sources]


def _file_tasks(sources: list[FileTreeSource]) -> list[dict]:
    tasks = []
    for index, source in enumerate(sources):
        for path, rel in source.files():
            tasks.append({"file": len(tasks), "source": index, "path": str(path), "rel": rel})
    return tasks


def _config_json(config) -> str:
    from lmsmith.core.config import section_to_dict

    return json.dumps(section_to_dict(config), sort_keys=True, default=list)


def build_dataset(ray, run, keep_dropped: bool):
    """Read, run the steps and hash, on the cluster; returns the materialized dataset and the file tasks."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the rows come back in document order: no sort needed
    context.enable_progress_bars = False
    tasks = _file_tasks(run.sources)
    if not tasks:
        raise UserError("no files to read in the inputs: check the paths and sources.include / sources.exclude")
    args, source_config, config_json = _source_args(run.sources), run.config.sources, _config_json(run.config)
    files = ray.data.from_items(tasks, override_num_blocks=min(len(tasks), max(2, 4 * run.workers)))
    rows = files.flat_map(lambda task: read_file_rows(task, args, source_config))
    processed = rows.map_batches(run_steps_on_batch,
                                 fn_kwargs={"config_json": config_json, "keep_dropped": keep_dropped},
                                 batch_size=run.config.batch_docs, batch_format="default")
    return processed.materialize(), tasks


def duplicate_pairs(ds, config_json: str, near: bool, partitions: int) -> list[tuple[int, int, int]]:
    """Exact and band keys grouped across the cluster (one shuffle) into confirmed pairs."""
    keyed = ds.select_columns(["kind", "seq", "exact", "bands", "evidence"]).map_batches(
        _group_rows, fn_kwargs={"near": near}, batch_format="numpy")
    grouped = keyed.groupby(["tag", "key"], num_partitions=partitions).map_groups(
        pairs_of_group, fn_kwargs={"config_json": config_json}, batch_format="numpy")
    return [(int(a), int(b), int(w)) for batch in grouped.iter_batches(batch_format="numpy")
            for a, b, w in zip(batch["a"], batch["b"], batch["what"])]


def run_on_ray(run, address: str | None, keep_dropped: bool) -> RayReadStats:
    """The Ray executor of a CurateRun: fills its writer and stats as `CurateRun.run` does."""
    check_supported(run.config, run.sources)
    ray = connect(address)
    ds, tasks = build_dataset(ray, run, keep_dropped)
    exact_dropped, exact_clusters, near = set(), 0, NearDecisions()
    if run.config.dedup.enabled:
        pairs = duplicate_pairs(ds, _config_json(run.config), run.config.dedup.near, max(2, run.workers))
        exact_dropped, exact_clusters, near = resolve_pairs(pairs, run.config.dedup.exact)
    return _write_in_order(run, ds, tasks, exact_dropped, exact_clusters, near)


def _write_in_order(run, ds, tasks, exact_dropped: set[int], exact_clusters: int, near: NearDecisions) -> RayReadStats:
    read = RayReadStats()
    run.stats["read"] = read.stats
    dedup_stats = StepStats("dedup")
    near_roots: set[int] = set()
    for row in ds.iter_rows():
        kind, seq = row["kind"], int(row["seq"])
        if kind == "digest":
            source = run.sources[tasks[seq >> _ITEM_BITS]["source"]]
            for name, sha in json.loads(row["meta"]):
                source.digest.add(name, sha)
        elif kind == "stats":
            for name, stats in json.loads(row["meta"]).items():
                run._count(name, _stats_from_dict(stats))
        elif kind == "skip":
            item = Skipped(row["source"], row["reason"], int(row["n_bytes"]), row["detail"], json.loads(row["meta"]),
                           row["text"])
            read.skipped(item)
            run._skip(item)
            run._advance(item.n_bytes, 0)
        else:
            read.document(int(row["n_bytes"]))
            run._advance(int(row["n_bytes"]), 1)
            doc = Document(row["id"], row["text"], row["source"], json.loads(row["meta"]))
            if kind == "dropped":
                run.writer.write_dropped(doc, row["step"], row["reason"])
            elif run.config.dedup.enabled:
                _dedup_and_write(run, doc, seq, exact_dropped, near, dedup_stats, near_roots)
            else:
                run._split_and_write([doc])
    if run.config.dedup.enabled:
        # the counters the local Deduplicator keeps: the cluster counts once there is one, the candidates always
        counters = dedup_stats.counters
        if exact_clusters:
            counters["exact_duplicate_clusters"] = exact_clusters
        if near_roots:
            counters["near_duplicate_clusters"] = len(near_roots)
        if run.config.dedup.near and dedup_stats.docs_in:
            counters["near_duplicate_candidates"] = near.candidates
            counters["near_duplicate_candidates_rejected"] = near.rejected
        run.stats["dedup"] = dedup_stats
    return read


def _dedup_and_write(run, doc: Document, seq: int, exact_dropped: set[int], near: NearDecisions,
                     stats: StepStats, near_roots: set[int]) -> None:
    n_bytes = doc.n_bytes
    stats.docs_in += 1
    stats.bytes_in += n_bytes
    reason = "exact_duplicate" if seq in exact_dropped else "near_duplicate" if seq in near.duplicate_of else None
    if reason is None:
        stats.docs_kept += 1
        stats.bytes_kept += n_bytes
        run._split_and_write([doc])
        return
    if reason == "near_duplicate":
        near_roots.add(near.duplicate_of[seq])
    stats.dropped_docs[reason] += 1
    stats.dropped_bytes[reason] += n_bytes
    run.writer.write_dropped(doc, "dedup", reason)


def _stats_from_dict(data: dict) -> StepStats:
    return StepStats(data["name"], data["docs_in"], data["bytes_in"], data["docs_kept"], data["bytes_kept"],
                     Counter(data["dropped_docs"]), Counter(data["dropped_bytes"]), Counter(data["counters"]),
                     data["seconds"])
