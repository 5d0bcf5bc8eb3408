"""Tokenizers: text <-> token ids, saved as one `tokenizer.json` the whole ecosystem reads.

A tokenizer is a Hugging Face `tokenizers.Tokenizer` (normalizer -> pre-tokenizer -> model ->
decoder) plus the name of its end-of-text token, which separates documents in training data.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from lmsmith.errors import UserError
from lmsmith.manifest import file_sha256

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"  # read by transformers.AutoTokenizer
EOT = "<|endoftext|>"


class Tokenizer:
    """A trained tokenizer and its end-of-text token."""

    def __init__(self, backend: HFTokenizer, eot_token: str = EOT, kind: str = "bpe"):
        self.backend = backend
        self.kind = kind
        self.eot_token = eot_token
        eot_id = backend.token_to_id(eot_token)
        if eot_id is None:
            raise UserError(f"the tokenizer has no end-of-text token {eot_token!r}: retrain it, or name its token")
        self.eot_id = eot_id
        self._sha256: str | None = None

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def sha256(self) -> str:
        """A hash of the serialised tokenizer: two tokenizers with the same hash give the same ids."""
        if self._sha256 is None:
            import hashlib

            self._sha256 = hashlib.sha256(self.backend.to_str().encode("utf-8")).hexdigest()
        return self._sha256

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and a tokenizer_config.json naming the special tokens for transformers."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": self.eot_token,
            "bos_token": self.eot_token,
            "unk_token": self.eot_token,
            "model_max_length": 1_000_000_000,
            "lmsmith_kind": self.kind,
        }
        (directory / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load the tokenizer of a tokenizer, model or run directory."""
    directory = Path(directory)
    if directory.is_file() and directory.name == TOKENIZER_FILE:
        directory = directory.parent
    file = directory / TOKENIZER_FILE
    if not file.is_file() and (directory / "model" / TOKENIZER_FILE).is_file():
        directory, file = directory / "model", directory / "model" / TOKENIZER_FILE
    if not file.is_file():
        raise UserError(f"{directory} has no {TOKENIZER_FILE}: train one with `lmsmith tokenizer train`")
    try:
        backend = HFTokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises bare Exceptions for malformed JSON
        raise UserError(f"{file} is not a valid tokenizer ({str(exc).splitlines()[0]}): retrain or restore it") from None
    eot, kind = EOT, "bpe"
    config_file = directory / TOKENIZER_CONFIG
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            eot = config.get("eos_token") or EOT
            if isinstance(eot, dict):  # transformers may store AddedToken dicts
                eot = eot.get("content", EOT)
            kind = config.get("lmsmith_kind", kind)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{config_file} is corrupted (not valid JSON): restore it or delete it") from None
    return Tokenizer(backend, eot_token=eot, kind=kind)


def tokenizer_file_sha256(directory: str | Path) -> str:
    return file_sha256(Path(directory) / TOKENIZER_FILE)
