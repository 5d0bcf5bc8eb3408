"""Privacy: replace personal data and secrets with typed placeholders such as `<EMAIL>`.

Every pattern is matched first and then checked, so that look-alikes stay: card numbers must
pass the Luhn check and start like a real card, IBANs must pass mod 97 for their country's
length, social security numbers must use an area the SSA issues, and IP addresses are parsed
with `ipaddress`. What is *not* personal data stays on purpose:

- IP addresses that are not globally routable: loopback (127.0.0.1), private (10/8, 172.16/12,
  192.168/16), link-local, shared, reserved, multicast, and the documentation ranges
  192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 (RFC 5737/3849 reserve them
  for examples, so they never name a real host or person). A dotted quad that follows a word
  like "version" or "section", or whose parts are all single digits (1.2.3.4, 2.7.2.2), is a
  version or section number, not an address.
- Dates, version numbers, ISBNs, UUIDs and git hashes: no pattern below accepts them.
- Numbers that only look like phone numbers (plain digit runs, pairs of digits) count as
  phones only right after a word such as "phone", "tel" or "fax".

Redaction never drops a document; it counts what it replaced, by kind ("redacted:email").
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable

from lmsmith.data.document import Document
from lmsmith.data.step import Step, StepStats
from lmsmith.schema.curate import PLACEHOLDERS, PiiConfig

# ---------------------------------------------------------------------------------------------
# Matching. Every pattern starts with a literal or a character class, so that the regex engine
# can skip ahead quickly; what must not come *before* a match is checked afterwards, in Python,
# on the few candidates (a leading look-behind would make the engine try every position).


def _starts_clean(m: re.Match, forbidden: str = "") -> bool:
    """True when the match does not continue a word (or one of the `forbidden` characters) on its left."""
    start = m.start()
    if start == 0:
        return True
    ch = m.string[start - 1]
    return not (ch.isalnum() or ch == "_" or ch in forbidden)


def _substitute(
    pattern: re.Pattern, text: str, replacement: Callable[[re.Match, str], str | None], haystack: str | None = None
) -> tuple[str, int]:
    """Replace the matches for which `replacement(match, text)` returns text (None keeps the match).

    `haystack` is where to search, when not `text` itself: `text.lower()` lets a case-blind
    pattern run without re.IGNORECASE, which would stop the engine from skipping ahead.
    """
    pieces, last = [], 0
    for m in pattern.finditer(text if haystack is None else haystack):
        out = replacement(m, text)
        if out is not None:
            pieces += [text[last : m.start()], out]
            last = m.end()
    if not pieces:
        return text, 0
    return "".join(pieces) + text[last:], len(pieces) // 2


def _substitute_case_blind(
    pattern: re.Pattern, text: str, replacement: Callable[[re.Match, str], str | None], needles: tuple[str, ...] = ()
) -> tuple[str, int]:
    """`_substitute` for a lowercase `pattern`, run on the lowercased text; skipped when none of the
    lowercase `needles` occurs."""
    lower = text.lower()
    if needles and not any(needle in lower for needle in needles):
        return text, 0
    if len(lower) != len(text):  # a few letters, like "İ", grow when lowercased: indices would shift
        return _substitute(re.compile(pattern.pattern, re.IGNORECASE), text, replacement)
    return _substitute(pattern, text, replacement, lower)


def _placeholder(kind: str, clean_left: str = "") -> Callable[[re.Match, str], str | None]:
    """A replacement that puts the kind's placeholder wherever the match starts cleanly."""
    return lambda m, text: PLACEHOLDERS[kind] if _starts_clean(m, clean_left) else None


# ---------------------------------------------------------------------------------------------
# Secrets

_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    re.DOTALL,
)
_AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "APKA", "AROA", "ASCA")
# (substrings any of which must be present, pattern): the substring test is far cheaper than a search.
_TOKENS = [
    (_AWS_PREFIXES, re.compile(rf"(?:{'|'.join(_AWS_PREFIXES)})[0-9A-Z]{{16}}(?![0-9A-Za-z])")),  # AWS key ids
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), re.compile(r"gh[pousr]_[A-Za-z0-9]{36,255}(?!\w)")),  # GitHub
    (("github_pat_",), re.compile(r"github_pat_[A-Za-z0-9_]{22,255}")),
    (("xox",), re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,250}")),  # Slack
    (("hooks.slack.com",), re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    (("AIza",), re.compile(r"AIza[0-9A-Za-z_-]{35}(?![\w-])")),  # Google API keys
    (("k_live_",), re.compile(r"[sr]k_live_[0-9A-Za-z]{20,}")),  # Stripe live keys
    (("eyJ",), re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")),  # JWTs
]
# A name that ends in one of these words, then = or :, then a value: `api_key = "..."`,
# `"password": "..."`, `password="..."`, or a bare `TOKEN=...` alone on its line (.env, YAML).
_ASSIGNMENT = re.compile(  # matched against the lowercased text
    r"(?:api[_-]?key|apikey|access[_-]?key|secret[_-]?key|auth[_-]?key|private[_-]?key|client[_-]?secret"
    r"|secret|password|passwd|pwd|token)"
    r"[\"']?[ \t]*(?::=|=>|[:=])[ \t]*"
    r"(?:([\"'])([^\"'\s]{4,200})\1|([^\s\"'#;,()\[\]{}<>$%]{6,200})[ \t]*(?=\r?\n|$))"
)
_LINE_HEAD_OF_BARE_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?[\w.-]*")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _looks_like_secret_value(value: str) -> bool:
    """Refuse templates and placeholders (`{token}`, `%s`, `<your key>`, `*****`, `xxxx`)."""
    return not any(ch in value for ch in "{}%$<>") and len(set(value.lower())) >= 3


def _looks_like_bare_secret(value: str) -> bool:
    # A bare value is code as often as a secret (`token = tok.strip`): ask for letters and digits.
    if _DOTTED_NAME.fullmatch(value) or value.lower() in {"none", "null", "true", "false", "required"}:
        return False
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value) and _looks_like_secret_value(value)


def _assignment_replacement(m: re.Match, text: str) -> str | None:
    secret = PLACEHOLDERS["secret"]
    if m.group(2) is not None:
        if not _looks_like_secret_value(m.group(2)):
            return None
        return text[m.start() : m.start(2)] + secret + m.group(1)
    line_start = text.rfind("\n", 0, m.start()) + 1
    if (not _LINE_HEAD_OF_BARE_ASSIGNMENT.fullmatch(text, line_start, m.start())
            or not _looks_like_bare_secret(m.group(3))):
        return None
    return text[m.start() : m.start(3)] + secret + text[m.end(3) : m.end()]


def _redact_secrets(text: str) -> tuple[str, int]:
    n_blocks = 0
    if "PRIVATE KEY" in text:
        text, n_blocks = _PRIVATE_KEY_BLOCK.subn(PLACEHOLDERS["secret"], text)
    total = n_blocks
    for needles, pattern in _TOKENS:
        if any(needle in text for needle in needles):
            text, n = _substitute(pattern, text, _placeholder("secret"))
            total += n
    text, n = _substitute_case_blind(
        _ASSIGNMENT, text, _assignment_replacement, ("key", "secret", "pass", "pwd", "token")
    )
    return text, total + n


# ---------------------------------------------------------------------------------------------
# E-mail addresses: found from their "@domain.tld", the local part read backwards from there.

_EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])")
_EMAIL_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
# "name (at) example (dot) org" and friends, as authors write them to dodge harvesters.
_AT_WORD = re.compile(r"(?i)[\[({]at[\])}]")
_OBFUSCATED_EMAIL = re.compile(
    r"(?i)[\w.+-]+[ \t]*[\[({]at[\])}][ \t]*[\w-]+(?:(?:\.|[ \t]*[\[({]dot[\])}][ \t]*)[\w-]+)+\b"
)


def _email_spans(text: str) -> list[tuple[int, int]]:
    spans, floor = [], 0
    for m in _EMAIL_DOMAIN.finditer(text):
        at = start = m.start()
        while start > max(floor, at - 64) and text[start - 1] in _EMAIL_LOCAL_CHARS:
            start -= 1
        while start < at and not text[start].isalnum():  # a local part starts with a letter or digit
            start += 1
        if start < at:
            spans.append((start, m.end()))
            floor = m.end()
    return spans


def _redact_emails(text: str) -> tuple[str, int]:
    count = 0
    if "@" in text:
        spans = _email_spans(text)
        if spans:
            pieces, last = [], 0
            for start, end in spans:
                pieces += [text[last:start], PLACEHOLDERS["email"]]
                last = end
            text, count = "".join(pieces) + text[last:], len(spans)
    if _AT_WORD.search(text):
        text, n = _substitute(_OBFUSCATED_EMAIL, text, _placeholder("email", ".+-"))
        count += n
    return text, count


# ---------------------------------------------------------------------------------------------
# IBANs: country code, two check digits, then a national account number of fixed length.

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN_CANDIDATE = re.compile(r"([A-Z][A-Z])\d\d(?: ?[A-Z0-9]){11,30}")


def iban_is_valid(compact: str) -> bool:
    """ISO 13616: the country's length, then the first four characters moved to the end,
    letters turned into numbers (A=10 ... Z=35), and the whole number mod 97 must be 1."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban_replacement(m: re.Match, text: str) -> str | None:
    length = IBAN_LENGTHS.get(m.group(1))
    if length is None or not _starts_clean(m):
        return None
    # The candidate may run on into the next word: take exactly the country's length.
    raw, taken, end = m.group(0), 0, 0
    while end < len(raw) and taken < length:
        taken += raw[end] != " "
        end += 1
    rest = raw[end:]
    if taken < length or rest[:1].isalnum() or not iban_is_valid(raw[:end].replace(" ", "")):
        return None
    return PLACEHOLDERS["iban"] + rest


def _redact_ibans(text: str) -> tuple[str, int]:
    return _substitute(_IBAN_CANDIDATE, text, _iban_replacement)


# ---------------------------------------------------------------------------------------------
# Credit cards: a real brand's prefix and length, the Luhn check, and printed grouping.

_CARD_CANDIDATE = re.compile(r"\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)")
_CARD_BRANDS = [  # (prefix pattern, allowed lengths)
    (re.compile(r"4"), {13, 16, 19}),  # Visa
    (re.compile(r"5[1-5]|22(?:2[1-9]|[3-9]\d)|2[3-6]\d\d|27(?:[01]\d|20)"), {16}),  # Mastercard
    (re.compile(r"3[47]"), {15}),  # American Express
    (re.compile(r"6011|65|64[4-9]|62"), {16, 17, 18, 19}),  # Discover, UnionPay
    (re.compile(r"3(?:0[0-5]|[689])"), {14, 15, 16, 17, 18, 19}),  # Diners Club
    (re.compile(r"35(?:2[89]|[3-8])"), {16, 17, 18, 19}),  # JCB
]
# Printed cards group digits in fours (Amex and Diners: 4-6-5 and 4-6-4), with one kind of separator.
_CARD_GROUPING = re.compile(r"\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{4,5}")


def luhn_is_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_number_is_valid(candidate: str) -> bool:
    if not candidate.isdigit() and not _CARD_GROUPING.fullmatch(candidate):
        return False
    digits = candidate.replace(" ", "").replace("-", "")
    brand_fits = any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_BRANDS)
    return brand_fits and luhn_is_valid(digits)


def _redact_cards(text: str) -> tuple[str, int]:
    return _substitute(
        _CARD_CANDIDATE, text,
        lambda m, text: (
            PLACEHOLDERS["credit_card"] if _starts_clean(m, ".-") and card_number_is_valid(m.group(0)) else None
        ),
    )


# ---------------------------------------------------------------------------------------------
# US social security numbers: AAA-GG-SSSS; never area 000, 666 or 900-999, group 00, serial 0000.

_SSN_DASHED = re.compile(r"(\d\d\d)-(\d\d)-(\d{4})(?![\w-])")
_SSN_NAMED = re.compile(r"(?:ssn|social security(?: number| no\.?)?)[ \t]*[:#]?[ \t]*(\d{3}) ?(\d{2}) ?(\d{4})(?!\w)")


def ssn_is_valid(area: str, group: str, serial: str) -> bool:
    return area not in {"000", "666"} and not area.startswith("9") and group != "00" and serial != "0000"


def _redact_ssns(text: str) -> tuple[str, int]:
    text, n = _substitute(
        _SSN_DASHED, text,
        lambda m, text: PLACEHOLDERS["ssn"] if _starts_clean(m, "-") and ssn_is_valid(*m.groups()) else None,
    )
    text, named = _substitute_case_blind(
        _SSN_NAMED, text,
        lambda m, text: text[m.start() : m.start(1)] + PLACEHOLDERS["ssn"]
        if _starts_clean(m) and ssn_is_valid(*m.groups()) else None,
        ("ssn", "social security"),
    )
    return text, n + named


# ---------------------------------------------------------------------------------------------
# IP addresses: find anything shaped like one, then let `ipaddress` decide.

_IPV4 = re.compile(r"\d\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\.?\w)")
_IPV6 = re.compile(
    r"[0-9A-Fa-f][0-9A-Fa-f]{0,3}:(?:[0-9A-Fa-f]{0,4}:){1,6}(?:[0-9A-Fa-f]{1,4}|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})?(?:%[\w.]+)?(?![\w:])"
)
# "version 1.2.3.4", "section 8.2.4.44", "__version__ = '2.7.2.2'": numbered things, not hosts.
_NUMBERING_CONTEXT = re.compile(
    r"(?i)(?<![a-z])(?:version|ver|release|rev|revision|v|section|sections|sec|chapter|clause|paragraph|figure|table|step"
    r"|rfc|prior to|§)[\W_]{0,5}$"
)


def is_public_ip(address: str) -> bool:
    """True for globally routable unicast addresses: the ones that can point at a person."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _ipv4_replacement(m: re.Match, text: str) -> str | None:
    address = m.group(0)
    if not _starts_clean(m, ".") or not is_public_ip(address):
        return None
    # Dotted quads of single digits (1.2.3.4, 2.7.2.2, 8.2.4.4) are versions or section numbers
    # far more often than hosts: 1 in 400,000 addresses has that shape.
    if all(len(octet) == 1 for octet in address.split(".")):
        return None
    if _NUMBERING_CONTEXT.search(text, max(0, m.start() - 16), m.start()):
        return None
    return PLACEHOLDERS["ip_address"]


def _ipv6_replacement(m: re.Match, text: str) -> str | None:
    # Real addresses name several groups; "a::2" is likelier a slice or a C++ scope.
    groups = m.group(0).split("%", 1)[0].split(":")
    if not _starts_clean(m, ":.") or sum(bool(g) for g in groups) < 3 or not is_public_ip(m.group(0)):
        return None
    return PLACEHOLDERS["ip_address"]


def _redact_ips(text: str) -> tuple[str, int]:
    text, n4 = _substitute(_IPV4, text, _ipv4_replacement)
    text, n6 = _substitute(_IPV6, text, _ipv6_replacement)
    return text, n4 + n6


# ---------------------------------------------------------------------------------------------
# Phone numbers. Formats that are phones beyond reasonable doubt are redacted anywhere; weaker
# shapes (plain digit runs, pairs of digits) only right after a word that says a phone number follows.

_PHONE_EDGE_AFTER = r"(?![\w/-]|[.,]\d)"
_PHONE_FORMATS = [
    # +44 20 7946 0958, +1 (415) 555-0132, +49-30-1234567, +33 1 23 45 67 89
    re.compile(rf"\+\d{{1,3}}(?:[ -]?\(\d{{1,4}}\)|[ -]?\d{{1,5}}){{2,6}}{_PHONE_EDGE_AFTER}"),
    # (415) 555-0132, 415-555-0132, 415.555.0132 (in 1-415-555-0132 the "1-" may stay: it names no one)
    re.compile(rf"\(\d{{3}}\) ?\d{{3}}[ .-]\d{{4}}{_PHONE_EDGE_AFTER}"),
    re.compile(rf"\d\d\d([.-])\d{{3}}\1\d{{4}}{_PHONE_EDGE_AFTER}"),
    # National numbers with a trunk zero: 020 7946 0958, 07700 900123, (030) 1234567, 0170-1234567
    re.compile(rf"(?:\(0[1-9]\d{{0,3}}\) ?|0[1-9]\d{{0,3}}[ -])\d{{3,8}}(?:[ -]\d{{3,8}}){{0,2}}{_PHONE_EDGE_AFTER}"),
]
_PHONE_AFTER_LABEL = re.compile(  # matched against the lowercased text
    r"(?:phone|telephone|tel|mobile|cell|fax|whatsapp|call me at|call us at)\.?(?:[ \t]*(?:no\.?|number|#))?"
    r"[ \t]*[:=]?[ \t]*(\+?\(?\d[\d ().-]{5,20}\d)(?![\w-])"
)


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _labelled_phone_replacement(m: re.Match, text: str) -> str | None:
    if not _starts_clean(m) or not 7 <= _digit_count(m.group(1)) <= 15:
        return None
    return text[m.start() : m.start(1)] + PLACEHOLDERS["phone"]


def _after_trunk_prefix(m: re.Match) -> bool:
    """True for the 415-... of 1-415-555-0132: the country code 1 and a separator stand before it."""
    start, text = m.start(), m.string
    return (start >= 2 and text[start - 2] == "1" and text[start - 1] in " .-"
            and (start == 2 or not text[start - 3].isalnum()))


def _formatted_phone_replacement(m: re.Match, text: str) -> str | None:
    number = m.group(0)
    if not (_starts_clean(m, ".+/-") or _after_trunk_prefix(m)) or not 9 <= _digit_count(number) <= 15:
        return None
    # "+4294967296" is a number in a program; a written phone number has separators.
    if number.startswith("+") and not any(ch in number for ch in " -("):
        return None
    return PLACEHOLDERS["phone"]


def _redact_phones(text: str) -> tuple[str, int]:
    text, total = _substitute_case_blind(_PHONE_AFTER_LABEL, text, _labelled_phone_replacement)
    for pattern in _PHONE_FORMATS:
        text, n = _substitute(pattern, text, _formatted_phone_replacement)
        total += n
    return text, total


# ---------------------------------------------------------------------------------------------

_REDACTORS = {
    "secret": _redact_secrets,
    "email": _redact_emails,
    "iban": _redact_ibans,
    "credit_card": _redact_cards,
    "ssn": _redact_ssns,
    "ip_address": _redact_ips,
    "phone": _redact_phones,
}


def redact_pii(text: str, config: PiiConfig | None = None) -> tuple[str, Counter]:
    """`text` with every enabled kind of personal data replaced; and how many of each kind."""
    config = config or PiiConfig()
    counts: Counter = Counter()
    for kind in config.kinds():
        text, n = _REDACTORS[kind](text)
        if n:
            counts[kind] += n
    return text, counts


class PiiRedactor(Step):
    """Replaces personal data and secrets with typed placeholders; never drops a document."""

    name = "pii"

    def __init__(self, config: PiiConfig | None = None):
        self.config = config or PiiConfig()

    def decide(self, doc: Document, stats: StepStats) -> str | None:
        doc.text, counts = redact_pii(doc.text, self.config)
        if counts:
            stats.counters["documents_redacted"] += 1
            for kind, n in counts.items():
                stats.counters[f"redacted:{kind}"] += n
        return None
