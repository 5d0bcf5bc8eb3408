"""What a curate run did, as `report.json` and as the summary table printed at its end.

Per step: documents and bytes in, kept, and dropped by reason. Then the redactions per kind,
the duplicate clusters, the split sizes, the held-out overlap with train, and the throughput.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmsmith.data.exam_overlap import exclusion_report
from lmsmith.data.step import StepStats
from lmsmith.schema.curate import SPLITS

_PIPELINE_ORDER = ("read", "html", "format", "exam", "quality", "classifier", "safety", "pii", "bias", "minhash",
                   "dedup", "boilerplate")


def build_report(*, inputs: list[str], stats: dict[str, StepStats], issues: list[dict], sizes: dict,
                 overlap: dict | None, seconds: float, workers: int, out: Path, bias: dict | None = None) -> dict:
    ordered = sorted(stats.values(), key=lambda s: _PIPELINE_ORDER.index(s.name) if s.name in _PIPELINE_ORDER else 99)
    read = stats["read"]
    counters = {s.name: s.counters for s in ordered}
    redactions = {key.split(":", 1)[1]: n for key, n in counters.get("pii", {}).items() if key.startswith("redacted:")}
    dedup = stats.get("dedup")
    duplicates = {
        "exact_clusters": counters.get("dedup", {}).get("exact_duplicate_clusters", 0),
        "near_clusters": counters.get("dedup", {}).get("near_duplicate_clusters", 0),
        "exact_dropped": dedup.dropped_docs.get("exact_duplicate", 0) if dedup else 0,
        "near_dropped": dedup.dropped_docs.get("near_duplicate", 0) if dedup else 0,
    }
    docs_out = sum(sizes[s]["docs"] for s in SPLITS)
    bytes_out = sum(sizes[s]["bytes"] for s in SPLITS)
    return {
        "output": str(out),
        "inputs": inputs,
        "steps": [s.to_dict() for s in ordered],
        "read_issues": issues,
        "redactions": redactions,
        "duplicates": duplicates,
        "splits": {s: sizes[s] for s in SPLITS},
        "dropped_kept": sizes.get("dropped"),
        "overlap": overlap,
        "totals": {"docs_in": read.docs_in, "bytes_in": read.bytes_in, "docs_out": docs_out, "bytes_out": bytes_out},
        "timings": {"seconds": round(seconds, 3), **{f"{s.name}_seconds": round(s.seconds, 3) for s in ordered}},
        "throughput": {"mb_per_s": round(read.bytes_in / 1e6 / max(seconds, 1e-9), 3),
                       "docs_per_s": round(read.docs_in / max(seconds, 1e-9), 1)},
        "workers": workers,
        **({"bias": bias} if bias is not None else {}),
        **({"exam_excluded": exclusion_report(counters["exam"])} if "exam" in counters else {}),
    }


def _reasons(step: dict, limit: int = 4) -> str:
    reasons = sorted(step["dropped_docs"].items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{reason} {n:,}" for reason, n in reasons[:limit])
    return text + (f", +{len(reasons) - limit} more" if len(reasons) > limit else "")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def print_summary(report: dict, console: Console) -> None:
    table = Table(title="lmsmith curate", title_justify="left")
    for name, justify in (("step", "left"), ("docs in", "right"), ("MB in", "right"), ("kept", "right"),
                          ("dropped", "right"), ("MB dropped", "right"), ("why dropped", "left")):
        table.add_column(name, justify=justify)
    for step in report["steps"]:
        dropped = sum(step["dropped_docs"].values())
        table.add_row(step["name"], f"{step['docs_in']:,}", _mb(step["bytes_in"]), f"{step['docs_kept']:,}",
                      f"{dropped:,}", _mb(sum(step["dropped_bytes"].values())), _reasons(step))
    console.print(table)

    splits = Table(show_header=True)
    for name in ("split", "docs", "MB", "shards"):
        splits.add_column(name, justify="left" if name == "split" else "right")
    for split, size in report["splits"].items():
        splits.add_row(split, f"{size['docs']:,}", _mb(size["bytes"]), str(size["shards"]))
    console.print(splits)

    redactions = ", ".join(f"{kind} {n:,}" for kind, n in sorted(report["redactions"].items())) or "none"
    dup = report["duplicates"]
    console.print(f"redactions: {redactions}")
    console.print(f"duplicate clusters: exact {dup['exact_clusters']:,} ({dup['exact_dropped']:,} dropped), "
                  f"near {dup['near_clusters']:,} ({dup['near_dropped']:,} dropped)")
    overlap = report["overlap"]
    if overlap:
        parts = [f"{split} {100 * overlap[split]['share_in_train']:.1f}% "
                 f"({overlap[split]['docs_mostly_in_train']} of {overlap[split]['docs']} docs mostly)"
                 for split in ("val", "test") if split in overlap]
        console.print(f"held-out {overlap['n']}-grams also in train: " + "; ".join(parts))
    if report.get("bias"):
        print_bias_table(report["bias"], console)
    totals, speed = report["totals"], report["throughput"]
    console.print(f"{totals['docs_in']:,} docs ({_mb(totals['bytes_in'])} MB) in, {totals['docs_out']:,} docs "
                  f"({_mb(totals['bytes_out'])} MB) out in {report['timings']['seconds']:.1f} s: "
                  f"{speed['mb_per_s']:.2f} MB/s, {speed['docs_per_s']:,.0f} docs/s on {report['workers']} worker(s)")
    if report["read_issues"]:
        first = report["read_issues"][0]
        where = first.get("path", first["source"]) + (f":{first['line']}" if "line" in first else "")
        console.print(
            f"skipped inputs are listed in report.json (first: {where}: {first['reason']}, {first['detail']})"
        )


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _top(shares: dict, n: int = 3) -> str:
    return ", ".join(f"{k} {_percent(v['share'])}" for k, v in list(shares.items())[:n]) or "-"


def print_bias_table(bias: dict, console: Console) -> None:
    """Per split: the female share of gendered pronouns and terms, identity mentions, languages, kinds."""
    table = Table(title="bias report (measured, nothing changed)", title_justify="left")
    for name in ("split", "docs", "female pronouns", "female terms", "identity /1k words", "languages", "kinds"):
        table.add_column(name, justify="right" if name == "docs" else "left")
    for split, data in bias["splits"].items():
        identity = sorted(data["identity"].items(), key=lambda kv: -kv[1]["per_1000_words"])
        mentions = ", ".join(f"{g} {v['per_1000_words']:.2f}" for g, v in identity[:3] if v["count"]) or "none"
        table.add_row(split, f"{data['docs']:,}", _percent(data["female_share_of_gendered_pronouns"]),
                      _percent(data["female_share_of_gendered_terms"]), mentions,
                      _top(data["languages"]), _top(data["kinds"]))
    console.print(table)
    flagged = (bias.get("safety_flagged") or {}).get("docs") or {}
    console.print("safety flagged: " + (", ".join(f"{k} {v:,}" for k, v in sorted(flagged.items())) or "none"))


def nothing_survived_message(report: dict) -> str:
    reasons: dict[str, int] = {}
    for step in report["steps"]:
        for reason, n in step["dropped_docs"].items():
            reasons[f"{step['name']}: {reason}"] = reasons.get(f"{step['name']}: {reason}", 0) + n
    top = (", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
           or "no documents were read")
    return (f"no document survived curation ({report['totals']['docs_in']} read; dropped: {top}): "
            "check the inputs, or loosen the step that dropped them"
            " (e.g. quality.prose.min_words=20 or quality.enabled=false)")
