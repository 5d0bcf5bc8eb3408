"""The KV cache as a pool of fixed-size blocks, sized by tokens (`--kv-cache-tokens`), not slots x context.

    pool: per layer, keys and values of `blocks` blocks of `block` tokens each, allocated once
    a request: a list of block ids (its block table); token t of it lives in block table[t // block],
    at offset t % block

A request is admitted only when the pool holds the blocks its prompt plus max_tokens can need
(capped at the model's context), so a running request never runs out of room; those blocks go back
when it finishes. Memory is what --kv-cache-tokens says, whatever the context: a 32k-context model
serving short chats needs blocks for the short chats only. Attention reads a row's blocks through its
table (BlockStep gathers them into one contiguous run per row), with the same mask and positions as
the slot cache's DecodeStep, so greedy outputs are the same tokens.
"""

from __future__ import annotations

import torch

from lmsmith.model.transformer import GPT, KVCache

BLOCK_TOKENS = 16  # tokens per block: small enough that a short answer wastes little, large enough to gather fast


def blocks_for(tokens: int, block: int = BLOCK_TOKENS) -> int:
    return -(-tokens // block)


class BlockPool:
    """Keys and values of `tokens` tokens (rounded up to whole blocks), shared by every request in flight."""

    def __init__(self, model: GPT, tokens: int, block: int = BLOCK_TOKENS):
        param = next(model.parameters())
        config = model.config
        self.block = block
        self.blocks = blocks_for(tokens, block)
        shape = (self.blocks, config.kv_heads, block, config.head_dim)
        self.keys = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(config.n_layer)]
        self.free = list(range(self.blocks - 1, -1, -1))  # popped from the end: block 0 first

    @property
    def tokens(self) -> int:
        return self.blocks * self.block

    def take(self, tokens: int) -> list[int] | None:
        """Blocks for `tokens` tokens, or None (nothing taken) when too few are free."""
        need = blocks_for(tokens, self.block)
        if need > len(self.free):
            return None
        return [self.free.pop() for _ in range(need)]

    def give(self, blocks: list[int]) -> None:
        self.free.extend(reversed(blocks))

    def fill(self, blocks: list[int], cache: KVCache, source: int, offset: int, length: int) -> None:
        """Copy `length` prefilled slots of row `source` of `cache`, from `offset` on, into `blocks`."""
        for i in range(blocks_for(length, self.block)):
            start = offset + i * self.block
            n = min(self.block, offset + length - start)
            for layer in range(len(self.keys)):
                self.keys[layer][blocks[i], :, :n] = cache.keys[layer][source, :, start: start + n]
                self.values[layer][blocks[i], :, :n] = cache.values[layer][source, :, start: start + n]


class RowsAtOwnLengths:
    """A decode step's cache whose n rows each stand at their own length (`lengths`), attending over
    `key_slots` (the slots the longest row sees): the positions and the mask such a cache gives the model.
    engine.DecodeStep (slots) and BlockStep (blocks) differ only in where the keys and values live."""

    lengths: torch.Tensor
    key_slots: torch.Tensor

    def positions(self, new: int, device) -> torch.Tensor:
        return self.lengths[:, None]

    def mask(self, new: int, device) -> torch.Tensor:
        """Each row sees its own filled slots and the new one; the rest (shorter rows, unused blocks) is hidden."""
        return (self.key_slots[None, :] <= self.lengths[:, None])[:, None, None, :]

    # What compiled_decode.decode_step asks of a cache
    def decode_positions(self) -> torch.Tensor:
        return self.positions(1, None)

    def decode_mask(self) -> torch.Tensor:
        return self.mask(1, None)


class BlockStep(RowsAtOwnLengths):
    """What `GPT.forward` reads as its cache for one decode step of n rows, each at its own length,
    their keys and values in the pool's blocks (the block-table counterpart of engine.DecodeStep)."""

    def __init__(self, pool: BlockPool, tables: list[list[int]], lengths: torch.Tensor):
        device = lengths.device
        self.pool = pool
        self.lengths = lengths  # (n,) slots filled per row
        self.length = int(lengths.max())
        self.key_slots = torch.arange(self.length + 1, device=device)  # what the longest row sees
        # Blocks the longest row needs, the new token's included, and room for one slot more: then the slots
        # read are always fewer than the slots gathered, and at least 2 blocks, since torch.compile treats a
        # dimension of size 1 as a constant; either edge would compile another graph (the spare is masked)
        used = max(2, blocks_for(self.length + 2, pool.block))
        self.tables = torch.tensor([t[:used] + [0] * (used - len(t[:used])) for t in tables], dtype=torch.long,
                                   device=device)
        rows = torch.arange(lengths.numel(), device=device)
        self.write_block = self.tables[rows, lengths // pool.block]
        self.write_offset = lengths % pool.block

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.pool.keys[layer], self.pool.values[layer]
        keys[self.write_block, :, self.write_offset] = k[:, :, 0]
        values[self.write_block, :, self.write_offset] = v[:, :, 0]
        return self._gather(keys), self._gather(values)

    def _gather(self, store: torch.Tensor) -> torch.Tensor:
        """(n, heads, slots, head_dim): each row's blocks in order, cut to the slots the longest row sees."""
        n, used = self.tables.shape
        blocks = store[self.tables]  # (n, used, heads, block, head_dim)
        heads, block, dim = blocks.shape[2:]
        return blocks.transpose(1, 2).reshape(n, heads, used * block, dim)[:, :, : self.key_slots.numel()]

    def dynamic(self) -> BlockStep:
        """Mark the slots seen and the blocks read, which grow as the row does, as dynamic for torch.compile."""
        torch._dynamo.mark_dynamic(self.key_slots, 0)
        torch._dynamo.mark_dynamic(self.tables, 1)
        return self
