"""The context curriculum (train.short_context): the first share of the steps trains on short windows."""

from __future__ import annotations

import pytest
import torch

from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.train.loop import train
from lmsmith.train.trainer import in_short_windows, next_token_loss
from tests.train.test_recipe import load_recipe


def test_short_windows_are_the_rows_cut_in_pieces_each_scored_on_its_own():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    inputs, targets = torch.randint(0, 50, (3, 32)), torch.randint(0, 50, (3, 32))
    loss, _ = in_short_windows(next_token_loss, 8)(model, (inputs, targets))
    # each 8-token window alone, one at a time: none sees the tokens before it in its row
    pieces = [model(inputs[r : r + 1, s : s + 8], targets[r : r + 1, s : s + 8]).loss
              for r in range(3) for s in range(0, 32, 8)]
    assert loss.item() == pytest.approx(torch.stack(pieces).mean().item(), rel=1e-5)
    whole, _ = next_token_loss(model, (inputs, targets))
    assert whole.item() != pytest.approx(loss.item(), rel=1e-4)  # whole rows see more context


def test_the_first_share_of_steps_trains_on_short_windows_then_whole_rows(tmp_path, recipe_file, monkeypatch,
                                                                           one_thread):
    widths = []
    forward = GPT.forward

    def recording_forward(self, idx, targets=None, cache=None, last_only=False):
        if self.training:
            widths.append(idx.shape)
        return forward(self, idx, targets, cache, last_only)

    monkeypatch.setattr(GPT, "forward", recording_forward)
    recipe = load_recipe(recipe_file(tmp_path / "run", steps=10, warmup_steps=2, eval_every=0, save_every=10,
                                     short_context=8, short_context_share=0.3))
    train(recipe, quiet=True)
    # 8 rows of 32 tokens a step (micro-batch 4, two micro-batches): as 16 x 8 in the first 3 steps
    assert widths == [torch.Size([16, 8])] * 6 + [torch.Size([4, 32])] * 14
