"""The serving engine: one decode loop over every request in flight (continuous batching).

    submit(request) ──▶ waiting (bounded: a full queue refuses at once)
                          │  admitted while a row is free and, with the block pool (the server's cache), while
                          │  the blocks its prompt and max_tokens can need fit beside the others' (kv_blocks.py);
                          │  the blocks of a prompt prefix already in the pool are its own at once
                          ▼
                      prefilling: the prompt (past a shared prefix) goes through the model in chunks, into the
                          │       request's own cache; one chunk per turn, so a long prompt never stalls the others
                          ▼
                      decoding: a row of the batch, its keys in pool blocks taken as it grows (or a row of the
                          │     slot cache); every turn of the loop is one forward pass over all decoding rows
                          │     together, each at its own position, with its own sampling
                          ▼
                      finished (a stop token, max_tokens, or cancelled): its row and blocks are freed

Requests join and leave between steps, so a short answer is never held up by a long one. The
engine knows nothing of HTTP: a request carries a callback that receives its events (on the
engine's thread); the HTTP layer turns them into responses.

The decoding rows are kept packed (a leaving row is filled by moving the last row into it): with
the slot cache each step reads one contiguous run of it and copies a row only when a request
joins or leaves, never per step; with the pool only the block tables move.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmsmith.model.constraints import Matcher, apply_masks
from lmsmith.model.decoding import TokenSampler, left_pad
from lmsmith.model.transformer import GPT, KVCache
from lmsmith.schema.generate import GenerationConfig
from lmsmith.serve.adapters import BASE, RowAdapters
from lmsmith.serve.kv_blocks import BlockPool, BlockStep, RowsAtOwnLengths, blocks_for, prefix_hashes

log = logging.getLogger("lmsmith.serve")


# ---------------------------------------------------------------------------------------------
# What a request asks for, and what it gets back


@dataclass(frozen=True)
class Sampling:
    """One request's sampling settings (checked by the HTTP layer before they get here)."""

    max_tokens: int
    temperature: float = 1.0  # 0 is greedy
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    logprobs: int | None = None  # with each new token, the log-probabilities of this many most likely ones
    prompt_logprobs: int | None = None  # the same for every prompt token (echo=true with logprobs)

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=max(self.max_tokens, 1), temperature=self.temperature,
                                top_k=self.top_k, top_p=self.top_p, seed=self.seed)


@dataclass
class Token:
    """One generated token, with its log-probability and the most likely alternatives if asked."""

    id: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


@dataclass
class PromptScores:
    """Per prompt token: its log-probability given the tokens before it (None for the first), and the top ones."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]


@dataclass
class Finished:
    reason: str  # "stop" (a stop token), "length" (max_tokens), "cancelled"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens found in the pool (a shared prefix): not computed again


Event = Token | PromptScores | Finished


class QueueFull(Exception):
    """More requests are waiting than the engine accepts; the client should retry later."""


class EngineStopped(Exception):
    """The engine is shutting down and takes no new requests."""


_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    prompt: list[int]
    sampling: Sampling
    stop_ids: frozenset[int]
    on_event: Callable[[Event], None]  # called on the engine's thread; must not block
    matcher: Matcher | None = None  # holds the output to a JSON schema, regex or grammar (model/constraints.py)
    adapter: int = BASE  # which LoRA adapter of the server decodes it (serve/adapters.py); BASE: none
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: bool = False
    # the engine's bookkeeping
    cache: KVCache | None = None  # during prefill: the request's own cache (or a row of one shared by a batch)
    cache_row: int = 0
    cache_offset: int = 0  # left padding before the prompt in that row
    done_prompt: int = 0  # prompt tokens prefilled so far
    last_logits: torch.Tensor | None = None  # logits after the last prefilled token
    scores: PromptScores | None = None
    sampler: TokenSampler | None = None
    next_token: int | None = None  # the token to feed at the next decode step
    generated: int = 0
    blocks: list[int] | None = None  # with a block pool: the blocks this request holds (its block table)
    promised: int = 0  # blocks the pool promised it that it has not taken yet
    names: list[bytes] = field(default_factory=list)  # its prompt's full blocks' prefix hashes
    shared: int = 0  # prompt tokens whose keys it found in the pool (a shared prefix), not prefilled

    def cancel(self) -> None:
        """Stop generating (the client went away, or a stop string was found); safe from any thread."""
        self.cancelled = True


# ---------------------------------------------------------------------------------------------
# The slot cache and the view the model sees for one batched decode step


class SlotCache:
    """Keys and values for `slots` sequences, each up to the model's context, preallocated once."""

    def __init__(self, model: GPT, slots: int):
        param = next(model.parameters())
        config = model.config
        shape = (slots, config.kv_heads, config.block_size, config.head_dim)
        self.keys = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(config.n_layer)]

    def fill(self, row: int, cache: KVCache, source: int, offset: int, length: int) -> None:
        """Copy `length` prefilled slots of row `source` of `cache`, from `offset` on (its left padding), into `row`."""
        for layer in range(len(self.keys)):
            self.keys[layer][row, :, :length] = cache.keys[layer][source, :, offset: offset + length]
            self.values[layer][row, :, :length] = cache.values[layer][source, :, offset: offset + length]

    def move(self, source: int, target: int, length: int) -> None:
        for layer in range(len(self.keys)):
            self.keys[layer][target, :, :length] = self.keys[layer][source, :, :length]
            self.values[layer][target, :, :length] = self.values[layer][source, :, :length]


class DecodeStep(RowsAtOwnLengths):
    """What `GPT.forward` reads as its cache for one decode step over the first n rows of a SlotCache.

    Each row is at its own position (`lengths`); the model's own KVCache has one length for all
    rows, so this stands in for it with the same four members. `length` is the longest row, which
    is all the model uses it for (its bound check); the engine advances the rows' lengths itself.
    The number of slots it attends over is read off a tensor (`key_slots`), not kept as a Python
    int, so that the compiled one-row step (compiled_decode.py) can treat it as dynamic: one graph
    for every length.
    """

    def __init__(self, slots: SlotCache, lengths: torch.Tensor):
        self.slots = slots
        self.lengths = lengths  # (n,) slots filled per row
        self.rows = torch.arange(lengths.numel(), device=lengths.device)
        self.length = int(lengths.max())
        self.key_slots = torch.arange(self.length + 1, device=lengths.device)  # what the longest row sees

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, end = self.rows.numel(), self.key_slots.numel()
        keys, values = self.slots.keys[layer], self.slots.values[layer]
        keys[self.rows, :, self.lengths] = k[:, :, 0]
        values[self.rows, :, self.lengths] = v[:, :, 0]
        return keys[:n, :, :end], values[:n, :, :end]

    def dynamic(self) -> DecodeStep:
        """Mark the number of slots seen, which grows every step, as dynamic for torch.compile."""
        torch._dynamo.mark_dynamic(self.key_slots, 0)
        return self


# ---------------------------------------------------------------------------------------------
# The engine


def top_logprobs(logprobs: torch.Tensor, n: int) -> list[list[tuple[int, float]]]:
    """For each row of (rows, V) log-probabilities, its n most likely (token, logprob)."""
    if n <= 0:
        return [[] for _ in range(logprobs.size(0))]
    values, ids = logprobs.topk(min(n, logprobs.size(-1)), dim=-1)
    return [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]


class Engine:
    """Owns the model and its KV cache slots; runs the decode loop on its own thread."""

    def __init__(self, model: GPT, vocab_size: int | None = None, max_batch: int = 32, max_queue: int = 256,
                 prefill_chunk: int = 256, compile: bool = False, kv_cache_tokens: int | None = None,
                 routing: RowAdapters | None = None, share_prefixes: bool = True):
        self.model = model.eval()
        self.vocab_size = min(vocab_size or model.config.vocab_size, model.config.vocab_size)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.device = next(model.parameters()).device
        self.routing = routing  # with adapters: told which adapter each row of every forward pass uses
        # The KV cache: (kv_cache_tokens) a pool of blocks shared by the requests in flight, allocated as they
        # write into it, each admitted when what its prompt and max_tokens can need fits; or max_batch slots of
        # the whole context each, preallocated
        self.pool = BlockPool(model, kv_cache_tokens) if kv_cache_tokens else None
        self.share_prefixes = share_prefixes and self.pool is not None
        self.slots = SlotCache(model, max_batch) if self.pool is None else None
        self.waiting: deque[Request] = deque()
        self.prefilling: list[Request] = []
        self.decoding: list[Request] = []  # row i of the slot cache is decoding[i]
        self.lengths: list[int] = []  # slots filled, per decoding row
        self.lock = threading.Condition()
        self.accepting = True
        self.thread: threading.Thread | None = None
        self.steps = 0  # decode steps run, for tests and stats
        self.compiled_steps = 0  # of which through the compiled graph
        self.largest_batch = 0
        # With compile: the decode step of a single row as a compiled graph (1.36x the eager step in
        # benchmarks/serve.py at one client). With more rows the eager step stays: a graph with a
        # dynamic row count measured 0.9x-1.0x it at 8 and 32 clients, and one graph per count
        # would take minutes to compile.
        self.compiled = None
        if compile:
            from lmsmith.model.compiled_decode import CompiledStep

            self.compiled = CompiledStep(self.model)

    # ---- the outside: submit, start, stop (any thread)

    def submit(self, request: Request) -> Request:
        with self.lock:
            if not self.accepting:
                raise EngineStopped("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting")
            if not self.fits(min(len(request.prompt) + request.sampling.max_tokens, self.model.config.block_size)):
                raise ValueError(f"a request of {len(request.prompt)} + {request.sampling.max_tokens} tokens never "
                                 f"fits the KV cache's {self.pool.tokens}")  # the HTTP layer refuses it first
            self.waiting.append(request)
            self.lock.notify()
        return request

    def warm_up(self) -> float:
        """Compile the one-row decode graph now, before a request waits on it; returns the seconds it
        took. The step writes into a free slot of the cache (every slot is, before the first request)."""
        started = time.perf_counter()
        with torch.inference_mode():
            lengths = torch.ones(1, dtype=torch.long, device=self.device)
            tokens = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            if self.pool is not None:  # the step writes into a free block (every block is, before the first request)
                self.compiled(tokens, BlockStep(self.pool, [[0, 1]], lengths).dynamic())
            else:
                self.compiled(tokens, DecodeStep(self.slots, lengths).dynamic())
        return time.perf_counter() - started

    def start(self) -> Engine:
        self.thread = threading.Thread(target=self._run, name="lmsmith-engine", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the ones already accepted, then end the loop."""
        with self.lock:
            self.accepting = False
            self.lock.notify()
        if self.thread is not None:
            self.thread.join(timeout)

    # ---- the loop (the engine's thread only)

    def _run(self) -> None:
        with torch.inference_mode():
            while self._wait_for_work():
                try:
                    self._turn()
                except Exception:  # a bug here must not leave clients hanging: fail what is in flight, go on
                    log.exception("engine step failed; ending the requests in flight")
                    self._fail_all()

    def _wait_for_work(self) -> bool:
        with self.lock:
            while not (self.waiting or self.prefilling or self.decoding):
                if not self.accepting:
                    return False
                self.lock.wait()
            while self.waiting and len(self.prefilling) + len(self.decoding) < self.max_batch:
                if self.pool is not None and not self._reserve(self.waiting[0]):
                    break  # first come, first served: the next request waits for blocks to come back
                self.prefilling.append(self.waiting.popleft())
            return True

    def _reserve(self, request: Request) -> bool:
        """Admit a request into the pool: the blocks of a prefix already there are its own at once, the rest
        it can need (its prompt, its max_tokens, within the context) are promised for when its tokens reach
        them; False if they do not fit beside the requests already admitted. A request that could never fit
        is refused at submission."""
        need = min(len(request.prompt) + request.sampling.max_tokens, self.model.config.block_size)
        if self.share_prefixes:
            request.names = prefix_hashes(request.prompt, request.adapter, self.pool.block)
        # At least the prompt's last token is prefilled (its logits give the first new token); a request that
        # scores its prompt prefills all of it
        reusable = [] if request.sampling.prompt_logprobs is not None else \
            request.names[: (len(request.prompt) - 1) // self.pool.block]
        shared = self.pool.admit(reusable, blocks_for(need, self.pool.block))
        if shared is None:
            return False
        request.blocks, request.shared = shared, len(shared) * self.pool.block
        request.done_prompt = request.shared  # prefilling starts past the shared prefix
        request.promised = blocks_for(need, self.pool.block) - len(shared)
        return True

    def fits(self, tokens: int) -> bool:
        """Whether a request of `tokens` tokens (prompt and new ones) can ever be served."""
        return self.pool is None or tokens <= self.pool.tokens

    def _turn(self) -> None:
        """One turn: drop cancelled requests, prefill up to `prefill_chunk` prompt tokens (shortest remaining
        prompts first, so short requests reach their first token quickly even behind a long prompt), then
        one decode step for every decoding row."""
        self._drop_cancelled()
        budget = self.prefill_chunk  # prompt tokens per turn: short prompts go in together, a long one in chunks
        waiting = sorted(self.prefilling, key=lambda r: len(r.prompt) - r.done_prompt)
        together = []
        for request in waiting:
            if (request.done_prompt == 0 and request.sampling.prompt_logprobs is None and not request.shared
                    and len(request.prompt) <= budget):
                together.append(request)
                budget -= len(request.prompt)
        if together:
            self._prefill_together(together)
        for request in waiting:
            if budget <= 0:
                break
            if request not in together:
                budget -= self._prefill_chunk(request, budget)
        if self.decoding:
            self._decode_step()

    def _drop_cancelled(self) -> None:
        for request in [r for r in self.prefilling if r.cancelled]:
            self.prefilling.remove(request)
            self._finish(request, "cancelled")
        for row in reversed(range(len(self.decoding))):
            if self.decoding[row].cancelled:
                self._leave(row, "cancelled")

    # ---- prefill

    def _prefill_together(self, requests: list[Request]) -> None:
        """Whole short prompts in one forward pass, left-padded into one batch (one pass costs far less
        than one per prompt when many arrive at once); each row is then copied into its own slot."""
        tokens, pad = left_pad([r.prompt for r in requests], self.device)
        param = next(self.model.parameters())
        cache = KVCache(self.model.config, len(requests), tokens.size(1), param.device, param.dtype, pad=pad)
        self._route(requests)
        logits = self.model(tokens, cache=cache, last_only=True).logits[:, -1]
        for row, request in enumerate(requests):
            request.cache, request.cache_row, request.cache_offset = cache, row, int(pad[row])
            request.done_prompt = len(request.prompt)
            request.last_logits = logits[row: row + 1]
            self.prefilling.remove(request)
            self._begin_decoding(request)

    def _prefill_chunk(self, request: Request, budget: int) -> int:
        """Run the next at most `budget` tokens of the prompt; returns how many ran."""
        if request.cache is None:
            param = next(self.model.parameters())
            request.cache = KVCache(self.model.config, 1, len(request.prompt), param.device, param.dtype)
            if request.shared:  # a prefix already in the pool: its keys are copied, not computed
                self.pool.load(request.blocks, request.cache)
            if request.sampling.prompt_logprobs is not None:
                request.scores = PromptScores([None], [None])
        start = request.done_prompt
        chunk = torch.tensor([request.prompt[start: start + budget]], dtype=torch.long, device=self.device)
        scoring = request.scores is not None
        self._route([request])
        logits = self.model(chunk, cache=request.cache, last_only=not scoring).logits[0]
        if scoring:
            self._score_chunk(request, chunk[0], logits)
        request.done_prompt += chunk.size(1)
        request.last_logits = logits[-1:]
        if request.done_prompt == len(request.prompt):
            self.prefilling.remove(request)
            self._begin_decoding(request)
        return chunk.size(1)

    def _score_chunk(self, request: Request, chunk: torch.Tensor, logits: torch.Tensor) -> None:
        """Log-probabilities of this chunk's tokens: each from the logits of the position before it."""
        before = logits[:-1] if request.last_logits is None else torch.cat([request.last_logits, logits[:-1]])
        targets = chunk if request.last_logits is not None else chunk[1:]
        if targets.numel() == 0:
            return
        logprobs = before[:, : self.vocab_size].float().log_softmax(dim=-1)
        request.scores.logprobs += logprobs.gather(1, targets[:, None])[:, 0].tolist()
        request.scores.top += top_logprobs(logprobs, request.sampling.prompt_logprobs)

    def _begin_decoding(self, request: Request) -> None:
        """The prompt is in: report its scores, pick the first token, and give the request a row."""
        if request.scores is not None:
            self._emit(request, request.scores)
        if request.sampling.max_tokens == 0:
            self._finish(request, "length")
            return
        prompt = torch.tensor([request.prompt], dtype=torch.long, device=self.device)
        request.sampler = TokenSampler(request.sampling.generation_config(), self.vocab_size, prompt,
                                       real=torch.ones_like(prompt, dtype=torch.bool))
        token = self._sample([request], request.last_logits)[0]
        request.last_logits = None
        if self._deliver(request, token):
            return
        if len(request.prompt) >= self.model.config.block_size:  # no room left for another token
            self._finish(request, "length")
            return
        row = len(self.decoding)
        if self.pool is not None:  # the prompt's blocks past its shared prefix, then its full ones are named
            request.blocks += [self._take(request) for _ in range(blocks_for(len(request.prompt), self.pool.block)
                                                                   - len(request.blocks))]
            self.pool.fill(request.blocks, request.cache, request.cache_row, request.cache_offset, len(request.prompt),
                           start=request.shared)
            self.pool.name(request.names, request.blocks)
        else:
            self.slots.fill(row, request.cache, request.cache_row, request.cache_offset, len(request.prompt))
        request.cache = None
        self.decoding.append(request)
        self.lengths.append(len(request.prompt))

    # ---- decode

    def _decode_step(self) -> None:
        tokens = torch.tensor([[r.next_token] for r in self.decoding], dtype=torch.long, device=self.device)
        lengths = torch.tensor(self.lengths, dtype=torch.long, device=self.device)
        self._route(self.decoding)
        if self.pool is not None:  # a row whose next token starts a block takes it now
            for request, length in zip(self.decoding, self.lengths):
                if length // self.pool.block == len(request.blocks):
                    request.blocks.append(self._take(request))
        if self.compiled is not None and len(self.decoding) == 1:
            step = self._step(lengths)
            logits = self.compiled(tokens, step.dynamic())
            self.compiled_steps += 1
        else:
            logits = self.model(tokens, cache=self._step(lengths)).logits[:, -1]
        self.steps += 1
        self.largest_batch = max(self.largest_batch, len(self.decoding))
        self.lengths = [n + 1 for n in self.lengths]
        picked = self._sample(self.decoding, logits)
        for row in reversed(range(len(self.decoding))):  # backwards: a leaving row is refilled from the end
            request = self.decoding[row]
            if self._deliver(request, picked[row]):
                self._leave(row, None)
            elif self.lengths[row] >= self.model.config.block_size:  # the context is full
                self._leave(row, "length")

    def _take(self, request: Request) -> int:
        """One more of the blocks the pool promised this request."""
        request.promised -= 1
        return self.pool.take()

    def _route(self, requests: list[Request]) -> None:
        """Tell the adapted layers which adapter each row of the coming forward pass uses."""
        if self.routing is not None:
            self.routing.route([r.adapter for r in requests], self.device)

    def _step(self, lengths: torch.Tensor) -> DecodeStep | BlockStep:
        """The cache view of one decode step over the decoding rows: slots, or blocks through block tables."""
        if self.pool is not None:
            return BlockStep(self.pool, [r.blocks for r in self.decoding], lengths)
        return DecodeStep(self.slots, lengths)

    def _sample(self, requests: list[Request], logits: torch.Tensor) -> list[Token]:
        """The next token of each request. Greedy rows are picked together in one argmax; sampled
        rows each use their own sampler (and random generator), so a seeded request gives the same
        text whatever else is in the batch."""
        logits = logits[:, : self.vocab_size].float()
        matchers = [r.matcher for r in requests]
        if any(m is not None for m in matchers):
            # the same batch: constrained rows get their masks, the free rows' logits are left untouched
            logits = logits.clone()
            apply_masks(logits, matchers)
        picked = [0] * len(requests)
        greedy = [i for i, r in enumerate(requests) if r.sampling.temperature == 0]
        if greedy:
            best = logits[greedy].argmax(dim=-1).tolist()
            for i, token in zip(greedy, best):
                picked[i] = token
        for i, request in enumerate(requests):
            if request.sampling.temperature != 0:
                picked[i] = int(request.sampler(logits[i: i + 1])[0])
        wanting = [i for i, r in enumerate(requests) if r.sampling.logprobs is not None]
        tokens = [Token(t) for t in picked]
        if wanting:
            logprobs = logits[wanting].log_softmax(dim=-1)
            chosen = logprobs.gather(1, torch.tensor([[picked[i]] for i in wanting], device=logits.device))[:, 0]
            for j, i in enumerate(wanting):
                tokens[i].logprob = float(chosen[j])
                tokens[i].top = top_logprobs(logprobs[j: j + 1], requests[i].sampling.logprobs)[0]
        return tokens

    def _deliver(self, request: Request, token: Token) -> bool:
        """Hand a new token to its request; True when the request is finished by it."""
        request.generated += 1
        ended = token.id in request.stop_ids
        if request.matcher is not None and not ended and not request.matcher.accept(token.id):
            # the mask allowed only tokens the grammar takes, so this is a bug: end this request, not the others
            log.error("request %d: its grammar refused token %d that its mask allowed", request.id, token.id)
            self._finish(request, "error")
            return True
        self._emit(request, token)  # a stop token too: its log-probability is part of a scored text
        if ended or (request.matcher is not None and request.matcher.finished):
            self._finish(request, "stop")  # a stop token, or a complete output that nothing more may follow
            return True
        request.next_token = token.id
        if request.generated >= request.sampling.max_tokens:
            self._finish(request, "length")
            return True
        return False

    def _emit(self, request: Request, event: Event) -> None:
        """Give an event to its request's callback; a callback that fails cancels its request, no one else's."""
        try:
            request.on_event(event)
        except Exception:
            log.exception("request %d: its event callback failed; cancelling it", request.id)
            request.cancel()

    def _leave(self, row: int, reason: str | None) -> None:
        """Free a decoding row: the last row moves into it, so the rows stay packed."""
        request = self.decoding[row]
        last = len(self.decoding) - 1
        if row != last:
            if self.slots is not None:  # a block table moves with its request: no keys to copy
                self.slots.move(last, row, self.lengths[last])
            self.decoding[row], self.lengths[row] = self.decoding[last], self.lengths[last]
        self.decoding.pop()
        self.lengths.pop()
        if reason is not None:
            self._finish(request, reason)

    def _finish(self, request: Request, reason: str) -> None:
        request.cache = request.sampler = request.last_logits = request.matcher = None
        if request.blocks is not None:
            self.pool.release(request.blocks, request.promised)
            request.blocks, request.promised = None, 0
        log.info("request %d %s: %d prompt + %d new tokens", request.id,
                 "finished" if reason in ("stop", "length") else reason, len(request.prompt), request.generated)
        self._emit(request, Finished(reason, len(request.prompt), request.generated, request.shared))

    def _fail_all(self) -> None:
        for request in [*self.prefilling, *self.decoding]:
            self._finish(request, "error")  # gives their blocks back too
        self.prefilling, self.decoding, self.lengths = [], [], []

