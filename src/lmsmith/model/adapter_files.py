"""A LoRA adapter's directory as read from disk, and the hash that ties an adapter to its base weights.

    adapter_model.safetensors   lora_A / lora_B of every adapted layer (and, when the chat
                                template added tokens, their new embedding rows)
    adapter_config.json         rank, alpha, targets, the adapted layers, the added tokens,
                                and the base model: where it came from and the hash of its weights
    tokenizer.json              the tokenizer the adapter was trained with

Here, below the stages, because two of them read adapters: finetune (writing, merging) and serve
(many adapters on one base); neither may import the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from lmsmith.core.errors import UserError
from lmsmith.core.json_file import read_json

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "lmsmith-lora-1"
ADDED_ROWS = {"tok_emb": "added_tokens.tok_emb", "head": "added_tokens.head"}
LORA_PARAMS = ("lora_A", "lora_B")


@dataclass
class Adapter:
    config: dict  # adapter_config.json
    state: dict[str, torch.Tensor]  # adapter_model.safetensors
    tokenizer: object  # lmsmith.text.tokenizer.Tokenizer
    path: Path


def resolve_adapter_dir(path: str | Path) -> Path:
    """Accept an adapter directory, a LoRA run's model directory (MODEL/adapter), or the run directory."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: give a LoRA fine-tuning run directory or its adapter/ directory")
    if (path / ADAPTER_CONFIG).is_file():
        return path
    for inside in (path / "adapter", path / "model" / "adapter"):  # a model directory, or a run directory
        if (inside / ADAPTER_CONFIG).is_file():
            return inside
    raise UserError(f"{path} holds no LoRA adapter ({ADAPTER_CONFIG}): "
                    "only a run made with --method lora has one; "
                    "a full fine-tuning run is already a complete model in RUN/model")


def load_adapter_dir(path: str | Path) -> Adapter:
    from lmsmith.text.tokenizer import load_tokenizer

    path = resolve_adapter_dir(path)
    config = read_json(path / ADAPTER_CONFIG, fix="train the adapter again")
    if config.get("format") != ADAPTER_FORMAT:
        raise UserError(f"{path / ADAPTER_CONFIG} is not an lmsmith LoRA adapter config (format {ADAPTER_FORMAT})")
    try:
        state = load_file(str(path / ADAPTER_WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path / ADAPTER_WEIGHTS} is missing or corrupted ({exc}): train the adapter again") from None
    return Adapter(config, state, load_tokenizer(path), path)


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of tensor names, dtypes, shapes and values: equal for the same weights in any file format."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def base_weights_sha256(model: nn.Module) -> str:
    """The hash of the model's own weights, adapters left out (a tied head counted once)."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(LORA_PARAMS)}
    if getattr(getattr(model, "config", None), "tie_embeddings", False):
        state.pop("head.weight", None)
    return weights_sha256(state)
