"""Whole fine-tuning runs on tiny models: a lookup task is learnt, LoRA keeps its base, merging is exact."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmsmith.cli import main
from lmsmith.finetune import finetune
from lmsmith.finetune.adapter_dir import apply_adapter, load_adapter_dir
from lmsmith.model.directory import load_model_dir

FAST = ["train.peak_flops=1e11", "train.micro_batch=16", "train.log_every=100"]


def test_a_tiny_model_learns_a_key_value_lookup(tmp_path, base_dir, kv_file, capsys):
    run = tmp_path / "run"
    report = finetune(str(base_dir), str(kv_file), run, quiet=True, template="raw", overrides=[
        *FAST, f"val_data={kv_file}", "exact_match=32", "train.steps=160", "train.lr=3e-3", "train.eval_every=40",
    ])
    assert report["before"]["answers"]["exact_match"] <= 0.1  # a random model knows no value
    assert report["after"]["answers"]["exact_match"] >= 0.9
    assert report["after"]["val_loss"] < 0.2 * report["before"]["val_loss"]
    assert report["parameters"]["trainable_parameters"] == report["parameters"]["total_parameters"]
    assert json.loads((run / "finetune.json").read_text())["steps"] == report["steps"]
    assert json.loads((run / "manifest.json").read_text())["stage"] == "finetune"

    # The run directory is read by generate like any other: it answers a key with its value.
    pair = json.loads(kv_file.read_text().splitlines()[5])
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", pair["prompt"], "--temperature", "0", "--max-new-tokens", "6",
                 "--no-stream"]) == 0
    assert capsys.readouterr().out.strip() == pair["prompt"] + pair["response"]


def test_tokens_and_throughput_count_what_the_padded_batches_held(tmp_path, base_dir, kv_file):
    """A lookup example is 7 positions ("abc=" "123" and end-of-text, less the last as input) in a
    32-token context: each step of 32 rows trains 224 tokens, not the plan's 32 x 32 = 1,024."""
    run = tmp_path / "run"
    finetune(str(base_dir), str(kv_file), run, quiet=True, template="raw", overrides=[
        *FAST, "train.batch_tokens=1024", "train.steps=6", "train.log_every=2", "train.eval_every=6",
    ])
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [line for line in logged if "tokens" in line]
    assert [line["tokens"] for line in trained] == [line["step"] * 32 * 7 for line in trained] == [448, 896, 1344]
    assert json.loads((run / "manifest.json").read_text())["counts"]["tokens"] == 6 * 32 * 7
    assert all(0 < line["mfu"] < 1 for line in trained)


def test_fine_tuning_ignores_the_pretraining_context_curriculum(tmp_path, base_dir, kv_file, monkeypatch):
    """A recipe's train.short_context is for pretraining: the padded examples (7 positions) are never cut."""
    from lmsmith.model.transformer import GPT

    widths = []
    forward = GPT.forward

    def recording_forward(self, idx, targets=None, cache=None, last_only=False):
        if self.training:
            widths.append(idx.size(1))
        return forward(self, idx, targets, cache, last_only)

    monkeypatch.setattr(GPT, "forward", recording_forward)
    finetune(str(base_dir), str(kv_file), tmp_path / "run", quiet=True, template="raw", overrides=[
        *FAST, "train.batch_tokens=1024", "train.steps=4", "train.eval_every=4", "train.short_context=8",
    ])
    assert widths and set(widths) == {7}


def test_lora_trains_only_adapters_and_merging_gives_the_adapter_models_logits(tmp_path, base_dir, kv_file, capsys):
    run = tmp_path / "run"
    report = finetune(str(base_dir), str(kv_file), run, quiet=False, method="lora", template="chatml", overrides=[
        *FAST, f"val_data={kv_file}", "train.steps=30", "train.eval_every=15", "lora.rank=4",
        "lora.targets=[qkv, ffn.fc]", "train.lr=3e-3",
    ])
    notes = capsys.readouterr().err
    assert "lacks the chatml template's special token(s) <|im_start|>, <|im_end|>: added" in notes
    assert report["added_tokens"] == ["<|im_start|>", "<|im_end|>"]
    assert report["after"]["val_loss"] < report["before"]["val_loss"]
    rank, n_embd, layers = 4, 64, 2
    qkv, fc = 3 * n_embd, 2 * 192  # the fused query/key/value and swiglu gate/up widths
    expected = layers * rank * ((n_embd + qkv) + (n_embd + fc))
    assert report["parameters"]["trainable_parameters"] == expected

    # The base weights inside the trained model are bit-identical to the start: only adapters moved.
    base = load_file(str(base_dir / "model.safetensors"))
    (checkpoint,) = (run / "checkpoints").iterdir()
    trained = load_file(str(checkpoint / "model.safetensors"))
    adapters = {k for k in trained if k.endswith(("lora_A", "lora_B"))}
    assert len(adapters) == 2 * 2 * layers
    for name, tensor in base.items():
        if name == "tok_emb.weight":  # grown by the two template tokens; the old rows are untouched
            assert torch.equal(trained[name][:tensor.shape[0]], tensor)
        else:
            assert torch.equal(trained[name], tensor), name

    # The adapter applied to the base, unmerged, gives the logits of the merged models.
    adapter = load_adapter_dir(run)
    assert adapter.config["rank"] == 4 and adapter.config["added_tokens"] == report["added_tokens"]
    unmerged = apply_adapter(load_model_dir(base_dir)[0], adapter).eval()
    assert main(["finetune", "--merge", str(run), "-o", str(tmp_path / "merged")]) == 0
    merged, tokenizer = load_model_dir(tmp_path / "merged")
    in_run, _ = load_model_dir(run)
    ids = torch.tensor([tokenizer.encode("<|im_start|>user\nabc=<|im_end|>\n<|im_start|>assistant\n1")])
    reference = unmerged(ids).logits
    plain = torch.tensor([tokenizer.encode("abc=123")])
    base_logits = load_model_dir(base_dir)[0](plain).logits
    assert (unmerged(plain).logits[..., :base_logits.size(-1)] - base_logits).abs().max() > 1e-3  # the adapters act
    torch.testing.assert_close(merged(ids).logits, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(in_run(ids).logits, reference, rtol=1e-5, atol=1e-5)


def test_continued_pretraining_with_frozen_blocks_reports_the_general_loss(tmp_path, base_dir):
    domain = tmp_path / "domain"
    domain.mkdir()
    for i in range(6):
        (domain / f"doc{i}.txt").write_text(f"select name from users where id = {i};\n" * 30, encoding="utf-8")
    general = tmp_path / "general.txt"
    general.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    run = tmp_path / "run"
    report = finetune(str(base_dir), str(domain), run, quiet=True, mode="continue", overrides=[
        *FAST, f"general_val={general}", "freeze.blocks=1", "freeze.embeddings=true", "train.steps=30",
        "train.eval_every=15", "train.lr=3e-3",
    ])
    assert report["data"]["kind"] == "continue" and report["data"]["val_tokens"] > 0
    assert report["after"]["val_loss"] < report["before"]["val_loss"] - 0.5
    assert set(report["before"]["general"]) == {"loss", "bits_per_byte", "tokens"}
    assert report["general_loss_change"] == pytest.approx(
        report["after"]["general"]["loss"] - report["before"]["general"]["loss"], abs=1e-4)
    base, tuned = load_file(str(base_dir / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    frozen = [n for n in base if n.startswith("blocks.0.") or n == "tok_emb.weight"]
    assert frozen and all(torch.equal(base[n], tuned[n]) for n in frozen)
    assert not torch.equal(base["blocks.1.ffn.fc.weight"], tuned["blocks.1.ffn.fc.weight"])


def test_a_hugging_face_gpt2_directory_is_a_start_point(tmp_path, kv_file):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(["abc=123 def=456 " * 50], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    torch.manual_seed(0)
    eot = backend.token_to_id("<|endoftext|>")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=backend.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=eot, eos_token_id=eot))
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(str(hf_dir))
    backend.save(str(hf_dir / "tokenizer.json"))
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": "<|endoftext|>"}))
    report = finetune(str(hf_dir), str(kv_file), tmp_path / "run", quiet=True, method="lora", overrides=[
        *FAST, "train.steps=4", "train.eval_every=2", "lora.targets=[attn.qkv]"])
    assert report["base"]["kind"] == "hf-dir" and report["steps"] == 4
    model, tokenizer = load_model_dir(tmp_path / "run")
    assert model.config.position == "learned" and tokenizer.eot_token == "<|endoftext|>"
