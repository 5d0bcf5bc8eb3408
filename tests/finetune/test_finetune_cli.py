"""`lmsmith finetune` on the command line: each bad input is one clear line and exit code 2."""

from __future__ import annotations

import json

import pytest

from lmsmith.cli import main, parse_command

FAST = ["train.peak_flops=1e11", "train.micro_batch=16", "train.log_every=100"]


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def refused(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


GOOD = {"prompt": "abc=", "response": "123"}
BAD_DATA = {
    "missing field": ({"prompt": "x"}, "line 3: missing field 'response'"),
    "wrong type": ({"prompt": "x", "response": ["1"]}, "line 3: field 'response' must be text, got list"),
    "empty response": ({"prompt": "x", "response": ""}, "line 3: the response is empty"),
    "unknown role": ({"messages": [{"role": "bot", "content": "hi"}]}, "line 3, messages[0]: unknown role 'bot'"),
}


@pytest.mark.parametrize("bad,message", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_instruction_data_names_its_line(tmp_path, capsys, base_dir, bad, message):
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, bad])
    err = refused(capsys, ["finetune", str(base_dir), "--data", data, "-o", str(tmp_path / "run")])
    assert message in err
    assert not (tmp_path / "run").exists()


def test_an_unknown_lora_target_lists_the_layers_that_exist(tmp_path, capsys, base_dir, kv_file):
    err = refused(capsys, ["finetune", str(base_dir), "--data", str(kv_file), "-o", str(tmp_path / "run"),
                           "--method", "lora", "lora.targets=[q_proj, v_proj]"])
    assert ("'q_proj' matches no linear layer of this model; "
            "the layers are: attn.qkv, attn.proj, ffn.fc, ffn.proj, head") in err


def test_merging_into_another_base_is_refused(tmp_path, capsys, base_dir, kv_file, char_tokenizer, make_model):
    from lmsmith.model.directory import save_model_dir

    run = tmp_path / "run"
    assert main(["finetune", str(base_dir), "--data", str(kv_file), "-o", str(run), "--method", "lora", "--quiet",
                 *FAST, "train.steps=2", "train.eval_every=1"]) == 0
    other = make_model(char_tokenizer.vocab_size, seed=5, block_size=32, n_embd=64)
    save_model_dir(tmp_path / "other", other, char_tokenizer, made_by="test")
    err = refused(capsys, ["finetune", "--merge", str(run), "--base", str(tmp_path / "other"),
                           "-o", str(tmp_path / "m")])
    assert "was trained on other base weights" in err and "merge into the base it was trained on" in err
    assert not (tmp_path / "m").exists()
    err = refused(capsys, ["finetune", "--merge", str(base_dir), "-o", str(tmp_path / "m")])
    assert "holds no LoRA adapter" in err


CLI_MISTAKES = {
    "unknown template": (["--template", "vicuna"], "unknown chat template 'vicuna'"),
    "unknown key": (["lora.rnak=4"], "unknown key 'finetune.lora.rnak': did you mean 'rank'?"),
    "bad value": (["lora.rank=0"], "finetune.lora.rank must be at least 1"),
    "freeze with lora": (["--method", "lora", "freeze.blocks=1"], "finetune.freeze applies to full fine-tuning"),
    "too many frozen blocks": (["freeze.blocks=3"], "freeze.blocks is 3 but the model has only 2 blocks"),
}


@pytest.mark.parametrize("extra,message", CLI_MISTAKES.values(), ids=CLI_MISTAKES.keys())
def test_config_mistakes_are_one_line(tmp_path, capsys, base_dir, kv_file, extra, message):
    err = refused(capsys, ["finetune", str(base_dir), "--data", str(kv_file), "-o", str(tmp_path / "run"), *extra])
    assert message in err


def test_missing_or_misplaced_inputs(tmp_path, capsys, base_dir, kv_file):
    assert "--data is missing" in refused(capsys, ["finetune", str(base_dir), "-o", str(tmp_path / "r")])
    assert "does not exist" in refused(capsys, ["finetune", str(tmp_path / "nope"), "--data", str(kv_file),
                                                "-o", str(tmp_path / "r")])
    assert "would replace the input" in refused(capsys, ["finetune", str(base_dir), "--data", str(kv_file),
                                                         "-o", str(base_dir)])
    assert "reads a JSONL file" in refused(capsys, ["finetune", str(base_dir), "--data", str(tmp_path),
                                                    "-o", str(tmp_path / "r")])


def test_overrides_may_follow_the_options():
    command = parse_command(["finetune", "runs/main", "--data", "d.jsonl", "-o", "runs/sql", "--method", "lora",
                             "lora.rank=16", "train.lr=1e-4"])
    assert command.inputs["base"] == "runs/main" and command.config.finetune.method == "lora"
    assert command.config.finetune.lora.rank == 16 and command.config.train.lr == 1e-4


def test_a_hub_model_that_cannot_be_downloaded_is_one_line(tmp_path, capsys, kv_file, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network in tests: the download fails at once
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import, if imported already
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    err = refused(capsys, ["finetune", "hf:lmsmith-test/not-a-model", "--data", str(kv_file),
                           "-o", str(tmp_path / "r")])
    assert "could not download lmsmith-test/not-a-model from the Hugging Face Hub" in err


@pytest.mark.parametrize("again", [[], ["--force"]], ids=["same-command", "with-force-as-build-gives-it"])
def test_a_killed_run_resumes_and_a_finished_one_is_replaced_only_with_force(tmp_path, capsys, base_dir, kv_file,
                                                                             again):
    import shutil

    run = tmp_path / "run"
    command = ["finetune", str(base_dir), "--data", str(kv_file), "-o", str(run), "--template", "raw", *FAST,
               "train.steps=4", "train.save_every=2", "train.keep_last=2", "train.eval_every=2"]
    assert main([*command, "--quiet"]) == 0
    # What SIGKILL after the checkpoint of step 2 leaves: that checkpoint, the manifest and logs, a stale lock.
    for name in ("finetune.json", "model", "best", "checkpoints/step-000004"):
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
    (run / ".lock").write_text("999999999 2026-01-01T00:00:00\n")  # a process that is gone
    capsys.readouterr()
    assert main([*command, *again]) == 0  # --force too: an interrupted run is not a trained model to replace
    assert "resuming from step-000002" in capsys.readouterr().out
    assert (run / "finetune.json").is_file()

    assert "already holds a trained model: add --force" in refused(capsys, [*command, "--quiet"])
    assert main([*command, "--quiet", "--force"]) == 0  # --force is enough: it is not asked for again
    assert (run / "finetune.json").is_file() and not (run / ".lock").exists()


def test_the_start_models_name_and_license_carry_into_the_fine_tuned_model(tmp_path, base_dir, kv_file):
    from lmsmith.model.directory import load_model_dir, save_model_dir

    model, tokenizer = load_model_dir(base_dir)
    general = {"name": "tiny-base", "license": "apache-2.0"}
    save_model_dir(tmp_path / "base", model, tokenizer, made_by="convert --from-gguf (llama)",
                   extra={"general": general})
    run = tmp_path / "run"
    assert main(["finetune", str(tmp_path / "base"), "--data", str(kv_file), "-o", str(run), "--quiet", *FAST,
                 "train.steps=2", "train.eval_every=2"]) == 0
    assert json.loads((run / "model" / "manifest.json").read_text())["config"]["general"] == general
