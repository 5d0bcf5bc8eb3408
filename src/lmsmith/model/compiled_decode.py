"""Decoding through torch.compile: each new token is one call of a compiled graph.

Eager decoding of a small model spends much of each token between operations, in Python,
module calls and dispatch around some 150 small kernels: benchmarks/generate.py's model takes
about 2.1 ms a token on 2 CPU cores, of which its matrix-vector products take 1.0. Compiled,
the step is one graph of generated C++: the elementwise work (norms, GELU, residual adds, the
cache writes, attention for the one new query) is fused into a few loops, and on a CPU
max-autotune picks for each weight the faster of MKL and inductor's own GEMM kernel, with the
weights packed ahead of time (freezing).

A graph can be reused only while the Python values it saw stay the same, so the cache's
bookkeeping moves into tensors: the slot a step writes is a (1,) tensor rather than a Python
int, and attention runs over every slot of the cache with the unwritten ones masked out. The
cache's length is a dynamic dimension of the graph, so one compilation serves every step,
every prompt and every slide of the window, for one batch size. It costs seconds (tens of them
the first time; torch keeps the result on disk), so it pays back over long outputs or in a
long-lived process: `lmsmith generate --compile` (or `compile: true` in a recipe's `generate:`),
`lmsmith chat --compile`, and `lmsmith serve --compile`, whose engine runs the same step over its
own KV cache (serve/kv_blocks.py's BlockStep, or engine.py's DecodeStep over slots) for a request
decoding alone.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FunctionType

import torch
import torch._inductor.config as inductor_config

from lmsmith.core.errors import UserError
from lmsmith.model.transformer import GPT, KVCache


class StaticKVCache(KVCache):
    """A KVCache whose decode steps all look the same to a compiled graph.

    The prompt is prefilled through KVCache's own path; then `slot`, a (1,) tensor, says where the
    next token's keys and values go, and each step sees all `max_len` slots, masked past the
    filled ones.
    """

    def __init__(self, model: GPT, batch_size: int, max_len: int, pad: torch.Tensor | None = None):
        param = next(model.parameters())
        # A copy made here, like the cache's other tensors: the graph's guards tell a tensor made
        # under inference mode from one made outside it, and each would get its own graph.
        pad = pad.clone() if pad is not None else None
        super().__init__(model.config, batch_size, max_len, param.device, param.dtype, pad=pad)
        self.slot: torch.Tensor | None = None  # None while prefilling
        self.key_slots = torch.arange(self.max_len, device=param.device)
        # One graph for every cache length: attending over exactly the slots this output needs
        # beats a block_size cache (mostly masked) and costs no recompilation.
        for t in [*self.keys, *self.values]:
            torch._dynamo.mark_dynamic(t, 2)
        torch._dynamo.mark_dynamic(self.key_slots, 0)

    def start_decoding(self) -> None:
        self.slot = torch.tensor([self.length], device=self.key_slots.device)

    def advance(self) -> None:
        """One token was decoded; the slot tensor changes in place, so the graph's input stays the same."""
        self.length += 1
        self.slot += 1

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.slot is None:
            return super().store(layer, k, v)
        self.keys[layer].index_copy_(2, self.slot, k)
        self.values[layer].index_copy_(2, self.slot, v)
        return self.keys[layer], self.values[layer]

    def decode_positions(self) -> torch.Tensor:
        """The new token's position: (1,), or (B, 1) when rows are left-padded."""
        if self.pad is None:
            return self.slot
        return self.slot[None, :] - self.pad[:, None]

    def decode_mask(self) -> torch.Tensor:
        """(B or 1, 1, 1, max_len): the filled slots and the new one, less each row's left padding."""
        allowed = self.key_slots[None, :] <= self.slot[:, None]
        if self.pad is not None:
            allowed = allowed & (self.key_slots[None, :] >= self.pad[:, None])
        return allowed[:, None, None, :]


def decode_step(model: GPT, token: torch.Tensor, cache) -> torch.Tensor:
    """Logits (B, V) for what follows `token` (B, 1): GPT.forward's pass with a cache, minus its
    Python bookkeeping (the caller advances the cache, outside the graph). The cache is a
    StaticKVCache, or the serving engine's DecodeStep: both give the new token's positions and mask."""
    x = model.hidden_states(token, cache.decode_positions(), cache, cache.decode_mask())
    return model.head(x)[:, -1]


def check_compiler(device: torch.device) -> None:
    """torch.compile on a CPU writes C++ and builds it: without a compiler it fails mid-generation."""
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        raise UserError("--compile on a CPU needs a C++ compiler (torch.compile builds C++ code): "
                        "install one (apt-get install g++), or generate without --compile")


@contextmanager
def attention_in_the_open(model: GPT) -> Iterator[None]:
    """Attention as its plain formula while decoding, which inductor fuses into one loop (for a
    single query SDPA would stay a separate, slower kernel); the eager prefill keeps SDPA."""
    for block in model.blocks:
        block.attn.in_the_open = True
    try:
        yield
    finally:
        for block in model.blocks:
            block.attn.in_the_open = False


def with_own_code(function: FunctionType) -> FunctionType:
    """The same function with a code object of its own. Dynamo keeps compiled graphs on the code
    object, at most 8 of them: every decoder's `step` would share one list (each model its own
    graph), the ninth model would silently run eagerly, and the old graphs would keep their
    models' weights alive. Its own code lets a decoder's graphs go with it."""
    return FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                        function.__defaults__, function.__closure__)


class CompiledStep:
    """`decode_step` of one model, compiled: call it as `step(token, cache)`.

    Meant for a model that no longer changes: on a CPU the graph keeps the weights it saw, packed
    (a second copy of them in memory), so a model trained further must get a new one.
    """

    def __init__(self, model: GPT):
        device = next(model.parameters()).device
        check_compiler(device)
        self.model = model
        # CPU: max-autotune chooses each matrix product's kernel; freezing packs the weights once
        # (inference only: the graph keeps the weights it saw). Elsewhere the default mode.
        # (Set through config.patch around each call: torch.compile's own `options` do not turn freezing on.)
        self.settings = {"max_autotune": True, "freezing": True} if device.type == "cpu" else {}
        # ... and quietly: autotuning otherwise prints a table per weight shape to stderr.
        self.settings |= {"autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}

        # The model is closed over, not passed: its weights are then constants of the graph (which
        # freezing needs), where an argument's would be inputs, read afresh at every call.
        def step(token: torch.Tensor, cache) -> torch.Tensor:  # a StaticKVCache or the engine's DecodeStep
            return decode_step(model, token, cache)

        self.step = torch.compile(with_own_code(step), fullgraph=True, dynamic=False)

    def __call__(self, token: torch.Tensor, cache) -> torch.Tensor:
        """Logits (B, V) after `token` (B, 1), whose keys and values go into the cache."""
        with inductor_config.patch(self.settings), attention_in_the_open(self.model):
            return self.step(token, cache)


class CompiledDecoder:
    """Prefill eagerly, then decode one token per call of a compiled `decode_step` (for generate_tokens)."""

    def __init__(self, model: GPT):
        self.model = model
        self.step = CompiledStep(model)
        self.compiled_for: set[tuple[int, bool]] = set()  # (batch size, padded): each is its own graph
        self.compile_seconds = 0.0  # spent in the first step of each graph, nearly all of it compiling

    def prefill(self, tokens: torch.Tensor, pad: torch.Tensor, max_len: int) -> tuple[StaticKVCache, torch.Tensor]:
        """A fresh static cache of `max_len` slots filled with `tokens` (B, L), and the logits after them."""
        cache = StaticKVCache(self.model, tokens.size(0), max_len, pad=pad)
        logits = self.model(tokens, cache=cache, last_only=True).logits[:, -1]
        cache.start_decoding()
        return cache, logits

    def __call__(self, token: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """Logits (B, V) after `token` (B,), written into the cache's next slot."""
        graph = (token.size(0), cache.pad is not None)
        started = time.perf_counter()
        logits = self.step(token[:, None], cache)
        if graph not in self.compiled_for:
            self.compiled_for.add(graph)
            self.compile_seconds += time.perf_counter() - started
        cache.advance()
        return logits
