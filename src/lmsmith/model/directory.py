"""The model directory: everything needed to use a model, in files the ecosystem can read.

    model.safetensors   the weights (a tied output head is stored once, as tok_emb.weight)
    config.json         the ModelConfig
    tokenizer.json      the tokenizer (and tokenizer_config.json for transformers)
    manifest.json       what made it, library versions, parameter count, file hashes

Nothing is unpickled. Loading checks every tensor name and shape against the config and
says exactly what does not fit.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmsmith.core.atomic import atomic_directory
from lmsmith.core.config import ConfigError, parse_section
from lmsmith.core.errors import UserError, cannot_read, check_readable
from lmsmith.core.json_file import read_json
from lmsmith.core.manifest import MANIFEST, file_sha256, make_manifest, read_manifest
from lmsmith.model.sizes import check_model_fits
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory, or a run directory holding its final model in `model/`."""
    path = Path(path)
    try:  # exists() and is_file() raise PermissionError inside a folder that cannot be searched
        if not path.exists():
            raise UserError(f"model directory {path} does not exist: check the path, or make one with `lmsmith init`")
        if not (path / CONFIG).is_file() and (path / "model" / CONFIG).is_file():
            return path / "model"
    except OSError as exc:
        raise cannot_read(exc.filename or path, exc) from None
    return path


def model_state_for_saving(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict without duplicates: a tied head is the embedding, stored once."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("head.weight", None)
    return state


def save_model_dir(path: str | Path, model: GPT, tokenizer, made_by: str,
                   inputs: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a complete model directory atomically (the old one stays until the new one is whole)."""
    path = Path(path)
    with atomic_directory(path) as tmp:
        save_file(model_state_for_saving(model), tmp / WEIGHTS, metadata={"format": "pt", "made_by": made_by})
        (tmp / CONFIG).write_text(json.dumps(asdict(model.config), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = make_manifest(
            "model", config={"model": asdict(model.config), "made_by": made_by, **(extra or {})},
            inputs=inputs, counts={"parameters": model.num_params()}, files=files,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def refuse_non_finite(state: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse converted weights holding NaN or infinity: the model could only ever write garbage, and every
    later stage would refuse it anyway, far from the cause."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{source} holds non-finite weights (NaN or inf) in {name}: it is damaged or came from "
                            "a run that diverged; convert a good copy")


def read_model_config(path: str | Path) -> ModelConfig:
    path = resolve_model_dir(path)
    file = path / CONFIG
    if not file.is_file():
        raise UserError(
            f"{path} has no {CONFIG}: it is not an lmsmith model directory "
            "(make one with `lmsmith init` or `lmsmith convert --from-hf`)"
        )
    raw = read_json(file, fix="restore it or re-create the model directory")
    try:
        config = parse_section(ModelConfig, raw, "config.json")
    except ConfigError as exc:
        raise UserError(f"{file} does not describe a model: {exc}") from None
    if config.vocab_size is None:
        raise UserError(f"{file} has no vocab_size: re-create the model directory with `lmsmith init`")
    return config


def describe_mismatch(missing: list[str], unexpected: list[str], shown: int = 5) -> str:
    """'missing a, b; unexpected c ...': the first few tensor names on each side of a mismatch."""
    def some(names: list[str]) -> str:
        return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")

    return "; ".join(
        ([f"missing {some(missing)}"] if missing else []) + ([f"unexpected {some(unexpected)}"] if unexpected else [])
    )


def load_weights(path: Path, model: GPT) -> None:
    """Copy the safetensors file into `model`, checking every name and shape first."""
    file = path / WEIGHTS
    if not file.is_file():
        raise UserError(f"{path} has no weights ({WEIGHTS}): train the model or re-create it with `lmsmith init`")
    check_readable(file)  # safetensors reports an unreadable file as a missing one
    expected = model_state_for_saving(model)
    try:
        with safe_open(str(file), framework="pt") as f:
            names = set(f.keys())
            missing = sorted(set(expected) - names)
            unexpected = sorted(names - set(expected))
            if missing or unexpected:
                raise UserError(
                    f"{file} does not fit {CONFIG} ({describe_mismatch(missing, unexpected)}): "
                    "the weights were made for another model shape"
                )
            loaded = {}
            for name in sorted(names):
                shape = tuple(f.get_slice(name).get_shape())
                if shape != tuple(expected[name].shape):
                    raise UserError(
                        f"{file}: tensor {name} has shape {list(shape)} "
                        f"but {CONFIG} needs {list(expected[name].shape)}: "
                        "the weights were made for another model shape"
                    )
                loaded[name] = f.get_tensor(name)
                if loaded[name].is_floating_point() and not bool(torch.isfinite(loaded[name]).all()):
                    raise UserError(f"{file} holds non-finite weights (NaN or inf) in {name}: the run diverged; "
                                    "use an earlier checkpoint")
    except SafetensorError as exc:
        raise UserError(f"{file} is truncated or corrupted ({exc}): restore it from a good copy") from None
    model.load_state_dict(loaded, strict=not model.config.tie_embeddings)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu", with_tokenizer: bool = True):
    """Load (model, tokenizer) from a model or run directory; the model is in eval mode."""
    path = resolve_model_dir(path)
    config = read_model_config(path)
    check_model_fits(config, source=path / CONFIG)
    model = GPT(config)
    load_weights(path, model)
    model.to(device).eval()
    tokenizer = None
    if with_tokenizer:
        from lmsmith.text.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(path)
        if tokenizer.vocab_size > config.vocab_size:
            raise UserError(
                f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}: "
                "they do not belong together"
            )
    return model, tokenizer




def run(config, inputs: dict, out: str | Path, *, quiet: bool = False, force: bool = False) -> dict:
    """The init stage: a fresh model with random GPT-2-style weights, sized for the tokenizer in
    `inputs["tokenizer"]`, written to `out/`; returns the manifest."""
    from lmsmith.core.output import check_output, remove_leftovers
    from lmsmith.text.tokenizer import load_tokenizer

    model_config: ModelConfig = config.model
    tokenizer_dir = inputs["tokenizer"]
    check_output(out, "model", reads=[tokenizer_dir], force=force)
    tokenizer = load_tokenizer(tokenizer_dir)
    if model_config.vocab_size is None:
        model_config.vocab_size = tokenizer.vocab_size
    elif model_config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"model.vocab_size ({model_config.vocab_size}) is smaller than "
            f"the tokenizer's {tokenizer.vocab_size} tokens: "
            "remove model.vocab_size to take the tokenizer's"
        )
    check_model_fits(model_config)  # "needs N GB" rather than the allocator's traceback
    torch.manual_seed(config.init.seed)
    model = GPT(model_config)
    remove_leftovers(out)
    save_model_dir(out, model, tokenizer, made_by="init",
                   inputs={"tokenizer": {"path": str(tokenizer_dir), "sha256": tokenizer.sha256}})
    if not quiet:
        print(f"initialised {out}: {model.num_params():,} parameters, vocab {model_config.vocab_size}, "
              f"context {model_config.block_size}")
    return read_manifest(out, "model")
