"""Which parameters each optimizer trains, and with which weight decay."""

from __future__ import annotations

import pytest
import torch

from lmsmith.core.config import parse_section
from lmsmith.core.errors import UserError
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.train import TrainConfig
from lmsmith.train.optim import build_optimizers


def model(**kw) -> GPT:
    return GPT(parse_section(ModelConfig,
                             {"vocab_size": 97, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw},
                             "model"))


def groups_by_name(net: GPT, optimizers) -> dict[str, tuple[str, str, float]]:
    """parameter name -> (optimizer class, group kind, weight decay)."""
    names = {id(p): n for n, p in net.named_parameters()}
    found = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                assert names[id(p)] not in found, f"{names[id(p)]} is in two groups"
                found[names[id(p)]] = (type(optimizer).__name__, group["kind"], group["weight_decay"])
    return found


@pytest.mark.parametrize("shape", [{}, {"preset": "gpt2", "tie_embeddings": False}])
def test_adamw_decays_matrices_but_not_embeddings_norms_or_biases(shape):
    net = model(**shape)
    found = groups_by_name(net, build_optimizers(net, parse_section(TrainConfig, {"weight_decay": 0.1}, "train")))
    assert set(found) == {n for n, _ in net.named_parameters()}  # every parameter, once
    for name, p in net.named_parameters():
        decayed = found[name][2] > 0
        is_embedding = name in ("tok_emb.weight", "pos_emb.table.weight")
        assert decayed == (p.ndim >= 2 and not is_embedding), name
    if "head.weight" in found:  # untied: the head is a matrix like any other
        assert found["head.weight"][2] == 0.1


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    net = model(tie_embeddings=False, bias=True)
    found = groups_by_name(net, build_optimizers(net, parse_section(TrainConfig, {"optimizer": "muon"}, "train")))
    muon = {n for n, (cls, _, _) in found.items() if cls == "GroupedMuon"}
    expected = {n for n, p in net.named_parameters() if p.ndim == 2 and n.startswith("blocks.")}
    assert muon == expected and len(muon) == 2 * 4  # qkv, proj, fc, proj per block
    assert found["head.weight"][:2] == ("AdamW", "decay") and found["tok_emb.weight"][:2] == ("AdamW", "no_decay")


def test_muon_steps_change_weights_and_peak_lrs_are_recorded():
    net = model()
    optimizers = build_optimizers(net, parse_section(TrainConfig, {"optimizer": "muon", "lr": 1e-3, "muon_lr": 0.05},
                                                     "train"))
    assert {g["peak_lr"] for o in optimizers for g in o.param_groups} == {1e-3, 0.05}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = torch.randint(0, 97, (2, 16))
    net(x, x).loss.backward()
    for o in optimizers:
        o.step()
    assert all(not torch.equal(before[n], p) for n, p in net.named_parameters())


def test_muon_missing_from_torch_is_refused(monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    with pytest.raises(UserError, match="needs torch.optim.Muon"):
        build_optimizers(model(), parse_section(TrainConfig, {"optimizer": "muon"}, "train"))
