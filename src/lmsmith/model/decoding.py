"""Writing text with a model: sampling with a KV cache, streamed as it arrives.

    prompts -> token ids, left-padded into one batch
      -> prefill: one forward pass over the prompts fills the KV cache
      -> decode:  one forward pass per new token, over that token only
           logits -> repetition penalty -> temperature -> top-k -> top-p -> sample (argmax at temperature 0)
      -> text, decoded incrementally, cut before the first stop string

The model runs through a Decoder: EagerDecoder calls its forward pass, one operation after
another; compiled_decode.CompiledDecoder (`--compile`) runs each decode step as one compiled
graph, writing the same tokens faster once it has compiled.

Context: a prompt longer than the model's context (block_size) keeps its last block_size tokens
(with a warning). When prompt plus output fill the context, the window slides: the last three
quarters of it are recomputed into a fresh cache and generation goes on, so `max_new_tokens`
is never cut short and no position past block_size is ever used.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch

from lmsmith.core.errors import UserError
from lmsmith.model.constraints import Matcher, apply_masks
from lmsmith.model.transformer import GPT, KVCache
from lmsmith.schema.generate import GenerationConfig


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the model's context and lost its beginning."""




# ---------------------------------------------------------------------------------------------
# Picking the next token


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make tokens already in the text less likely (CTRL): divide a positive logit by the
    penalty, multiply a negative one, so the token always moves down."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.size(-1):
        return logits
    kth_best = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_best, float("-inf"))


def keep_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the most likely tokens until together they hold probability p (at least one token)."""
    if p >= 1.0:
        return logits  # everything; the cumulative sum could round past 1 and drop a tail token
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))
    return logits.scatter(-1, order, sorted_logits)


class TokenSampler:
    """Turns a batch of next-token logits into token ids, remembering what each row has seen
    (for the repetition penalty)."""

    def __init__(self, config: GenerationConfig, vocab_size: int, prompts: torch.Tensor, real: torch.Tensor):
        self.config = config
        self.vocab_size = vocab_size
        device = prompts.device
        self.generator = None
        if config.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.seen = None
        if config.repetition_penalty != 1.0:
            # Counting (not scatter-assigning) keeps pad slots from marking their filler token as seen.
            counts = torch.zeros(prompts.size(0), vocab_size, dtype=torch.int32, device=device)
            in_vocab = prompts.clamp(max=vocab_size - 1)
            counts.scatter_add_(1, in_vocab, (real & (prompts < vocab_size)).to(torch.int32))
            self.seen = counts > 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, V) -> token ids (B,)."""
        c = self.config
        logits = logits[:, : self.vocab_size].float()
        if self.seen is not None:
            logits = penalise_repeats(logits, self.seen, c.repetition_penalty)
        if c.greedy:
            token = logits.argmax(dim=-1)
        else:
            logits = logits / c.temperature
            if c.top_k is not None:
                logits = keep_top_k(logits, c.top_k)
            if c.top_p is not None:
                logits = keep_top_p(logits, c.top_p)
            token = torch.multinomial(logits.softmax(dim=-1), 1, generator=self.generator)[:, 0]
        if self.seen is not None:
            self.seen.scatter_(1, token[:, None], True)
        return token


# ---------------------------------------------------------------------------------------------
# The token loop: prefill, then one token at a time


def fit_to_context(prompt: Sequence[int], block_size: int, row: int) -> list[int]:
    prompt = list(prompt)
    if not prompt:
        raise UserError(f"prompt {row + 1} is empty (it encodes to no tokens): give some text to continue")
    if len(prompt) > block_size:
        warnings.warn(
            f"prompt {row + 1} has {len(prompt)} tokens but the model's context is {block_size}: "
            f"keeping its last {block_size} tokens",
            PromptTruncatedWarning,
            stacklevel=3,
        )
        prompt = prompt[-block_size:]
    return prompt


def left_pad(prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """One (B, L) batch with shorter prompts padded on the left, and each row's pad count."""
    longest = max(len(p) for p in prompts)
    tokens = torch.zeros(len(prompts), longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, longest - len(p):] = torch.tensor(p, dtype=torch.long)
    pad = torch.tensor([longest - len(p) for p in prompts], dtype=torch.long)
    return tokens.to(device), pad.to(device)


def generate_tokens(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig | None = None,
    eot_id: int | None = None,
    vocab_size: int | None = None,
    decoder: Decoder | None = None,
    matchers: Sequence[Matcher | None] | None = None,
) -> Iterator[list[int | None]]:
    """Yield, per step, the new token of each prompt in the batch.

    A row that has produced `eot_id` yields None from the next step on; the iterator ends when
    every row has, or after `config.max_new_tokens` steps. `vocab_size` limits sampling to the
    tokenizer's ids when the model's vocabulary is padded. `decoder` runs the model (default: an
    EagerDecoder; a compiled_decode.CompiledDecoder writes the same tokens faster once compiled).
    `matchers` (model/constraints.py), one per prompt or None, hold each row to its schema, regex or
    grammar. Put the model in eval mode first. Inputs are checked here, before the first step.
    """
    config = config or GenerationConfig()
    config.check()
    if not prompts:
        raise UserError("no prompts given: give at least one")
    block_size = model.config.block_size
    rows = [fit_to_context(p, block_size, i) for i, p in enumerate(prompts)]
    device = next(model.parameters()).device
    vocab_size = min(vocab_size or model.config.vocab_size, model.config.vocab_size)
    tokens, pad = left_pad(rows, device)
    matchers = list(matchers) if matchers is not None else None
    if matchers is not None and len(matchers) != len(rows):
        raise ValueError(f"{len(matchers)} matchers for {len(rows)} prompts: give one per prompt (or None)")
    return _token_loop(decoder or EagerDecoder(model), block_size, tokens, pad, config, eot_id, vocab_size, matchers)


@torch.inference_mode()
def _token_loop(decoder, block_size, tokens, pad, config, eot_id, vocab_size,
                matchers=None) -> Iterator[list[int | None]]:
    batch, prompt_len = tokens.shape
    slots = torch.arange(prompt_len, device=tokens.device)
    sampler = TokenSampler(config, vocab_size, tokens, real=slots[None, :] >= pad[:, None])
    # The whole padded history, for re-filling the cache when the window slides.
    history = torch.empty(batch, prompt_len + config.max_new_tokens, dtype=torch.long, device=tokens.device)
    history[:, :prompt_len] = tokens
    length = prompt_len
    cache, logits = decoder.prefill(tokens, pad, max_len=min(block_size, prompt_len + config.max_new_tokens))
    finished = [False] * batch
    for step in range(config.max_new_tokens):
        if matchers is not None:
            logits = logits[:, :vocab_size].float().clone()
            apply_masks(logits, [None if done else m for done, m in zip(finished, matchers)])
        token = sampler(logits)
        ids = token.tolist()
        if matchers is not None:
            for done, m, t in zip(finished, matchers, ids):
                if m is not None and not done and not m.accept(t):
                    raise RuntimeError(f"the grammar refused token {t} that its mask allowed")
        yield [None if done else t for done, t in zip(finished, ids)]
        finished = [done or t == eot_id for done, t in zip(finished, ids)]
        if all(finished) or step == config.max_new_tokens - 1:
            return
        history[:, length] = token
        length += 1
        if cache.length == block_size:
            keep = block_size - block_size // 4
            start = length - keep
            cache, logits = decoder.prefill(history[:, start:length], (pad - start).clamp(min=0), max_len=block_size)
        else:
            logits = decoder(token, cache)


class Decoder(Protocol):
    """How the token loop runs the model: fill a cache with the prompts, then one token at a time."""

    def prefill(self, tokens: torch.Tensor, pad: torch.Tensor, max_len: int) -> tuple[KVCache, torch.Tensor]:
        """A fresh cache of `max_len` slots filled with `tokens` (B, L), whose rows have `pad` slots
        of left padding, and the logits (B, V) for the token after them."""

    def __call__(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The logits (B, V) after `token` (B,), which goes into the cache's next slot."""


class EagerDecoder:
    """The model's own forward pass, one operation after another."""

    def __init__(self, model: GPT):
        self.model = model

    def prefill(self, tokens: torch.Tensor, pad: torch.Tensor, max_len: int) -> tuple[KVCache, torch.Tensor]:
        param = next(self.model.parameters())
        cache = KVCache(self.model.config, tokens.size(0), max_len, param.device, param.dtype, pad=pad)
        logits = self.model(tokens, cache=cache, last_only=True).logits[:, -1]
        return cache, logits

    def __call__(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self.model(token[:, None], cache=cache).logits[:, -1]


def lay_out_for_decoding(model: GPT) -> GPT:
    """On CPU, keep each linear layer's weight in memory as its transpose: same shape, same
    values, only the strides change.

    Decoding multiplies one token's vector by every weight matrix. For that shape the CPU BLAS
    kernel is much faster walking the weight as (in, out) rows (Hugging Face's GPT-2 stores
    it that way) than as nn.Linear's (out, in): about 1.3x on the matrix products of the
    benchmark's model (benchmarks/generate.py). Other devices are left alone. Meant for a
    model loaded only to generate: a model in training would keep the odd strides in its
    optimizer's view of the weights.
    """
    if next(model.parameters()).device.type != "cpu":
        return model
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
            module.weight.data = module.weight.data.t().contiguous().t()
    return model


# ---------------------------------------------------------------------------------------------
# From tokens to text


class IncrementalDecoder:
    """Turns tokens into text one at a time, giving out only complete characters.

    A byte-level token can end in the middle of a multi-byte character; decoding it alone
    gives U+FFFD. So the new tokens are decoded together with a few before them (which also
    keeps decoders that strip a leading space honest), and the new text is released only
    once it no longer ends in a partial character.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the context decoded with the new tokens
        self.read = 0  # tokens whose text has been given out

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        now = self.tokenizer.decode(self.ids[self.prefix:])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before):]

    def flush(self) -> str:
        """Whatever is held back, an unfinished character (shown as U+FFFD) included."""
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        now = self.tokenizer.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return now[len(before):]


class TextStream:
    """One prompt's output: decoded incrementally, cut before the first stop string.

    Text that might be the start of a stop string is held back until the next token shows
    whether it is, so a stop string is never handed out, not even in part.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop = list(stop)
        self.text = ""
        self.released = 0
        self.tokens = 0  # tokens taken in, the ones past a stop string included
        self.done = False

    def push(self, token: int) -> str:
        if self.done:
            return ""
        self.tokens += 1
        self.text += self.decoder.push(token)
        return self._release(final=False)

    def finish(self) -> str:
        if self.done:
            return ""
        self.text += self.decoder.flush()
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        cut = self._first_stop()
        if cut is not None:
            self.text, final = self.text[:cut], True
        end = len(self.text) if final else len(self.text) - self._held_back()
        piece = self.text[self.released:end]
        self.released = end
        self.done = final
        return piece

    def _first_stop(self) -> int | None:
        hits = [self.text.find(s, max(0, self.released - len(s) + 1)) for s in self.stop]
        hits = [h for h in hits if h >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        tail = self.text[self.released:]
        return max((k for s in self.stop for k in range(1, min(len(s) - 1, len(tail)) + 1)
                    if tail.endswith(s[:k])), default=0)


OnText = Callable[[int, str, bool], None]  # (prompt index, new text, this prompt is finished)


def generate(
    model: GPT,
    tokenizer,
    prompts: str | Sequence[str | Sequence[int]],
    config: GenerationConfig | None = None,
    on_text: OnText | None = None,
    decoder: Decoder | None = None,
) -> list[str]:
    """Continue each prompt (text, or token ids); return the new text of each.

    `on_text(i, piece, finished)` is called as text arrives, for streaming; the pieces of
    prompt i joined together are exactly its returned text. `decoder` as in generate_tokens.
    """
    return [s.text for s in generate_streams(model, tokenizer, prompts, config, on_text, decoder)]


def generate_streams(
    model: GPT,
    tokenizer,
    prompts: str | Sequence[str | Sequence[int]],
    config: GenerationConfig | None = None,
    on_text: OnText | None = None,
    decoder: Decoder | None = None,
    matchers: Sequence[Matcher | None] | None = None,
) -> list[TextStream]:
    """`generate`, returning each prompt's finished TextStream (its text and token count); `matchers` as in
    generate_tokens."""
    config = config or GenerationConfig()
    config.check()
    if isinstance(prompts, str):
        prompts = [prompts]
    ids = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    streams = [TextStream(tokenizer, config.stop) for _ in ids]
    steps = generate_tokens(model, ids, config, eot_id=tokenizer.eot_id, vocab_size=tokenizer.vocab_size,
                            decoder=decoder, matchers=matchers)

    def emit(i: int, piece: str) -> None:
        if on_text is not None and (piece or streams[i].done):
            on_text(i, piece, streams[i].done)

    try:
        for step in steps:
            for i, token in enumerate(step):
                if token is None or streams[i].done:
                    continue
                emit(i, streams[i].finish() if token == tokenizer.eot_id else streams[i].push(token))
            if all(s.done for s in streams):
                break
    finally:
        steps.close()
    for i, stream in enumerate(streams):
        if not stream.done:
            emit(i, stream.finish())
    return streams


# ---------------------------------------------------------------------------------------------
# The command line












