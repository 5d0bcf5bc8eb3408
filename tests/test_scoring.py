"""Evaluation scores every held-out token once, matching a token-by-token float64 reference."""

import math

import numpy as np
import pytest
import torch

from lmsmith.core.errors import UserError
from lmsmith.model.scoring import evaluate_tokens, token_byte_lengths, windows
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import train_bpe

TEXT = "The quick brown fox jumps over the lazy dog. Ünïcödé and emoji 🦊 too.\n" * 8


@pytest.fixture(scope="module")
def setup():
    tokenizer = train_bpe([TEXT], vocab_size=300, show_progress=False)
    ids = tokenizer.encode(TEXT) + [tokenizer.eot_id] + tokenizer.encode("A second document.")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)).double()
    return tokenizer, np.array(ids, dtype=np.uint16), model


def reference_nats(model, tokens, context):
    """Each target i predicted from at most `context` tokens before it, one forward pass each."""
    total = 0.0
    with torch.no_grad():
        for i in range(1, len(tokens)):
            history = torch.tensor(tokens[max(0, i - context):i].astype(np.int64))[None]
            logp = torch.log_softmax(model(history).logits[0, -1], dim=-1)
            total -= float(logp[int(tokens[i])])
    return total


@pytest.mark.parametrize("n, context, stride", [(10, 4, 2), (10, 4, 4), (5, 8, 4), (11, 4, 1), (2, 4, 2), (100, 16, 8)])
def test_windows_score_every_position_once_with_enough_history(n, context, stride):
    scored = []
    for start, end, scored_from in windows(n, context, stride):
        assert 0 <= start and end - start <= context
        scored += [p for p in range(start + 1, end + 1) if p >= scored_from]
        assert scored_from - 1 - start >= min(context - stride, scored_from - 1)
    assert scored == list(range(1, n))


def test_stride_one_equals_token_by_token_reference(setup):
    tokenizer, tokens, model = setup
    tokens = tokens[:60]
    result = evaluate_tokens(model, tokens, token_byte_lengths(tokenizer), context=8, stride=1, batch_size=5)
    expected = reference_nats(model, tokens, context=8)
    assert result.tokens == len(tokens) - 1
    assert result.loss == pytest.approx(expected / (len(tokens) - 1), rel=1e-10)
    assert result.perplexity == pytest.approx(math.exp(result.loss))


def test_bits_per_byte_counts_the_text_bytes_of_scored_tokens(setup):
    tokenizer, tokens, model = setup
    result = evaluate_tokens(model, tokens, token_byte_lengths(tokenizer), context=16, stride=8)
    text_bytes = len(tokenizer.decode(tokens[1:].tolist()).replace(tokenizer.eot_token, "").encode("utf-8"))
    assert result.bytes == text_bytes
    assert result.tokens == len(tokens) - 1
    assert result.bits_per_byte == pytest.approx(result.loss * result.tokens / math.log(2) / text_bytes)


def test_bad_context_and_stride_are_refused(setup):
    tokenizer, tokens, model = setup
    with pytest.raises(UserError, match="longer than the model's block_size"):
        evaluate_tokens(model, tokens, token_byte_lengths(tokenizer), context=32)
    with pytest.raises(UserError, match="stride must be between 1 and the context"):
        evaluate_tokens(model, tokens, token_byte_lengths(tokenizer), context=8, stride=9)
    with pytest.raises(UserError, match="fewer than 2 tokens"):
        evaluate_tokens(model, tokens[:1], token_byte_lengths(tokenizer))
