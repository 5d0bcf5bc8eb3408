"""Plain text for fine-tuning: domain text for continued pretraining, general text for the guard.

Continued pretraining reads its text the way pretraining does, through a tokens directory, so
the training engine draws windows from it exactly as it does for `lmsmith train`:

    a tokens directory    (`lmsmith tokenize` output) used as it is; its tokenizer must be the model's
    a curated directory   (`lmsmith curate` output) or text files and folders: tokenized on the way
                          in with the model's tokenizer; a curated directory brings its val split,
                          otherwise the last `val_fraction` of the text is held out

The general validation text (what the model should not forget) can be any of the three; up to
`limit` tokens of it are scored before and after fine-tuning.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST
from lmsmith.text.tokens_dir import TokensDir, open_tokens_dir, read_split, tokenize_corpus


def stage_of(path: Path) -> str | None:
    """The stage named in a directory's manifest, or None when it has none."""
    manifest = path / MANIFEST
    if not path.is_dir() or not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("stage")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def check_same_tokenizer(tokens: TokensDir, tokenizer) -> None:
    if tokens.tokenizer_sha256 != tokenizer.sha256:
        raise UserError(f"{tokens.path} was tokenized with another tokenizer than the model's: tokenize the text again "
                        "with the model's tokenizer, or give the curated directory or text files instead")


def domain_tokens(data: str | Path, tokenizer, work_dir: Path, val_fraction: float, quiet: bool) -> TokensDir:
    """A tokens directory of the domain text (made under `work_dir` unless `data` is one)."""
    path = Path(data)
    if not path.exists():
        raise UserError(f"domain data {path} does not exist: "
                        "give a tokens or curated directory, a folder or text files")
    if stage_of(path) == "tokenize":
        tokens = open_tokens_dir(path)
        check_same_tokenizer(tokens, tokenizer)
        return tokens
    tokenizer_dir = work_dir / "tokenizer"
    tokenizer.save(tokenizer_dir)
    curated = stage_of(path) == "curate"
    if not curated and not 0.0 < val_fraction < 1.0:
        raise UserError(f"finetune.val_fraction is {val_fraction}, "
                        "but continued pretraining on text files needs held-out text to validate on: "
                        "set it between 0 and 1 (e.g. 0.1), or curate the text with a val split")
    tokenize_corpus([str(path)], tokenizer_dir, work_dir / "tokens",
                    val_fraction=None if curated else val_fraction, quiet=quiet)
    return open_tokens_dir(work_dir / "tokens")


def _texts(path: Path):
    """The texts of a curated directory (val split, else train) or of text files and folders."""
    if stage_of(path) == "curate":
        from lmsmith.text.curated_dir import iter_split_texts, split_files

        yield from iter_split_texts(path, "val" if split_files(path, "val") else "train")
        return
    from lmsmith.text.tokenizer import TextFiles

    yield from TextFiles([path])


def general_tokens(source: str | Path, tokenizer, limit: int) -> np.ndarray:
    """Up to `limit` tokens of general text, its documents (or chunks of its files) joined by end-of-text."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"general validation text {path} does not exist: "
                        "give text files, a curated or a tokens directory")
    if stage_of(path) == "tokenize":
        tokens = open_tokens_dir(path)
        check_same_tokenizer(tokens, tokenizer)
        ids = read_split(tokens, "val" if tokens.split_tokens("val") else "train")[:limit]
    else:
        pieces, count = [], 0
        for text in _texts(path):
            piece = tokenizer.encode(text) + [tokenizer.eot_id]
            pieces.append(piece)
            count += len(piece)
            if count >= limit:
                break
        ids = np.asarray([t for piece in pieces for t in piece][:limit], dtype=np.int64)
    if len(ids) < 2:
        raise UserError(f"general validation text {path} holds fewer than 2 tokens: give more text")
    return np.asarray(ids, dtype=np.int64)
