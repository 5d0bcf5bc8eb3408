"""The model directory: save/load round trips, and clear refusals for every broken file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmsmith.cli import main
from lmsmith.core.errors import UserError
from lmsmith.model.directory import load_model_dir, save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import Tokenizer

SHAPES = {
    "rope-rmsnorm-swiglu-GQA-untied": dict(n_kv_head=2, tie_embeddings=False),
    "learned-layernorm-gelu-bias-tied": dict(position="learned", norm="layernorm", feed_forward="gelu", bias=True),
    "sinusoidal-relu2-qknorm": dict(position="sinusoidal", feed_forward="relu2", qk_norm=True),
}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(["a model directory holds weights, config and tokenizer " * 20], trainer)
    return Tokenizer(backend)


def tiny_model(vocab_size: int, seed: int = 0, **shape) -> GPT:
    config = ModelConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32, **shape)
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():  # norms and biases off their initial ones and zeros, so a lost tensor shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def saved(path: Path, tokenizer: Tokenizer, **shape) -> tuple[Path, GPT]:
    model = tiny_model(tokenizer.vocab_size, **shape)
    return save_model_dir(path, model, tokenizer, made_by="test"), model


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_save_then_load_gives_identical_logits_and_tokenizer(tmp_path, tokenizer, shape):
    path, model = saved(tmp_path / "m", tokenizer, **shape)
    loaded, loaded_tokenizer = load_model_dir(path)
    assert loaded.config == model.config
    assert not loaded.training
    idx = torch.randint(0, tokenizer.vocab_size, (2, 32))
    with torch.no_grad():
        assert torch.equal(loaded(idx).logits, model(idx).logits)
    text = "a model directory, reloaded"
    assert loaded_tokenizer.encode(text) == tokenizer.encode(text)
    assert loaded_tokenizer.eot_token == tokenizer.eot_token


def test_tied_head_is_stored_once_and_stays_tied(tmp_path, tokenizer):
    path, model = saved(tmp_path / "tied", tokenizer, tie_embeddings=True)
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert "tok_emb.weight" in names and "head.weight" not in names
    expected = {n for n in model.state_dict() if n != "head.weight"}
    assert names == expected
    loaded, _ = load_model_dir(path)
    assert loaded.head.weight is loaded.tok_emb.weight

    untied_path, _ = saved(tmp_path / "untied", tokenizer, tie_embeddings=False)
    with safe_open(str(untied_path / "model.safetensors"), framework="pt") as f:
        assert "head.weight" in set(f.keys())
    # The tied file is smaller by exactly one vocab x n_embd float32 matrix (plus its header entry).
    size_gap = (untied_path / "model.safetensors").stat().st_size - (path / "model.safetensors").stat().st_size
    assert size_gap >= tokenizer.vocab_size * 32 * 4


def test_manifest_records_parameters_versions_and_file_hashes(tmp_path, tokenizer):
    path, model = saved(tmp_path / "m", tokenizer)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["stage"] == "model"
    assert manifest["counts"]["parameters"] == model.num_params()
    assert "torch" in manifest["versions"] and "safetensors" in manifest["versions"]
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert manifest["files"][name] == sha256(path / name)
    assert json.loads((path / "config.json").read_text())["n_layer"] == 2


def test_a_run_directory_resolves_to_its_model(tmp_path, tokenizer):
    saved(tmp_path / "run" / "model", tokenizer)
    loaded, _ = load_model_dir(tmp_path / "run")
    assert loaded.config.n_layer == 2


def test_saving_over_a_directory_is_all_or_nothing(tmp_path, tokenizer):
    path, old = saved(tmp_path / "m", tokenizer)
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    class FailingTokenizer:
        def save(self, directory):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_model_dir(path, tiny_model(tokenizer.vocab_size, seed=1), FailingTokenizer(), made_by="test")
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directory left behind
    load_model_dir(path)

    path2, new = saved(path, tokenizer, n_kv_head=1)
    loaded, _ = load_model_dir(path2)
    assert loaded.config.n_kv_head == 1


# ---------------------------------------------------------------------------------------------
# Refusals


def expect_refusal(path: Path, message: str, capsys) -> None:
    """The loader and the CLI both refuse with one clear line, exit code 2."""
    with pytest.raises(UserError, match=message):
        load_model_dir(path)
    out = path.parent / "exported"
    assert main(["convert", "--to-hf", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_directory_and_missing_files(tmp_path, tokenizer, capsys):
    expect_refusal(tmp_path / "nowhere", "does not exist", capsys)
    path, _ = saved(tmp_path / "m", tokenizer)
    (path / "model.safetensors").unlink()
    expect_refusal(path, r"has no weights \(model.safetensors\)", capsys)
    (path / "config.json").unlink()
    expect_refusal(path, "has no config.json", capsys)


def test_weights_of_another_shape_name_the_tensor(tmp_path, tokenizer, capsys):
    path, _ = saved(tmp_path / "a", tokenizer, ffn_hidden=64)
    other, _ = saved(tmp_path / "b", tokenizer, ffn_hidden=96)
    shutil.copy(other / "model.safetensors", path / "model.safetensors")
    expect_refusal(
        path, r"tensor blocks\.0\.ffn\.fc\.weight has shape \[192, 32\] but config.json needs \[128, 32\]", capsys
    )


def test_weights_with_other_tensor_names_list_them(tmp_path, tokenizer, capsys):
    path, _ = saved(tmp_path / "a", tokenizer)
    deeper = tmp_path / "b"
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=3, n_head=4, n_embd=32))
    save_model_dir(deeper, model, tokenizer, made_by="test")
    shutil.copy(deeper / "model.safetensors", path / "model.safetensors")
    expect_refusal(path, r"unexpected blocks\.2\.", capsys)


@pytest.mark.parametrize("damage", ["half", "header-only", "empty", "pickle"])
def test_truncated_or_foreign_weights_file_is_a_clear_error(tmp_path, tokenizer, capsys, damage):
    path, model = saved(tmp_path / "m", tokenizer)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    if damage == "half":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "header-only":
        weights.write_bytes(data[:6])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:  # a pickle under the safetensors name must be refused, never unpickled
        torch.save(model.state_dict(), weights)
    expect_refusal(path, "model.safetensors is truncated or corrupted", capsys)


@pytest.mark.parametrize("content, message", [
    ('{"n_layer": 2, ', r"config.json is corrupted \(not valid JSON\)"),
    ("[1, 2]", r"config.json is corrupted \(not a JSON object\)"),
    ('{"vocab_size": 280, "n_layers": 2}', "unknown key 'config.json.n_layers': did you mean 'n_layer'"),
    ('{"vocab_size": 280, "n_embd": 30, "n_head": 4}', r"n_embd \(30\) is not divisible by config.json.n_head \(4\)"),
    ('{"vocab_size": 280, "n_layer": "two"}', "expected a whole number"),
    ('{"n_layer": 2}', "has no vocab_size"),
])
def test_bad_config_json_is_a_clear_error(tmp_path, tokenizer, capsys, content, message):
    path, _ = saved(tmp_path / "m", tokenizer)
    (path / "config.json").write_text(content)
    expect_refusal(path, message, capsys)


def test_tokenizer_larger_than_the_model_vocab_is_refused(tmp_path, tokenizer, capsys):
    model = tiny_model(tokenizer.vocab_size - 10)
    path = save_model_dir(tmp_path / "m", model, tokenizer, made_by="test")
    expect_refusal(
        path, f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {tokenizer.vocab_size - 10}", capsys
    )
