"""What a file holds, judged by its name: the reader to use and, for code, the language.

A file's format is the one of its last suffix after any compression suffix is peeled off, so
`notes.md.gz` reads as markdown and `chats.jsonl.zst` as JSON lines.
"""

from __future__ import annotations

from pathlib import PurePath

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}


PROSE_SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".rst": "rst", ".text": "text"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
BOOK_SUFFIXES = {".pdf": "pdf", ".epub": "epub"}  # binary containers of text, each read by its own library

CODE_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".cu": "cuda", ".m": "objective-c", ".mm": "objective-cpp",
    ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala", ".groovy": "groovy",
    ".cs": "csharp", ".fs": "fsharp", ".go": "go", ".rs": "rust", ".swift": "swift", ".dart": "dart",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".vue": "vue", ".svelte": "svelte",
    ".php": "php", ".rb": "ruby", ".pl": "perl", ".pm": "perl", ".lua": "lua", ".r": "r", ".jl": "julia",
    ".hs": "haskell", ".ml": "ocaml", ".mli": "ocaml", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang",
    ".clj": "clojure", ".lisp": "lisp", ".el": "elisp", ".scm": "scheme", ".zig": "zig", ".nim": "nim",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".fish": "shell", ".ps1": "powershell", ".bat": "batch",
    ".sql": "sql", ".css": "css", ".scss": "scss", ".less": "less", ".tex": "latex",
    ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".ini": "ini", ".cfg": "ini", ".xml": "xml",
    ".proto": "protobuf", ".cmake": "cmake", ".mk": "make", ".dockerfile": "dockerfile",
}

# Languages whose brackets must balance once strings and comments are set aside.
C_LIKE = {
    "c", "cpp", "cuda", "objective-c", "objective-cpp", "java", "kotlin", "scala", "groovy", "csharp",
    "go", "rust", "swift", "dart", "javascript", "typescript", "php", "css", "scss", "less", "zig",
}

# Files with no suffix that are plainly code or prose.
NAMED_FILES = {"makefile": ("code", "make"), "dockerfile": ("code", "dockerfile"), "cmakelists.txt": ("code", "cmake")}


def split_compression(name: str) -> tuple[str, str | None]:
    """`a.jsonl.gz` -> (`a.jsonl`, "gzip"); names without a compression suffix come back unchanged."""
    suffix = PurePath(name).suffix.lower()
    if suffix in COMPRESSIONS:
        return name[: -len(suffix)], COMPRESSIONS[suffix]
    return name, None


def classify(name: str, extra_formats: dict[str, str]) -> tuple[str | None, str | None]:
    """(format, language) for a file name (compression already removed); format None = unknown.

    The language is the code language for `code`, the prose flavour (markdown, rst) for `text`.
    """
    lower = PurePath(name).name.lower()
    suffix = PurePath(lower).suffix
    if suffix in extra_formats:
        fmt = extra_formats[suffix]
        return fmt, CODE_LANGUAGES.get(suffix) if fmt == "code" else None
    if lower in NAMED_FILES:
        return NAMED_FILES[lower]
    if suffix in PROSE_SUFFIXES:
        return "text", PROSE_SUFFIXES[suffix]
    if suffix in HTML_SUFFIXES:
        return "html", None
    if suffix in RECORD_SUFFIXES:
        return RECORD_SUFFIXES[suffix], None
    if suffix in BOOK_SUFFIXES:
        return BOOK_SUFFIXES[suffix], None
    if suffix in CODE_LANGUAGES:
        return "code", CODE_LANGUAGES[suffix]
    return None, None
