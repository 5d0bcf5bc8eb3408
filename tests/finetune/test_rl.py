"""RL from checkable rewards (--mode rl): a toy task learned, the loss against a float64 reference written here,
resume after a kill, and bad input."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from lmsmith.cli import main
from lmsmith.finetune.rl_loss import RolloutRows, group_advantages, policy_objective
from lmsmith.finetune.rollouts import completion_rows
from lmsmith.model.directory import load_model_dir
from lmsmith.model.transformer import IGNORE_INDEX

FAST = ["train.peak_flops=1e11", "train.log_every=1", "rl.max_new_tokens=2", "rl.group=8", "rl.prompts=8"]
WORDS = [a + b for a in "abcdefgh" for b in "xyzuv"]  # 40 prompts: 36 to train on, 4 held out


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def digit_tasks(tmp_path) -> str:
    """Exam regex items: the answer must start with a digit (about one character in eight at the start)."""
    return write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": w, "regex": "^[0-9]"} for w in WORDS])


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_tiny_model_learns_to_raise_its_reward(tmp_path, base_dir, digit_tasks):
    run = tmp_path / "run"
    assert main(["finetune", str(base_dir), "--mode", "rl", "--data", digit_tasks, "-o", str(run), "--template",
                 "raw", "--quiet", *FAST, "train.steps=30", "train.lr=1e-2", "train.eval_every=30",
                 "rl.scale_std=true"]) == 0
    rewards = [m["reward"] for m in metrics(run) if "reward" in m]
    assert len(rewards) == 30
    first, last = np.mean(rewards[:5]), np.mean(rewards[-5:])
    assert first < 0.3 and last > first + 0.5, rewards
    logged = metrics(run)[-2]
    assert {"groups_rewarded", "completion_tokens", "kl", "rollout_s"} <= set(logged)
    report = json.loads((run / "finetune.json").read_text())
    before, after = report["before"]["val"], report["after"]["val"]
    assert report["data"]["kind"] == "rl" and report["data"]["val_items"] == 4
    assert after["pass_at_1"] >= before["pass_at_1"] + 0.5 and before["pass_at_1_stderr"] >= 0


# ---------------------------------------------------------------------------------------------
# The advantage and the loss, against plain Python in float64


def hand_advantages(rewards: list[list[float]], scale_std: bool) -> list[list[float]]:
    out = []
    for group in rewards:
        m = sum(group) / len(group)
        sd = math.sqrt(sum((r - m) ** 2 for r in group) / (len(group) - 1))
        out.append([(r - m) / (sd + 1e-4) if scale_std else r - m for r in group])
    return out


@pytest.mark.parametrize("scale_std", [False, True])
def test_group_advantages_equal_a_float64_hand_computation(scale_std):
    rng = np.random.default_rng(0)
    rewards = rng.integers(0, 2, size=(5, 4)).astype(float).tolist() + [[0.3, 0.9, 0.1, 0.5]]
    ours = group_advantages(torch.tensor(rewards, dtype=torch.float64), scale_std)
    np.testing.assert_allclose(ours.numpy(), hand_advantages(rewards, scale_std), rtol=0, atol=1e-12)


def hand_loss(model, rows: RolloutRows, clip: float, beta: float) -> float:
    """The clipped policy-gradient loss with a KL penalty, one token at a time in float64."""
    model64 = model.double()
    with torch.no_grad():
        logits = model64(rows.inputs).logits.double()
    model.float()
    total = 0.0
    for r in range(rows.inputs.size(0)):
        terms = []
        for t, target in enumerate(rows.targets[r].tolist()):
            if target == IGNORE_INDEX:
                continue
            logp = torch.log_softmax(logits[r, t], dim=-1)[target].item()
            old, ref, a = rows.old_logps[r, t].item(), rows.ref_logps[r, t].item(), rows.advantages[r].item()
            ratio = math.exp(logp - old)
            pg = -min(ratio * a, min(max(ratio, 1 - clip), 1 + clip) * a)
            kl = math.exp(ref - logp) - (ref - logp) - 1
            terms.append(pg + beta * kl)
        total += sum(terms) / len(terms)
    return total / rows.inputs.size(0)


def test_the_policy_loss_equals_a_float64_hand_computation(make_model):
    torch.manual_seed(1)
    model = make_model(20)
    prompts = [[1, 2, 3], [4, 5], [1, 2, 3], [4, 5]]
    completions = [[6, 7, 0], [8], [9, 9, 9, 9], [10, 11]]
    inputs, targets = completion_rows(prompts, completions, pad_id=0)
    assert targets[0].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 6, 7, 0, IGNORE_INDEX]
    mask = targets != IGNORE_INDEX
    # old and reference log-probabilities away from the policy's, so the ratio clips and the KL is not zero
    old = torch.where(mask, -3.0 + torch.rand(mask.shape) * 2.0, torch.zeros(mask.shape))
    ref = torch.where(mask, -3.0 + torch.rand(mask.shape) * 2.0, torch.zeros(mask.shape))
    advantages = group_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), False).view(-1)
    rows = RolloutRows(inputs, targets, advantages.float(), old, ref, 1.0, {})
    loss, stats = policy_objective(0.2, 0.05)(model, rows)
    assert stats["clipped"] > 0
    assert loss.item() == pytest.approx(hand_loss(model, rows, 0.2, 0.05), abs=1e-5)


def test_on_policy_the_gradient_is_the_advantage_times_the_gradient_of_log_p(make_model):
    torch.manual_seed(2)
    model = make_model(20).train()
    inputs, targets = completion_rows([[1, 2], [1, 2]], [[3, 4], [5]], pad_id=0)
    rows = RolloutRows(inputs, targets, torch.tensor([0.5, -0.5]), None, None, 1.0, {})
    loss, _ = policy_objective(0.2, 0.0)(model, rows)
    ours = torch.autograd.grad(loss, model.head.weight)[0]
    logp = torch.log_softmax(model(inputs).logits, -1)
    expected = -(0.5 * (logp[0, 1, 3] + logp[0, 2, 4]) / 2 - 0.5 * logp[1, 1, 5]) / 2
    np.testing.assert_allclose(ours, torch.autograd.grad(expected, model.head.weight)[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Resume, bad input


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_killed_inside_a_batch_of_rollouts_resumes_to_the_same_weights(tmp_path, base_dir, digit_tasks,
                                                                            method):
    run = tmp_path / "run"
    command = ["finetune", str(base_dir), "--mode", "rl", "--method", method, "--data", digit_tasks, "-o", str(run),
               "--template", "raw", "--quiet", *FAST, "train.steps=6", "train.save_every=3", "train.keep_last=2",
               "train.eval_every=3", "train.lr=1e-2", "rl.updates_per_batch=2", "rl.kl=0.1",
               "finetune.restore_best=false"]  # RUN/model: the weights of the last step, not a copy of RUN/best
    assert main(command) == 0
    whole, _ = load_model_dir(run / "model")
    logged = metrics(run)
    assert any(m.get("clipped", 0) > 0 or m.get("kl", 0) > 0 for m in logged)
    # What SIGKILL after the checkpoint of step 3 leaves (steps 2 and 3 share rollout 1, saved in RUN/rollouts)
    for name in ("finetune.json", "model", "checkpoints/step-000006"):
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert main(command) == 0
    resumed, _ = load_model_dir(run / "model")
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    again = metrics(run)
    assert [m.get("reward") for m in again] == [m.get("reward") for m in logged]
    assert [m.get("loss") for m in again] == [m.get("loss") for m in logged]


def refused(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, base_dir, digit_tasks):
    command = ["finetune", str(base_dir), "--mode", "rl", "-o", str(tmp_path / "run"), "--template", "raw",
               "--quiet", *FAST, "train.steps=2"]
    assert "rl.group must be at least 2" in refused(capsys, [*command, "--data", digit_tasks, "rl.group=1"])
    assert "rl.prompts x rl.group = 8 x 10000000" in refused(capsys, [*command, "--data", digit_tasks,
                                                                        "rl.group=10000000"])
    assert "cannot import no_such_module_here" in refused(
        capsys, [*command, "--data", digit_tasks, "rl.reward=no_such_module_here:score"])
    choices = write_jsonl(tmp_path / "choices.jsonl", [{"question": "2+2?", "choices": ["3", "4"], "answer": 1},
                                                       {"prompt": "no way to check this"}])
    assert "holds no checkable item (2 line(s)" in refused(capsys, [*command, "--data", choices])
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text("def broken(item, completion):\n    return 'yes'\n")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": w} for w in WORDS])
    err = refused(capsys, [*command, "--data", prompts, f"rl.reward={rewards}:broken"])
    assert "returned 'yes'" in err and "broken" in err


def test_a_reward_function_scores_lines_that_hold_only_a_prompt(tmp_path, base_dir):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": w} for w in WORDS])
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text("def starts_with_x(item, completion):\n    return float(completion.startswith('x'))\n")
    run = tmp_path / "run"
    assert main(["finetune", str(base_dir), "--method", "rl", "--data", data, "-o", str(run), "--template", "raw",
                 "--quiet", *FAST, "train.steps=2", f"rl.reward={rewards}:starts_with_x"]) == 0
    report = json.loads((run / "finetune.json").read_text())
    assert report["data"]["reward"].endswith("my_rewards.py:starts_with_x") and report["data"]["train_items"] == 36


def test_a_recipe_runs_rl_after_an_instruct_step(tmp_path, base_dir, kv_file, digit_tasks):
    import yaml

    tiny = {"steps": 2, "eval_every": 2, "micro_batch": 16, "peak_flops": 1e11}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"steps": {
        "sft": {"stage": "finetune", "from": {"base": str(base_dir)},
                "finetune": {"data": str(kv_file), "template": "raw"}, "train": tiny},
        "rl": {"stage": "finetune", "finetune": {"method": "rl", "data": digit_tasks, "template": "raw",
                                                 "rl": {"group": 4, "prompts": 2, "max_new_tokens": 2}},
               "train": tiny}}}, sort_keys=False))
    assert main(["build", str(recipe), "-o", str(tmp_path / "work"), "--quiet"]) == 0
    report = json.loads((tmp_path / "work" / "runs" / "rl" / "finetune.json").read_text())
    assert report["data"]["kind"] == "rl" and report["steps"] == 2
    assert report["base"]["source"] == str((tmp_path / "work" / "runs" / "sft" / "model").resolve())
