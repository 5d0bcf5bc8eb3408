"""How much memory a ModelConfig needs, counted before any tensor is allocated.

`check_model_fits` refuses a config whose float32 weights alone would not fit in this machine's
memory, so an absurd size (model.vocab_size=10**10) ends in one clear line instead of the
allocator killing the process.
"""

from __future__ import annotations

import os

from lmsmith.core.errors import UserError
from lmsmith.schema.model import ModelConfig

BYTES_PER_PARAMETER = 4  # float32, as GPT(config) builds them


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters (and float buffers) GPT(config) allocates, by part, as lmsmith.model.transformer builds them."""
    E, V, T, L = config.n_embd, config.vocab_size or 0, config.block_size, config.n_layer
    H, KV, D, hidden = config.n_head, config.kv_heads, config.head_dim, config.hidden_size
    norm = E * (2 if config.norm == "layernorm" and config.bias else 1)
    bias = 1 if config.bias else 0
    qkv = (H + 2 * KV) * D
    fc_out = 2 * hidden if config.feed_forward == "swiglu" else hidden
    block = (2 * norm
             + E * qkv + bias * qkv + H * D * E + bias * E  # attention: qkv and proj
             + (2 * D if config.qk_norm else 0)
             + E * fc_out + bias * fc_out + hidden * E + bias * E)  # feed-forward: fc and proj
    positions = {"learned": T * E, "sinusoidal": T * E, "rope": T * D}.get(config.position, 0)
    return {
        "vocab_size": V * E * (1 if config.tie_embeddings else 2),  # embedding, and an untied head
        "n_layer": L * block + norm,  # the blocks and the final norm
        "block_size": positions,  # a learned table, or the sinusoidal / rotary buffers
    }


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_model_fits(config: ModelConfig, where: str = "model", source=None) -> None:
    """Refuse a model whose float32 weights need more memory than this machine has.

    `where` is the config section's name in the message; `source`, if given, the file it came from."""
    parts = parameter_counts(config)
    needed = sum(parts.values()) * BYTES_PER_PARAMETER
    available = memory_bytes()
    if available is None or needed <= available:
        return
    largest = max(parts, key=parts.get)
    shape = f"{where}.{largest}={getattr(config, largest):,} with {where}.n_embd={config.n_embd:,}"
    if source is not None:
        shape = f"{source}: {shape}"
    raise UserError(f"{shape} needs about {needed / 1e9:,.1f} GB for its weights, more than this machine's "
                    f"{available / 1e9:,.1f} GB of memory: make the model smaller")
