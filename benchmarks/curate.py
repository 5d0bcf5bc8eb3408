"""Benchmark `lmsmith curate`: throughput, peak memory, near-duplicate precision and recall.

    python benchmarks/curate.py                 # stdlib + a generated 200 MB corpus + datatrove if installed
    python benchmarks/curate.py --size-mb 20    # a smaller generated corpus
    python benchmarks/curate.py --only near     # one part: near (duplicates), prose (technical prose), ray

Measures, each run in a fresh process (so peak memory is its own):
- the whole default pipeline on the `stdlib` corpus and on a generated corpus (JSON lines of
  synthetic prose with planted exact duplicates, near duplicates and junk): MB/s and docs/s;
- lmsmith with only the steps datatrove has an equivalent of (Gopher quality + repetition rules,
  MinHash dedup) and datatrove itself with those steps on the same files, for the throughput
  ratio. datatrove's English word splitting needs spaCy; both sides split on whitespace here;
- near-duplicate detection on planted copies at known Jaccard similarities (5-word shingles):
  precision of what was flagged, the share dropped per similarity band, and the time, with
  candidates confirmed by exact Jaccard and (the reference, in the same run) by the MinHash estimate;
- technical prose: the keep rate per kind of real documentation (Python's manual topics, standard-
  library docstrings, licence texts, SQL) and the drop rate per kind of planted junk, under our rules
  and under the Gopher rules alone;
- the Ray engine (if installed) against the local executor on one generated corpus, at 1 and 2
  workers (Ray: a fresh local cluster of that many CPUs, its start not timed).

Prints ONE JSON line. datatrove is not a dependency of lmsmith: `pip install datatrove` to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "tor", "vel", "an", "is", "ur", "pe", "dom", "chi", "ba",
             "nel", "qua", "ris", "fo", "tem", "gul", "or", "ve", "lin", "mar", "sto", "ep", "ha", "zu"]
STOP = ["the", "of", "and", "to", "in", "a", "is", "that", "with", "for", "as", "was", "on", "be", "have"]


# ---------------------------------------------------------------------------------------------
# A synthetic corpus


def vocabulary(rng: np.random.Generator, size: int = 30000) -> np.ndarray:
    words = set()
    while len(words) < size:
        n = rng.integers(1, 5)  # 1 to 4 syllables: room for ~600k distinct words
        words.add("".join(rng.choice(SYLLABLES, n)))
    return rng.permutation(np.array(sorted(words), dtype=object))  # ranks (Zipf) at random


class ProseGenerator:
    """Zipf-distributed content words with English stop words, in sentences and paragraphs."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.vocab = vocabulary(self.rng)
        ranks = np.arange(1, len(self.vocab) + 1)
        self.p = (1.0 / ranks) / (1.0 / ranks).sum()

    def words(self, n: int) -> list[str]:
        content = self.vocab[self.rng.choice(len(self.vocab), n, p=self.p)]
        stops = np.array(STOP, dtype=object)[self.rng.integers(0, len(STOP), n)]
        use_stop = self.rng.random(n) < 0.3
        return np.where(use_stop, stops, content).tolist()

    def document(self, n_words: int) -> str:
        words = self.words(n_words)
        out, paragraph, i = [], [], 0
        while i < len(words):
            length = int(self.rng.integers(8, 22))
            sentence = words[i:i + length]
            i += length
            paragraph.append(sentence[0].capitalize() + " " + " ".join(sentence[1:]) + ".")
            if len(paragraph) >= 5 or i >= len(words):
                out.append(" ".join(paragraph))
                paragraph = []
        return "\n\n".join(out)


def mutate(words: list[str], k: int, rng: np.random.Generator, vocab: np.ndarray) -> list[str]:
    """Replace k words at random positions by other words."""
    out = list(words)
    for i in rng.choice(len(words), size=min(k, len(words)), replace=False):
        out[i] = str(vocab[rng.integers(len(vocab))]) + "x"
    return out


def generate_corpus(folder: Path, size_mb: float, seed: int = 0) -> dict:
    """JSON-lines shards of ~size_mb: 90% fresh prose, 4% exact and 4% near duplicates, 2% junk."""
    gen = ProseGenerator(seed)
    rng = gen.rng
    folder.mkdir(parents=True, exist_ok=True)
    target = size_mb * 1e6
    written = docs = 0
    shard, shard_bytes, out = 0, 0, None
    recent: list[str] = []
    planted = {"exact": 0, "near": 0, "junk": 0}
    while written < target:
        if out is None or shard_bytes > 50e6:
            if out:
                out.close()
            out = open(folder / f"part-{shard:03d}.jsonl", "w", encoding="utf-8")
            shard, shard_bytes = shard + 1, 0
        roll = rng.random()
        if roll < 0.04 and recent:
            text = recent[int(rng.integers(len(recent)))]
            planted["exact"] += 1
        elif roll < 0.08 and recent:
            base = recent[int(rng.integers(len(recent)))].split(" ")
            text = " ".join(mutate(base, max(1, len(base) // 100), rng, gen.vocab))
            planted["near"] += 1
        elif roll < 0.10:
            text = " ".join(["#"] * 30 + gen.words(40))
            planted["junk"] += 1
        else:
            text = gen.document(int(rng.lognormal(6.0, 0.6)) + 60)
            recent.append(text)
            recent = recent[-500:]
        line = json.dumps({"text": text}) + "\n"
        out.write(line)
        written += len(line)
        shard_bytes += len(line)
        docs += 1
    out.close()
    return {"bytes": written, "docs": docs, "planted": planted}


# ---------------------------------------------------------------------------------------------
# Near-duplicate precision and recall


def shingles(text: str, n: int = 5) -> set:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def planted_pairs(n_base: int, seed: int = 1) -> tuple[list[str], dict[int, int], dict[int, float]]:
    """Base documents, each with one variant aimed at a similarity from 0.5 to 0.95.

    Returns the texts, variant index -> base index, and variant index -> the true Jaccard
    similarity of the two texts' 5-word shingles, computed exactly from Python sets.
    """
    gen = ProseGenerator(seed)
    rng = gen.rng
    targets = [0.95, 0.9, 0.85, 0.8, 0.78, 0.75, 0.7, 0.6, 0.5]
    texts: list[str] = []
    base_of: dict[int, int] = {}
    similarity: dict[int, float] = {}
    for i in range(n_base):
        base = gen.document(int(rng.integers(200, 600))).split(" ")
        base_index = len(texts)
        texts.append(" ".join(base))
        base_shingles = shingles(texts[base_index])
        target = targets[i % len(targets)]
        # Each replaced word breaks up to 5 shingles: J ~ (S - 5k) / (S + 5k).
        k = max(1, round(len(base_shingles) * (1 - target) / (5 * (1 + target))))
        variant = " ".join(mutate(base, k, rng, gen.vocab))
        base_of[len(texts)] = base_index
        similarity[len(texts)] = jaccard(base_shingles, shingles(variant))
        texts.append(variant)
    return texts, base_of, similarity


SIMILARITY_BANDS = [(0.9, 1.01), (0.85, 0.9), (0.8, 0.85), (0.78, 0.8), (0.75, 0.78), (0.7, 0.75), (0.0, 0.7)]


def near_duplicate_quality(texts: list[str], base_of: dict[int, int], similarity: dict[int, float],
                           verify: str) -> dict:
    """MinHash LSH with the given candidate check on the planted pairs: precision, recall by band, time.

    Precision: of the documents dedup would drop, the share that truly are at least
    `threshold`-similar to the document kept in their cluster. Found: per band of true
    similarity, the share of variants dropped as duplicates of their base.
    """
    from lmsmith.data.dedup import near_duplicate_clusters
    from lmsmith.schema.curate import DedupConfig

    config = DedupConfig(verify=verify)
    start = time.perf_counter()
    clusters = near_duplicate_clusters(texts, config)
    seconds = time.perf_counter() - start
    found: set[int] = set()
    dropped = true_drops = unrelated = 0
    for cluster in clusters:
        members = set(cluster)
        for m in sorted(cluster)[1:]:  # the first of a cluster is kept, the others dropped
            dropped += 1
            if m in base_of and base_of[m] in members:
                found.add(m)
                true_drops += similarity[m] >= config.threshold
            else:
                unrelated += 1  # matched a document it was not made from
    by_band = {}
    for lo, hi in SIMILARITY_BANDS:
        members = [v for v, s in similarity.items() if lo <= s < hi]
        share = round(sum(v in found for v in members) / len(members), 3) if members else None
        # below the threshold a dropped variant is a false drop; at or above it, a found pair
        by_band[f"{lo:.2f}-{min(hi, 1.0):.2f}"] = {"pairs": len(members), "dropped": share}
    high = [v for v, s in similarity.items() if s >= 0.85]
    return {
        "verify": verify, "threshold": config.threshold, "bands_rows": list(config.bands_rows()),
        "pairs": len(similarity), "seconds": round(seconds, 3),
        "precision": round(true_drops / dropped, 4) if dropped else None,
        "unrelated_matches": unrelated,
        "recall_at_0.85": round(sum(v in found for v in high) / max(1, len(high)), 4),
        "dropped_by_similarity": by_band,
    }


def near_duplicates(n_base: int) -> dict:
    """Exact Jaccard against the MinHash estimate (the check before issue 13) on the same pairs, same run."""
    planted = planted_pairs(n_base)
    near_duplicate_quality(*planted, "jaccard")  # warm the word-hash cache, so neither side pays for it
    runs = {verify: [near_duplicate_quality(*planted, verify) for _ in range(3)] for verify in ("signature", "jaccard")}
    # the fastest of three: these machines are shared, and the other runs only add others' load
    signature, exact = (min(runs[v], key=lambda r: r["seconds"]) for v in ("signature", "jaccard"))
    return {"jaccard": exact, "signature": signature,
            "time_ratio_jaccard_vs_signature": round(exact["seconds"] / max(signature["seconds"], 1e-9), 3)}


# ---------------------------------------------------------------------------------------------
# The Ray engine against the local executor


def run_ray(inputs: list[str], out: str, workers: int) -> dict:
    """One curate run with --engine ray on a fresh local Ray cluster of `workers` CPUs (its start not timed)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    result = run_lmsmith(inputs, out, workers, False, engine="ray")
    ray.shutdown()
    return result


def ray_against_local(size_mb: float) -> dict:
    """The full pipeline on one generated corpus: local at 1 and 2 workers, Ray at 1 and 2 CPUs."""
    work = Path(tempfile.mkdtemp(prefix="lmsmith-curate-ray-"))
    try:
        corpus = work / "corpus"
        info = generate_corpus(corpus, size_mb)
        out: dict = {"mb": round(info["bytes"] / 1e6, 1), "docs": info["docs"]}
        for workers in (1, 2):
            out[f"local_{workers}"] = in_fresh_process(
                "lmsmith", [[str(corpus)], str(work / f"l{workers}"), workers, False]
            )
            out[f"ray_{workers}"] = in_fresh_process("ray", [[str(corpus)], str(work / f"r{workers}"), workers])
            local, ray = out[f"local_{workers}"], out[f"ray_{workers}"]
            if "seconds" in local and "seconds" in ray:
                out[f"ray_vs_local_throughput_{workers}"] = round(local["seconds"] / ray["seconds"], 3)
                out[f"same_output_{workers}"] = local["docs_out"] == ray["docs_out"]
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Technical prose against planted junk


def technical_prose() -> dict:
    """Keep rate per kind of real documentation, drop rate per kind of junk: our rules and Gopher's alone."""
    from lmsmith.data.technical_heldout import heldout_rates
    from lmsmith.schema.curate import ProseQualityConfig

    ours = heldout_rates(system_licences=True)
    gopher = heldout_rates(ProseQualityConfig(set_aside_blocks=False, technical_repetition_factor=1.0),
                           system_licences=True)

    def summary(rates: dict) -> dict:
        return {"kept": {k: v["kept"] for k, v in rates["technical"].items()},
                "junk_dropped": {k: v["dropped"] for k, v in rates["junk"].items()}}

    return {"ours": ours, "gopher_rules_only": summary(gopher),
            "docs": {k: v["docs"] for k, v in ours["technical"].items()}}


# ---------------------------------------------------------------------------------------------
# Runs, each in its own process


def peak_rss_mb() -> dict:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mb_main": round(self_kb / 1024, 1), "peak_rss_mb_worker": round(children_kb / 1024, 1)}


EQUIVALENT_STEPS = {  # only what datatrove also does here: Gopher rules and MinHash dedup
    "html": {"enabled": False}, "format": {"enabled": False}, "safety": {"enabled": False},
    "pii": {"enabled": False}, "dedup": {"exact": False}, "split": {"overlap_ngram": 0},
}


def run_lmsmith(inputs: list[str], out: str, workers: int, equivalent: bool, engine: str = "local") -> dict:
    from lmsmith.data.pipeline import curate

    config = {**(EQUIVALENT_STEPS if equivalent else {}), "engine": engine}
    start = time.perf_counter()
    report = curate(inputs, out, config, quiet=True, workers=workers)
    seconds = time.perf_counter() - start
    totals = report["totals"]
    return {"seconds": round(seconds, 2), "mb_in": round(totals["bytes_in"] / 1e6, 2), "docs_in": totals["docs_in"],
            "docs_out": totals["docs_out"], "mb_per_s": round(totals["bytes_in"] / 1e6 / seconds, 3),
            "docs_per_s": round(totals["docs_in"] / seconds, 1),
            "dropped": {s["name"]: s["dropped_docs"] for s in report["steps"] if s["dropped_docs"]},
            "step_seconds": {s["name"]: s["seconds"] for s in report["steps"]}, **peak_rss_mb()}


def run_datatrove(folder: str, work: str, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    # datatrove hands str to xxhash, which xxhash 4 refuses; encode as older xxhash did itself.
    import xxhash
    from datatrove.utils.hashes import xxhash as datatrove_xxhash

    datatrove_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)
    datatrove_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(data.encode() if isinstance(data, str) else data)

    words = Whitespace("en")
    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    work = Path(work)
    n_files = len(list(Path(folder).glob("*.jsonl")))
    tasks = max(1, min(workers, n_files))

    def executor(pipeline, n_tasks, name):
        return LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks),
                                     logging_dir=str(work / "logs" / name), skip_completed=False)

    start = time.perf_counter()
    executor([JsonlReader(folder), GopherRepetitionFilter(language=words), GopherQualityFilter(language=words),
              JsonlWriter(str(work / "filtered")), ], tasks, "filter").run()
    executor([JsonlReader(str(work / "filtered")),
              MinhashDedupSignature(str(work / "sigs"), config=config, language=words)],
             tasks, "sigs").run()
    executor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)],
             config.num_buckets, "buckets").run()
    executor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config)], 1, "cluster").run()
    executor([JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove")),
              JsonlWriter(str(work / "out"))],
             tasks, "filter-dups").run()
    seconds = time.perf_counter() - start
    docs_out = 0
    for path in (work / "out").glob("*.jsonl.gz"):
        import gzip

        with gzip.open(path, "rt") as f:
            docs_out += sum(1 for _ in f)
    size = sum(p.stat().st_size for p in Path(folder).glob("*.jsonl"))
    return {"seconds": round(seconds, 2), "mb_per_s": round(size / 1e6 / seconds, 3), "docs_out": docs_out,
            "word_split": "whitespace (spaCy not installed)", **peak_rss_mb()}


def child(kind: str, payload: str) -> None:
    import logging

    logging.disable(logging.WARNING)
    if kind == "lmsmith":
        inputs, out, workers, equivalent = json.loads(payload)
        result = run_lmsmith(inputs, out, workers, equivalent)
    elif kind == "ray":
        result = run_ray(*json.loads(payload))
    else:
        folder, work, workers = json.loads(payload)
        result = run_datatrove(folder, work, workers)
    print("RESULT " + json.dumps(result))


def in_fresh_process(kind: str, payload: list) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(payload)],
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def ray_available() -> bool:
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def datatrove_available() -> bool:
    try:
        import datatrove  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=200.0, help="size of the generated corpus")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--near-docs", type=int, default=800, help="base documents for the near-duplicate check")
    parser.add_argument("--no-stdlib", action="store_true")
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--ray-mb", type=float, default=20.0, help="size of the corpus for Ray against local")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--only", choices=["near", "prose", "ray"], help="measure only this part")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    result: dict = {"benchmark": "curate", "workers": args.workers, "cpus": os.cpu_count()}
    if args.only:
        part = {"near": lambda: near_duplicates(args.near_docs), "prose": technical_prose,
                "ray": lambda: ray_against_local(args.ray_mb)}[args.only]
        result[args.only] = part()
        print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="lmsmith-curate-bench-"))
    try:
        if not args.no_stdlib:
            result["stdlib"] = in_fresh_process("lmsmith", [["stdlib"], str(work / "stdlib-out"), args.workers, False])
        corpus = work / "corpus"
        start = time.perf_counter()
        info = generate_corpus(corpus, args.size_mb)
        generated = {"mb": round(info["bytes"] / 1e6, 1), "docs": info["docs"], "planted": info["planted"],
                     "generate_seconds": round(time.perf_counter() - start, 1)}
        generated["lmsmith_full"] = in_fresh_process(
            "lmsmith", [[str(corpus)], str(work / "full"), args.workers, False])
        generated["lmsmith_equivalent"] = in_fresh_process(
            "lmsmith", [[str(corpus)], str(work / "equivalent"), args.workers, True])
        if args.no_datatrove or not datatrove_available():
            generated["datatrove"] = {
                "skipped": "not installed (pip install datatrove)" if not args.no_datatrove else "--no-datatrove"
            }
        else:
            generated["datatrove"] = in_fresh_process("datatrove", [str(corpus), str(work / "datatrove"), args.workers])
            ours, theirs = generated["lmsmith_equivalent"], generated["datatrove"]
            if "seconds" in ours and "seconds" in theirs:
                generated["throughput_ratio_vs_datatrove"] = round(theirs["seconds"] / ours["seconds"], 3)
        result["generated"] = generated
        result["near_duplicates"] = near_duplicates(args.near_docs)
        result["technical_prose"] = technical_prose()
        if not args.no_ray and ray_available():
            result["ray"] = ray_against_local(args.ray_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
