"""Many LoRA adapters on one base model, each request decoded with its own (or with none).

    serve BASE --adapter support=runs/support-lora --adapter sql=runs/sql-lora

Every linear layer that some adapter adapts is wrapped once in a RowLoRALinear holding the
low-rank pair (A, B) of each adapter that adapts it. Before each forward pass the engine says
which adapter each row of the batch uses (RowAdapters.route); the layer computes the base's
output for all rows together, then, per adapter present in the batch, adds scale * B (A x) to
that adapter's rows only.

Why group rows by adapter rather than gather a per-row (A, B) and batch-multiply: grouping runs
exactly the arithmetic of finetune's LoRALinear on each group, so adapters of different ranks,
scales and target layers need no padding to a common shape, and a row's update does not depend
on which other adapters share the batch. Its cost is two small matrix products per adapter
present per layer; with the few adapters a server holds (MAX_ADAPTERS) that is what a gathered
batch product would cost anyway. Rows of the base skip every update.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmsmith.core.errors import UserError
from lmsmith.model.adapter_files import ADDED_ROWS, Adapter, base_weights_sha256, load_adapter_dir

BASE = 0  # the adapter index of a row decoded by the base alone


class RowAdapters:
    """Which adapter each row of the next forward pass uses: shared by every RowLoRALinear of a model."""

    def __init__(self):
        self.groups: dict[int, torch.Tensor] = {}  # adapter index -> the rows that use it (the base's left out)

    def route(self, adapters: list[int], device) -> None:
        """Set the rows of the next forward pass: row i uses adapter adapters[i] (BASE for none)."""
        self.groups = {}
        for index in sorted(set(adapters) - {BASE}):
            rows = [i for i, a in enumerate(adapters) if a == index]
            self.groups[index] = torch.tensor(rows, dtype=torch.long, device=device)


class RowLoRALinear(nn.Module):
    """A frozen linear layer plus, for the rows routed to an adapter, that adapter's low-rank update."""

    def __init__(self, base: nn.Linear, routing: RowAdapters):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias  # the base's own tensors, shared, not copied
        self.routing = routing
        self.pairs: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}  # adapter -> (A, B, alpha / rank)
        if getattr(base, "is_residual_projection", False):
            self.is_residual_projection = True

    def add(self, index: int, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> None:
        self.pairs[index] = (lora_a.to(self.weight), lora_b.to(self.weight), scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        for index, rows in self.routing.groups.items():
            pair = self.pairs.get(index)
            if pair is None:  # this adapter leaves this layer as it is
                continue
            lora_a, lora_b, scale = pair
            # the same products, in the same order, as finetune's LoRALinear: base + scale * B(A x)
            y[rows] = y[rows] + scale * F.linear(F.linear(x[rows], lora_a), lora_b)
        return y


@dataclass
class ServedAdapter:
    name: str
    index: int  # what a request's row is routed by
    path: Path
    adapter: Adapter


def parse_adapter_specs(specs: list[str], base_name: str) -> dict[str, str]:
    """NAME=RUN_DIR pairs, each name new and none the base's own."""
    named: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UserError(f"--adapter {spec!r}: give it as NAME=RUN_DIR, e.g. --adapter support=runs/support-lora")
        if name == base_name or name in named:
            raise UserError(f"--adapter {spec!r}: the name '{name}' is already taken "
                            f"(by {'the base model' if name == base_name else 'another adapter'}): choose another")
        named[name] = path
    return named


def check_fits_base(adapter: Adapter, name: str, base_hash: str, tokenizer) -> None:
    """An adapter is a change to one set of weights and one vocabulary: refuse any other base."""
    expected = adapter.config["base"]["sha256"]
    if expected != base_hash:
        raise UserError(f"adapter '{name}' ({adapter.path}) was trained on other base weights (sha256 "
                        f"{expected[:12]}..., from {adapter.config['base'].get('source')}), not on the model served "
                        f"(sha256 {base_hash[:12]}...): serve it with the base it was trained on")
    if any(key in adapter.state for key in ADDED_ROWS.values()) or adapter.tokenizer.vocab_size != tokenizer.vocab_size:
        # rows share one vocabulary in a batch; an adapter's own new tokens would collide with another's
        raise UserError(f"adapter '{name}' ({adapter.path}) adds tokens to its base's vocabulary "
                        f"({adapter.tokenizer.vocab_size} vs {tokenizer.vocab_size}): serve its merged model "
                        "(RUN/model) on its own instead")


def attach_adapters(model: nn.Module, named: dict[str, str], tokenizer) -> tuple[RowAdapters, list[ServedAdapter]]:
    """Load each adapter, check it belongs to `model`, and wrap the layers they adapt (before any other change
    to the model's weights: the check hashes them)."""
    routing = RowAdapters()
    if not named:
        return routing, []
    base_hash = base_weights_sha256(model)
    served = []
    for index, (name, path) in enumerate(named.items(), start=1):
        adapter = load_adapter_dir(path)
        check_fits_base(adapter, name, base_hash, tokenizer)
        add_adapter_layers(model, routing, index, adapter, name)
        served.append(ServedAdapter(name, index, adapter.path, adapter))
    return routing, served


def add_adapter_layers(model: nn.Module, routing: RowAdapters, index: int, adapter: Adapter, name: str) -> None:
    """Give every layer this adapter adapts its (A, B), wrapping the layer at the first adapter that adapts it."""
    scale = adapter.config["alpha"] / adapter.config["rank"]
    for layer in adapter.config["layers"]:
        try:
            module = model.get_submodule(layer)
            lora_a, lora_b = adapter.state[f"{layer}.lora_A"], adapter.state[f"{layer}.lora_B"]
        except (AttributeError, KeyError):
            raise UserError(f"adapter '{name}' ({adapter.path}) adapts a layer '{layer}' that it or the model lacks: "
                            "the adapter directory is damaged, train it again") from None
        if isinstance(module, nn.Linear):
            module = RowLoRALinear(module, routing)
            parent, _, child = layer.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module)
        module.add(index, lora_a, lora_b, scale)
