"""The memory estimate is close to what autograd really keeps, and a model that cannot fit is refused."""

from __future__ import annotations

import pytest
import torch

from lmsmith.cli import main
from lmsmith.core.config import parse_section
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.train.memory import activation_bytes_per_token, available_ram, estimate_memory


def saved_activation_bytes(config: ModelConfig, low_precision: bool, batch: int = 2) -> int:
    """Bytes of the distinct tensors autograd keeps for backward, weights excluded."""
    torch.manual_seed(0)
    model = GPT(config)
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    idx = torch.randint(0, config.vocab_size, (batch, config.block_size))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low_precision):
            model(idx, idx)
    return sum(storages.values())


# Shapes other than those the coefficients were read from: wider, deeper, GPT-2 style, another vocabulary.
SHAPES = [
    dict(vocab_size=300, block_size=64, n_layer=3, n_head=4, n_embd=96),
    dict(vocab_size=1000, block_size=48, n_layer=2, n_head=6, n_embd=192, n_kv_head=2),
    dict(preset="gpt2", vocab_size=500, block_size=64, n_layer=3, n_head=4, n_embd=128, dropout=0.0),
    dict(vocab_size=256, block_size=32, n_layer=4, n_head=2, n_embd=64, feed_forward="relu2", dropout=0.1),
]


@pytest.mark.parametrize("low_precision", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_activation_estimate_is_within_30_percent_of_the_truth(shape, low_precision, one_thread):
    config = parse_section(ModelConfig, shape, "model")
    measured = saved_activation_bytes(config, low_precision)
    estimated = 2 * config.block_size * activation_bytes_per_token(config, low_precision)
    assert 0.7 < estimated / measured < 1.3, (estimated, measured)


def test_checkpointing_and_sharding_lower_the_estimate():
    config = parse_section(ModelConfig, dict(vocab_size=512, block_size=256, n_layer=12, n_head=12, n_embd=768),
                           "model")
    plain = estimate_memory(config, 100, 50, "adamw", 8, True, 0, torch.device("cpu"))
    checkpointed = estimate_memory(config, 100, 50, "adamw", 8, True, 12, torch.device("cpu"))
    sharded = estimate_memory(config, 100, 50, "muon", 8, True, 0, torch.device("cpu"), shards=4)
    assert checkpointed.activations < plain.activations / 4
    assert plain.optimizer == 800 and sharded.optimizer == (8 * 50 + 4 * 50) / 4 and sharded.weights == 100


def test_a_model_too_big_for_the_machine_is_refused_before_allocating(tmp_path, recipe_file, capsys):
    assert available_ram() > 1 << 30
    # Weights that fit the machine (a third of its memory; weights alone beyond it are refused earlier, by
    # arithmetic), but not with their gradients and AdamW's two moments (four times as much).
    from lmsmith.model.sizes import memory_bytes, parameter_counts
    from lmsmith.schema.model import ModelConfig

    def weight_bytes(n_layer: int) -> int:
        return 4 * sum(parameter_counts(ModelConfig(n_layer=n_layer, n_embd=8192, n_head=64, block_size=32,
                                                    vocab_size=512)).values())

    n_layer = 1
    while weight_bytes(n_layer + 1) < memory_bytes() / 3:
        n_layer += 1
    code = main(["train", "--config", str(recipe_file(tmp_path / "run")), f"model.n_layer={n_layer}",
                 "model.n_embd=8192", "model.n_head=64", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "training needs about" in err and "this machine's RAM has" in err and "lower train.micro_batch" in err
    assert not (tmp_path / "run").exists()
