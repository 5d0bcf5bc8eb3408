"""A tiny model learns real text: the validation loss falls clearly, and the run's model is usable."""

from __future__ import annotations

import json
import math

from lmsmith.cli import main
from lmsmith.model.directory import load_model_dir
from lmsmith.model.scoring import evaluate_tokens, token_byte_lengths
from lmsmith.text.tokens_dir import open_tokens_dir, read_split


def test_tiny_model_learns_stdlib_code(tmp_path, recipe_file, tokens_dir, capsys, one_thread):
    run = tmp_path / "run"
    recipe = recipe_file(run, steps=120, batch_tokens=1024, micro_batch=16, lr=4e-3, warmup_steps=8,
                         eval_every=40, eval_batches=8, save_every=60)
    assert main(["train", "--config", str(recipe), "model.block_size=64", "model.n_embd=64", "model.n_head=4",
                 "model.dropout=0.0", "--quiet"]) == 0

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if "val_loss" in line]
    assert [e["step"] for e in evals] == [40, 80, 120]
    first_train_loss = lines[0]["loss"]
    assert abs(first_train_loss - math.log(512)) < 0.3  # an untrained model is a uniform guess
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] < first_train_loss - 1.0  # falling all the way
    assert evals[-1]["val_loss"] < first_train_loss - 1.6
    assert evals[-1]["val_perplexity"] == math.exp(evals[-1]["val_loss"])
    assert lines[-2]["epoch"] == round(120 * 1024 / open_tokens_dir(tokens_dir).split_tokens("train"), 4)

    # The final model directory is in the foundation's format: evaluation and generation read it.
    model, tokenizer = load_model_dir(run)
    val = read_split(open_tokens_dir(tokens_dir), "val")
    result = evaluate_tokens(model, val, token_byte_lengths(tokenizer), context=64, stride=32)
    assert abs(result.loss - evals[-1]["val_loss"]) < 0.25  # independent scorer, all of val vs the sampled windows
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "def ", "--max-new-tokens", "8", "--seed", "0", "--no-stream"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stage"] == "train" and manifest["counts"]["steps"] == 120
    assert (run / "config.yaml").read_text().count("vocab_size: 512") == 1  # the resolved recipe
    assert json.loads((run / "best" / "manifest.json").read_text())["config"]["step"] == 120


def test_early_stopping_ends_the_run_with_a_model(tmp_path, recipe_file, one_thread):
    run = tmp_path / "run"
    # An improvement of more than 10 nats never comes: the second evaluation stops the run.
    recipe = recipe_file(run, steps=40, eval_every=2, early_stop_patience=1, early_stop_min_delta=10.0)
    assert main(["train", "--config", str(recipe), "--quiet"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"]["steps"] == 4
    assert json.loads((run / "model" / "manifest.json").read_text())["config"]["step"] == 4
    assert json.loads((run / "best" / "manifest.json").read_text())["config"]["step"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000004"]
