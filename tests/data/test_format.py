"""The format step: repairs what is broken, tidies whitespace, and leaves style and code alone."""

import ftfy
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lmsmith.core.config import ConfigError, parse_section
from lmsmith.data.document import Document
from lmsmith.data.format import FormatStep
from lmsmith.data.step import StepStats
from lmsmith.schema.curate import FormatConfig


def clean(text, code=False, **config):
    return FormatStep(FormatConfig(**config)).clean(text, code, StepStats("format"))


def test_mojibake_is_repaired_but_style_is_kept():
    broken = "The cafÃ© serves crÃ¨me brÃ»lÃ©e."
    assert clean(broken) == "The café serves crème brûlée."
    styled = "“Curly quotes” stay, as do the ﬁ ligature, ＦＵＬＬ width and ½."
    assert clean(styled) == styled


@pytest.mark.parametrize("code", [False, True])
def test_control_characters_go_but_newline_and_tab_stay(code):
    stats = StepStats("format")
    text = FormatStep().clean("a\x00b\x07c\td\x1be\x7ff\x85\nnext", code, stats)
    assert text in ("abc\tdef\nnext", "abc\tdef…\nnext")  # prose: ftfy reads the C1 byte as cp1252's …
    if code:
        assert stats.counters["control_chars_removed"] == 5


def test_terminal_colour_codes_leave_no_residue_in_prose():
    assert clean("\x1b[31mred\x1b[0m alert") == "red alert"


def test_line_endings_trailing_space_and_blank_runs():
    text = "one  \r\ntwo\t\rthree\n\n\n\n\n\nfour   \n\n"
    assert clean(text) == "one\ntwo\nthree\n\n\nfour"
    assert clean(text, max_blank_lines=0) == "one\ntwo\nthree\nfour"


def test_code_keeps_indentation_and_exact_characters():
    code = "def f(x):\r\n    if x:  \r\n        return '&lt; â€œ'\n\n\n\n\n    return 0\n"
    out = clean(code, code=True)
    assert out == "def f(x):\n    if x:\n        return '&lt; â€œ'\n\n\n    return 0"
    # The same text as prose is repaired: the mojibake becomes the quote it was meant to be.
    assert "“" in clean(code, code=False)


def test_nfc_joins_combining_marks_in_prose_only():
    decomposed = "Cafe\u0301 au lait"
    assert clean(decomposed) == "Caf\u00e9 au lait"
    assert clean(decomposed, code=True) == decomposed


def test_empty_after_cleaning_is_dropped():
    step = FormatStep()
    stats = StepStats("format")
    docs = [Document("1", " \n\x00\t\n ", "t"), Document("2", "kept\r\n", "t")]
    kept, dropped = step(docs, stats)
    assert [d.text for d in kept] == ["kept"]
    assert [reason for _, reason in dropped] == ["empty"]
    assert stats.dropped_docs == {"empty": 1}


def test_config_is_checked():
    with pytest.raises(ConfigError, match="max_blank_lines must be 0 or more"):
        parse_section(FormatConfig, {"max_blank_lines": -1}, "format")
    with pytest.raises(ConfigError, match="did you mean 'fix_unicode'"):
        parse_section(FormatConfig, {"fix_unicod": True}, "format")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
def test_ascii_fast_path_matches_ftfy(text):
    """The shortcut for plain ASCII must give what ftfy itself gives with the same settings."""
    step = FormatStep()
    config = ftfy.TextFixerConfig(uncurl_quotes=False, fix_latin_ligatures=False, fix_character_width=False,
                                  normalization="NFC", explain=False)
    with_ftfy = ftfy.fix_text(text, config)
    ours = step._fix_unicode(text)
    strip_controls = FormatStep(FormatConfig(fix_unicode=False, normalization="none"))
    stats = StepStats("format")
    assert strip_controls.clean(ours, False, stats) == strip_controls.clean(with_ftfy, False, stats)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.booleans())
@example("\x81\u00c2\x80", False)  # found by CI: mojibake split by a control character
def test_cleaning_is_idempotent(text, code):
    once = clean(text, code=code)
    assert clean(once, code=code) == once
