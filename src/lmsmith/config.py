"""Typed configuration for every stage: dataclasses, YAML files and dotted overrides.

A recipe is one YAML file whose top-level sections are the stages (`model:`, and later
`curate:`, `train:` ...). Each section is a dataclass; `parse_section` turns a plain dict into
one, refusing unknown keys (with the closest known key as a hint), wrong types and impossible
shapes before any work starts. Command-line overrides such as `model.n_layer=4` are applied to
the plain dict first, so they are checked exactly like the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from lmsmith.errors import UserError


class ConfigError(UserError):
    """A config value that cannot work; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------
# Turning plain dicts into checked dataclasses


def closest_hint(word: str, known: typing.Iterable[str], otherwise: str | None = None, cutoff: float = 0.5) -> str:
    """'did you mean X?' for the nearest known word; else `otherwise`, or the list of known words."""
    known = sorted(str(k) for k in known)
    match = difflib.get_close_matches(str(word), known, n=1, cutoff=cutoff)
    if match:
        return f"did you mean '{match[0]}'?"
    return otherwise or f"known: {', '.join(known)}"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return parse_section(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _looks_like_number(value):
            return float(value)  # YAML 1.1 reads `lr: 3e-4` as text; the user means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return value
    raise TypeError(f"config annotation {tp!r} of {key} is not supported")  # a bug, not user error


def parse_section(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from the plain dict `raw`; `where` is the dotted key, for messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {raw!r}")
    raw = dict(raw)
    if hasattr(cls, "expand_preset"):
        raw = cls.expand_preset(raw, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key '{dotted}': "
                              f"{closest_hint(key, fields, 'known keys: ' + ', '.join(sorted(fields)))}")
        values[key] = _coerce(value, hints[key], dotted)
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def section_to_dict(obj: Any) -> dict:
    """The plain-dict form of a config dataclass, for YAML and JSON."""
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------------------------
# Files and overrides


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory: give the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        from lmsmith.errors import cannot_read

        raise cannot_read(path, exc) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML ({first_line}): fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections, not {type(data).__name__}")
    return data


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides to a nested dict; values are parsed as YAML (4, 3e-4, true)."""
    raw = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like section.key=value, e.g. model.n_layer=4")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and _looks_like_number(value):
            value = float(value)  # YAML 1.1 reads "3e-4" as text; a user means the number
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in {"nan", "inf", "-inf", "infinity", "-infinity"}


# ---------------------------------------------------------------------------------------------
# The model


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


def load_model_config(path: str | Path | None, overrides: list[str] = ()) -> ModelConfig:
    """A model config from a YAML file (its `model:` section, or the whole file) plus overrides."""
    raw = read_yaml(path) if path is not None else {}
    if "model" not in raw:
        raw = {"model": raw} if raw else {}
    raw = apply_overrides(raw, list(overrides))
    unknown = [k for k in raw if k != "model"]
    if unknown:
        raise ConfigError(f"unknown section '{unknown[0]}' in a model config: only 'model' is read here")
    return parse_section(ModelConfig, raw.get("model"), "model")
