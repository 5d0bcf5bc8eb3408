"""The bias report (`--bias-report`): what the curated data says about whom, and in which languages.

Per split: how often gendered terms and pronouns occur (counts, per thousand words, the female
share), how often each group of identity terms does (the groups are configurable), the languages
detected (py3langid, on prose), the mix of sources and of document kinds, and, over the whole run,
what the safety step flagged. It measures and never changes a document: a skew found here is for
the user to weigh (more sources, a rebalanced mix), not for a filter to hide.

The counting runs in the worker processes (`BiasProbe`, a step that drops nothing and leaves a
private note in the document's meta); the main process adds the notes up per split (`BiasTally`),
where the split of each document is known.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from lmsmith.data.document import Document
from lmsmith.data.step import Dropped, Step, StepStats
from lmsmith.schema.curate import BiasConfig

# Pronouns and gendered nouns, counted apart: "he/she" and "man/woman" can skew differently.
GENDERED = {
    "pronouns_female": ["she", "her", "hers", "herself"],
    "pronouns_male": ["he", "him", "his", "himself"],
    "pronouns_neutral": ["they", "them", "their", "theirs", "themselves", "themself"],
    "terms_female": ["woman", "women", "girl", "girls", "mother", "mothers", "daughter", "daughters", "wife", "wives",
                     "sister", "sisters", "female", "females", "lady", "ladies", "queen", "queens", "aunt", "niece",
                     "grandmother", "mrs", "ms", "madam", "actress", "waitress", "heroine"],
    "terms_male": ["man", "men", "boy", "boys", "father", "fathers", "son", "sons", "husband", "husbands", "brother",
                   "brothers", "male", "males", "gentleman", "gentlemen", "king", "kings", "uncle", "nephew",
                   "grandfather", "mr", "sir", "actor", "waiter", "hero"],
}


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
NOTE_KEY = "_bias_note"  # in Document.meta, from BiasProbe to BiasTally only
_LANGUAGE_CHARS = 2000  # characters of a document the language is told from: enough, and bounded in cost




def _term_index(config: BiasConfig) -> dict[str, list[str]]:
    """word -> the categories it counts for."""
    index: dict[str, list[str]] = {}
    for category, words in list(GENDERED.items()) + [(f"identity:{g}", t) for g, t in config.identity_terms.items()]:
        for word in words:
            index.setdefault(word.lower(), []).append(category)
    return index


def _language(text: str) -> str:
    import py3langid

    return py3langid.classify(text[:_LANGUAGE_CHARS])[0]


_MIN_WORDS_FOR_LANGUAGE = 20  # a code file's comments are told a language only when there is enough of them
_C_COMMENTS_AND_STRINGS = re.compile(r"//[^\n]*|/\*.*?\*/|#[^\n]*|\"(?:\\.|[^\"\\\n])*\"", re.DOTALL)


_STRING_OPENING = re.compile(r"^[rRbBuUfF]{0,2}(\"\"\"|\'\'\'|\"|\')")


def _string_body(literal: str) -> str:
    """A Python string literal's text, without its prefix and quotes."""
    opening = _STRING_OPENING.match(literal)
    if opening is None:
        return literal
    return literal[opening.end() : len(literal) - len(opening.group(1))]


def natural_language_of_code(code: str, language: str | None) -> str:
    """The comments and string literals of a code file, one per line: where code speaks English (or not)."""
    if language == "python":
        import io
        import tokenize

        parts = []
        try:
            for token in tokenize.generate_tokens(io.StringIO(code).readline):
                if token.type == tokenize.COMMENT:
                    parts.append(token.string.lstrip("#"))
                elif token.type == tokenize.STRING:
                    parts.append(_string_body(token.string))
        except (tokenize.TokenError, SyntaxError, IndentationError):
            pass  # a file that does not tokenize to its end: what was read so far
        return "\n".join(parts)
    return "\n".join(m.group(0).strip("/*#\" ") for m in _C_COMMENTS_AND_STRINGS.finditer(code))


@dataclass
class BiasNote:
    """One document's counts: words, term hits per category, its language."""

    words: int
    hits: Counter
    language: str | None


def document_kind(doc: Document) -> str:
    """"prose/pdf", "code/python", "conversation": the kind of a document and its format or language."""
    kind = doc.meta.get("kind", "prose")
    detail = doc.meta.get("language") if kind == "code" else doc.meta.get("format")
    return f"{kind}/{detail}" if detail else kind


def source_group(doc: Document) -> str:
    """The source a document came from, with files grouped: "files", "stdlib", "hf:NAME"."""
    return "files" if doc.source.startswith("file:") else doc.source


class BiasProbe(Step):
    """Counts terms and tells the language of each document, for `BiasTally`; keeps every document."""

    name = "bias"

    def __init__(self, config: BiasConfig):
        self.config = config
        self.index = _term_index(config)

    def apply(self, docs: list[Document], stats: StepStats) -> tuple[list[Document], list[Dropped]]:
        for doc in docs:
            doc.meta[NOTE_KEY] = self.note(doc)
        return docs, []

    def note(self, doc: Document) -> BiasNote:
        is_code = doc.meta.get("kind") == "code"
        # In code, identifiers use these words in other senses (tree `children`, a `disabled` flag, `white`
        # space): only what the code says in natural language, its comments and strings, is counted.
        text = natural_language_of_code(doc.text, doc.meta.get("language")) if is_code else doc.text
        words = _WORD.findall(text.lower())
        hits: Counter = Counter()
        for word, n in Counter(words).items():
            for category in self.index.get(word, ()):
                hits[category] += n
        language = None
        if self.config.languages and (not is_code or len(words) >= _MIN_WORDS_FOR_LANGUAGE):
            language = _language(text)
        return BiasNote(len(words), hits, language)


@dataclass
class SplitTally:
    docs: int = 0
    bytes: int = 0
    words: int = 0
    hits: Counter = field(default_factory=Counter)  # category -> occurrences
    docs_with: Counter = field(default_factory=Counter)  # category -> documents with at least one
    languages: Counter = field(default_factory=Counter)  # language -> documents ("code": code without enough comments)
    sources: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)


class BiasTally:
    """Adds the probes' notes up per split (main process)."""

    def __init__(self, config: BiasConfig):
        self.config = config
        self.probe = BiasProbe(config)  # for documents that arrive without a note
        self.splits: dict[str, SplitTally] = {}

    def add(self, split: str, doc: Document) -> None:
        note = doc.meta.pop(NOTE_KEY, None)
        if not isinstance(note, BiasNote):
            note = self.probe.note(doc)
        tally = self.splits.setdefault(split, SplitTally())
        tally.docs += 1
        tally.bytes += doc.n_bytes
        tally.words += note.words
        tally.hits.update(note.hits)
        tally.docs_with.update(note.hits.keys())
        tally.languages[note.language or "code"] += 1
        tally.sources[source_group(doc)] += 1
        tally.kinds[document_kind(doc)] += 1

    def report(self, safety: StepStats | None) -> dict:
        return {
            "splits": {name: split_report(t, self.config) for name, t in self.splits.items()},
            "safety_flagged": (
                {"docs": dict(safety.dropped_docs), "counters": dict(safety.counters)} if safety else None
            ),
            "identity_groups": {g: list(t) for g, t in self.config.identity_terms.items()},
        }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def split_report(tally: SplitTally, config: BiasConfig) -> dict:
    per_k = {c: round(1000 * n / tally.words, 3) if tally.words else 0.0 for c, n in tally.hits.items()}

    def category(name: str) -> dict:
        return {"count": tally.hits.get(name, 0), "per_1000_words": per_k.get(name, 0.0),
                "docs": tally.docs_with.get(name, 0), "docs_share": _share(tally.docs_with.get(name, 0), tally.docs)}

    female_pronouns, male_pronouns = tally.hits["pronouns_female"], tally.hits["pronouns_male"]
    female_terms, male_terms = tally.hits["terms_female"], tally.hits["terms_male"]
    return {
        "docs": tally.docs, "bytes": tally.bytes, "words": tally.words,
        "gender": {name: category(name) for name in GENDERED},
        "female_share_of_gendered_pronouns": _share(female_pronouns, female_pronouns + male_pronouns),
        "female_share_of_gendered_terms": _share(female_terms, female_terms + male_terms),
        "identity": {g: category(f"identity:{g}") for g in config.identity_terms},
        "languages": _shares(tally.languages, tally.docs),
        "sources": _shares(tally.sources, tally.docs),
        "kinds": _shares(tally.kinds, tally.docs),
    }


def _shares(counter: Counter, total: int) -> dict[str, dict]:
    return {k: {"docs": n, "share": _share(n, total)} for k, n in counter.most_common()}
