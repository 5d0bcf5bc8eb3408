"""How big the server's KV cache may grow, chosen once at start-up, before any of it is allocated.

    --kv-cache-tokens N   a block pool of up to N tokens
    --kv-cache-gb G       a block pool of up to as many tokens as G GiB hold
    neither               a block pool of up to KV_SHARE of the free memory, and no more than max_batch x the
                          context (more could never be in flight at once)
    serve.kv_slots=true   the slot cache instead: max_batch x the whole context, preallocated (the cache before
                          the pool, kept to compare against)

A pool allocates its blocks as requests write into them (serve/kv_blocks.py), so its limit costs
nothing until it is used: SmolLM2-135M (8k context, 30 layers) starts with 1,024 tokens of cache
(45 MiB) where 32 slots of its whole context took 12 GB. Half the free memory, not all of it:
prefill activations, the batch's logits and whatever else runs on the machine need the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmsmith.core.errors import UserError
from lmsmith.schema.model import ModelConfig
from lmsmith.serve.kv_blocks import BLOCK_TOKENS, blocks_for

GiB = 1 << 30
KV_SHARE = 0.5  # of the free memory, the most a default KV cache takes


@dataclass(frozen=True)
class KVCachePlan:
    pool_tokens: int | None  # a block pool of up to this many tokens; None: the slot cache
    bytes: int  # the most it allocates (a pool: once full)
    why: str  # for the start-up line

    def describe(self) -> str:
        if self.pool_tokens is None:
            return f"KV cache: slots of the whole context, {size(self.bytes)} ({self.why})"
        return (f"KV cache: a pool of up to {self.pool_tokens:,} tokens in blocks of {BLOCK_TOKENS}, up to "
                f"{size(self.bytes)}, allocated as requests need it ({self.why})")


def size(n: float) -> str:
    """Bytes as GiB, or MiB below a tenth of one (a test model's cache is a few MiB)."""
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.1f} MiB"


def bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """Keys and values of one token in every layer."""
    return config.n_layer * 2 * config.kv_heads * config.head_dim * torch.empty(0, dtype=dtype).element_size()


def plan_kv_cache(config: ModelConfig, dtype: torch.dtype, max_batch: int, kv_cache_tokens: int | None,
                  kv_cache_gb: float | None, free_bytes: float | None, slots: bool = False) -> KVCachePlan:
    """The KV cache to allocate (see the module docstring); `free_bytes` None where the device cannot say."""
    per_token = bytes_per_token(config, dtype)
    in_flight = max_batch * config.block_size  # the most tokens requests in flight can hold
    if slots:
        return KVCachePlan(None, in_flight * per_token, "serve.kv_slots")
    if kv_cache_tokens is not None:  # as asked, in whole blocks
        tokens = blocks_for(kv_cache_tokens) * BLOCK_TOKENS
        return KVCachePlan(tokens, tokens * per_token, "--kv-cache-tokens")
    if kv_cache_gb is not None:
        return pool_plan(int(kv_cache_gb * GiB) // per_token, per_token, f"--kv-cache-gb {kv_cache_gb:g}")
    if free_bytes is None:
        return pool_plan(in_flight, per_token, f"{max_batch} x {config.block_size:,} tokens; the free memory is "
                                               "unknown here: give --kv-cache-gb to bound it")
    budget = KV_SHARE * free_bytes
    if in_flight * per_token <= budget:
        return pool_plan(in_flight, per_token, f"{max_batch} x {config.block_size:,} tokens, within "
                                               f"{KV_SHARE:.0%} of the {size(free_bytes)} free")
    return pool_plan(int(budget) // per_token, per_token, f"{KV_SHARE:.0%} of the {size(free_bytes)} free; "
                                                          f"{max_batch} x {config.block_size:,} tokens would take "
                                                          f"{size(in_flight * per_token)}")


def pool_plan(tokens: int, per_token: int, why: str) -> KVCachePlan:
    """A pool of at most `tokens` tokens, in whole blocks: within the memory it was sized by."""
    tokens = tokens // BLOCK_TOKENS * BLOCK_TOKENS
    if tokens < BLOCK_TOKENS:
        raise UserError(f"the KV cache would hold no block of {BLOCK_TOKENS} tokens ({why}): give a larger "
                        f"--kv-cache-gb or --kv-cache-tokens, or free some memory")
    return KVCachePlan(tokens, tokens * per_token, why)
