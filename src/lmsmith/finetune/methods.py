"""Which parameters learn: all of them, all but some frozen parts, or only LoRA adapters."""

from __future__ import annotations

from lmsmith.core.config import ConfigError
from lmsmith.finetune.lora import count_parameters, inject_lora, select_targets
from lmsmith.model.transformer import GPT, LearnedPositions
from lmsmith.schema.finetune import FinetuneConfig


def check_frozen_blocks(model: GPT, n: int) -> None:
    if n > model.config.n_layer:
        raise ConfigError(f"freeze.blocks is {n} but the model has only {model.config.n_layer} blocks: "
                          f"pick 0 to {model.config.n_layer}")


def freeze_parts(model: GPT, freeze_embeddings: bool, freeze_blocks: int) -> None:
    """Full fine-tuning with the embeddings and/or the first `freeze_blocks` blocks kept as they are.

    Low layers hold general features (spelling, syntax) that a small domain set could wear
    away; freezing them also saves their gradients and optimizer state.
    """
    check_frozen_blocks(model, freeze_blocks)
    if freeze_embeddings:
        model.tok_emb.weight.requires_grad_(False)  # a tied head is this same tensor
        if isinstance(model.pos_emb, LearnedPositions):
            model.pos_emb.table.weight.requires_grad_(False)
    for block in model.blocks[:freeze_blocks]:
        for p in block.parameters():
            p.requires_grad_(False)


def check_method(model: GPT, config: FinetuneConfig) -> None:
    """Refuse LoRA targets or frozen parts that this model does not have, before any data is read."""
    if config.method == "lora":
        select_targets(model, config.lora.targets)
    else:
        check_frozen_blocks(model, config.freeze.blocks)


def choose_trainable(model: GPT, config: FinetuneConfig) -> dict:
    """Set requires_grad by the method; return what was chosen, for the log and the manifest."""
    if config.method == "lora":
        lora = config.lora
        layers = inject_lora(model, lora.targets, lora.rank, lora.alpha, lora.dropout)
        chosen = {"method": "lora", "layers": layers}
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        freeze_parts(model, config.freeze.embeddings, config.freeze.blocks)
        chosen = {"method": "full", "frozen_embeddings": config.freeze.embeddings,
                  "frozen_blocks": config.freeze.blocks}
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise ConfigError("every parameter is frozen, so nothing would learn: freeze fewer blocks")
    return {**chosen, "trainable_parameters": trainable, "total_parameters": total}
