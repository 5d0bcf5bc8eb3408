"""A held-out set for the quality rules: real technical documentation beside planted junk.

Technical prose (manuals, API references, legal and SQL documentation) is what our users curate,
and what the Gopher rules, written for web text, are quickest to throw away: tables, code samples
and repeated phrasing look like junk to them. Every machine with Python carries such text:

- the Python documentation's own topics (`pydoc_data.topics`: the language reference and the
  library manual's main pages, as `help()` shows them);
- the docstrings of the standard library (API reference), sqlite3's among them (SQL);
- the licence texts shipped with Python (legal).

The junk is what the rules exist to catch: spam that repeats itself, symbol soup, bullet floods
and lists of links. A rule set is good for our users when it keeps nearly all of the first and
drops all of the second.
"""

from __future__ import annotations

import ast
import functools
import random
import sysconfig
from pathlib import Path

# Modules whose docstrings are long enough to be documentation (reference prose, tables, examples).
DOCSTRING_MODULES = ["argparse", "csv", "datetime", "decimal", "difflib", "doctest", "email/message",
                     "fractions", "functools", "http/client", "http/cookiejar", "inspect", "ipaddress", "json/__init__",
                     "logging/__init__", "mailbox", "optparse", "pathlib", "pickle", "pprint", "re/__init__",
                     "shutil", "smtplib", "sqlite3/__init__", "statistics", "string", "subprocess", "tarfile",
                     "textwrap", "threading", "timeit", "typing", "unittest/case", "urllib/parse", "uuid",
                     "xml/dom/minidom", "zipfile"]
MIN_WORDS = 50  # shorter texts are dropped for length alone (quality.prose.min_words), whatever their kind


def pydoc_topics() -> list[tuple[str, str]]:
    """(name, text) of each topic of the Python documentation that ships with Python."""
    from pydoc_data.topics import topics

    return sorted(topics.items())


def stdlib_docstrings(modules: list[str] = DOCSTRING_MODULES) -> list[tuple[str, str]]:
    """(module:name, docstring) of the modules, classes and functions of some standard-library files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for module in modules:
        path = root / f"{module}.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    out.append((f"{module}:{getattr(node, 'name', '')}", doc))
    return sorted(set(out))


SYSTEM_LICENCES = Path("/usr/share/common-licenses")  # Debian's copies of GPL, Apache, MPL, ...: more legal text


def _chunks(name: str, text: str, chunk_words: int) -> list[tuple[str, str]]:
    out, piece = [], []
    for paragraph in text.split("\n\n"):
        piece.append(paragraph)
        if sum(len(p.split()) for p in piece) >= chunk_words:
            out.append((f"{name}:{len(out)}", "\n\n".join(piece)))
            piece = []
    return out


def licence_sections(chunk_words: int = 150, system_licences: bool = False) -> list[tuple[str, str]]:
    """Python's LICENSE.txt (and, if asked and present, the system's licence texts), in pieces of about
    `chunk_words` words cut at paragraph ends."""
    paths = [Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"]
    if system_licences and SYSTEM_LICENCES.is_dir():
        paths += sorted(p for p in SYSTEM_LICENCES.iterdir() if p.is_file())
    out = []
    for path in paths:
        if path.exists():
            out += _chunks(path.name, path.read_text(encoding="utf-8", errors="replace"), chunk_words)
    return out


@functools.lru_cache(maxsize=2)
def technical_documents(system_licences: bool = False) -> dict[str, list[tuple[str, str]]]:
    """The clean half, by kind: every text of at least MIN_WORDS words (built once a process; do not change it)."""
    kinds = {"manual": pydoc_topics(), "api_reference": stdlib_docstrings(),
             "legal": licence_sections(system_licences=system_licences)}
    kinds["sql"] = [(n, t) for n, t in kinds["api_reference"] if n.startswith("sqlite3") or "SELECT " in t]
    return {kind: [(n, t) for n, t in docs if len(t.split()) >= MIN_WORDS] for kind, docs in kinds.items()}


def heldout_rates(config=None, *, system_licences: bool = False, junk_per_kind: int = 50) -> dict:
    """Keep rate per kind of documentation and drop rate per kind of junk, with the reasons, under `config`."""
    from collections import Counter

    from lmsmith.data.quality import prose_reason
    from lmsmith.schema.curate import ProseQualityConfig

    config = config or ProseQualityConfig()
    out: dict = {"technical": {}, "junk": {}}
    for kind, docs in technical_documents(system_licences).items():
        reasons = Counter(prose_reason(text, config) for _, text in docs)
        kept = reasons.pop(None, 0)
        out["technical"][kind] = {
            "docs": len(docs), "kept": round(kept / max(1, len(docs)), 4), "dropped_by": dict(reasons)
        }
    for kind, texts in planted_junk(junk_per_kind).items():
        reasons = Counter(prose_reason(text, config) for text in texts)
        kept = reasons.pop(None, 0)
        out["junk"][kind] = {"docs": len(texts), "dropped": round(1 - kept / max(1, len(texts)), 4),
                             "dropped_by": dict(reasons)}
    return out


# ---------------------------------------------------------------------------------------------
# Planted junk

# Spam as it is written: with stop words, so that the repetition rules, not the stop-word rule, must catch it.
_SPAM = ["buy the best pills now and save", "the best price of the year with free shipping",
         "click here to win and be the first", "free bonus for you today only", "limited offer that will end soon",
         "casino online for real money with the best odds", "lose weight fast and have the body you want"]
_SYMBOLS = list("#@$%^&*{}[]<>|~=+/\\") + ["###", "$$$", "&&", "||", "%%", "@@", "=>", "::", "<<", ">>"]
_WORDS = ["home", "news", "login", "about", "contact", "shop", "cart", "help", "faq", "blog", "terms", "privacy"]


def spam_repetition(rng: random.Random) -> str:
    phrases = rng.sample(_SPAM, 3)
    return " ".join(rng.choice(phrases).capitalize() + "!" for _ in range(rng.randint(40, 80)))


def symbol_soup(rng: random.Random) -> str:
    tokens = [rng.choice(_SYMBOLS) + rng.choice(["", str(rng.randint(0, 999))]) for _ in range(rng.randint(80, 200))]
    for _ in range(len(tokens) // 8):  # a few words in the soup, as scraped page debris has
        tokens[rng.randrange(len(tokens))] = rng.choice(_WORDS)
    return " ".join(tokens)


def bullet_flood(rng: random.Random) -> str:
    bullet = rng.choice(["•", "-", "*", "·", "▪"])
    lines = [f"{bullet} {rng.choice(_WORDS).capitalize()} {rng.choice(_WORDS)} {rng.choice(_WORDS)}"
             for _ in range(rng.randint(30, 60))]
    return "\n".join(lines)


def link_list(rng: random.Random) -> str:
    site = rng.choice(["example.com", "shop.example.net", "news.example.org"])
    lines = [f"https://{site}/{rng.choice(_WORDS)}/{rng.randint(1, 99999)}" + rng.choice(["", ".html", "?ref=nav"])
             for _ in range(rng.randint(30, 80))]
    if rng.random() < 0.5:
        lines.insert(0, " | ".join(w.capitalize() for w in rng.sample(_WORDS, 6)))
    return "\n".join(lines)


JUNK_KINDS = {"spam_repetition": spam_repetition, "symbol_soup": symbol_soup, "bullet_flood": bullet_flood,
              "link_list": link_list}


def planted_junk(per_kind: int = 50, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {kind: [make(rng) for _ in range(per_kind)] for kind, make in JUNK_KINDS.items()}
