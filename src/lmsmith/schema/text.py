"""The `tokenizer:` and `tokenize:` sections."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from lmsmith.core.errors import UserError

EOT = "<|endoftext|>"


BYTE_ALPHABET = 256  # a byte-level vocabulary always holds one token per byte value


MAX_VOCAB = 1 << 24  # 16,777,216: far past any real tokenizer, well before the tokenizers library gives out
SHARD_TOKENS = 100_000_000  # 200 MB of uint16 per shard: few files, each easy to copy


def special_token_list(special_tokens: Iterable[str] = ()) -> list[str]:
    """`<|endoftext|>` first, then the extra special tokens in the order given, without repeats."""
    tokens = [EOT]
    for token in special_tokens:
        if not isinstance(token, str) or not token.strip():
            raise UserError(f"special token {token!r} is empty: give visible text such as <|pad|>")
        if token not in tokens:
            tokens.append(token)
    return tokens


def check_vocab_size(vocab_size: int, special_tokens: list[str]) -> None:
    smallest = BYTE_ALPHABET + len(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise UserError(
            f"vocab size {vocab_size} is smaller than the byte alphabet: a byte-level tokenizer needs "
            f"{BYTE_ALPHABET} byte tokens + {len(special_tokens)} special token(s) = {smallest} at least; "
            "ask for more (e.g. --vocab-size 4096)"
        )
    if vocab_size > MAX_VOCAB:
        raise UserError(f"vocab size {vocab_size:,} is more than lmsmith's limit of {MAX_VOCAB:,} (2**24) tokens: "
                        "ask for fewer (GPT-2 has 50,257; e.g. --vocab-size 32768)")


@dataclass
class TokenizerConfig:
    """The `tokenizer:` section of a recipe, and the settings of `lmsmith tokenizer train`."""

    kind: Literal["bpe", "char"] = "bpe"
    vocab_size: int | None = 4096  # everything included (256 bytes, special tokens); char: null keeps every character
    special_tokens: list[str] = field(default_factory=list)  # besides <|endoftext|>, which is always there
    sample_mb: float | None = None  # train on the first this many MB of the training text; null: all of it

    def check(self, where: str = "tokenizer") -> None:
        from lmsmith.core.config import ConfigError

        if self.kind == "bpe" and self.vocab_size is None:
            raise ConfigError(f"{where}.vocab_size is needed for a BPE tokenizer, e.g. {where}.vocab_size=4096")
        try:
            specials = special_token_list(self.special_tokens)
            if self.vocab_size is not None:
                check_vocab_size(self.vocab_size, specials)
        except UserError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if self.sample_mb is not None and not self.sample_mb > 0:
            raise ConfigError(f"{where}.sample_mb must be positive (or null for all the text), got {self.sample_mb}")


@dataclass
class TokenizeConfig:
    """The `tokenize:` section of a recipe, and the settings of `lmsmith tokenize`."""

    inputs: list[str] = field(default_factory=list)  # a recipe without curate: the text files and folders
    val_fraction: float | None = None  # text files only: the last fraction of the tokens held out (default 0.1)
    shard_tokens: int = SHARD_TOKENS

    def check(self, where: str = "tokenize") -> None:
        from lmsmith.core.config import ConfigError

        if self.shard_tokens < 1:
            raise ConfigError(f"{where}.shard_tokens must be at least 1, got {self.shard_tokens}")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{where}.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
