"""How big the server's KV cache is, chosen once at start-up, before any of it is allocated.

    --kv-cache-tokens N   a block pool of N tokens
    --kv-cache-gb G       a block pool of as many tokens as G GiB hold
    neither               the slot cache (max_batch x the whole context, the fastest), when it takes at most
                          KV_SHARE of the free memory; else a block pool of KV_SHARE of the free memory

The slot cache preallocates every request's whole context: SmolLM2-135M (8k context, 30 layers)
at batch 32 is 12 GB before the first request, a 32k-context model four times that. A block pool
holds what requests in flight use, but its steps gather each row's blocks (0.7-0.8x the slot
cache's tokens/s in benchmarks/serve.py), so it is the default only where slots would not fit.
Half the free memory, not all of it: prefill activations, the batch's logits and whatever else
runs on the machine need the rest.
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
    pool_tokens: int | None  # a block pool of this many tokens; None: the slot cache
    bytes: int  # what it allocates
    why: str  # for the start-up line

    def describe(self) -> str:
        kind = (f"a pool of {self.pool_tokens:,} tokens in blocks of {BLOCK_TOKENS}" if self.pool_tokens
                else "slots of the whole context")
        return f"KV cache: {kind}, {size(self.bytes)} ({self.why})"


def size(n: float) -> str:
    """Bytes as GiB, or MiB below a tenth of one (a test model's cache is a few MiB)."""
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.1f} MiB"


def bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """Keys and values of one token in every layer."""
    return config.n_layer * 2 * config.kv_heads * config.head_dim * torch.empty(0, dtype=dtype).element_size()


def plan_kv_cache(config: ModelConfig, dtype: torch.dtype, max_batch: int, kv_cache_tokens: int | None,
                  kv_cache_gb: float | None, free_bytes: float | None) -> KVCachePlan:
    """The KV cache to allocate (see the module docstring); `free_bytes` None where the device cannot say."""
    per_token = bytes_per_token(config, dtype)
    if kv_cache_tokens is not None:  # as asked, in whole blocks
        tokens = blocks_for(kv_cache_tokens) * BLOCK_TOKENS
        return KVCachePlan(tokens, tokens * per_token, "--kv-cache-tokens")
    if kv_cache_gb is not None:
        return pool_plan(int(kv_cache_gb * GiB) // per_token, per_token, f"--kv-cache-gb {kv_cache_gb:g}")
    slot_bytes = max_batch * config.block_size * per_token
    if free_bytes is None:
        return KVCachePlan(None, slot_bytes, "the free memory is unknown here: give --kv-cache-gb to bound it")
    budget = KV_SHARE * free_bytes
    if slot_bytes <= budget:
        return KVCachePlan(None, slot_bytes, f"{max_batch} x {config.block_size:,} tokens fit in "
                                             f"{KV_SHARE:.0%} of the {size(free_bytes)} free")
    return pool_plan(int(budget) // per_token, per_token,
                     f"slots of {max_batch} x {config.block_size:,} tokens would take {size(slot_bytes)}, "
                     f"more than {KV_SHARE:.0%} of the {size(free_bytes)} free")


def pool_plan(tokens: int, per_token: int, why: str) -> KVCachePlan:
    """A pool of at most `tokens` tokens, in whole blocks: within the memory it was sized by."""
    tokens = tokens // BLOCK_TOKENS * BLOCK_TOKENS
    if tokens < BLOCK_TOKENS:
        raise UserError(f"the KV cache would hold no block of {BLOCK_TOKENS} tokens ({why}): give a larger "
                        f"--kv-cache-gb or --kv-cache-tokens, or free some memory")
    return KVCachePlan(tokens, tokens * per_token, why)
