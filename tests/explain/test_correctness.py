"""The numbers explain shows are the ones the model computes: checked against a float64 recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explain_reference import read_out, reference

from lmsmith.explain.attention import looked_at
from lmsmith.explain.embeddings import nearest, pca_map
from lmsmith.explain.explanation import allowed_ids, explain_text
from lmsmith.explain.tokens import Merges, merge_steps
from lmsmith.explain.trace import trace
from lmsmith.schema.explain import ExplainConfig

TEXT = "def add(a, b):\n    return a + b"


def test_attention_is_what_the_model_computes(model, tokenizer):
    ids = tokenizer.encode(TEXT)
    ref = reference(model, ids)
    shown = explain_text(model, tokenizer, TEXT, ExplainConfig())["attention"]
    assert shown.shape == (model.config.n_layer, model.config.n_head, len(ids), len(ids))
    for layer, expected in enumerate(ref["attention"]):
        np.testing.assert_allclose(shown[layer], expected.numpy(), atol=2e-5)
    # Not a near-uniform pattern that anything would match: some head puts most weight on one token.
    assert shown[:, :, 2:].max() > 0.5


def test_keeping_the_weights_leaves_the_logits_as_they_were(model, tokenizer):
    ids = torch.tensor([tokenizer.encode(TEXT)])
    with torch.no_grad():
        fused = model(ids).logits
    np.testing.assert_allclose(trace(model, ids).logits.numpy(), fused.numpy(), atol=1e-4)
    assert not any(block.attn.keep_weights for block in model.blocks)


def test_logit_lens_and_next_token_read_the_model_out(model, tokenizer):
    ids = tokenizer.encode(TEXT)
    ref = reference(model, ids)
    e = explain_text(model, tokenizer, TEXT, ExplainConfig(top_k=3))
    lens_ids, lens_probs = e["logit_lens"]["ids"], e["logit_lens"]["probs"]
    assert lens_ids.shape == (model.config.n_layer + 1, len(ids), 3)
    for layer, residual in enumerate(ref["residual"]):
        probs = read_out(residual, model, ref["state"]).numpy()
        expected = np.sort(probs, axis=-1)[:, ::-1][:, :3]
        np.testing.assert_allclose(lens_probs[layer], expected, atol=1e-5)
        np.testing.assert_allclose(np.take_along_axis(probs, lens_ids[layer], -1), lens_probs[layer], atol=1e-5)
    final = ref["logits"].softmax(-1).numpy()
    np.testing.assert_allclose(e["next_token"]["probs"], np.sort(final, -1)[:, ::-1][:, :3], atol=1e-5)
    np.testing.assert_array_equal(e["next_token"]["ids"], lens_ids[-1])  # the last layer's read-out is the output
    assert e["next_token"]["greedy"]["id"] == int(final[-1].argmax())
    assert e["next_token"]["greedy"]["probability"] == pytest.approx(final[-1].max(), abs=1e-5)


def test_sampled_pick_uses_the_temperature(model, tokenizer):
    e = explain_text(model, tokenizer, TEXT, ExplainConfig(temperature=0.5, seed=3))
    logits = reference(model, tokenizer.encode(TEXT))["logits"][-1]
    sampled = e["next_token"]["sampled"]
    assert sampled["probability"] == pytest.approx(float((logits / 0.5).softmax(-1)[sampled["id"]]), abs=1e-5)
    again = explain_text(model, tokenizer, TEXT, ExplainConfig(temperature=0.5, seed=3))["next_token"]
    assert again["sampled"] == sampled and again["greedy"] == e["next_token"]["greedy"]


def test_focus_ranks_the_earlier_tokens_by_weight(model, tokenizer):
    e = explain_text(model, tokenizer, TEXT, ExplainConfig(focus="return", top_k=4))
    position = e["focus"]["position"]
    assert e["tokens"][position]["text"].strip() == "return"
    row = e["attention"][:, :, position, :position]
    for head in e["focus"]["per_head"]:
        weights = row[head["layer"], head["head"]]
        assert [r["position"] for r in head["earlier"]] == list(np.argsort(-weights, kind="stable")[:4])
        assert head["self"] == pytest.approx(float(e["attention"][head["layer"], head["head"], position, position]))
    mean = row.mean(axis=(0, 1))
    assert [r["weight"] for r in e["focus"]["all_heads"]] == pytest.approx(sorted(mean, reverse=True)[:4])


def test_looked_at_finds_the_token_a_head_points_to():
    attention = np.zeros((1, 1, 5, 5))
    attention[0, 0, 4] = [0.1, 0.7, 0.05, 0.05, 0.1]
    ranked = looked_at(attention, 4, top=2)
    assert [r["position"] for r in ranked["per_head"][0]["earlier"]] == [1, 0]
    assert ranked["per_head"][0]["self"] == pytest.approx(0.1)


def test_embedding_neighbours_and_map(model, tokenizer):
    table = model.tok_emb.weight.detach().double()
    allowed = allowed_ids(tokenizer, model.config.vocab_size)
    token = int(allowed[40])
    cosine = torch.nn.functional.cosine_similarity(table[token][None], table[torch.as_tensor(allowed)], dim=-1)
    cosine[torch.as_tensor(allowed) == token] = -2
    expected = torch.as_tensor(allowed)[cosine.argsort(descending=True)[:5]].tolist()
    got = nearest(table.numpy(), token, 5, allowed)
    assert [n["id"] for n in got] == expected
    assert [n["cosine"] for n in got] == pytest.approx(cosine.sort(descending=True).values[:5].tolist())
    ids = allowed[:60]
    coords, share = pca_map(table.numpy(), ids)
    rows = table.numpy()[ids] - table.numpy()[ids].mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(rows.T, bias=True))
    for c in range(2):  # each coordinate is the projection on the c-th largest eigenvector (up to its sign)
        projection = rows @ eigenvectors[:, -1 - c]
        assert np.allclose(np.abs(coords[:, c]), np.abs(projection), atol=1e-8)
    assert share == pytest.approx(eigenvalues[::-1][:2] / eigenvalues.sum())


def test_bpe_merges_rebuild_each_piece(tokenizer):
    merges = Merges(tokenizer)
    for token_id in tokenizer.encode(TEXT):
        tree = merges.tree(token_id)
        leaves = []

        def walk(node, leaves=leaves):
            if node["parts"]:
                assert all(p["merge"] is None or p["merge"] < node["merge"] for p in node["parts"])
                for part in node["parts"]:
                    walk(part)
            else:
                leaves.append(tokenizer.token_bytes(node["id"]))

        walk(tree)
        assert b"".join(leaves) == tokenizer.token_bytes(token_id)
        steps = merge_steps(tree)
        assert [s["merge"] for s in steps] == sorted(s["merge"] for s in steps)
        if steps:
            assert steps[-1]["result"] == tree["text"]


def test_focus_is_found_by_piece_or_by_where_it_sits_in_the_text():
    from lmsmith.core.errors import UserError
    from lmsmith.explain.attention import find_focus

    tokens = [{"position": i, "text": t, "n_bytes": len(t.encode())} for i, t in enumerate(["The", " girl", " ga", "ve",
                                                                                            " her", " Her"])]
    text = "".join(t["text"] for t in tokens)
    assert find_focus(tokens, text, "her") == 4  # the piece, spaces around it ignored
    assert find_focus(tokens, text, "HER") == 5  # else the last piece equal but for case
    assert find_focus(tokens, text, "gave") == 3  # else the token holding the word's last character
    with pytest.raises(UserError, match=r"'dog' is not a token of the text: choose one of 'The', ' girl'"):
        find_focus(tokens, text, "dog")
