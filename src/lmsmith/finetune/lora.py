"""LoRA: fine-tune a few million numbers instead of the whole model.

A linear layer computes y = W x + b. LoRA freezes W and learns a low-rank change to it,

    y = W x + b + (alpha / rank) * B (A x)        A: rank x in,  B: out x rank

so a layer of in*out weights trains only rank*(in+out). B starts at zero, so training starts
from exactly the base model. Afterwards the change can be folded into the weights,
W' = W + (alpha / rank) * B A, and the model is an ordinary one again, as fast as the base.

The wrapped layer keeps the base layer's own `weight` and `bias` parameters under their old
names (`blocks.0.attn.qkv.weight`), so the base part of the state dict does not change; the
adapter adds `...qkv.lora_A` and `...qkv.lora_B`. An adapter is saved on its own (a few MB)
with the hash of the base weights it was trained on, and is refused by any other base.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmsmith.core.config import ConfigError
from lmsmith.core.errors import UserError
from lmsmith.model.adapter_files import LORA_PARAMS, base_weights_sha256, weights_sha256  # noqa: F401  (re-exported)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (see the module docstring)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the very same Parameter: shared with a tied embedding, if any
        self.bias = base.bias
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        # A random, B zero: the update B A is zero at the start, yet gradients reach B at once.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # p=0 dropout would still copy x
        if getattr(base, "is_residual_projection", False):
            self.is_residual_projection = True
        self.enabled = True  # off: the layer is its base alone (RL's reference model, with no copy of it)

    def delta_weight(self) -> torch.Tensor:
        """The change B A * scale that the adapter makes to `weight`."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def merged(self) -> nn.Linear:
        """An ordinary nn.Linear with the update folded into a new weight (the base is untouched)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            # Sum in float64, so the folded weight is as close to W + BA as its dtype allows.
            linear.weight.copy_((self.weight.double() + self.delta_weight().double()).to(self.weight.dtype))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        if getattr(self, "is_residual_projection", False):
            linear.is_residual_projection = True
        return linear

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha}"


# ---------------------------------------------------------------------------------------------
# Choosing the layers


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def layer_kinds(names) -> list[str]:
    """The distinct layer names with the block number taken out: `blocks.3.attn.qkv` -> `attn.qkv`."""
    kinds = []
    for name in names:
        parts = name.split(".")
        kind = ".".join(parts[2:]) if parts[0] == "blocks" and len(parts) > 2 else name
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def matches(name: str, target: str) -> bool:
    """`qkv` and `attn.qkv` match `blocks.0.attn.qkv`; shell patterns (`blocks.[01].*`) match whole names."""
    if any(c in target for c in "*?["):
        return fnmatch.fnmatchcase(name, target)
    return name == target or name.endswith("." + target)


def select_targets(model: nn.Module, targets: list[str], where: str = "lora.targets") -> list[str]:
    """The names of the linear layers that `targets` pick; each target must pick at least one."""
    layers = linear_layers(model)
    known = ", ".join(layer_kinds(layers))
    if not targets:
        raise ConfigError(f"{where} is empty: name the layers to adapt, among {known}")
    chosen: list[str] = []
    for target in targets:
        hits = [name for name in layers if matches(name, target)]
        if not hits:
            raise ConfigError(f"{where}: '{target}' matches no linear layer of this model; the layers are: {known}")
        chosen += [name for name in hits if name not in chosen]
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    if tied and "head" in chosen:
        raise ConfigError(
            f"{where}: the output head shares its weight with the token embedding in this model, so folding "
            "an update into it would change the embedding too: leave 'head' out"
        )
    return chosen


# ---------------------------------------------------------------------------------------------
# Putting adapters in, folding them in, finding them


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def inject_lora(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Wrap the chosen linear layers in LoRALinear and freeze everything but the adapters.

    Returns the wrapped layer names. After this, `model.parameters()` with requires_grad are
    exactly the lora_A/lora_B matrices.
    """
    names = select_targets(model, targets)
    layers = linear_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        _set_submodule(model, name, LoRALinear(layers[name], rank, alpha, dropout))
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """The model as its base, every adapter switched off, for the length of the block."""
    layers = list(lora_layers(model).values())
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.enabled = True


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear with a plain nn.Linear holding W + scale * B A; returns the model."""
    for name, layer in lora_layers(model).items():
        _set_submodule(model, name, layer.merged())
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, named as in the model's state dict (`blocks.0.attn.qkv.lora_A`)."""
    return {f"{name}.{p}": getattr(layer, p).detach().contiguous().cpu()
            for name, layer in lora_layers(model).items() for p in LORA_PARAMS}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors into an injected model; every name and shape must fit exactly."""
    expected = adapter_state(model)
    if set(expected) != set(state):
        missing = sorted(set(expected) - set(state))[:3]
        extra = sorted(set(state) - set(expected))[:3]
        raise UserError(f"the adapter's tensors do not fit its config (missing {missing}, unexpected {extra}): "
                        "the adapter directory is damaged, train it again")
    layers = lora_layers(model)
    with torch.no_grad():
        for key, tensor in state.items():
            name, _, param = key.rpartition(".")
            target = getattr(layers[name], param)
            if tuple(tensor.shape) != tuple(target.shape):
                raise UserError(f"adapter tensor {key} has shape {list(tensor.shape)} but the model needs "
                                f"{list(target.shape)}: the adapter was made for another model shape")
            target.copy_(tensor)


# ---------------------------------------------------------------------------------------------
# Which base an adapter belongs to


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
