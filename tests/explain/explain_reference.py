"""An independent float64 forward pass, written from the equations, to check what explain shows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _norm(x, prefix, state, config):
    weight = state[prefix + ".weight"]
    if config.norm == "layernorm":
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + config.norm_eps) * weight
        return y + state[prefix + ".bias"] if prefix + ".bias" in state else y
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.norm_eps) * weight


def _linear(x, prefix, state):
    y = x @ state[prefix + ".weight"].T
    return y + state[prefix + ".bias"] if prefix + ".bias" in state else y


def _rope(x, positions, config):
    half = config.head_dim // 2
    freq = 1.0 / config.rope_theta ** (torch.arange(half, dtype=torch.float64) / half)
    angle = positions.double()[:, None] * freq[None, :]
    cos, sin = torch.cos(angle), torch.sin(angle)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def reference(model, ids: list[int]) -> dict:
    """{"attention": per layer (heads, T, T), "residual": n_layer + 1 tensors (T, n_embd), "logits": (T, vocab)}."""
    config = model.config
    state = {k: v.detach().double() for k, v in model.state_dict().items()}
    T, H, KV, D = len(ids), config.n_head, config.kv_heads, config.head_dim
    positions = torch.arange(T)
    x = state["tok_emb.weight"][torch.tensor(ids)]
    if config.position == "learned":
        x = x + state["pos_emb.table.weight"][positions]
    residual, attention = [x], []
    for layer in range(config.n_layer):
        p = f"blocks.{layer}."
        h = _norm(x, p + "attn_norm", state, config)
        qkv = _linear(h, p + "attn.qkv", state)
        q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
        q, k, v = (t.view(T, -1, D).transpose(0, 1) for t in (q, k, v))  # (heads, T, D)
        if config.position == "rope":
            q, k = _rope(q, positions, config), _rope(k, positions, config)
        k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        weights = scores.softmax(-1)
        attention.append(weights)
        x = x + _linear((weights @ v).transpose(0, 1).reshape(T, H * D), p + "attn.proj", state)
        h = _norm(x, p + "ffn_norm", state, config)
        up = _linear(h, p + "ffn.fc", state)
        if config.feed_forward == "swiglu":
            gate, value = up.chunk(2, dim=-1)
            act = F.silu(gate) * value
        else:
            act = F.gelu(up, approximate=config.gelu_approximate)
        x = x + _linear(act, p + "ffn.proj", state)
        residual.append(x)
    head = state["head.weight"] if "head.weight" in state else state["tok_emb.weight"]
    logits = _norm(x, "norm", state, config) @ head.T
    return {"attention": attention, "residual": residual, "logits": logits, "state": state}


def read_out(residual: torch.Tensor, model, state) -> torch.Tensor:
    """Probabilities of the logit lens for one residual (T, n_embd), in float64."""
    head = state["head.weight"] if "head.weight" in state else state["tok_emb.weight"]
    return (_norm(residual, "norm", state, model.config) @ head.T).softmax(-1)
