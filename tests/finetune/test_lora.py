"""LoRA: the wrapped layer computes W x + b + s B A x, only adapters train, merging keeps the outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lmsmith.core.config import ConfigError
from lmsmith.finetune.lora import (
    LoRALinear,
    adapter_state,
    base_weights_sha256,
    count_parameters,
    inject_lora,
    load_adapter_state,
    lora_layers,
    merge_lora,
    select_targets,
)

SHAPES = {
    "rope-swiglu-tied": dict(),
    "gqa-untied-bias": dict(n_head=4, n_kv_head=2, tie_embeddings=False, bias=True),
    "gpt2-like": dict(position="learned", norm="layernorm", feed_forward="gelu", bias=True),
}


def randomise_adapters(model: nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * 0.1)


def test_layer_matches_a_float64_reference():
    torch.manual_seed(0)
    base = nn.Linear(12, 20, bias=True)
    layer = LoRALinear(base, rank=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, 12)
    W, b, A, B = (t.detach().double() for t in (base.weight, base.bias, layer.lora_A, layer.lora_B))
    reference = x.double() @ (W + (6.0 / 3) * B @ A).T + b
    torch.testing.assert_close(layer(x).double(), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.merged()(x).double(), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_fresh_adapter_changes_nothing_and_only_adapters_train(shape, make_model):
    model = make_model(97, **shape)
    idx = torch.randint(0, 97, (2, 16))
    before = model(idx).logits
    base = {k: v.clone() for k, v in model.state_dict().items()}
    names = inject_lora(model, ["attn.qkv", "ffn.fc", "ffn.proj", "attn.proj"], rank=4, alpha=8)
    assert len(names) == 4 * model.config.n_layer
    torch.testing.assert_close(model(idx).logits, before, rtol=0, atol=0)  # B = 0: exactly the base model

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{p}" for n in names for p in ("lora_A", "lora_B")}
    expected = sum(4 * (m.in_features + m.out_features) for m in lora_layers(model).values())
    assert count_parameters(model)[0] == expected

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    for _ in range(5):
        loss = model(idx, targets=torch.roll(idx, -1, dims=1)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    for name, tensor in base.items():
        assert torch.equal(after[name], tensor), f"{name} changed"  # base weights bit-identical
    assert any(not torch.equal(layer.lora_B, torch.zeros_like(layer.lora_B)) for layer in lora_layers(model).values())


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_merged_model_gives_the_adapter_models_logits(shape, make_model):
    model = make_model(97, **shape)
    targets = ["attn.qkv", "attn.proj", "ffn.fc", "ffn.proj"] + ([] if model.config.tie_embeddings else ["head"])
    inject_lora(model, targets, rank=4, alpha=16)
    randomise_adapters(model)
    idx = torch.randint(0, 97, (3, 24))
    adapted = model(idx).logits
    base_delta = adapted - make_model(97, **shape)(idx).logits
    assert base_delta.abs().max() > 1e-2  # the adapters do change the outputs
    merge_lora(model)
    assert not lora_layers(model)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith(("qkv", "proj", "fc")))
    torch.testing.assert_close(model(idx).logits, adapted, rtol=1e-5, atol=1e-5)


def test_adapter_state_round_trips_and_holds_only_adapters(make_model):
    model = make_model(97)
    inject_lora(model, ["qkv"], rank=2, alpha=2)
    randomise_adapters(model)
    state = adapter_state(model)
    assert set(state) == {f"blocks.{i}.attn.qkv.{p}" for i in range(2) for p in ("lora_A", "lora_B")}
    other = make_model(97)
    inject_lora(other, ["qkv"], rank=2, alpha=2)
    load_adapter_state(other, state)
    idx = torch.randint(0, 97, (1, 10))
    torch.testing.assert_close(other(idx).logits, model(idx).logits, rtol=0, atol=0)


def test_targets_pick_by_suffix_or_pattern_and_unknown_ones_list_what_exists(make_model):
    model = make_model(97)
    assert select_targets(model, ["qkv"]) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    assert select_targets(model, ["attn.proj"]) == ["blocks.0.attn.proj", "blocks.1.attn.proj"]
    assert select_targets(model, ["blocks.1.*"]) == ["blocks.1.attn.qkv", "blocks.1.attn.proj",
                                                     "blocks.1.ffn.fc", "blocks.1.ffn.proj"]
    with pytest.raises(ConfigError) as info:
        select_targets(model, ["q_proj"])
    message = str(info.value)
    assert "'q_proj' matches no linear layer" in message
    for kind in ("attn.qkv", "attn.proj", "ffn.fc", "ffn.proj", "head"):
        assert kind in message
    with pytest.raises(ConfigError, match="shares its weight with the token embedding"):
        select_targets(model, ["head"])  # the tiny model ties head and embedding


def test_base_hash_follows_base_weights_not_adapters(make_model):
    model = make_model(97)
    digest = base_weights_sha256(model)
    inject_lora(model, ["qkv"], rank=2, alpha=2)
    randomise_adapters(model)
    assert base_weights_sha256(model) == digest
    assert base_weights_sha256(make_model(97, seed=1)) != digest
    with torch.no_grad():
        model.blocks[0].ffn.fc.weight[0, 0] += 1e-3
    assert base_weights_sha256(model) != digest
