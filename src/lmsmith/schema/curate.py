"""The `curate:` section: sources, each step's settings (with an `enabled` switch), split, output.

    curate:
      sources: {include: ["*.py"], text_field: text}
      quality: {prose: {min_words: 30}}
      dedup: {threshold: 0.85}
      split: {val_fraction: 0.01, test_fraction: 0.01, seed: 0}

Each step's settings are a dataclass here, on the schema floor, so that a recipe is checked
before any curation code is imported; the steps in lmsmith.data read them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lmsmith.core.config import ConfigError, apply_overrides, parse_section, read_yaml, section_to_dict

DEFAULT_IDENTITY_TERMS = {
    "religion": ["christian", "christians", "muslim", "muslims", "jewish", "jew", "jews", "hindu", "hindus", "buddhist",
                 "buddhists", "sikh", "sikhs", "atheist", "atheists"],
    "ethnicity": ["african", "asian", "european", "latino", "latina", "hispanic", "arab", "arabs", "indigenous",
                  "black", "white"],
    "sexuality_gender": ["gay", "lesbian", "bisexual", "transgender", "trans", "queer", "heterosexual",
                         "straight", "nonbinary"],
    "disability": ["disabled", "disability", "blind", "deaf", "autistic", "wheelchair"],
    "age": ["elderly", "teenager", "teenagers", "retired", "child", "children"],
}


PLACEHOLDERS = {
    "secret": "<SECRET>",
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
    "ssn": "<SSN>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}


GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


# Formats a file can be read as; `sources.formats` maps extra suffixes onto these.
FORMATS = ("text", "html", "code", "jsonl", "json", "parquet", "pdf", "epub", "wikipedia")


def candidate_probability(similarity, bands: int, rows: int):
    """Probability that two documents of this Jaccard similarity share at least one band."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands


def optimal_bands_rows(threshold: float, num_perm: int, false_positive_weight: float = 0.5) -> tuple[int, int]:
    """The (bands, rows) with bands*rows <= num_perm minimising the weighted error area.

    False positives are the area under the candidate-probability curve below the threshold;
    false negatives the area above the curve from the threshold to 1. Each is integrated with
    the midpoint rule; the weights trade one against the other.
    """
    steps = 256
    below = (np.arange(steps) + 0.5) / steps * threshold
    above = threshold + (np.arange(steps) + 0.5) / steps * (1.0 - threshold)
    best, best_error = (1, 1), math.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = candidate_probability(below, bands, rows).mean() * threshold
            fn = (1.0 - candidate_probability(above, bands, rows)).mean() * (1.0 - threshold)
            error = false_positive_weight * fp + (1.0 - false_positive_weight) * fn
            if error < best_error - 1e-12:
                best, best_error = (bands, rows), error
    return best


@dataclass
class BiasConfig:
    enabled: bool = False  # --bias-report
    identity_terms: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_IDENTITY_TERMS.items()}
    )
    languages: bool = True  # detect each prose document's language (py3langid)

    def check(self, where: str = "bias") -> None:
        for group, terms in self.identity_terms.items():
            if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
                raise ConfigError(f"{where}.identity_terms.{group} must be a list of words, e.g. [nurse, nurses]")


@dataclass
class PiiConfig:
    """Which kinds of personal data and secrets to redact (all of them by default)."""

    enabled: bool = True
    email: bool = True
    phone: bool = True
    ip_address: bool = True
    credit_card: bool = True
    iban: bool = True
    ssn: bool = True
    secret: bool = True  # cloud keys, tokens, private-key blocks, JWTs, password/api_key assignments

    def kinds(self) -> list[str]:
        # The order matters: a private-key block or a token may contain things that look like
        # e-mails or numbers, and a card number would otherwise be half-eaten as a phone.
        return [kind for kind in PLACEHOLDERS if getattr(self, kind)]

    def check(self, where: str = "pii") -> None:
        if self.enabled and not self.kinds():
            raise ConfigError(f"{where}: every kind of redaction is switched off: set {where}.enabled=false instead")


@dataclass
class BoilerplateConfig:
    """Removal of lines repeated across many documents. Off unless asked for: in stories or
    chat logs a common sentence is content, not boilerplate."""

    enabled: bool = False
    min_docs: int = 10  # a line must occur in at least this many documents ...
    min_fraction: float = 0.0  # ... and in at least this fraction of all documents
    min_chars: int = 20  # shorter lines ("}", "else:", "Thanks!") are never removed

    def check(self, where: str) -> None:
        if self.min_docs < 2:
            raise ConfigError(
                f"{where}.min_docs must be at least 2 (a line in one document is not repeated), got {self.min_docs}"
            )
        if not 0.0 <= self.min_fraction <= 1.0:
            raise ConfigError(f"{where}.min_fraction must be in [0, 1], got {self.min_fraction}")
        if self.min_chars < 1:
            raise ConfigError(f"{where}.min_chars must be at least 1, got {self.min_chars}")


@dataclass
class DedupConfig:
    enabled: bool = True
    exact: bool = True
    near: bool = True
    threshold: float = 0.8  # Jaccard similarity of word shingles at which documents are near duplicates
    shingle_size: int = 5  # words per shingle
    num_perm: int = 128  # MinHash hash functions: more is more precise and slower
    bands: int | None = None  # None: chosen with rows for the threshold (see optimal_bands_rows)
    rows: int | None = None
    # None: 0.1 when verified (a false candidate costs only a check), else 0.5
    false_positive_weight: float | None = None
    # how an LSH candidate is confirmed: "jaccard" (its shingle sets, exactly), "signature" (MinHash estimate), "none"
    verify: Literal["jaccard", "signature", "none"] = "jaccard"
    seed: int = 1
    boilerplate: BoilerplateConfig = field(default_factory=BoilerplateConfig)

    def check(self, where: str = "dedup") -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"{where}.threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if self.shingle_size < 1:
            raise ConfigError(f"{where}.shingle_size must be at least 1, got {self.shingle_size}")
        if not 2 <= self.num_perm <= 4096:
            raise ConfigError(f"{where}.num_perm must be between 2 and 4096, got {self.num_perm}")
        if (self.bands is None) != (self.rows is None):
            raise ConfigError(
                f"{where}.bands and {where}.rows go together: set both, or neither to choose them for the threshold"
            )
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ConfigError(
                f"{where}: bands x rows ({self.bands} x {self.rows}) must be at least 1 x 1"
                f" and at most num_perm ({self.num_perm})"
            )
        if self.false_positive_weight is not None and not 0.0 < self.false_positive_weight < 1.0:
            raise ConfigError(
                f"{where}.false_positive_weight must be between 0 and 1 (exclusive), got {self.false_positive_weight}"
            )
        if self.enabled and not (self.exact or self.near):
            raise ConfigError(f"{where}: exact and near are both off: set {where}.enabled=false instead")

    def bands_rows(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        weight = self.false_positive_weight
        if weight is None:
            weight = 0.1 if self.verify != "none" else 0.5
        return optimal_bands_rows(self.threshold, self.num_perm, weight)


@dataclass
class SplitConfig:
    val_fraction: float = 0.01
    test_fraction: float = 0.01
    seed: int = 0  # another seed draws other held-out documents
    overlap_ngram: int = 13  # word n-gram size of the held-out/train overlap check; 0 skips the check
    mostly_shared: float = 0.5  # a held-out document with more of its n-grams in train is reported

    def check(self, where: str = "split") -> None:
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{where}.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"{where}: val_fraction + test_fraction must leave something to train on, "
                              f"got {self.val_fraction} + {self.test_fraction}")
        if self.overlap_ngram < 0:
            raise ConfigError(f"{where}.overlap_ngram must be 0 (off) or a word count, got {self.overlap_ngram}")


@dataclass
class SourceConfig:
    include: list[str] = field(default_factory=list)  # globs on paths inside folder inputs; empty: every file
    exclude: list[str] = field(default_factory=list)
    skip_hidden: bool = True  # files and folders whose names start with "."
    text_field: str = "text"  # the field of JSON records, the column of Parquet files and HF datasets
    formats: dict[str, str] = field(default_factory=dict)  # extra suffixes, e.g. {".log": "text", ".json": "code"}
    unknown_files: Literal["text", "skip"] = "text"  # files of no known suffix: read as text unless binary
    max_file_mb: float = 256.0  # single-document files above this are skipped (record files stream, no limit)
    max_docs: int | None = None  # stop after this many documents: a quick look at a big corpus

    def check(self, where: str = "sources") -> None:
        for suffix, fmt in self.formats.items():
            if not (isinstance(suffix, str) and suffix.startswith(".")):
                raise ConfigError(f"{where}.formats: key {suffix!r} must be a file suffix such as '.log'")
            if fmt not in FORMATS:
                raise ConfigError(f"{where}.formats['{suffix}']: {fmt!r} is not one of {', '.join(FORMATS)}")
        self.formats = {k.lower(): v for k, v in self.formats.items()}
        if self.max_file_mb <= 0:
            raise ConfigError(f"{where}.max_file_mb must be positive, got {self.max_file_mb}")
        if self.max_docs is not None and self.max_docs < 1:
            raise ConfigError(f"{where}.max_docs must be at least 1 (or null for no limit), got {self.max_docs}")
        if not self.text_field:
            raise ConfigError(f"{where}.text_field must name a field, e.g. text")


@dataclass
class HtmlConfig:
    enabled: bool = True  # off: pages keep their markup (and are judged as prose)
    include_tables: bool = True
    include_comments: bool = False  # reader comments under an article are mostly noise
    favor_precision: bool = False  # True drops more borderline text, keeping only the surest main content


@dataclass
class ProseQualityConfig:
    enabled: bool = True
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # "#" and "..." each, per word
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8  # share of words with at least one letter
    min_stop_words: int = 2  # distinct stop words present; 0 turns the rule off (e.g. for other languages)
    stop_words: list[str] = field(default_factory=lambda: list(GOPHER_STOP_WORDS))
    max_duplicate_lines: float = 0.30  # share of lines that repeat an earlier line
    max_duplicate_line_chars: float = 0.20  # share of characters in such lines
    max_duplicate_paragraphs: float = 0.30
    max_duplicate_paragraph_chars: float = 0.20
    # n -> most characters the most frequent n-gram may cover
    max_top_ngram_chars: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # n -> most characters that n-grams seen earlier in the document may cover
    max_duplicate_ngram_chars: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    # code blocks and tables inside prose are left out of the word-shape and duplicate-line rules ...
    set_aside_blocks: bool = True
    # ... and documents with them (or with inline code) may repeat this many times more; 1: as for any text
    technical_repetition_factor: float = 2.5

    def check(self, where: str = "quality.prose") -> None:
        if not 0 <= self.min_words <= self.max_words:
            raise ConfigError(f"{where}: need 0 <= min_words <= max_words, got {self.min_words} and {self.max_words}")
        for name in ("max_top_ngram_chars", "max_duplicate_ngram_chars"):
            table = {}
            for n, limit in getattr(self, name).items():
                try:
                    n = int(n)
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}.{name}: key {n!r} must be an n-gram size such as 2") from None
                if n < 1 or isinstance(limit, bool) or not isinstance(limit, (int, float)):
                    raise ConfigError(f"{where}.{name}: {n}: {limit!r} must be a share between 0 and 1")
                table[n] = float(limit)
            setattr(self, name, table)
        if self.technical_repetition_factor < 1:
            raise ConfigError(
                f"{where}.technical_repetition_factor must be at least 1, got {self.technical_repetition_factor}"
            )


@dataclass
class CodeQualityConfig:
    enabled: bool = True
    python_must_parse: bool = True
    check_brackets: bool = True  # for brace languages (C, Java, JavaScript, Go, Rust, ...)
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    drop_generated: bool = True
    generated_patterns: list[str] = field(default_factory=lambda: [
        r"do not edit", r"auto-?generated", r"@generated",
        r"^\W*(this (file|code) (is|was) )?(automatically )?generated (by|from|with)\b",
    ])
    generated_scan_lines: int = 10  # markers count only near the top, where generators put them

    def check(self, where: str = "quality.code") -> None:
        for pattern in self.generated_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where}.generated_patterns: {pattern!r} is not a valid regex ({exc})") from None


@dataclass
class QualityConfig:
    enabled: bool = True
    prose: ProseQualityConfig = field(default_factory=ProseQualityConfig)
    code: CodeQualityConfig = field(default_factory=CodeQualityConfig)


@dataclass
class ClassifierConfig:
    """An optional local text-classification model; documents scoring high on `label` go."""

    model: str | None = None  # a directory saved with save_pretrained; None: no classifier
    label: str = "toxic"  # the label whose score is compared with the threshold
    threshold: float = 0.5
    batch_size: int = 16
    max_length: int = 512  # tokens read from the start of each document
    device: str = "auto"  # cuda, then mps, then cpu; or forced ("cpu"). Every worker process loads its own copy

    def check(self, where: str) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"{where}.threshold must be a probability in [0, 1], got {self.threshold}")
        if self.batch_size < 1 or self.max_length < 1:
            raise ConfigError(f"{where}.batch_size and {where}.max_length must be at least 1")
        if self.model is not None and not Path(self.model).expanduser().is_dir():
            raise ConfigError(
                f"{where}.model: {self.model} is not a directory: give the folder of a local Hugging Face "
                f"text-classification model (saved with save_pretrained), or leave it unset"
            )


@dataclass
class SafetyConfig:
    enabled: bool = True
    default_blocklist: bool = True  # our own list of slurs and explicit terms
    blocklist_files: list[str] = field(default_factory=list)  # more terms, one per line
    max_term_density: float = 0.005  # blocklisted words per word above which text goes
    mode: Literal["document", "line"] = "document"  # drop the whole document, or only the offending lines
    default_domains: bool = True
    domain_blocklist_files: list[str] = field(default_factory=list)  # more domains, one per line
    check_text_urls: bool = True  # also look at URLs inside the text, not only meta["url"]
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def check(self, where: str = "safety") -> None:
        if self.max_term_density < 0:
            raise ConfigError(
                f"{where}.max_term_density must be at least 0 (0 drops on any match), got {self.max_term_density}"
            )
        for key in ("blocklist_files", "domain_blocklist_files"):
            for i, name in enumerate(getattr(self, key)):
                if not Path(name).expanduser().is_file():
                    raise ConfigError(f"{where}.{key}[{i}]: {name} does not exist: check the path")


@dataclass
class FormatConfig:
    enabled: bool = True
    fix_unicode: bool = True  # ftfy on prose: mojibake, HTML escapes in plain text, broken surrogates
    fix_unicode_in_code: bool = False  # code's string literals may hold strange text on purpose
    normalization: Literal["NFC", "none"] = "NFC"  # for prose; NFC never changes how text looks
    trim_trailing_whitespace: bool = True
    max_blank_lines: int = 2  # longer runs of blank lines are cut to this many

    def check(self, where: str = "format") -> None:
        if self.max_blank_lines < 0:
            raise ConfigError(f"{where}.max_blank_lines must be 0 or more, got {self.max_blank_lines}")


@dataclass
class OutputConfig:
    shard_mb: float = 128.0  # a shard is closed once it holds this much text
    row_group_mb: float = 8.0  # rows are buffered up to this much text, then written as one row group
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"

    def check(self, where: str = "output") -> None:
        if self.shard_mb <= 0 or self.row_group_mb <= 0:
            raise ConfigError(f"{where}: shard_mb and row_group_mb must be positive")


# A starting point, not a verdict: users name the groups that matter for their model.


@dataclass
class CurateConfig:
    inputs: list[str] = field(default_factory=list)  # files, folders, hf:NAME[:CONFIG][:SPLIT], stdlib
    sources: SourceConfig = field(default_factory=SourceConfig)
    html: HtmlConfig = field(default_factory=HtmlConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)  # the bias report (--bias-report): measures, changes nothing
    workers: int | None = None  # processes for the per-document steps; None: one per CPU core
    engine: Literal["local", "ray"] = "local"  # who runs the steps: this machine's processes, or a Ray cluster
    address: str | None = None  # --engine ray: the cluster (None or "auto": the running one; "local": start one here)
    keep_dropped: bool = False  # also write what was removed, with the reason, to OUT/dropped/
    # exam task files or folders: drop every document sharing an exam_ngram-word n-gram with one of their items
    exclude_exam: list[str] = field(default_factory=list)
    exam_ngram: int = 13  # the GPT-3 and Llama papers' contamination rule
    # a directory from `lmsmith curate train-classifier`: keep the documents it scores at least classifier_threshold
    classifier: str | None = None
    classifier_threshold: float = 0.5
    # a weight per input, as written on the command line: 3 repeats a precious input's train documents, 0.5 halves
    mixture: dict[str, float] = field(default_factory=dict)
    batch_docs: int = 512  # documents per batch handed to a worker ...
    batch_mb: float = 16.0  # ... or fewer, once a batch holds this much text

    def check(self, where: str = "curate") -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"{where}.workers must be at least 1 (or null for one per core), got {self.workers}")
        if self.batch_docs < 1 or self.batch_mb <= 0:
            raise ConfigError(f"{where}: batch_docs must be at least 1 and batch_mb positive")
        if not 0.0 <= self.classifier_threshold <= 1.0:
            raise ConfigError(f"{where}.classifier_threshold must be between 0 and 1 (a probability of good), got "
                              f"{self.classifier_threshold}")
        if any(not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or math.isnan(w)
               for w in self.mixture.values()):
            raise ConfigError(f"{where}.mixture: every weight must be a number of at least 0, got "
                              f"{ {k: w for k, w in self.mixture.items()} }")
        if self.mixture and not any(self.mixture.values()):
            raise ConfigError(f"{where}.mixture: every weight is 0, so nothing would be trained on: give one a "
                              "positive weight")
        if self.exam_ngram < 1:
            raise ConfigError(f"{where}.exam_ngram must be at least 1 (words), got {self.exam_ngram}")


def load_curate_config(
    path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None
) -> CurateConfig:
    """The curate config from a YAML file (its `curate:` section, or bare keys) plus dotted overrides.

    Overrides may name the section or not: `split.val_fraction=0.05` and
    `curate.split.val_fraction=0.05` are the same. A recipe's other sections are left to their stages.
    """
    raw = dict(base or {})
    if path is not None:
        data = read_yaml(path)
        section = (data["curate"] or {}) if "curate" in data else data
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: the curate section must be a mapping of keys to values")
        raw.update(section)
    overrides = [item[len("curate."):] if item.startswith("curate.") else item for item in overrides]
    raw = apply_overrides(raw, overrides)
    return parse_section(CurateConfig, raw, "curate")


def resolve_config(config: CurateConfig | dict | str | Path | None, overrides: list[str] = ()) -> CurateConfig:
    """A curate config from a checked one, a plain dict (a recipe's or its curate section), or a YAML file."""
    if isinstance(config, CurateConfig):
        if overrides:
            return load_curate_config(None, overrides, base=section_to_dict(config))
        return config
    if isinstance(config, dict):
        return load_curate_config(None, overrides, base=config.get("curate", config))
    return load_curate_config(config, overrides)


SPLITS = ("train", "val", "test")
