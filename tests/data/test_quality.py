"""The quality step: Gopher rules on prose, must-be-real rules on code, each on planted examples."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsmith.core.config import ConfigError, parse_section
from lmsmith.data.document import Document
from lmsmith.data.ngrams import word_hashes
from lmsmith.data.quality import QualityStep, brackets_balance, duplicate_ngram_share, prose_reason, top_ngram_share
from lmsmith.data.step import StepStats
from lmsmith.schema.curate import CodeQualityConfig, ProseQualityConfig, QualityConfig

PROSE = (
    "The river town grew slowly during the first years after the bridge was finished. Farmers brought "
    "their grain to the new mill, and the miller kept careful records of every sack that crossed his "
    "scale. Those ledgers survive today in the county archive, where historians have used them to "
    "estimate harvests, prices and even the weather of each season. Reading them, one notices how often "
    "a wet spring was followed by a lean autumn, and how quickly the price of flour rose whenever the "
    "roads were closed by snow. The town council met in a room above the bakery."
)

TECHNICAL = (
    "To list the orders of one customer, run SELECT id, total FROM orders WHERE customer_id = 42; and "
    "sort them with ORDER BY created_at DESC. The index idx_orders_customer (customer_id, created_at) "
    "makes this query fast: without it, PostgreSQL 16.2 scans the whole table. Use EXPLAIN ANALYZE to "
    "check the plan, and set work_mem = '64MB' if the sort spills to disk. Note that NULL values sort "
    "last by default; write NULLS FIRST to change that. See section 4.3 of the manual for the details "
    "of each option, and remember to VACUUM after large deletes."
)


def reason(text, **config):
    return prose_reason(text, ProseQualityConfig(**config))


def test_good_and_technical_prose_pass():
    assert reason(PROSE) is None
    assert reason(TECHNICAL) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Too short to be a document, but real words.", "too_few_words"),
        (" ".join(["Pneumonoultramicroscopicsilicovolcanoconiosis"] * 30 + PROSE.split()[:40]), "mean_word_length"),
        (PROSE + " " + " ".join(["#tag"] * 15), "symbol_ratio"),
        (PROSE + " And then..." * 20, "symbol_ratio"),
        ("\n".join(f"- item number {i} of the list to be done with the rest" for i in range(20)) + "\n" + PROSE,
         "bullet_lines"),
        ("\n".join(f"line {i} of a story that trails off and was left..." for i in range(10)) + "\n" + PROSE,
         "ellipsis_lines"),
        (PROSE + " " + " ".join(["12345", "=>", "+-", "42.0", "$$", "::"] * 15), "alpha_words"),
        (" ".join(["Apples pears plums grapes melons lemons limes cherries"] * 10), "stop_words"),
    ],
)
def test_each_gopher_rule_fires_on_its_planted_example(text, expected):
    assert reason(text) == expected


def test_word_count_bounds_are_configurable():
    assert reason(PROSE, min_words=200) == "too_few_words"
    assert reason(PROSE, min_words=10, max_words=40) == "too_many_words"


def test_stop_word_rule_can_be_turned_off_for_other_languages():
    german = ("Der Fluss fließt ruhig durch das Tal, vorbei an Wiesen, Feldern und alten Mühlen. " * 8)
    assert reason(german) == "stop_words"
    assert reason(german, min_stop_words=0, max_duplicate_ngram_chars={}, max_top_ngram_chars={},
                  max_duplicate_lines=1.0, max_duplicate_line_chars=1.0) is None


def test_repetition_rules_fire():
    lines = PROSE.split(". ")
    repeated_lines = "\n".join(lines + lines[:4] * 3)
    assert reason(repeated_lines) == "duplicate_lines"
    paragraphs = "\n\n".join([PROSE, TECHNICAL, PROSE])
    assert reason(paragraphs) == "duplicate_lines"  # each paragraph is one line here
    assert reason(paragraphs, max_duplicate_lines=1.0, max_duplicate_line_chars=1.0) == "duplicate_paragraphs"
    spam = PROSE + " " + "buy cheap watches now " * 30
    assert reason(spam) == "top_ngram"
    passages = PROSE + " " + " ".join(PROSE.split()[10:40]) + " " + TECHNICAL
    assert reason(passages, technical_repetition_factor=1.0) == "duplicate_ngrams"
    assert reason(passages) is None  # technical prose (inline code: customer_id) may repeat itself more ...
    assert reason(PROSE + " " + " ".join(PROSE.split()[10:40])) == "duplicate_ngrams"  # ... other prose may not


def test_a_huge_single_line_is_judged_without_splitting_it_all():
    text = "word " * 2_000_000  # 10 MB, two million words
    assert reason(text) == "too_many_words"


# -- the n-gram shares against a plain-Python reference ------------------------------------------


def reference_top_share(words, n):
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts = {}
    for g in grams:
        counts[g] = counts.get(g, 0) + 1
    best = max(counts.values())
    if best < 2:
        return 0.0
    top = next(g for g in grams if counts[g] == best)  # the first gram to reach the top count
    return best * sum(map(len, top)) / sum(map(len, words))


def reference_duplicate_share(words, n):
    seen, covered = set(), [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            for j in range(i, i + n):
                covered[j] = True
        seen.add(gram)
    total = sum(map(len, words))
    return sum(len(w) for w, c in zip(words, covered) if c) / total if total else 0.0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc", "dddd", "e", "ff"]), min_size=0, max_size=60),
       st.integers(2, 10))
def test_ngram_shares_match_a_plain_python_reference(words, n):
    hashes = word_hashes(words)
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    assert duplicate_ngram_share(hashes, lengths, n) == pytest.approx(reference_duplicate_share(words, n))
    ours = top_ngram_share(hashes, lengths, n)
    # Ties between equally frequent n-grams may pick a different one; their share differs only by word length.
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if grams:
        counts = {g: grams.count(g) for g in grams}
        best = max(counts.values())
        total = sum(map(len, words))
        allowed = {best * sum(map(len, g)) / total for g, c in counts.items() if c == best} if best > 1 else {0.0}
        assert any(ours == pytest.approx(a) for a in allowed)
        assert reference_top_share(words, n) == pytest.approx(ours) or len(allowed) > 1
    else:
        assert ours == 0.0


# -- code ------------------------------------------------------------------------------------


def code_reason(text, language, **config):
    step = QualityStep(QualityConfig(code=CodeQualityConfig(**config)))
    doc = Document("x", text, "t", {"kind": "code", "language": language})
    return step.decide(doc, StepStats("quality"))


GOOD_PY = '''"""A module.

An abstract syntax tree can be generated by passing a flag, says this docstring on line 3.
"""


def area(width, height):
    return width * height
'''


def test_python_must_parse():
    assert code_reason(GOOD_PY, "python") is None
    assert code_reason("def broken(:\n    pass\n", "python") == "syntax_error"
    assert code_reason("print 'python two'\n", "python") == "syntax_error"
    assert code_reason("def broken(:\n", "python", python_must_parse=False) is None


@pytest.mark.parametrize("header", [
    "# This file is generated by make_tables.py. DO NOT EDIT.",
    "# Auto-generated by Tools/scripts/generate_token.py",
    "// Code generated by protoc-gen-go. DO NOT EDIT.",
    "/* @generated */",
])
def test_generated_files_are_dropped(header):
    assert code_reason(header + "\n" + GOOD_PY, "python") == "auto_generated"


def test_generated_mentioned_in_prose_below_the_top_is_not_a_marker():
    assert code_reason(GOOD_PY, "python") is None  # "can be generated by" in a docstring
    late = "\n" * 20 + "# DO NOT EDIT below this line\n" + GOOD_PY
    assert code_reason(late, "python") is None


def test_absurd_lines_and_symbol_soup_are_dropped():
    assert code_reason("x = [" + "1, " * 600 + "]\n", "python") == "long_lines"
    minified = "var a=1;" * 20 + "\n"
    assert code_reason(minified * 10, "javascript") == "long_lines"
    assert code_reason("# " + "-=+*/ " * 10 + "\nx = 1\n", "python") == "low_alnum"


@pytest.mark.parametrize("code, language, ok", [
    ("int main() { if (x) { return 0; } }", "c", True),
    ("int main() { if (x) { return 0; }", "c", False),
    ("char c = '{'; /* { */ // (\nint f() { return \"}\"; }", "c", True),
    ("fn longest<'a>(x: &'a str, y: &'a str) -> &'a str { if x.len() > y.len() { x } else { y } }", "rust", True),
    ("const s = 'it (is'; const t = `a ${b} }`; function f() { return [1, 2]; }", "javascript", True),
    ("function f() { return [1, 2); }", "javascript", False),
    ("}{", "go", False),
])
def test_brackets_balance_outside_strings_and_comments(code, language, ok):
    assert brackets_balance(code, language) is ok


def test_unbalanced_brace_language_file_is_dropped_but_other_languages_are_not_bracket_checked():
    assert code_reason("int f() {\n  return 1;\n", "c") == "unbalanced_brackets"
    assert code_reason("echo (\n", "shell") is None


def test_the_step_counts_and_routes_by_kind():
    step = QualityStep()
    stats = StepStats("quality")
    docs = [
        Document("1", PROSE, "t", {"kind": "prose"}),
        Document("2", "short", "t", {"kind": "prose"}),
        Document("3", GOOD_PY, "t", {"kind": "code", "language": "python"}),
        Document("4", "def (", "t", {"kind": "code", "language": "python"}),
    ]
    kept, dropped = step(docs, stats)
    assert [d.id for d in kept] == ["1", "3"]
    assert sorted(r for _, r in dropped) == ["syntax_error", "too_few_words"]
    assert stats.counters == {"prose_checked": 2, "code_checked": 2}
    off = QualityStep(parse_section(QualityConfig, {"prose": {"enabled": False}}, "quality"))
    assert len(off(docs, StepStats("quality"))[0]) == 3


def test_config_is_checked_and_ngram_tables_accept_string_keys():
    cfg = parse_section(ProseQualityConfig, {"max_top_ngram_chars": {"2": 0.3}}, "quality.prose")
    assert cfg.max_top_ngram_chars == {2: 0.3}
    with pytest.raises(ConfigError, match="must be an n-gram size"):
        parse_section(ProseQualityConfig, {"max_top_ngram_chars": {"two": 0.3}}, "quality.prose")
    with pytest.raises(ConfigError, match="min_words <= max_words"):
        parse_section(ProseQualityConfig, {"min_words": 10, "max_words": 5}, "quality.prose")
    with pytest.raises(ConfigError, match="not a valid regex"):
        parse_section(CodeQualityConfig, {"generated_patterns": ["("]}, "quality.code")
    with pytest.raises(ConfigError, match="unknown key 'quality.prose.min_word'"):
        parse_section(QualityConfig, {"prose": {"min_word": 3}}, "quality")


def test_real_prose_from_many_shuffles_mostly_passes():
    # Sentences of the two samples, shuffled into new documents: all are fine prose.
    rng = random.Random(0)
    sentences = (PROSE + " " + TECHNICAL).split(". ")
    for _ in range(20):
        rng.shuffle(sentences)
        assert reason(". ".join(sentences)) is None
