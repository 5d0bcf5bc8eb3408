"""The finetune and train sections: fine-tuning defaults, flags, files and overrides, checked up front."""

from __future__ import annotations

import pytest

from lmsmith.core.errors import UserError
from lmsmith.schema.finetune import FINETUNE_TRAIN_DEFAULTS, LORA_LEARNING_RATE
from lmsmith.schema.stage import stage_config
from lmsmith.stages import FINETUNE


def load_finetune_config(path, overrides=(), **flags):
    """The config `lmsmith finetune` reads: the shared loader with fine-tuning's defaults, then the stage's checks."""
    config = stage_config(FINETUNE, path, list(overrides), {f"finetune.{k}": v for k, v in flags.items()})
    FINETUNE.check_step(config, 1)
    return config


def test_defaults_suit_fine_tuning_and_lora_takes_a_larger_step():
    full = load_finetune_config(None)
    assert full.finetune.method == "full" and full.finetune.mode == "instruct"
    assert full.train.lr == FINETUNE_TRAIN_DEFAULTS["lr"] and full.train.weight_decay == 0.0
    assert full.train.early_stop_patience == FINETUNE_TRAIN_DEFAULTS["early_stop_patience"]
    assert not full.batch_tokens_given
    assert load_finetune_config(None, method="lora").train.lr == LORA_LEARNING_RATE


def test_overrides_win_over_flags_and_file(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text("finetune:\n  template: chatml\n  lora: {rank: 4}\ntrain:\n  lr: 0.01\n  batch_tokens: 512\n"
                    "model: {n_layer: 2}\n", encoding="utf-8")  # a whole recipe: other sections are left alone
    recipe = load_finetune_config(path, ["lora.rank=32", "train.steps=20", "finetune.packing=true"],
                                  method="lora", template="raw")
    assert recipe.finetune.template == "raw" and recipe.finetune.method == "lora" and recipe.finetune.packing
    assert recipe.finetune.lora.rank == 32 and recipe.train.lr == 0.01 and recipe.train.steps == 20
    assert recipe.train.warmup_steps == 2  # a short run gets a short warmup
    assert recipe.batch_tokens_given


def test_a_file_of_bare_keys_is_the_finetune_section(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text("method: lora\nlora: {targets: [qkv]}\n", encoding="utf-8")
    assert load_finetune_config(path).finetune.lora.targets == ["qkv"]


@pytest.mark.parametrize("overrides,message", [
    (["train.lrr=1"], "unknown key 'train.lrr': did you mean 'lr'?"),
    (["val_fraction=1.5"], "finetune.val_fraction must be in [0, 1)"),
    (["mode=continue", "packing=true"], "finetune.packing is for instruct data"),
    (["template=alpaca"], "unknown chat template 'alpaca'"),
    (["lora.alpha=-1"], "finetune.lora.alpha must be positive"),
])
def test_impossible_values_are_refused_before_any_work(overrides, message):
    with pytest.raises(UserError) as info:
        load_finetune_config(None, overrides)
    assert message in str(info.value)
