"""The `model:` section (the transformer's shape) and `init:` (a fresh model's seed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from lmsmith.core.config import ConfigError

PositionKind = Literal["learned", "sinusoidal", "rope"]


NormKind = Literal["layernorm", "rmsnorm"]


FeedForwardKind = Literal["gelu", "swiglu", "relu2"]


# Architecture families that are, weight for weight, the Hugging Face models of the same name.
# The vocabulary size is left to the tokenizer.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": dict(
        block_size=1024, n_layer=12, n_head=12, n_embd=768,
        position="learned", norm="layernorm", norm_eps=1e-5, feed_forward="gelu",
        gelu_approximate="tanh", bias=True, tie_embeddings=True, dropout=0.1,
    ),
    "llama": dict(
        block_size=2048, n_layer=22, n_head=32, n_kv_head=4, n_embd=2048,
        ffn_hidden=5632, position="rope", rope_theta=10000.0, norm="rmsnorm", norm_eps=1e-5,
        feed_forward="swiglu", bias=False, tie_embeddings=False, dropout=0.0,
    ),
}


@dataclass
class ModelConfig:
    """The shape of the transformer. Defaults are a small modern decoder (RoPE, RMSNorm, SwiGLU)."""

    preset: Literal["gpt2", "llama"] | None = None  # start from a Hugging Face family's choices
    vocab_size: int | None = None  # None: taken from the tokenizer at `lmsmith init`
    block_size: int = 256  # the context length, in tokens
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # fewer key/value heads than query heads is grouped-query attention
    n_embd: int = 256
    ffn_hidden: int | None = None  # None: 4*n_embd, or about 8/3*n_embd for swiglu (same parameters)
    position: PositionKind = "rope"
    rope_theta: float = 10000.0
    norm: NormKind = "rmsnorm"
    norm_eps: float = 1e-5
    qk_norm: bool = False
    head_size: int | None = None  # width of one attention head; None: n_embd // n_head (Qwen3's are wider)
    # biases on the query/key/value projection; None: as `bias` (Qwen2: true, GPT-Neo: false)
    qkv_bias: bool | None = None
    # scores divided by sqrt(head size), or not (GPT-Neo)
    attention_scale: Literal["inverse_sqrt", "none"] = "inverse_sqrt"
    attention_windows: list[int | None] | None = None  # per layer: how many recent positions a query sees; None: all
    feed_forward: FeedForwardKind = "swiglu"
    gelu_approximate: Literal["tanh", "none"] = "tanh"  # GPT-2 uses the tanh form
    bias: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02

    @staticmethod
    def expand_preset(raw: dict, where: str) -> dict:
        name = raw.get("preset")
        if name is None:
            return raw
        if name not in MODEL_PRESETS:
            raise ConfigError(f"{where}.preset: {name!r} is not one of {', '.join(map(repr, MODEL_PRESETS))}")
        return {**MODEL_PRESETS[name], **raw}

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.head_size or self.n_embd // self.n_head

    def effective(self, key: str) -> Any:
        """A setting as the computation sees it: qkv_bias falls back to bias; head_size is None at
        the width n_embd / n_head (however it was written)."""
        if key == "qkv_bias":
            return self.bias if self.qkv_bias is None else self.qkv_bias
        if key == "head_size":
            return None if self.head_dim * self.n_head == self.n_embd else self.head_size
        return getattr(self, key)

    @staticmethod
    def first_fit(misfits: dict[str, list[str]]) -> tuple[str | None, str]:
        """The first target with no misfits (None if none fits), and what each target would need."""
        fitting = next((target for target, reasons in misfits.items() if not reasons), None)
        needs = "; ".join(f"as {target} it would need {', '.join(reasons)}" for target, reasons in misfits.items())
        return fitting, needs

    def misfits(self, wanted: dict[str, Any]) -> list[str]:
        """The settings that differ from `wanted` (effective values), each as "key=wanted (has actual)"."""
        return [f"{key}={json.dumps(value)} (has {json.dumps(self.effective(key))})"
                for key, value in wanted.items() if self.effective(key) != value]

    @property
    def hidden_size(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        if self.feed_forward == "swiglu":
            # Two input matrices instead of one: 2/3 of 4*n_embd keeps the parameter count; round up to 64.
            return 64 * ((int(8 * self.n_embd / 3) + 63) // 64)
        return 4 * self.n_embd

    def check(self, where: str = "model") -> None:
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be at least 1, got {getattr(self, name)}")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ConfigError(f"{where}.vocab_size must be at least 1, got {self.vocab_size}")
        if self.head_size is not None and self.head_size < 1:
            raise ConfigError(f"{where}.head_size must be at least 1 (or null for n_embd/n_head), got {self.head_size}")
        if self.attention_windows is not None and (
                len(self.attention_windows) != self.n_layer
                or any(w is not None and w < 1 for w in self.attention_windows)):
            raise ConfigError(f"{where}.attention_windows must list one window (at least 1, or null for all positions) "
                              f"per layer: {self.n_layer} entries, got {self.attention_windows}")
        if self.n_embd % self.n_head and self.head_size is None:
            raise ConfigError(
                f"{where}.n_embd ({self.n_embd}) is not divisible by {where}.n_head ({self.n_head}): "
                "pick n_embd a multiple of n_head, "
                f"e.g. {where}.n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ConfigError(
                f"{where}.n_head ({self.n_head}) is not divisible by {where}.n_kv_head ({self.n_kv_head}): "
                f"pick n_kv_head among {[d for d in range(1, self.n_head + 1) if self.n_head % d == 0]}"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise ConfigError(f"{where}: rope needs an even head size, but n_embd/n_head = {self.head_dim}: "
                              "change n_embd or n_head")
        if self.position == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"{where}.n_embd must be even for sinusoidal positions, got {self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout must be in [0, 1), got {self.dropout}")
        if self.ffn_hidden is not None and self.ffn_hidden < 1:
            raise ConfigError(f"{where}.ffn_hidden must be at least 1, got {self.ffn_hidden}")
        if self.norm_eps <= 0 or self.init_std <= 0 or self.rope_theta <= 0:
            raise ConfigError(f"{where}: norm_eps, init_std and rope_theta must be positive")



@dataclass
class InitConfig:
    """What `lmsmith init` needs besides the model's shape."""

    seed: int = 0  # the random initial weights are the same for the same seed
