"""Bytes to text: tell binary from text, and decode text whatever its encoding.

UTF-8 is tried first. A file that is UTF-8 except for a few stray bytes (a legacy byte pasted
into a modern file) keeps its UTF-8 and has only the stray bytes read as Windows-1252. Anything
else goes to charset-normalizer, which detects the encoding from the byte statistics.
"""

from __future__ import annotations

import codecs
import io
import re
import tokenize

import charset_normalizer

SNIFF_BYTES = 8192

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_MAGIC = (b"%PDF-", b"PK\x03\x04", b"\x7fELF", b"\x89PNG", b"GIF87a", b"GIF89a", b"\xff\xd8\xff",
          b"SQLite format 3\x00", b"\x1f\x8b", b"(\xb5/\xfd", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf")
# Control bytes that text files do carry: tab, newline, vertical tab, form feed, return, escape, backspace.
_TEXT_CONTROLS = frozenset(b"\t\n\x0b\x0c\r\x1b\x08")
_CONTROL_BYTES = bytes(b for b in range(32) if b not in _TEXT_CONTROLS) + b"\x7f"
_STRAY_BYTE_LIMIT = 0.01  # at most 1% invalid bytes for a file to count as "UTF-8 with strays"


class NotText(Exception):
    """The bytes are not text in any encoding we can detect."""


def bom_encoding(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return None


def looks_binary(sample: bytes) -> bool:
    """True for the first bytes of an image, archive, executable or other non-text file.

    One NUL byte does not make a file binary (logs and dumps carry a few; the format step
    removes them), but many do, as do the magic numbers of common binary formats.
    """
    if not sample or bom_encoding(sample):
        return False
    if sample.startswith(_MAGIC):
        return True
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return sample.count(0) > len(sample) // 100 or controls > len(sample) // 10


def _cp1252_for_stray_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    bad = error.object[error.start:error.end]
    return bad.decode("cp1252", errors="replace"), error.end


codecs.register_error("lmsmith-cp1252", _cp1252_for_stray_bytes)


def python_source_encoding(data: bytes) -> str | None:
    """The encoding a Python file declares (PEP 263 cookie), or None when it declares none."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        return None
    return None if encoding in ("utf-8", "utf-8-sig") else encoding


def decode_text(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """(text, encoding) for bytes that are text; raises NotText when no encoding fits."""
    if declared:
        try:
            return data.decode(declared), declared
        except (UnicodeDecodeError, LookupError):
            pass  # the declaration is wrong; detect instead
    bom = bom_encoding(data)
    if bom:
        try:
            return data.decode(bom), bom
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    as_utf8 = data.decode("utf-8", errors="replace")
    strays = as_utf8.count("\ufffd") - data.count("\ufffd".encode())
    has_multibyte = len(as_utf8) + strays < len(data)
    if has_multibyte and strays <= _STRAY_BYTE_LIMIT * len(data):
        return data.decode("utf-8", errors="lmsmith-cp1252"), "utf-8+cp1252"
    return _detected(data)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _symbols_inside_words(text: str) -> int:
    """Non-letters wedged between two letters ("na’ve", "br¹lee"): the mark of a wrong code page."""
    count = 0
    for match in _NON_ASCII.finditer(text):
        i = match.start()
        if (not text[i].isalpha() and 0 < i < len(text) - 1
                and text[i - 1].isalpha() and text[i + 1].isalpha()):
            count += 1
    return count


def _detected(data: bytes) -> tuple[str, str]:
    """charset-normalizer's pick, corrected where its statistics are weakest.

    On mostly-ASCII text with a few accented letters, several single-byte code pages look
    equally clean to it and it may pick a Baltic or DOS one. Among the candidates about as
    clean as its best, keep those whose decoding puts the fewest symbols inside words; of
    these, Windows-1252 (by far the most common legacy encoding; browsers read "latin-1" as
    it) wins if its language coherence is as good as the first one's, else the first one does.
    """
    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        raise NotText("no text encoding fits")
    candidates = [(m.encoding, str(m), m.coherence) for m in matches if m.chaos <= best.chaos + 0.05]
    try:
        as_cp1252 = data.decode("cp1252")
        coherence = max((m.coherence for m in matches if "cp1252" in m.could_be_from_charset), default=-1.0)
        candidates.append(("cp1252", as_cp1252, coherence))
    except UnicodeDecodeError:
        pass
    scored = [(_symbols_inside_words(text), encoding, text, coherence) for encoding, text, coherence in candidates]
    fewest = min(score for score, *_ in scored)
    clean = [(encoding, text, coherence) for score, encoding, text, coherence in scored if score == fewest]
    first = clean[0]
    encoding, text, _ = next((c for c in clean if c[0] == "cp1252" and c[2] >= first[2]), first)
    return text, encoding
