"""The format step: repair broken Unicode and tidy whitespace without changing the text's style.

Prose goes through ftfy, set to repair only what is broken (mojibake, bad escapes, surrogates)
and never to restyle what is fine: curly quotes stay curly, ligatures and full-width forms stay,
and normalisation is at most NFC (canonical, never changing how text looks). Every document then
loses control characters other than newline and tab, gets `\n` line endings, loses trailing
whitespace and runs of blank lines. Code keeps its indentation and, by default, its exact
characters (its string literals may hold odd text on purpose), so ftfy leaves it alone.
"""

from __future__ import annotations

import re
import unicodedata

from lmsmith.data.document import Document
from lmsmith.data.step import Step, StepStats
from lmsmith.schema.curate import FormatConfig

# C0 controls but tab and newline, DEL, and the C1 range; a carriage return is handled earlier.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")




class FormatStep(Step):
    """Repair and tidy each document; drop the ones left empty (`empty`)."""

    name = "format"

    def __init__(self, config: FormatConfig | None = None):
        self.config = config or FormatConfig()
        self._blank_run = re.compile(rf"\n{{{self.config.max_blank_lines + 2},}}")
        self._ftfy_config = None

    def _fix_unicode(self, text: str) -> str:
        import ftfy

        if text.isascii() and "&" not in text and "\x1b" not in text:
            # With these settings ftfy changes ASCII text only through HTML entities, terminal
            # escapes and control characters (removed below anyway): skip its slow per-line pass.
            return text
        if self._ftfy_config is None:
            self._ftfy_config = ftfy.TextFixerConfig(
                uncurl_quotes=False, fix_latin_ligatures=False, fix_character_width=False,
                normalization="NFC" if self.config.normalization == "NFC" else None, explain=False,
            )
        return ftfy.fix_text(text, self._ftfy_config)

    def clean(self, text: str, is_code: bool, stats: StepStats) -> str:
        """The cleaned form of `text`; counts what changed in `stats.counters`."""
        cfg = self.config
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            stats.counters["line_endings_normalized"] += 1
        if text.startswith("\ufeff"):
            text = text[1:]
        repair = (not is_code or cfg.fix_unicode_in_code) and cfg.fix_unicode
        if repair:
            fixed = self._fix_unicode(text)
            if fixed != text:
                stats.counters["unicode_fixed"] += 1
                text = fixed
        elif (not is_code or cfg.fix_unicode_in_code) and cfg.normalization == "NFC":
            text = unicodedata.normalize("NFC", text)
        text, removed = _CONTROLS.subn("", text)
        while removed:
            stats.counters["control_chars_removed"] += removed
            if not repair:
                break
            # A control character can split mojibake ("Â\x81€"): with it gone, ftfy sees the pair
            # anew. Repeat until nothing changes, so that cleaning clean text changes nothing.
            fixed = self._fix_unicode(text)
            if fixed == text:
                break
            text, removed = _CONTROLS.subn("", fixed)
        if cfg.trim_trailing_whitespace:
            # Line by line: a regex anchored at line ends is quadratic in runs of inner spaces.
            text = "\n".join(line.rstrip() for line in text.split("\n"))
        text, runs = self._blank_run.subn("\n" * (cfg.max_blank_lines + 1), text)
        if runs:
            stats.counters["blank_runs_collapsed"] += runs
        return text.strip("\n")

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        text = self.clean(doc.text, doc.meta.get("kind") == "code", stats)
        if not text.strip():
            return "empty"
        doc.text = text
        return None
