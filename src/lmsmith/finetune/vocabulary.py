"""Growing a vocabulary: special tokens a chat template needs but the tokenizer lacks.

A new token gets the next free id and a new row in the embedding (and in an untied output
head). The new rows start at the mean of the existing rows: a neutral point that the model
already knows how to read, rather than random noise far from every real token.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lmsmith.model.transformer import GPT
from lmsmith.text.tokenizer import Tokenizer


def missing_special_tokens(tokenizer: Tokenizer, tokens) -> list[str]:
    """The tokens that are not yet single special tokens of `tokenizer`."""
    present = set(tokenizer.special_tokens)
    return [t for t in tokens if t not in present]


def add_special_tokens(tokenizer: Tokenizer, tokens: list[str]) -> Tokenizer:
    """A new Tokenizer with `tokens` added as special tokens (never split, never merged into others)."""
    from tokenizers import Tokenizer as Backend

    backend = Backend.from_str(tokenizer.backend.to_str())
    backend.add_special_tokens(list(tokens))
    return Tokenizer(backend, eot_token=tokenizer.eot_token, kind=tokenizer.kind, chat_template=tokenizer.chat_template,
                     specials=tokenizer.specials)


def _grown(table: torch.Tensor, rows: int) -> torch.Tensor:
    mean = table.detach().mean(dim=0, keepdim=True)
    return torch.cat([table.detach(), mean.expand(rows, -1)], dim=0)


def grow_vocabulary(model: GPT, vocab_size: int) -> int:
    """Give `model` at least `vocab_size` token rows; returns how many rows were added.

    A model whose vocabulary already has spare rows (GPT-2 style padding) needs none.
    """
    rows = vocab_size - model.config.vocab_size
    if rows <= 0:
        return 0
    old = model.tok_emb.weight
    model.tok_emb = nn.Embedding.from_pretrained(_grown(old, rows), freeze=not old.requires_grad)
    if model.config.tie_embeddings:
        model.head.weight = model.tok_emb.weight
    else:
        head = nn.Linear(model.head.in_features, vocab_size, bias=False, device=old.device,
                         dtype=model.head.weight.dtype)
        with torch.no_grad():
            head.weight.copy_(_grown(model.head.weight, rows))
        head.weight.requires_grad_(model.head.weight.requires_grad)
        model.head = head
    model.config.vocab_size = vocab_size
    return rows
