"""GPT-Neo, Qwen2 and Qwen3 in `convert --from-hf` and `--to-hf`: tiny random transformers models, made here.

transformers is the reference: after conversion our logits and our greedy tokens must equal its own,
and a model exported back must load in transformers with the same logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmsmith.core.errors import UserError
from lmsmith.interop.convert import config_from_hf, export_hf_dir, hf_family, hf_model_to_ours, import_hf_dir
from lmsmith.model.decoding import generate_tokens
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.model import ModelConfig

transformers = pytest.importorskip("transformers")

CORPUS = ["the quick brown fox jumps over the lazy dog " * 20, "def add(a, b):\n    return a + b\n" * 10]


@pytest.fixture(scope="module")
def backend() -> Backend:
    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def hf_model(family: str, backend: Backend, seed: int = 0, **shape):
    torch.manual_seed(seed)
    eot = backend.token_to_id("<|endoftext|>")
    config_class, model_class = {"gpt_neo": ("GPTNeoConfig", "GPTNeoForCausalLM"),
                                 "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
                                 "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}[family]
    config = getattr(transformers, config_class)(vocab_size=backend.get_vocab_size(), max_position_embeddings=48,
                                                 bos_token_id=eot, eos_token_id=eot, **shape)
    model = getattr(transformers, model_class)(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # fresh norms (ones) and biases (zeros) would hide mapping mistakes
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def hf_dir(path: Path, model, backend: Backend) -> Path:
    model.save_pretrained(str(path))
    backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}))
    return path


SHAPES = {
    "gpt_neo-local-window-8": ("gpt_neo", dict(hidden_size=64, num_layers=2, num_heads=4, window_size=8,
                                                attention_types=[[["global", "local"], 1]])),
    "gpt_neo-local-first-exact-gelu": ("gpt_neo", dict(hidden_size=32, num_layers=3, num_heads=2, window_size=5,
                                                        intermediate_size=48, activation_function="gelu",
                                                        attention_types=[[["local", "global", "local"], 1]])),
    "qwen2-gqa-untied-theta": ("qwen2", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                            rope_theta=1000000.0, rms_norm_eps=1e-6)),
    "qwen2-tied": ("qwen2", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3-wide-heads": ("qwen3", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                       tie_word_embeddings=True)),
    "qwen3-untied": ("qwen3", dict(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=1, head_dim=12, tie_word_embeddings=False)),
}


def logits(model, vocab: int) -> torch.Tensor:
    idx = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(idx).logits


@pytest.mark.parametrize("family, shape", SHAPES.values(), ids=SHAPES.keys())
def test_imports_with_equal_logits_and_greedy_tokens_and_exports_back(tmp_path, backend, family, shape):
    theirs = hf_model(family, backend, **shape)
    import_hf_dir(hf_dir(tmp_path / "hf", theirs, backend), tmp_path / "ours")
    ours, tokenizer = load_model_dir(tmp_path / "ours")
    assert hf_family(ours.config) == family
    vocab = theirs.config.vocab_size
    torch.testing.assert_close(logits(ours, vocab), logits(theirs, vocab), atol=1e-4, rtol=0)

    prompt = tokenizer.encode("the quick brown")
    mine = [s[0] for s in generate_tokens(ours, [prompt], GenerationConfig(max_new_tokens=30, temperature=0.0))]
    theirs.generation_config.eos_token_id = None
    with torch.no_grad():
        out = theirs.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False, pad_token_id=0)
    assert mine == out[0, len(prompt):].tolist()

    export_hf_dir(tmp_path / "ours", tmp_path / "back")
    back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "back")).eval()
    assert type(back).__name__ == type(theirs).__name__
    torch.testing.assert_close(logits(back, vocab), logits(theirs, vocab), atol=1e-4, rtol=0)


def test_local_windows_hold_with_left_padded_batches(backend):
    """Two prompts of different lengths in one batch (the shorter left-padded) give each prompt's own tokens."""
    ours = hf_model_to_ours(hf_model("gpt_neo", backend, **SHAPES["gpt_neo-local-window-8"][1]))
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [20, 21, 22]]
    config = GenerationConfig(max_new_tokens=12, temperature=0.0)
    together = list(zip(*generate_tokens(ours, prompts, config)))
    alone = [[s[0] for s in generate_tokens(ours, [p], config)] for p in prompts]
    assert [list(row) for row in together] == alone


@pytest.mark.parametrize("family, shape, reason", [
    ("qwen3", dict(attention_bias=True), "attention_bias=True with mlp_bias=False"),
    ("qwen2", dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                    "original_max_position_embeddings": 32}), "RoPE scaling 'yarn'"),
    ("gpt_neo", dict(activation_function="relu"), "activation_function 'relu'"),
])
def test_checkpoints_whose_math_we_do_not_compute_are_refused(backend, family, shape, reason):
    base = {"gpt_neo": dict(hidden_size=32, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]]),
            "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=2),
            "qwen3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=2, head_dim=16)}[family]
    config_class = {"gpt_neo": "GPTNeoConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}[family]
    with pytest.raises(UserError, match="cannot be converted exactly") as refused:
        config_from_hf(getattr(transformers, config_class)(vocab_size=300, **{**base, **shape}))
    assert reason in str(refused.value)


def test_qwen_sliding_window_cuts_the_context_only_when_turned_on(backend):
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, max_position_embeddings=48)
    off = transformers.Qwen2Config(vocab_size=300, sliding_window=16, use_sliding_window=False, **shape)
    on = transformers.Qwen2Config(vocab_size=300, sliding_window=16, use_sliding_window=True, max_window_layers=0,
                                  **shape)
    assert config_from_hf(off).block_size == 48 and config_from_hf(on).block_size == 16


def test_a_model_no_family_computes_is_refused_with_every_familys_needs():
    with pytest.raises(UserError, match="fits no Hugging Face family") as refused:
        hf_family(ModelConfig(vocab_size=300, position="sinusoidal"))
    text = str(refused.value)
    assert all(f"as {family} it would need" in text for family in ("gpt2", "gpt_neo", "llama", "qwen2", "qwen3"))


def test_an_unsupported_family_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi"}))
    with pytest.raises(UserError, match="architecture 'phi' is not supported") as refused:
        import_hf_dir(tmp_path, tmp_path / "out")
    assert "gpt_neo" in str(refused.value) and "qwen3" in str(refused.value)
