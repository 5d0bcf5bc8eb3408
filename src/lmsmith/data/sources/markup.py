"""Markup to plain text: block elements become line breaks, scripts and styles vanish.

Used for the chapters of EPUB books, which are well-formed XHTML written by publishers, where a
main-text extractor (trafilatura, made for web pages with menus and ads) would throw away
short chapters as boilerplate.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "section",
           "article", "header", "footer", "table", "ul", "ol", "dl", "dt", "dd", "hr", "figure", "figcaption"}
_HIDDEN = {"script", "style", "head", "title"}
_BLANK_RUN = re.compile(r"\n\s*\n\s*(?:\n\s*)+")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n\n" if tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def markup_text(markup: str) -> str:
    """The text of an (X)HTML document, paragraphs apart by one blank line."""
    collector = _TextCollector()
    collector.feed(markup)
    collector.close()
    lines = [" ".join(line.split()) for line in "".join(collector.parts).split("\n")]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip()
