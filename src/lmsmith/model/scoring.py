"""Scoring text: mean loss, perplexity and bits per byte over a whole split.

Windows of `context` tokens slide over the split `stride` tokens at a time; each window scores
only the tokens no earlier window scored, so every token (but the very first, which has no
history) is scored exactly once, with at least `context - stride` tokens of history once the
first window is past. Bits per byte divides the total loss in bits by the UTF-8 bytes those
tokens stand for, which makes models with different tokenizers comparable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lmsmith.core.errors import UserError


@dataclass
class EvalResult:
    loss: float  # mean negative log-likelihood per token, in nats
    perplexity: float
    bits_per_byte: float
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes those tokens stand for
    context: int
    stride: int

    def to_dict(self) -> dict:
        return asdict(self)


def token_byte_table(tokenizer) -> list[bytes]:
    """The text each token id stands for, as bytes; special tokens (end-of-text) stand for none."""
    special = {tokenizer.backend.token_to_id(t) for t in tokenizer.special_tokens}
    return [b"" if i in special else tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]


def token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes of text each token id stands for; special tokens (end-of-text) stand for none."""
    return np.array([len(piece) for piece in token_byte_table(tokenizer)], dtype=np.int64)


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored target) of each window over a sequence of `n_tokens` tokens.

    A window feeds tokens [start, end) and predicts tokens [start + 1, end + 1); it scores only
    targets from `first scored target` on. The first window scores all its `context` targets,
    each later one the next `stride`, so the scored ranges tile positions 1 .. n_tokens - 1.
    """
    result, scored_from = [], 1
    while scored_from < n_tokens:
        new = context if scored_from == 1 else stride
        last_target = min(scored_from + new - 1, n_tokens - 1)
        start = max(0, last_target - context)
        result.append((start, last_target, scored_from))
        scored_from = last_target + 1
    return result


@torch.inference_mode()
def evaluate_tokens(
    model,
    tokens: np.ndarray,
    byte_lengths: np.ndarray,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress=None,
) -> EvalResult:
    """Score every token of `tokens` (a 1-D array of ids) with `model`."""
    context = context or model.config.block_size
    stride = stride or context // 2
    if context > model.config.block_size:
        raise UserError(
            f"eval context {context} is longer than the model's block_size {model.config.block_size}: lower --context"
        )
    if not 0 < stride <= context:
        raise UserError(f"eval stride must be between 1 and the context ({context}), got {stride}")
    if len(tokens) < 2:
        raise UserError(
            "the split has fewer than 2 tokens, so there is nothing to score: curate more data or use another split"
        )
    spans = windows(len(tokens), context, stride)
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    model.eval()
    for first in range(0, len(spans), batch_size):
        batch = spans[first:first + batch_size]
        length = max(end - start for start, end, _ in batch)
        inputs = torch.zeros(len(batch), length, dtype=torch.long)
        targets = torch.full((len(batch), length), -100, dtype=torch.long)  # -100: not scored
        for row, (start, end, scored_from) in enumerate(batch):
            window = torch.from_numpy(tokens[start:end + 1].astype(np.int64))
            inputs[row, :end - start] = window[:-1]
            skip = scored_from - start - 1  # targets an earlier window already scored
            targets[row, skip:end - start] = window[1 + skip:]
        inputs, targets = inputs.to(device), targets.to(device)
        with torch.autocast(
            device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            logits = model(inputs).logits
        nll = F.cross_entropy(
            logits.to(torch.promote_types(logits.dtype, torch.float32)).reshape(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        scored = targets[targets != -100].cpu().numpy()
        total_nats += float(nll)
        total_tokens += scored.size
        total_bytes += int(byte_lengths[scored].sum())
        if progress is not None:
            progress(len(batch))
    loss = total_nats / total_tokens
    bits = total_nats / math.log(2)
    return EvalResult(
        loss=loss, perplexity=math.exp(min(loss, 700.0)),
        bits_per_byte=bits / total_bytes if total_bytes else float("nan"),
        tokens=total_tokens, bytes=total_bytes, context=context, stride=stride,
    )
