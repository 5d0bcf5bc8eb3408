"""The KV cache as a pool of fixed-size blocks, sized by tokens (`--kv-cache-tokens`), not slots x context.

    pool: per layer, keys and values of up to `limit` blocks of `block` tokens each, allocated as they
          are first needed (the tensors grow, doubling, up to the limit), so memory follows the tokens in flight
    a request: a list of block ids (its block table); token t of it lives in block table[t // block],
               at offset t % block

Admission reserves, takes memory later: a request is admitted only when the blocks its prompt plus
max_tokens can need (capped at the model's context) fit under the limit beside every other admitted
request's, but it takes each block only when its tokens reach it. So a running request can always
grow (no preemption, no recomputation, no deadlock: waiting requests are admitted first come, first
served as others finish), while memory holds only the blocks actually written. Reserving is the
simpler of the two correct designs: preempting a request to make room would have to rebuild its keys
by recomputation and carry its sampler, grammar and adapter state across, for more concurrency only
when clients ask for far more max_tokens than they use.

Prefix sharing: each full block of a prompt is named by a hash of its tokens chained with the hash of
the block before it (and the adapter, whose keys differ). A request whose prompt starts with blocks
already in the pool holds those blocks too (refcounted) and prefills only the rest. A block nobody
holds any longer stays named, idle, until its room is needed: free blocks are taken first, then the
longest-idle named block, and only then does the pool grow, so the pool never grows for a cache of
old prefixes. Attention reads a row's blocks through its table (BlockStep gathers them into one
contiguous run per row), with the same mask and positions as the slot cache's DecodeStep, so greedy
outputs are the same tokens.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from lmsmith.model.transformer import GPT, KVCache

BLOCK_TOKENS = 16  # tokens per block: small enough that a short answer wastes little, large enough to gather fast
FIRST_BLOCKS = 64  # blocks allocated at start-up (1,024 tokens); the pool doubles from there as requests need


def blocks_for(tokens: int, block: int = BLOCK_TOKENS) -> int:
    return -(-tokens // block)


def prefix_hashes(tokens: list[int], adapter: int, block: int = BLOCK_TOKENS) -> list[bytes]:
    """One name per full block of `tokens`: a digest of its tokens and the name of the block before it, so
    equal names mean equal prefixes (a 128-bit digest: a collision would silently share wrong keys)."""
    names, before = [], adapter.to_bytes(8, "little", signed=True)
    for start in range(0, len(tokens) - block + 1, block):
        chunk = b"".join(t.to_bytes(4, "little") for t in tokens[start: start + block])
        before = hashlib.blake2b(before + chunk, digest_size=16).digest()
        names.append(before)
    return names


class BlockPool:
    """Keys and values of up to `tokens` tokens (rounded up to whole blocks), shared by every request in flight.

    Every allocated block is in one of three states: held (by `refs` requests), idle (named by a prefix
    hash, held by nobody, kept for a later request with the same prefix) or free. The invariant that makes
    admission safe: blocks held plus blocks promised to admitted requests never exceed the limit.
    """

    def __init__(self, model: GPT, tokens: int, block: int = BLOCK_TOKENS, first_blocks: int | None = None):
        param = next(model.parameters())
        config = model.config
        self.block = block
        self.limit = blocks_for(tokens, block)
        self.layers = config.n_layer
        # (block, heads, head_dim) per block, token-major: a row's gathered blocks are then its slots in order with
        # no second copy to bring the heads forward (attention reads them as a strided view)
        self.shape = (block, config.kv_heads, config.head_dim)
        self.device, self.dtype = param.device, param.dtype
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.refs: list[int] = []  # per allocated block, the requests holding it
        self.free: list[int] = []  # allocated, held by nobody, named by nothing
        self.idle: OrderedDict[int, None] = OrderedDict()  # named, held by nobody: longest idle first
        self.named: dict[bytes, int] = {}  # prefix hash -> block
        self.name_of: dict[int, bytes] = {}
        self.held = 0
        self.promised = 0  # blocks admitted requests may still take
        self.hits = 0  # blocks reused through a prefix, for tests and stats
        # at least 2: the block step reads two blocks at the least (see BlockStep), and compile wants no size of 1
        self._grow_to(min(self.limit, max(2, first_blocks or FIRST_BLOCKS)))

    @property
    def tokens(self) -> int:
        """The most tokens the pool may hold, all its blocks allocated."""
        return self.limit * self.block

    @property
    def blocks(self) -> int:
        """Blocks allocated now."""
        return len(self.refs)

    def _grow_to(self, blocks: int) -> None:
        """Allocate up to `blocks` blocks, keeping what the ones before hold. Zeros, not empty memory: a
        block's unwritten slots are read (masked) by the step's gather, and 0 x NaN would poison attention."""
        old = self.blocks
        for store in (self.keys, self.values):
            for layer in range(self.layers):
                # Made as ordinary tensors even on the engine's thread (inference mode): the compiled step's
                # guards tell the two kinds apart, and a pool grown in inference mode would compile a second graph
                with torch.inference_mode(False):
                    grown = torch.zeros((blocks, *self.shape), device=self.device, dtype=self.dtype)
                    if old:
                        grown[:old] = store[layer]
                if old:
                    store[layer] = grown
                else:
                    store.append(grown)
        self.refs += [0] * (blocks - old)
        self.free += range(blocks - 1, old - 1, -1)  # popped from the end: lowest first

    def admit(self, names: list[bytes], blocks: int) -> list[int] | None:
        """Admit a request of `blocks` blocks in all whose prompt's full blocks are named `names`: hold the
        named blocks already in the pool (its shared prefix, returned) and promise it the rest; None
        (nothing held or promised) when they do not fit beside the requests already admitted."""
        shared = []
        for name in names:
            found = self.named.get(name)
            if found is None:
                break
            shared.append(found)
        waking = sum(1 for b in shared if self.refs[b] == 0)
        if self.held + self.promised + waking + blocks - len(shared) > self.limit:
            return None
        for b in shared:
            if self.refs[b] == 0:
                del self.idle[b]
                self.held += 1
            self.refs[b] += 1
        self.promised += blocks - len(shared)
        self.hits += len(shared)
        return shared

    def take(self) -> int:
        """One of the blocks promised to a request, now that its tokens reach it."""
        if self.promised <= 0:
            raise RuntimeError("a block was taken that no admitted request was promised")
        self.promised -= 1
        self.held += 1
        if not self.free:
            if self.idle:  # the longest-idle prefix makes room before the pool grows
                block, _ = self.idle.popitem(last=False)
                del self.named[self.name_of.pop(block)]
                self.free.append(block)
            else:  # held + promised <= limit, so a pool with nothing free or idle is below its limit
                self._grow_to(min(self.limit, 2 * self.blocks))
        block = self.free.pop()
        self.refs[block] = 1
        return block

    def release(self, blocks: list[int], unused: int) -> None:
        """A request is done: it lets go of its blocks and of the `unused` ones it was promised but never took."""
        self.promised -= unused
        for b in reversed(blocks):  # its last blocks go idle first, so they make room before the prefix they extend
            self.refs[b] -= 1
            if self.refs[b] == 0:
                self.held -= 1
                if b in self.name_of:
                    self.idle[b] = None
                else:
                    self.free.append(b)

    def name(self, names: list[bytes], blocks: list[int]) -> None:
        """Name a prompt's full blocks by their prefix hashes, so later prompts starting the same way reuse them
        (a name already taken keeps its block: this one stays the request's own)."""
        for name, b in zip(names, blocks):
            if name not in self.named and b not in self.name_of:
                self.named[name] = b
                self.name_of[b] = name

    def fill(self, blocks: list[int], cache: KVCache, source: int, offset: int, length: int, start: int = 0) -> None:
        """Copy slots `start` (a block boundary) to `length` of row `source` of `cache`, whose row begins at
        `offset` (its left padding), into `blocks`."""
        for i in range(start // self.block, blocks_for(length, self.block)):
            begin = offset + i * self.block
            n = min(self.block, offset + length - begin)
            for layer in range(self.layers):
                self.keys[layer][blocks[i], :n] = cache.keys[layer][source, :, begin: begin + n].transpose(0, 1)
                self.values[layer][blocks[i], :n] = cache.values[layer][source, :, begin: begin + n].transpose(0, 1)

    def load(self, blocks: list[int], cache: KVCache) -> None:
        """Copy whole `blocks` (a shared prefix) into the front of row 0 of `cache`, which then goes on from there."""
        tokens = len(blocks) * self.block
        index = torch.tensor(blocks, dtype=torch.long, device=self.device)
        for layer in range(self.layers):
            for store, target in ((self.keys, cache.keys), (self.values, cache.values)):
                run = store[layer][index].reshape(tokens, self.shape[1], self.shape[2]).transpose(0, 1)
                target[layer][0, :, :tokens] = run
        cache.length = tokens


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
        keys[self.write_block, self.write_offset] = k[:, :, 0]
        values[self.write_block, self.write_offset] = v[:, :, 0]
        return self._gather(keys), self._gather(values)

    def _gather(self, store: torch.Tensor) -> torch.Tensor:
        """(n, heads, slots, head_dim): each row's blocks in order, cut to the slots the longest row sees."""
        n, used = self.tables.shape
        # index_select over the flat table: 3-4x faster on a CPU than indexing with the 2-D table itself
        block, heads, dim = store.shape[1:]
        blocks = store.index_select(0, self.tables.view(-1))  # (n * used, block, heads, head_dim)
        return blocks.view(n, used * block, heads, dim)[:, : self.key_slots.numel()].transpose(1, 2)

    def dynamic(self) -> BlockStep:
        """Mark the slots seen and the blocks read, which grow as the row does, and the pool's block count, which
        grows with the tokens in flight, as dynamic for torch.compile: one graph for every size. (Here, not where
        the pool grows: torch._dynamo is some 100 MB of modules that an eager server never needs to import.)"""
        torch._dynamo.mark_dynamic(self.key_slots, 0)
        torch._dynamo.mark_dynamic(self.tables, 1)
        for store in (*self.pool.keys, *self.pool.values):
            torch._dynamo.mark_dynamic(store, 0)
        return self
