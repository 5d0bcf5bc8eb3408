"""Head scores: exact on hand-made patterns; roles in a trained model, none in an untrained one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmsmith.explain.heads import baseline, head_table, induction_scores, score_heads, window_scores
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig

V, HALF = 64, 12  # vocabulary and the length of the repeated random sequences


def test_scores_of_hand_made_patterns():
    T = 6
    previous = torch.zeros(1, 1, T, T)
    previous[0, 0, 0, 0] = 1
    previous[0, 0, torch.arange(1, T), torch.arange(T - 1)] = 1
    first = torch.zeros(1, 1, T, T)
    first[0, 0, :, 0] = 1
    scores = window_scores(torch.cat([previous, first], dim=1))
    assert scores["previous"].tolist() == pytest.approx([1.0, 1 / (T - 1)])  # t = 1 looks at 0 = first
    assert scores["first"].tolist() == pytest.approx([1 / (T - 1), 1.0])
    assert scores["distance"].tolist() == pytest.approx([1.0, np.mean(np.arange(1, T))])
    even = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    assert window_scores(even[None, None])["previous"][0] == pytest.approx(baseline(T, T // 2)["previous"])
    induction = torch.zeros(1, 1, 2 * 3, 2 * 3)
    induction[0, 0, 3 + torch.arange(3), 1 + torch.arange(3)] = 1
    assert induction_scores(induction, 3)[0] == pytest.approx(1.0)


def trained_on_repeats(steps: int) -> GPT:
    """A 2-layer model trained on random sequences shown twice: it learns to copy from the first copy."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=V, block_size=2 * HALF, n_layer=2, n_head=2, n_embd=32, position="learned",
                            dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        r = torch.randint(0, V, (16, HALF), generator=generator)
        x = torch.cat([r, r], dim=1)
        loss = model(x[:, :-1], targets=x[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_a_trained_model_has_heads_with_roles_an_untrained_one_none(one_thread):
    windows = np.random.default_rng(0).integers(0, V, size=(8, 2 * HALF))
    untrained = head_table(score_heads(trained_on_repeats(0), windows, np.arange(V)))
    assert [r["role"] for r in untrained] == [None] * 4
    assert max(r["induction"] for r in untrained) < 0.2
    trained = head_table(score_heads(trained_on_repeats(250), windows, np.arange(V)))
    assert trained[0]["role"] == "induction" and trained[0]["induction"] > 0.5
