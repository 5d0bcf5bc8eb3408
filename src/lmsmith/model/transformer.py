"""The transformer, in the order of the textbook picture.

    token ids
      -> token embedding                          (TokenEmbedding: nn.Embedding)
      -> positional encoding                      (learned | sinusoidal added here; rope inside attention)
      -> n_layer x Block:
           x = x + Attention(Norm(x))             multi-head causal self-attention
           x = x + FeedForward(Norm(x))           gelu | swiglu | relu2
      -> final Norm
      -> output head                              logits over the vocabulary for the next token

The model knows nothing about parallelism, compile or checkpointing; the training engine
applies those from outside. Generation passes a `KVCache` so each new token costs one column
of attention instead of the whole square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmsmith.schema.model import ModelConfig

IGNORE_INDEX = -100  # targets with this value carry no loss (prompt tokens, padding)


# ---------------------------------------------------------------------------------------------
# Normalisation


def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)
    return nn.RMSNorm(dim, eps=config.norm_eps)


# ---------------------------------------------------------------------------------------------
# Positional encoding


class LearnedPositions(nn.Module):
    """One trained vector per position (GPT-2)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.table = nn.Embedding(config.block_size, config.n_embd)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table(positions)


class SinusoidalPositions(nn.Module):
    """Fixed sines and cosines of geometrically spaced frequencies (the original Transformer)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        pos = torch.arange(config.block_size, dtype=torch.float64)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, config.n_embd, 2, dtype=torch.float64) / config.n_embd)
        table = torch.zeros(config.block_size, config.n_embd, dtype=torch.float64)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


class RotaryEmbedding(nn.Module):
    """Rotary positions (RoPE): queries and keys are rotated by an angle proportional to position.

    Pairs are formed as (i, i + head_dim/2), the "rotate half" layout that Hugging Face Llama
    weights use, so converted weights need no permutation.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        half = config.head_dim // 2
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
        angles = torch.arange(config.block_size, dtype=torch.float64)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x of shape (B, heads, T, head_dim); positions is (T,) or (B, T)."""
        cos, sin = self.cos[positions], self.sin[positions]  # (T, half) or (B, T, half)
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        # Rotate in at least float32: bf16 angles lose whole positions at long range.
        x1, x2 = x.to(torch.promote_types(x.dtype, torch.float32)).chunk(2, dim=-1)
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return rotated.type_as(x)


# ---------------------------------------------------------------------------------------------
# Attention


class KVCache:
    """Keys and values of the positions seen so far, preallocated for `max_len` positions.

    `pad` holds, per row of the batch, how many slots on the left are padding (prompts of
    different lengths are left-padded); those slots are never attended to and positions are
    counted from the first real token.
    """

    def __init__(
        self, config: ModelConfig, batch_size: int, max_len: int, device, dtype, pad: torch.Tensor | None = None
    ):
        shape = (batch_size, config.kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len
        self.length = 0  # slots filled
        self.pad = pad if pad is not None and bool(pad.any()) else None

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys and values for `layer`; return all keys and values so far."""
        end = self.length + k.size(2)
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def positions(self, new: int, device) -> torch.Tensor:
        """Positions of the next `new` slots: (new,) without padding, else (B, new)."""
        slots = torch.arange(self.length, self.length + new, device=device)
        if self.pad is None:
            return slots
        return (slots[None, :] - self.pad[:, None]).clamp(min=0)

    def mask(self, new: int, device) -> torch.Tensor | None:
        """Boolean (B, 1, new, length+new) mask of which slots each new query may see; None if plain causal."""
        if self.pad is None and new == 1:
            return None  # one new query sees every filled slot
        query = torch.arange(self.length, self.length + new, device=device)[:, None]
        key = torch.arange(self.length + new, device=device)[None, :]
        allowed = (key <= query)[None, None]
        if self.pad is not None:
            # A pad query may see itself, so no row is all masked (NaN on some kernels); no real query sees a pad.
            allowed = allowed & ((key >= self.pad[:, None, None, None]) | (key == query))
        return allowed


class CausalSelfAttention(nn.Module):
    """Multi-head attention where each position sees itself and the positions before it.

    With n_kv_head < n_head, groups of query heads share one key/value head (grouped-query
    attention), which shrinks the KV cache. Query, key and value come from one fused matmul.
    A layer with a window sees only that many most recent positions (itself included): GPT-Neo's
    local layers. Scores are divided by sqrt(head size), except with attention_scale="none" (GPT-Neo).
    """

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        qkv_out = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        qkv_bias = config.bias if config.qkv_bias is None else config.qkv_bias
        self.qkv = nn.Linear(config.n_embd, qkv_out, bias=qkv_bias)
        self.scale = 1.0 if config.attention_scale == "none" else None  # None: SDPA's 1/sqrt(head_dim)
        self.window = config.attention_windows[layer] if config.attention_windows else None
        self.proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True
        self.q_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else None
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        # in_the_open computes the same attention step by step instead of through SDPA's kernel:
        # the compiled decode step sets it (compiled_decode.py), as inductor fuses the steps into
        # one loop where SDPA stays a separate, slower call for a single query. lmsmith explain sets
        # keep_weights, which also keeps the weights (B, heads, T, keys) in .weights to look at.
        self.in_the_open = False
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(self, x, positions, rope: RotaryEmbedding | None, cache: KVCache | None, mask):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1
        )
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q, positions), rope(k, positions)
        if cache is not None:
            k, v = cache.store(self.layer, k, v)
        if self.window is not None:
            mask = self.window_mask(positions, k.size(2), cache, mask)
        is_causal = mask is None and (cache is None or cache.length == 0) and T > 1
        if self.in_the_open or self.keep_weights:
            y = self.attention_in_the_open(q, k, v, mask, is_causal)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
                dropout_p=self.dropout if self.training else 0.0,
                enable_gqa=self.n_kv_head != self.n_head,
            )
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.proj(y))

    def attention_in_the_open(self, q, k, v, mask, is_causal: bool) -> torch.Tensor:
        """softmax(q k^T * scale, masked) v, step by step (no dropout: for inference and looking at)."""
        if self.n_kv_head != self.n_head:  # each key/value head serves a group of neighbouring query heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)
        scores = (q @ k.transpose(-2, -1)).float() * scale
        if is_causal:
            mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = scores.softmax(dim=-1)
        if self.keep_weights:
            self.weights = weights
        return weights.type_as(v) @ v

    def window_mask(self, positions: torch.Tensor, keys: int, cache, mask: torch.Tensor | None) -> torch.Tensor:
        """The causal mask (and the cache's own, if any) narrowed to keys fewer than `window` positions back."""
        query = positions[..., :, None]  # (T, 1) or (B, T, 1)
        key = torch.arange(keys, device=positions.device)
        pad = getattr(cache, "pad", None)  # left padding: slot s holds position s - pad
        key = key[None, None, :] - pad[:, None, None] if pad is not None else key
        # Pad slots (negative positions) are left to the cache's mask, which lets a pad query see itself.
        allowed = (key <= query) & ((query - key < self.window) | (key < 0))
        allowed = allowed[:, None] if allowed.dim() == 3 else allowed[None, None]  # (B or 1, 1, T, keys)
        return allowed if mask is None else allowed & mask


# ---------------------------------------------------------------------------------------------
# Feed-forward


class FeedForward(nn.Module):
    """Position-wise MLP: expand, non-linearity, project back.

    gelu:   proj(gelu(fc(x)))                 GPT-2
    relu2:  proj(relu(fc(x))**2)              squared ReLU (Primer, modded-nanoGPT)
    swiglu: proj(silu(gate(x)) * up(x))       Llama; gate and up are one fused matmul
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind = config.feed_forward
        self.gelu_approximate = config.gelu_approximate
        hidden = config.hidden_size
        fc_out = 2 * hidden if self.kind == "swiglu" else hidden
        self.fc = nn.Linear(config.n_embd, fc_out, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate=self.gelu_approximate)
        return self.dropout(self.proj(h))


# ---------------------------------------------------------------------------------------------
# Block and model


class Block(nn.Module):
    """Pre-norm residual block: attention, then feed-forward, each added back to the stream."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ffn_norm = make_norm(config, config.n_embd)
        self.ffn = FeedForward(config)

    def forward(self, x, positions, rope=None, cache=None, mask=None):
        x = x + self.attn(self.attn_norm(x), positions, rope, cache, mask)
        x = x + self.ffn(self.ffn_norm(x))
        return x


@dataclass
class ModelOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class GPT(nn.Module):
    """A decoder-only transformer language model."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set before building a model")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}.get(
            config.position, lambda c: None
        )(config)
        self.rope = RotaryEmbedding(config) if config.position == "rope" else None
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = make_norm(config, config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), with residual projections scaled by 1/sqrt(2*n_layer)
        so the residual stream's variance does not grow with depth."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                scale = (
                    1 / math.sqrt(2 * self.config.n_layer) if getattr(module, "is_residual_projection", False) else 1.0
                )
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> ModelOutput:
        """idx: (B, T) token ids. With targets (B, T), also the mean next-token cross-entropy."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        if cache is not None:
            positions, mask = cache.positions(T, idx.device), cache.mask(T, idx.device)
        else:
            positions, mask = torch.arange(T, device=idx.device), None

        x = self.hidden_states(idx, positions, cache, mask)
        if cache is not None:
            cache.length += T

        if last_only:
            x = x[:, -1:]
        logits = self.head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.to(torch.promote_types(logits.dtype, torch.float32)).view(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        return ModelOutput(logits=logits, loss=loss)

    def hidden_states(self, idx: torch.Tensor, positions: torch.Tensor, cache=None, mask=None) -> torch.Tensor:
        """Token embedding, positions, the blocks and the final norm: one vector per token, ready for the head.

        `forward` wraps this with the bookkeeping around a cache (bound check, length); the compiled
        decode step (compiled_decode.py) calls it directly, so its graph never sees a Python length.
        """
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        x = self.emb_dropout(x)
        for block in self.blocks:
            x = block(x, positions, self.rope, cache, mask)
        return self.norm(x)

    # -----------------------------------------------------------------------------------------
    # Size and cost

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Trainable parameters, counting a tied embedding/head matrix once."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.tok_emb.weight.numel()
            if isinstance(self.pos_emb, LearnedPositions):
                total -= self.pos_emb.table.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> float:
        """Floating-point operations per token, forward (x1) or forward+backward (x3).

        2 FLOPs per weight per token for every matmul (all parameters but the embedding
        lookups; the output head counts even when tied), plus attention scores and their
        weighted sum: 2 * 2 * n_layer * seq_len * n_embd (averaged over causal positions
        as in the PaLM paper's accounting, which counts the full square).
        """
        c = self.config
        seq_len = seq_len or c.block_size
        matmul_params = self.num_params(exclude_embeddings=True)
        if c.tie_embeddings:
            matmul_params += self.head.weight.numel()
        forward = 2 * matmul_params + 2 * 2 * c.n_layer * seq_len * c.n_head * c.head_dim
        return forward * (3 if training else 1)
