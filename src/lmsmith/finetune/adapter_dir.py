"""The adapter directory: a LoRA adapter on its own, and folding it into its base model.

    adapter_model.safetensors   lora_A / lora_B of every adapted layer (and, when the chat
                                template added tokens, their new embedding rows)
    adapter_config.json         rank, alpha, targets, the adapted layers, the added tokens,
                                and the base model: where it came from and the hash of its weights
    tokenizer.json              the tokenizer the adapter was trained with
    manifest.json

An adapter is a change to one particular set of weights. Folding it into any other base would
give a model that is neither, silently, so the hash of the base weights is checked first.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmsmith.core.atomic import atomic_directory
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST, file_sha256, make_manifest
from lmsmith.finetune.lora import adapter_state, inject_lora, load_adapter_state, merge_lora
from lmsmith.finetune.vocabulary import grow_vocabulary
from lmsmith.model.adapter_files import (  # noqa: F401  (the directory's format, read here by merging's callers)
    ADAPTER_CONFIG,
    ADAPTER_FORMAT,
    ADAPTER_WEIGHTS,
    ADDED_ROWS,
    Adapter,
    base_weights_sha256,
    load_adapter_dir,
    resolve_adapter_dir,
)
from lmsmith.model.transformer import GPT


def added_rows(model: GPT, base_vocab: int) -> dict[str, torch.Tensor]:
    """The embedding (and untied head) rows of tokens added after the base vocabulary."""
    if model.config.vocab_size <= base_vocab:
        return {}
    rows = {ADDED_ROWS["tok_emb"]: model.tok_emb.weight[base_vocab:].detach().contiguous().cpu()}
    if not model.config.tie_embeddings:
        rows[ADDED_ROWS["head"]] = model.head.weight[base_vocab:].detach().contiguous().cpu()
    return rows


def save_adapter_dir(path: str | Path, model: GPT, tokenizer, *, lora: dict, layers: list[str], base: dict,
                     added_tokens: list[str], extra: dict | None = None) -> Path:
    """Write the adapter of an injected model. `base` holds source, sha256 and vocab_size of the base."""
    path = Path(path)
    config = {"format": ADAPTER_FORMAT, **lora, "layers": layers, "added_tokens": added_tokens, "base": base,
              **(extra or {})}
    state = {**adapter_state(model), **added_rows(model, base["vocab_size"])}
    with atomic_directory(path) as tmp:
        save_file(state, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt", "adapter": ADAPTER_FORMAT})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save(tmp)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        trainable = sum(t.numel() for t in state.values())
        manifest = make_manifest("adapter", config=config, inputs={"base": base},
                                 counts={"adapter_parameters": trainable}, files=files)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def apply_adapter(model: GPT, adapter: Adapter) -> GPT:
    """Put the adapter into `model` (its base), checking first that it is the very base it was trained on."""
    expected = adapter.config["base"]["sha256"]
    if base_weights_sha256(model) != expected:
        raise UserError(
            f"the adapter in {adapter.path} was trained on other base weights (sha256 {expected[:12]}..., from "
            f"{adapter.config['base'].get('source')}): merging it into this model would give neither model; "
            "merge into the base it was trained on"
        )
    base_vocab = model.config.vocab_size
    grow_vocabulary(model, adapter.tokenizer.vocab_size)
    with torch.no_grad():
        if ADDED_ROWS["tok_emb"] in adapter.state:
            model.tok_emb.weight[base_vocab:] = adapter.state[ADDED_ROWS["tok_emb"]]
        if ADDED_ROWS["head"] in adapter.state:
            model.head.weight[base_vocab:] = adapter.state[ADDED_ROWS["head"]]
    inject_lora(model, adapter.config["layers"], adapter.config["rank"], adapter.config["alpha"],
                adapter.config["dropout"])
    load_adapter_state(model, {k: v for k, v in adapter.state.items() if k not in ADDED_ROWS.values()})
    return model


def merge_adapter(run_or_adapter: str | Path, out: str | Path, base: str | Path | None = None,
                  force: bool = False) -> Path:
    """`lmsmith finetune --merge`: fold an adapter into its base, write an ordinary model directory."""
    from lmsmith.core.output import check_replaceable
    from lmsmith.finetune.start import load_start
    from lmsmith.model.directory import save_model_dir

    adapter = load_adapter_dir(run_or_adapter)
    source = str(base) if base is not None else adapter.config["base"].get("source")
    if not source:
        raise UserError(f"{adapter.path / ADAPTER_CONFIG} does not say which base it belongs to: give it with --base")
    check_replaceable(out, "model", source=adapter.path, force=force)
    start = load_start(source)
    model = apply_adapter(start.model, adapter)
    merge_lora(model)
    model.eval()
    save_model_dir(out, model, adapter.tokenizer, made_by="finetune --merge",
                   inputs={"adapter": {"path": str(adapter.path),
                                       "sha256": file_sha256(adapter.path / ADAPTER_WEIGHTS)},
                           "base": {"path": source, "sha256": adapter.config["base"]["sha256"]}})
    print(f"merged {adapter.path} into {source} -> {out}: an ordinary model directory "
          f"({model.num_params():,} parameters)")
    return Path(out)
