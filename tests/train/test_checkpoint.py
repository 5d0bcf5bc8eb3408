"""Checkpoints hold every optimizer tensor without pickle, and a full disk never costs the last good one."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from safetensors.torch import load_file

from lmsmith.cli import main
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.train import TrainConfig
from lmsmith.train import checkpoint as ckpt
from lmsmith.train.distributed import DistInfo
from lmsmith.train.optim import build_optimizers


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_optimizer_state_survives_flattening(optimizer):
    torch.manual_seed(0)
    net = GPT(ModelConfig(vocab_size=40, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_embeddings=False))
    optimizers = build_optimizers(net, TrainConfig(optimizer=optimizer))
    x = torch.randint(0, 40, (3, 8))
    for _ in range(2):
        net(x, x).loss.backward()
        for o in optimizers:
            o.step()
            o.zero_grad()
    tensors, rest = ckpt.optimizer_tensors(net, optimizers, DistInfo())
    json.dumps(rest)  # the non-tensor part is plain JSON
    assert all(name.startswith("state/") for name in tensors)
    restored = ckpt.optimizer_state_from(tensors, json.loads(json.dumps(rest)))
    fresh = build_optimizers(net, TrainConfig(optimizer=optimizer))
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(net, fresh, restored)
    for original, copy in zip(optimizers, fresh):
        a, b = original.state_dict(), copy.state_dict()
        assert a["param_groups"] == b["param_groups"]
        assert a["state"].keys() == b["state"].keys()
        for index, entries in a["state"].items():
            for key, value in entries.items():
                assert torch.equal(value, b["state"][index][key]), (index, key)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, recipe_file, capsys, monkeypatch, one_thread):
    real_save = ckpt.save_file
    calls = {"n": 0}

    def save_until_disk_fills(tensors, path, *args, **kw):
        # Checkpoints hold three safetensors files; the second checkpoint dies on its optimizer file.
        calls["n"] += 1
        if calls["n"] == 5:
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *args, **kw)

    monkeypatch.setattr(ckpt, "save_file", save_until_disk_fills)
    run = tmp_path / "run"
    recipe = recipe_file(run, steps=12, save_every=4, eval_every=0)
    assert main(["train", "--config", str(recipe), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot save the checkpoint of step 8" in err and "the disk is full" in err
    assert "the previous checkpoint step-000004 is intact" in err and "--resume auto" in err
    # Nothing half-written is left, and the intact checkpoint resumes the run to its end.
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000004"]
    load_file(run / "checkpoints" / "step-000004" / "optimizer.safetensors")
    monkeypatch.setattr(ckpt, "save_file", real_save)
    assert main(["train", "--config", str(recipe), "--quiet", "--resume", "auto"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000008", "step-000012"]


def test_checkpoints_are_pruned_to_the_last_k_and_hold_no_pickle(tmp_path, recipe_file, one_thread):
    run = tmp_path / "run"
    assert main(["train", "--config", str(recipe_file(run, steps=20, save_every=4, keep_last=2)), "--quiet"]) == 0
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-000016", "step-000020"]
    files = sorted(p.name for p in (run / "checkpoints" / kept[-1]).iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    state = json.loads((run / "checkpoints" / kept[-1] / "state.json").read_text())
    assert state["step"] == 20 and state["model"]["n_layer"] == 2 and state["recipe"]["train"]["steps"] == 20
