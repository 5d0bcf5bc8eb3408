"""Safety: drop harmful text by term blocklist, by blocked web domain, and optionally by classifier.

- Terms: our default list (`blocklist.txt` beside this file) plus the user's lists, matched on
  whole words, case-insensitively. A document (or, in line mode, a line) goes when its matches
  per word exceed `max_term_density`, so that one stray word in a long text does not delete it.
  Code is always judged whole: removing a line would break the program.
- Domains: a document goes when its `meta["url"]` or a URL in its text is on a blocked domain
  or a subdomain of one (`blocked_domains.txt` plus the user's lists).
- Classifier: any local Hugging Face text-classification model directory. A document goes when
  the score of the configured label reaches the threshold. The model is loaded on first use,
  in whichever process runs the step, and only if configured.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.data.document import Document
from lmsmith.data.step import Dropped, Step, StepStats
from lmsmith.schema.curate import SafetyConfig

_WORD = re.compile(r"\w+")
_URL_HOST = re.compile(r"(?i)\b(?:https?|ftp)://(?:[^\s/?#@\"'<>]*@)?([a-z0-9.-]+)")






# ---------------------------------------------------------------------------------------------
# Reading lists


def _list_lines(text: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _read_list(path: str) -> list[str]:
    try:
        return _list_lines(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read list file {path} ({exc.__class__.__name__}): give a UTF-8 text file, one entry per line"
        ) from None


def _packaged_list(name: str) -> list[str]:
    return _list_lines(resources.files("lmsmith.data").joinpath(name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Term matching on word tokens: a set lookup per word instead of a huge regex alternation.


class TermMatcher:
    """Counts blocklisted terms among a text's words: exact words, word prefixes (`fuck*`), phrases."""

    def __init__(self, entries: list[str]):
        self.words: set[str] = set()
        self.prefixes: set[str] = set()
        self.phrases: dict[str, list[tuple[str, ...]]] = {}
        for entry in entries:
            tokens = _WORD.findall(entry.lower())
            if not tokens:
                continue
            if entry.endswith("*"):
                tokens[-1] += "*"
            if len(tokens) > 1:
                self.phrases.setdefault(tokens[0], []).append(tuple(tokens))
            elif tokens[0].endswith("*"):
                self.prefixes.add(tokens[0][:-1])
            else:
                self.words.add(tokens[0])
        # Most words can be ruled out by their first characters alone; only the rest are looked at.
        heads = [t[0].rstrip("*") for ts in self.phrases.values() for t in ts] + list(self.words) + list(self.prefixes)
        self.head_length = min((len(h) for h in heads), default=1)
        self.heads = {h[: self.head_length] for h in heads}
        self.prefix_lengths = sorted({len(p) for p in self.prefixes})

    def __bool__(self) -> bool:
        return bool(self.words or self.prefixes or self.phrases)

    def _word_hits(self, word: str) -> bool:
        if word in self.words:
            return True
        return any(word[:n] in self.prefixes for n in self.prefix_lengths if len(word) >= n)

    def _phrase_at(self, words: list[str], i: int) -> int:
        """Length of a blocklisted phrase starting at words[i], or 0."""
        for phrase in self.phrases.get(words[i], ()):
            end = i + len(phrase)
            if end > len(words) or tuple(words[i + 1 : end - 1]) != phrase[1:-1]:
                continue
            last, word = phrase[-1], words[end - 1]
            if word == last or (last.endswith("*") and word.startswith(last[:-1])):
                return len(phrase)
        return 0

    def count(self, words: list[str]) -> int:
        hits, i, n = 0, 0, len(words)
        k = self.head_length
        while i < n:
            word = words[i]
            if word[:k] in self.heads:
                span = self._phrase_at(words, i) if word in self.phrases else 0
                if span:
                    hits += 1
                    i += span
                    continue
                if self._word_hits(word):
                    hits += 1
            i += 1
        return hits


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# ---------------------------------------------------------------------------------------------
# Domains


def url_hosts(text: str) -> list[str]:
    """The host names of the http(s)/ftp URLs in `text`, lowercased."""
    return [m.group(1).lower().strip(".") for m in _URL_HOST.finditer(text)]


def domain_is_blocked(host: str, blocked: set[str] | frozenset[str]) -> bool:
    """True when `host` or any parent domain of it is in `blocked`."""
    parts = host.lower().strip(".").split(".")
    return any(".".join(parts[i:]) in blocked for i in range(len(parts)))


def _host_of_url(url: str) -> str | None:
    hosts = url_hosts(url if "://" in url else f"http://{url}")
    return hosts[0] if hosts else None


# ---------------------------------------------------------------------------------------------
# The step


class SafetyFilter(Step):
    """Drops (or, in line mode, trims) documents with blocklisted terms, blocked domains or a high classifier score."""

    name = "safety"

    def __init__(self, config: SafetyConfig | None = None):
        self.config = config = config or SafetyConfig()
        terms = _packaged_list("blocklist.txt") if config.default_blocklist else []
        for path in config.blocklist_files:
            terms += _read_list(path)
        self.terms = TermMatcher(terms)
        domains = _packaged_list("blocked_domains.txt") if config.default_domains else []
        for path in config.domain_blocklist_files:
            domains += _read_list(path)
        self.domains = frozenset(d.lower().strip(".") for d in domains)
        self._classifier = None  # loaded on first use, in the process that runs the step

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_classifier"] = None  # a model is loaded again where the step lands, not pickled
        return state

    def apply(self, docs: list[Document], stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        kept, dropped = super().apply(docs, stats)
        if self.config.classifier.model is None or not kept:
            return kept, dropped
        flagged = self._classify(kept, stats)
        dropped += [(doc, "classifier_flagged") for doc, bad in zip(kept, flagged) if bad]
        return [doc for doc, bad in zip(kept, flagged) if not bad], dropped

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        if self.domains and self._has_blocked_domain(doc):
            return "blocked_domain"
        if not self.terms:
            return None
        if self.config.mode == "line" and doc.meta.get("kind") != "code":
            return self._remove_lines(doc, stats)
        words = words_of(doc.text)
        hits = self.terms.count(words)
        if hits and hits / len(words) > self.config.max_term_density:
            stats.counters["blocklist_matches"] += hits
            return "blocklisted_terms"
        return None

    def _has_blocked_domain(self, doc: Document) -> bool:
        url = doc.meta.get("url")
        if isinstance(url, str) and (host := _host_of_url(url)) and domain_is_blocked(host, self.domains):
            return True
        if self.config.check_text_urls and "://" in doc.text:
            return any(domain_is_blocked(host, self.domains) for host in url_hosts(doc.text))
        return False

    def _remove_lines(self, doc: Document, stats: StepStats) -> str | None:
        kept_lines, removed = [], 0
        for line in doc.text.split("\n"):
            words = words_of(line)
            hits = self.terms.count(words) if words else 0
            if hits and hits / len(words) > self.config.max_term_density:
                removed += 1
                stats.counters["blocklist_matches"] += hits
            else:
                kept_lines.append(line)
        if not removed:
            return None
        stats.counters["lines_removed"] += removed
        doc.text = "\n".join(kept_lines)
        return None if doc.text.strip() else "blocklisted_terms"

    # -- classifier -------------------------------------------------------------------------

    def _load_classifier(self):
        pipeline = require("transformers", extra="hf", purpose="safety.classifier",
                           also=", or unset safety.classifier.model").pipeline

        cfg = self.config.classifier
        if cfg.device == "auto":
            from lmsmith.core.device import pick_device

            device = pick_device("auto")
        else:
            device = cfg.device
        try:
            classifier = pipeline("text-classification", model=str(Path(cfg.model).expanduser()), device=device)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"safety.classifier.model: cannot load {cfg.model} as a text-classification model ({exc})"
            ) from None
        labels = set(classifier.model.config.id2label.values())
        if cfg.label not in labels:
            raise UserError(
                f"safety.classifier.label: {cfg.label!r} is not a label of {cfg.model}; its labels are {sorted(labels)}"
            )
        return classifier

    def classifier_scores(self, texts: list[str]) -> list[float]:
        """The score of the configured label for each text."""
        if self._classifier is None:
            self._classifier = self._load_classifier()
        cfg = self.config.classifier
        outputs = self._classifier(
            texts, top_k=None, batch_size=cfg.batch_size, truncation=True, max_length=cfg.max_length
        )
        return [next(o["score"] for o in out if o["label"] == cfg.label) for out in outputs]

    def _classify(self, docs: list[Document], stats: StepStats) -> list[bool]:
        scores = self.classifier_scores([doc.text for doc in docs])
        stats.counters["classifier_scored"] += len(docs)
        return [score >= self.config.classifier.threshold for score in scores]
