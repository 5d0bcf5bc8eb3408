"""The quality step: keep prose that reads like prose and code that is real, working code.

Prose is judged by the rules of the Gopher paper (Rae et al. 2021, appendix A), with its
published thresholds: length, word shape, symbols, bullet and ellipsis lines, words with
letters, stop words, and repetition (duplicate lines and paragraphs, one n-gram dominating,
repeated passages). Words are split on whitespace, not by a language model's tokenizer. For
technical prose (manuals, API references, SQL and legal text) the code blocks and tables inside
it are set aside when word shapes are judged, and a technical document may repeat itself more
(`technical.py`; measured on real documentation beside planted junk in `technical_heldout.py`).

Code is judged by whether it could run: Python must parse; brace languages must balance their
brackets; files with absurd lines (minified or data) or that say they are generated are dropped.
"""

from __future__ import annotations

import ast
import gc
import re
import warnings

import numpy as np

from lmsmith.data.document import Document
from lmsmith.data.ngrams import ngram_hashes, word_hashes
from lmsmith.data.sources.kinds import C_LIKE
from lmsmith.data.step import Step, StepStats
from lmsmith.data.technical import looks_technical, prose_of
from lmsmith.schema.curate import CodeQualityConfig, ProseQualityConfig, QualityConfig

_HAS_LETTER = re.compile(r"[^\W\d_]")  # a letter in any script
BULLETS = ("•", "-", "*", "‣", "◦", "·", "●", "▪", "–", "⁃")








# ---------------------------------------------------------------------------------------------
# Prose


def _duplicate_shares(parts: list[str]) -> tuple[float, float]:
    """(share of parts that repeat an earlier part, share of characters in them)."""
    seen: set[str] = set()
    dup_count = dup_chars = total_chars = 0
    for part in parts:
        total_chars += len(part)
        if part in seen:
            dup_count += 1
            dup_chars += len(part)
        else:
            seen.add(part)
    if not parts or not total_chars:
        return 0.0, 0.0
    return dup_count / len(parts), dup_chars / total_chars


def top_ngram_share(hashes: np.ndarray, lengths: np.ndarray, n: int) -> float:
    """Share of all word characters covered by the most frequent n-gram (all its occurrences)."""
    grams = ngram_hashes(hashes, n)
    if not len(grams):
        return 0.0
    _, first, counts = np.unique(grams, return_index=True, return_counts=True)
    top = int(counts.argmax())
    if counts[top] < 2:
        return 0.0
    start = int(first[top])
    return float(counts[top] * lengths[start:start + n].sum() / lengths.sum())


def duplicate_ngram_share(hashes: np.ndarray, lengths: np.ndarray, n: int) -> float:
    """Share of word characters inside n-grams that already occurred earlier in the text.

    A word inside several such n-grams counts once; the first occurrence of an n-gram does not count.
    """
    grams = ngram_hashes(hashes, n)
    if not len(grams):
        return 0.0
    _, first, inverse = np.unique(grams, return_index=True, return_inverse=True)
    starts = np.flatnonzero(first[inverse.ravel()] != np.arange(len(grams)))
    if not len(starts):
        return 0.0
    cover = np.zeros(len(hashes) + 1, dtype=np.int64)
    cover[starts] += 1  # starts are distinct, so plain fancy indexing adds once each
    cover[starts + n] -= 1
    return float(lengths[np.cumsum(cover[:-1]) > 0].sum() / lengths.sum())


def _repetition_reason(words: list[str], lower_words: list[str], cfg: ProseQualityConfig,
                       factor: float = 1.0) -> str | None:
    """Gopher's n-gram repetition rules, over lower-cased words; each limit times `factor`."""
    hashes = word_hashes(lower_words)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    for n, limit in sorted(cfg.max_top_ngram_chars.items()):
        if top_ngram_share(hashes, lengths, n) > limit * factor:
            return "top_ngram"
    # A repeated (n+1)-gram repeats its n-grams too, so the share can only fall as n grows:
    # once it is under a limit, every larger n with a limit at least as high passes unmeasured.
    bound = 1.0
    for n, limit in sorted(cfg.max_duplicate_ngram_chars.items()):
        if bound <= limit * factor:
            continue
        bound = duplicate_ngram_share(hashes, lengths, n)
        if bound > limit * factor:
            return "duplicate_ngrams"
    return None


_LETTERLESS_WORD = re.compile(r"(?<!\S)(?:[\d_]|[^\w\s])+(?!\S)")  # digits, _ and symbols only
_WORD_PUNCTUATION = ".,;:!?\"'()[]"


def _has_stop_words(lower_words: list[str], cfg: ProseQualityConfig) -> bool:
    wanted, found = set(cfg.stop_words), set()
    for word in lower_words:
        word = word.strip(_WORD_PUNCTUATION)
        if word in wanted:
            found.add(word)
            if len(found) >= cfg.min_stop_words:
                return True
    return False


def _shape_reason(text: str, words: list[str], cfg: ProseQualityConfig) -> str | None:
    """The word-shape rules: mean word length, symbols per word."""
    mean_length = sum(map(len, words)) / len(words)
    if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
        return "mean_word_length"
    ellipses = text.count("...") + text.count("…")
    if max(text.count("#"), ellipses) / len(words) > cfg.max_symbol_word_ratio:
        return "symbol_ratio"
    return None


def _alpha_reason(text: str, words: list[str], cfg: ProseQualityConfig) -> str | None:
    if len(words) - len(_LETTERLESS_WORD.findall(text)) < cfg.min_alpha_words * len(words):
        return "alpha_words"
    return None


class _Judged:
    """The text the word-shape rules look at: all of it, or (for technical prose) its prose alone.

    The prose alone is judged only when the whole text fails, so that setting blocks aside can
    keep a document but never drop one; and only when enough prose is left to judge it by
    (junk laid out in columns must not pass for a table). It is found only then, too: most
    documents pass on their whole text and pay nothing for it.
    """

    def __init__(self, text: str, words: list[str], cfg: ProseQualityConfig):
        self.text, self.words, self.cfg = text, words, cfg
        self._split: tuple[tuple[str, list[str]] | None, int] | None = None

    def _prose(self) -> tuple[tuple[str, list[str]] | None, int]:
        """((prose, its words) or None when there is not enough of it, lines set aside)."""
        if self._split is None:
            prose, n_blocks = prose_of(self.text) if self.cfg.set_aside_blocks else (self.text, 0)
            prose_words = prose.split()
            enough = n_blocks and len(prose_words) >= max(self.cfg.min_words // 2, len(self.words) // 8, 1)
            self._split = ((prose, prose_words) if enough else None), n_blocks
        return self._split

    @property
    def n_blocks(self) -> int:
        return self._prose()[1]

    def reason(self, rule) -> str | None:
        reason = rule(self.text, self.words, self.cfg)
        if reason and self.cfg.set_aside_blocks:
            prose = self._prose()[0]
            if prose is not None and rule(*prose, self.cfg) is None:
                return None
        return reason

    def duplicate_line_reason(self, lines: list[str]) -> str | None:
        """Code repeats its lines (decorators, `end`, table borders): technical prose is judged on its prose lines."""
        def rule(text, _words, cfg) -> str | None:
            share, chars = _duplicate_shares(lines if text is self.text else
                                             [line for line in (r.strip() for r in text.split("\n")) if line])
            return ("duplicate_lines" if share > cfg.max_duplicate_lines or chars > cfg.max_duplicate_line_chars
                    else None)

        return self.reason(rule)

    def repetition_reason(self, lower_words: list[str]) -> str | None:
        """Gopher's n-gram rules; a technical document that fails them is judged again with its allowance."""
        reason = _repetition_reason(self.words, lower_words, self.cfg)
        factor = self.cfg.technical_repetition_factor
        if reason and self.cfg.set_aside_blocks and factor > 1 and looks_technical(self.text, self.n_blocks):
            return _repetition_reason(self.words, lower_words, self.cfg, factor)
        return reason


def prose_reason(text: str, cfg: ProseQualityConfig) -> str | None:
    """Why prose `text` fails the Gopher rules, or None when it passes."""
    words = text.split(None, cfg.max_words)  # at most max_words+1 pieces, however long the text
    if len(words) < cfg.min_words:
        return "too_few_words"
    if len(words) > cfg.max_words:
        return "too_many_words"
    judged = _Judged(text, words, cfg)
    reason = judged.reason(_shape_reason)
    if reason:
        return reason
    lines = [line for line in (raw.strip() for raw in text.split("\n")) if line]
    if sum(line.startswith(BULLETS) for line in lines) > cfg.max_bullet_lines * len(lines):
        return "bullet_lines"
    if sum(line.endswith(("...", "…")) for line in lines) > cfg.max_ellipsis_lines * len(lines):
        return "ellipsis_lines"
    reason = judged.reason(_alpha_reason)
    if reason:
        return reason
    lower_words = text.lower().split()
    if len(lower_words) != len(words):  # lower-casing never adds spaces, but be exact if it did
        lower_words = [w.lower() for w in words]
    if cfg.min_stop_words and not _has_stop_words(lower_words, cfg):
        return "stop_words"
    reason = judged.duplicate_line_reason(lines)
    if reason:
        return reason
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    para_share, para_chars = _duplicate_shares(paragraphs)
    if para_share > cfg.max_duplicate_paragraphs or para_chars > cfg.max_duplicate_paragraph_chars:
        return "duplicate_paragraphs"
    return judged.repetition_reason(lower_words)


# ---------------------------------------------------------------------------------------------
# Code

# Strings and comments of brace languages, where brackets do not count. Two flavours of quote:
# where ' opens a string (JavaScript, PHP, CSS) and where it only wraps one character (C, Java, Rust).
_BRACE_NOISE_STRINGS = re.compile(
    r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`", re.DOTALL)
_BRACE_NOISE_CHARS = re.compile(
    r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\[^\n]{1,10}?|[^'\\\n])'|`(?:\\.|[^`\\])*`", re.DOTALL)
_SINGLE_QUOTE_STRINGS = {"javascript", "typescript", "php", "css", "scss", "less", "dart", "groovy"}
_NON_WORD = re.compile(r"\W+")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def brackets_balance(code: str, language: str) -> bool:
    noise = _BRACE_NOISE_STRINGS if language in _SINGLE_QUOTE_STRINGS else _BRACE_NOISE_CHARS
    stack: list[str] = []
    for char in re.sub(r"[^()\[\]{}]", "", noise.sub(" ", code)):
        if char in "([{":
            stack.append(char)
        elif not stack or stack.pop() != _PAIRS[char]:
            return False
    return not stack


def python_parses(code: str) -> bool:
    # A parse builds a large tree of short-lived objects; the cycle collector only slows that down.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like are warnings, not errors
            ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    finally:
        if collecting:
            gc.enable()
    return True


class _CodeRules:
    def __init__(self, cfg: CodeQualityConfig):
        self.cfg = cfg
        self.generated = re.compile("|".join(f"(?:{p})" for p in cfg.generated_patterns),
                                    re.IGNORECASE | re.MULTILINE) \
            if cfg.generated_patterns else None

    def reason(self, text: str, language: str | None) -> str | None:
        cfg = self.cfg
        lines = text.split("\n")
        longest = max(map(len, lines))
        if longest > cfg.max_line_length or len(text) / len(lines) > cfg.max_mean_line_length:
            return "long_lines"
        alnum = len(_NON_WORD.sub("", text))  # letters, digits and _ in any script
        if alnum < cfg.min_alnum_fraction * len(text):
            return "low_alnum"
        if (cfg.drop_generated and self.generated
                and self.generated.search("\n".join(lines[: cfg.generated_scan_lines]))):
            return "auto_generated"
        if language == "python" and cfg.python_must_parse and not python_parses(text):
            return "syntax_error"
        if language in C_LIKE and cfg.check_brackets and not brackets_balance(text, language):
            return "unbalanced_brackets"
        return None


# ---------------------------------------------------------------------------------------------


class QualityStep(Step):
    """Drop documents that fail the prose or code rules, with the rule's name as the reason."""

    name = "quality"

    def __init__(self, config: QualityConfig | None = None):
        self.config = config or QualityConfig()
        self._code = _CodeRules(self.config.code)

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        if doc.meta.get("kind") == "code":
            if not self.config.code.enabled:
                return None
            stats.counters["code_checked"] += 1
            return self._code.reason(doc.text, doc.meta.get("language"))
        if not self.config.prose.enabled:
            return None
        stats.counters["prose_checked"] += 1
        return prose_reason(doc.text, self.config.prose)
