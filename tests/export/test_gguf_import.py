"""`convert --from-gguf`: GGUF files made here (by our exporter, and by gguf's writer for bad input) back into
model directories. transformers' GGUF loader, which dequantizes on its own, is the reference for quantized files.
"""

from __future__ import annotations

import json

import pytest
import torch

from lmsmith.cli import main
from lmsmith.core.errors import UserError
from lmsmith.export.gguf import export_gguf
from lmsmith.interop.gguf_import import import_gguf
from lmsmith.model.directory import load_model_dir
from tests.export.test_gguf import (
    ARCHITECTURE,
    CHATML,
    SHAPES,
    TEXTS,
    load_with_transformers,
    make_model_dir,
    tokenizer,  # noqa: F401  (the fixture)
)

gguf = pytest.importorskip("gguf")


def batch(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", SHAPES)
def test_an_exported_file_comes_back_as_the_same_model(tmp_path, tokenizer, name):  # noqa: F811
    model_dir = make_model_dir(tmp_path / "model", tokenizer, template=CHATML, **SHAPES[name])
    export_gguf(model_dir, tmp_path / "model.gguf", "f32")
    import_gguf(tmp_path / "model.gguf", tmp_path / "back")
    before, _ = load_model_dir(model_dir)
    after, back_tokenizer = load_model_dir(tmp_path / "back")
    assert after.config.head_dim == before.config.head_dim and after.config.qk_norm == before.config.qk_norm
    with torch.no_grad():
        torch.testing.assert_close(after(batch(tokenizer.vocab_size)).logits,
                                   before(batch(tokenizer.vocab_size)).logits, atol=1e-5, rtol=0)
    for text in TEXTS + ["<|im_start|>user\nhi<|im_end|>"]:
        assert back_tokenizer.encode(text) == tokenizer.encode(text)
    assert back_tokenizer.eot_token == tokenizer.eot_token
    assert json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())["chat_template"] == CHATML
    manifest = json.loads((tmp_path / "back" / "manifest.json").read_text())
    assert manifest["inputs"]["gguf"]["architecture"] == ARCHITECTURE[name]


@pytest.mark.parametrize("quant", ["q8_0", "q4_1"])
def test_a_quantized_file_dequantizes_as_transformers_does(tmp_path, tokenizer, quant):  # noqa: F811
    model_dir = make_model_dir(tmp_path / "model", tokenizer, **SHAPES["llama-gqa-untied"])
    export_gguf(model_dir, tmp_path / "model.gguf", quant)
    assert main(["convert", "--from-gguf", str(tmp_path / "model.gguf"), "-o", str(tmp_path / "back"), "--quiet"]) == 0
    ours, _ = load_model_dir(tmp_path / "back")
    theirs = load_with_transformers(tmp_path / "model.gguf")
    with torch.no_grad():
        torch.testing.assert_close(ours(batch(tokenizer.vocab_size)).logits,
                                   theirs(batch(tokenizer.vocab_size)).logits, atol=1e-4, rtol=0)


def test_truncated_corrupt_and_foreign_files_are_one_line_errors(tmp_path, tokenizer, capsys):  # noqa: F811
    model_dir = make_model_dir(tmp_path / "model", tokenizer, **SHAPES["llama-mha-tied"])
    whole = tmp_path / "model.gguf"
    export_gguf(model_dir, whole, "f16")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\xff" * 200)
    for bad in (truncated, garbage, tmp_path / "missing.gguf"):
        assert main(["convert", "--from-gguf", str(bad), "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err
        assert not (tmp_path / "out").exists()


def test_an_unsupported_architecture_lists_the_supported_ones(tmp_path):
    file = tmp_path / "phi2.gguf"
    writer = gguf.GGUFWriter(str(file), "phi2")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match="architecture 'phi2' is not supported; lmsmith reads GGUF files of llama, "
                                        "qwen2, qwen3, gpt2"):
        import_gguf(file, tmp_path / "out")
