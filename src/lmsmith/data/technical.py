"""Technical prose: the code blocks and tables inside it, and the signs that a text is technical.

Manuals, API references and SQL documentation carry code samples, grammar rules and tables in
among their sentences. The Gopher rules judge word shapes ("80% of words have a letter", few
symbols) and repetition; lines of code and table borders fail the first by nature, and technical
sentences repeat their terms ("an optional function that will be called with the result") more
than the web text those thresholds were set on. So the quality step may judge word shapes on the
prose alone (code lines and table borders set aside, table cells read as text), and allows
technical documents more repetition: spam repeats itself three or more times as much, so it
still goes.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s*(```|~~~)")
_DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)(\s|$)")
_INDENTED = re.compile(r"^( {3,}|\t)\S")  # reStructuredText, pydoc and Markdown indent code and tables
_TABLE_BORDER = re.compile(r"^\s*[-=+|:]{3,}[-=+|: ]*$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_COLUMN_GAP = re.compile(r"[^\s.!?:;,] {2,}(?=\S)")  # two spaces after a full stop are a typing habit, not a column
_CODE_CHARS = re.compile(r"[=;{}\[\]<>]|\(\)|::|->")
_LETTER = re.compile(r"[^\W\d_]")
_INLINE_CODE = re.compile(r"``[^`\n]+``|`[^`\n]+`|\b[A-Za-z_][\w.]*\(\)|\b[a-z]+_[a-z_]+\b")


def _reads_as_sentence(line: str) -> bool:
    """Words with letters and none of code's punctuation: an indented line of prose (a hanging indent)."""
    words = line.split()
    return sum(1 for w in words if _LETTER.search(w)) >= 0.8 * len(words) and not _CODE_CHARS.search(line)


def _is_code_line(line: str) -> bool:
    """Doctest, laid out in three or more columns, or indented and not a sentence: read as code."""
    if _DOCTEST.match(line) or len(_COLUMN_GAP.findall(line.strip())) >= 2:
        return True
    return bool(_INDENTED.match(line)) and not _reads_as_sentence(line)


def prose_of(text: str) -> tuple[str, int]:
    """(`text` with code lines and table borders left out and table rows read as their cells, lines left out)."""
    prose, left_out = [], 0
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            left_out += 1
        elif _TABLE_ROW.match(line):
            prose.append(line.replace("|", " "))
            left_out += 1
        elif fenced or _TABLE_BORDER.match(line) or _is_code_line(line):
            left_out += 1
        else:
            prose.append(line)
    return "\n".join(prose), left_out


def looks_technical(text: str, n_block_lines: int, min_markers: int = 3) -> bool:
    """Code or table lines, or inline code (``name``, `name`, f(), snake_case names) a few times."""
    if n_block_lines:
        return True
    return sum(1 for _ in zip(range(min_markers), _INLINE_CODE.finditer(text))) >= min_markers
