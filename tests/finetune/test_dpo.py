"""Preference tuning (--mode dpo): the loss against a float64 reference written here, and whole runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmsmith.cli import main
from lmsmith.finetune import finetune
from lmsmith.finetune.dpo import answer_logps, cache_reference, preference_objective
from lmsmith.finetune.preferences import pair_batch, read_pairs, tokenize_pairs
from lmsmith.model.directory import load_model_dir
from lmsmith.model.transformer import IGNORE_INDEX
from lmsmith.text.chat_template import get_template
from lmsmith.train.precision import resolve_precision

FAST = ["train.peak_flops=1e11", "train.micro_batch=16", "train.log_every=1"]


def sums_and_wrong_sums(n: int = 48) -> list[dict]:
    """A preference everyone agrees on: the right sum of two digits over a wrong one."""
    import random

    rng = random.Random(0)
    pairs = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        pairs.append({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str((a + b + rng.randint(1, 8)) % 19)})
    return pairs


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in sums_and_wrong_sums()), encoding="utf-8")
    return path


def reference_logp(model, pair_side) -> float:
    """log p(answer | prompt) in float64, one position at a time: the definition, not our batched code."""
    model64 = model.double()
    inputs, targets = pair_side.inputs, pair_side.targets
    with torch.no_grad():
        logits = model64(inputs[None]).logits[0].double()
    total = 0.0
    for position, target in enumerate(targets.tolist()):
        if target != IGNORE_INDEX:
            total += torch.log_softmax(logits[position], dim=-1)[target].item()
    model.float()
    return total


@pytest.mark.parametrize("loss_kind,beta,gamma", [("sigmoid", 0.1, 0.0), ("simpo", 2.0, 0.5)])
def test_the_loss_and_rewards_equal_a_float64_reference(tmp_path, base_dir, pairs_file, loss_kind, beta, gamma):
    model, tokenizer = load_model_dir(base_dir)
    pairs, _ = tokenize_pairs(read_pairs(pairs_file).pairs[:6], get_template("plain"), tokenizer, 32, "training")
    # a reference other than the policy, so the rewards are not all zero
    for n, pair in enumerate(pairs):
        pair.reference = (-0.5 * n, -0.25 * n)
    inputs, targets, reference = pair_batch(pairs, tokenizer.eot_id)
    loss, stats = preference_objective(loss_kind, beta, gamma)(model, (inputs, targets, reference))
    chosen = [reference_logp(model, p.chosen) for p in pairs]
    rejected = [reference_logp(model, p.rejected) for p in pairs]
    if loss_kind == "sigmoid":
        rc = [beta * (c - p.reference[0]) for c, p in zip(chosen, pairs)]
        rr = [beta * (r - p.reference[1]) for r, p in zip(rejected, pairs)]
    else:
        length = [int((p.chosen.targets != IGNORE_INDEX).sum()) for p in pairs]
        length_r = [int((p.rejected.targets != IGNORE_INDEX).sum()) for p in pairs]
        rc = [beta * c / n for c, n in zip(chosen, length)]
        rr = [beta * r / n for r, n in zip(rejected, length_r)]
    expected = sum(math.log1p(math.exp(-(c - r - gamma))) for c, r in zip(rc, rr)) / len(pairs)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["rewards_chosen"].item() == pytest.approx(sum(rc) / len(rc), abs=1e-5)
    assert stats["rewards_rejected"].item() == pytest.approx(sum(rr) / len(rr), abs=1e-5)
    assert stats["preference_accuracy"].item() == pytest.approx(sum(c > r for c, r in zip(rc, rr)) / len(rc))


def test_at_the_start_the_policy_is_its_reference_and_the_loss_is_log_2(base_dir, pairs_file):
    model, tokenizer = load_model_dir(base_dir)
    pairs, _ = tokenize_pairs(read_pairs(pairs_file).pairs, get_template("plain"), tokenizer, 32, "training")
    cache_reference(model, pairs, 8, "cpu", tokenizer.eot_id, resolve_precision("fp32", torch.device("cpu")))
    loss, stats = preference_objective("sigmoid", 0.1, 0.0)(model, pair_batch(pairs[:8], tokenizer.eot_id))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and stats["reward_margin"].item() == 0.0
    logps, lengths = answer_logps(model, *pair_batch(pairs[:1], tokenizer.eot_id)[:2])
    assert logps.tolist() == pytest.approx(list(pairs[0].reference), abs=1e-5) and lengths.min() >= 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_learns_to_prefer_the_right_sums(tmp_path, base_dir, pairs_file, method):
    run = tmp_path / "run"
    # validated on the pairs it trains on: what is checked is that DPO optimises its objective
    report = finetune(str(base_dir), str(pairs_file), run, quiet=True, mode="dpo", method=method, overrides=[
        *FAST, "train.steps=30", "train.eval_every=10", "train.lr=3e-3", "dpo.beta=0.5", f"val_data={pairs_file}"])
    before, after = report["before"], report["after"]
    assert before["val_loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference before the first step
    assert after["val"]["preference_accuracy"] > before["val"]["preference_accuracy"]
    assert after["val"]["reward_margin"] > 0.0 and after["val_loss"] < before["val_loss"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {key for record in records for key in record}
    assert {"rewards_chosen", "rewards_rejected", "reward_margin", "preference_accuracy",
            "val_preference_accuracy", "val_reward_margin"} <= logged
    assert report["data"]["kind"] == "dpo" and report["data"]["loss"] == "sigmoid"


def test_simpo_needs_no_reference_and_learns(tmp_path, base_dir, pairs_file):
    report = finetune(str(base_dir), str(pairs_file), tmp_path / "run", quiet=True, mode="dpo", overrides=[
        *FAST, "train.steps=30", "train.eval_every=10", "train.lr=3e-3", "dpo.loss=simpo", "dpo.beta=2.0",
        f"val_data={pairs_file}"])
    assert report["after"]["val_loss"] < report["before"]["val_loss"]


def test_bad_pairs_are_counted_or_refused_by_line(tmp_path, base_dir, capsys):
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "1+1=", "chosen": "2", "rejected": "2"}) + "\n"
                    + "".join(json.dumps(p) + "\n" for p in sums_and_wrong_sums(8)), encoding="utf-8")
    assert read_pairs(same).identical == 1 and len(read_pairs(same).pairs) == 8
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": "1+1=", "chosen": "2"}) + "\n", encoding="utf-8")
    assert main(["finetune", str(base_dir), "--mode", "dpo", "--data", str(broken), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{broken} line 1: field 'rejected' is missing" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def trl_rows(inputs: torch.Tensor, targets: torch.Tensor, pad_id: int) -> dict:
    """Our pair batch as TRL's DPOTrainer reads one: whole sequences, their attention and completion masks."""
    rows = []
    for i in range(inputs.size(0)):
        n = int((targets[i] != IGNORE_INDEX).nonzero().max()) + 1
        rows.append((inputs[i, :n].tolist() + [int(targets[i, n - 1])],
                     [0] + [int(t != IGNORE_INDEX) for t in targets[i, :n].tolist()]))
    width = max(len(ids) for ids, _ in rows)
    return {"input_ids": torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            "completion_mask": torch.tensor([mask + [0] * (width - len(mask)) for _, mask in rows])}


def test_the_loss_and_rewards_equal_trl_on_the_same_batch(tmp_path, pairs_file, make_model):
    """TRL's DPOTrainer, given the same two models converted to transformers and the same rows."""
    pytest.importorskip("transformers")
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast

    from lmsmith.interop.convert import ours_to_hf_model
    from lmsmith.text.tokenizer import train_char

    tokenizer = train_char(["0123456789+= "], show_progress=False)
    reference_model = make_model(tokenizer.vocab_size, seed=1)
    policy = make_model(tokenizer.vocab_size, seed=1)
    with torch.no_grad():  # the policy a few steps away from its reference
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pairs, _ = tokenize_pairs(read_pairs(pairs_file).pairs[:6], get_template("raw"), tokenizer, 64, "training")
    cache_reference(reference_model, pairs, 8, "cpu", tokenizer.eot_id, resolve_precision("fp32", torch.device("cpu")))
    inputs, targets, reference = pair_batch(pairs, tokenizer.eot_id)
    ours, stats = preference_objective("sigmoid", 0.1, 0.0)(policy, (inputs, targets, reference))

    backend = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token=tokenizer.eot_token,
                                      pad_token=tokenizer.eot_token)
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, report_to=[], use_cpu=True, bf16=False,
                         per_device_train_batch_size=2, max_length=64)
    trainer = trl.DPOTrainer(model=ours_to_hf_model(policy, eot_id=tokenizer.eot_id),
                             ref_model=ours_to_hf_model(reference_model, eot_id=tokenizer.eot_id), args=args,
                             train_dataset=Dataset.from_list([{"prompt": "1+1=", "chosen": "2", "rejected": "3"}] * 2),
                             processing_class=backend)
    trainer.model.eval()
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, trl_rows(inputs, targets, tokenizer.eot_id), False)
    logged = trainer._metrics["eval"]
    assert ours.item() == pytest.approx(float(theirs), abs=1e-5)
    assert stats["rewards_chosen"].item() == pytest.approx(logged["rewards/chosen"][-1], abs=1e-5)
    assert stats["rewards_rejected"].item() == pytest.approx(logged["rewards/rejected"][-1], abs=1e-5)
    assert stats["reward_margin"].item() == pytest.approx(logged["rewards/margins"][-1], abs=1e-5)
    assert stats["preference_accuracy"].item() == pytest.approx(logged["rewards/accuracies"][-1])
