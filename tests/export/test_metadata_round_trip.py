"""A model's special tokens and general metadata survive Hugging Face -> lmsmith -> GGUF -> transformers and
GGUF -> lmsmith: BOS differs from EOS (SmolLM2's <|im_start|> / <|im_end|>), a PAD token, and a model that needs
BOS before every prompt. transformers, reading the GGUF file, is the independent reader."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lmsmith.cli import main
from lmsmith.generate.samples import start_tokens
from lmsmith.model.directory import load_model_dir

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load a GGUF file

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]  # ids 0..3, as in SmolLM2 (plus a PAD)
BOS, EOS, PAD = 1, 2, 3
TEXTS = ["the quick brown fox", "def add(a, b): return a + b"]


def hf_dir(path, needs_bos: bool):
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 20, "def add(a, b): return a + b"],
                                trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if needs_bos:  # how Llama's tokenizer.json puts BOS first
        backend.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", pair="<|im_start|> $A $B:1",
                                                               special_tokens=[("<|im_start|>", BOS)])
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=backend.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(path))
    backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<pad>", "add_bos_token": needs_bos, "add_eos_token": False}))
    (path / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# tiny\n")
    return model


@pytest.mark.parametrize("needs_bos", [False, True], ids=["bos-differs-from-eos", "needs-bos"])
def test_special_tokens_and_general_metadata_round_trip(tmp_path, capsys, needs_bos):
    os.umask(0o022)
    theirs = hf_dir(tmp_path / "hf", needs_bos)
    capsys.readouterr()
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "-o", str(tmp_path / "ours")]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["converted"]  # said once
    config = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == ("<|im_start|>", "<|im_end|>", "<pad>")
    assert config["add_bos_token"] is needs_bos
    for name in ("model.safetensors", "config.json", "tokenizer_config.json", "manifest.json"):  # the user's umask
        assert stat.S_IMODE((tmp_path / "ours" / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "ours").stat().st_mode) == 0o755

    out = tmp_path / "gguf" / "tiny.gguf"
    assert main(["export", str(tmp_path / "ours"), "-o", str(out), "export.quant=f32", "--quiet"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    fields = gguf.GGUFReader(str(out)).fields

    def value(key):
        return fields[key].contents()

    assert (value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.eos_token_id"),
            value("tokenizer.ggml.padding_token_id")) == (BOS, EOS, PAD)
    assert value("tokenizer.ggml.add_bos_token") is needs_bos and value("tokenizer.ggml.add_eos_token") is False
    assert (value("general.name"), value("general.license"), value("general.languages")) == ("hf", "apache-2.0", ["en"])

    original = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    read_back = transformers.AutoTokenizer.from_pretrained(str(out.parent), gguf_file=out.name)
    assert (read_back.bos_token_id, read_back.eos_token_id) == (BOS, EOS)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name).eval()
    ours, our_tokenizer = load_model_dir(tmp_path / "ours")
    for text in TEXTS:
        ids = original(text)["input_ids"]
        assert read_back(text)["input_ids"] == ids
        (start,) = start_tokens(our_tokenizer, [text], chat=False)  # what `lmsmith generate` continues
        assert (start if isinstance(start, list) else our_tokenizer.encode(start)) == ids
        assert (ids[0] == BOS) is needs_bos
        with torch.no_grad():
            expected = theirs(torch.tensor([ids])).logits
            torch.testing.assert_close(model(torch.tensor([ids])).logits, expected, atol=1e-4, rtol=0)
            torch.testing.assert_close(ours(torch.tensor([ids])).logits, expected, atol=1e-4, rtol=0)

    # ... and back from the GGUF file: the BOS is <|im_start|>, not the end-of-text token.
    assert main(["convert", "--from-gguf", str(out), "-o", str(tmp_path / "back"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    back = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    assert (back["bos_token"], back["eos_token"], back["pad_token"]) == ("<|im_start|>", "<|im_end|>", "<pad>")
    assert back["add_bos_token"] is needs_bos
    general = json.loads((tmp_path / "back" / "manifest.json").read_text())["config"]["general"]
    assert general["license"] == "apache-2.0" and general["name"] == "hf"
    again = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "back"))
    assert [again(text)["input_ids"] for text in TEXTS] == [original(text)["input_ids"] for text in TEXTS]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_converting_weights_that_hold_nan_or_inf_is_refused(tmp_path, capsys, bad):
    from safetensors.torch import load_file, save_file

    hf_dir(tmp_path / "hf", needs_bos=False)
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    name = next(n for n in weights if n.endswith("mlp.up_proj.weight"))
    weights[name][0, 0] = bad
    save_file(weights, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()  # transformers' progress bars while the test made the folder
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "-o", str(tmp_path / "ours")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds non-finite weights (NaN or inf)" in err and "\n" not in err and not (tmp_path / "ours").exists()
