"""Interop with Hugging Face: tiny random GPT-2 and Llama models, made here, converted both ways.

transformers is the independent reference: its models' logits and its tokenizers' ids must
equal ours after conversion, in both directions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmsmith.cli import main
from lmsmith.core.errors import UserError
from lmsmith.interop.convert import export_hf_dir, hf_model_to_ours, import_hf_dir, ours_to_hf_model
from lmsmith.model.directory import load_model_dir, save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

TEXTS = [
    "Hello world", " leading space and  double  spaces", "tabs\tand\nnewlines\n\n",
    "émoji 🤖, CJK 中文字, accents ñandú", "def add(a, b):\n    return a + b\n",
]
CORPUS = [t * 3 for t in TEXTS] + ["the quick brown fox jumps over the lazy dog " * 20,
                                   "lorem ipsum dolor sit amet " * 20]


def train_backend(specials: list[str], vocab_size: int = 300) -> Backend:
    """A small byte-level BPE, GPT-2 style, trained in milliseconds."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS, trainer)
    return backend


@pytest.fixture(scope="module")
def gpt2_backend() -> Backend:
    return train_backend(["<|endoftext|>"])


@pytest.fixture(scope="module")
def llama_backend() -> Backend:
    return train_backend(["<unk>", "<s>", "</s>"])


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere: fresh norms (ones) and biases (zeros) would hide mapping mistakes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def make_hf_dir(path: Path, hf_model, backend: Backend, eos: str) -> Path:
    hf_model.save_pretrained(str(path))
    backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "model_max_length": 1024}))
    return path


def gpt2_model(backend: Backend, seed: int = 0, **kw) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=kw.pop("vocab_size", backend.get_vocab_size()), n_positions=48,
                        eos_token_id=backend.token_to_id("<|endoftext|>"),
                        bos_token_id=backend.token_to_id("<|endoftext|>"), **kw)
    model = GPT2LMHeadModel(config).eval()
    perturb(model, seed)
    return model


def llama_model(backend: Backend, seed: int = 0, cls=LlamaForCausalLM, config_cls=LlamaConfig, **kw):
    torch.manual_seed(seed)
    config = config_cls(vocab_size=kw.pop("vocab_size", backend.get_vocab_size()), max_position_embeddings=48,
                        bos_token_id=backend.token_to_id("<s>"), eos_token_id=backend.token_to_id("</s>"), **kw)
    model = cls(config).eval()
    perturb(model, seed)
    return model


def token_batch(vocab: int, seed: int = 0, shape=(2, 40)) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def assert_logits_match(hf_model, ours: GPT, vocab: int, length: int = 40) -> None:
    idx = token_batch(vocab, shape=(2, length))
    with torch.no_grad():
        theirs = hf_model(idx).logits
        mine = ours(idx).logits
    assert mine.shape == theirs.shape
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


GPT2_SHAPES = {
    "2L-4H-tied-gelu_new": dict(n_layer=2, n_head=4, n_embd=64),
    "1L-2H-untied-exact-gelu-n_inner": dict(n_layer=1, n_head=2, n_embd=32, n_inner=48, activation_function="gelu",
                                            tie_word_embeddings=False, vocab_size=320),
    "3L-8H-pytorch_tanh-eps": dict(n_layer=3, n_head=8, n_embd=64, activation_function="gelu_pytorch_tanh",
                                   layer_norm_epsilon=1e-6),
}
LLAMA_SHAPES = {
    "MHA": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "GQA-8q-2kv-theta": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                             num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-5),
    "MQA-tied-bias": dict(hidden_size=48, intermediate_size=80, num_hidden_layers=1, num_attention_heads=4,
                          num_key_value_heads=1, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                          vocab_size=320),
}


# ---------------------------------------------------------------------------------------------
# Hugging Face -> ours


@pytest.mark.parametrize("shape", GPT2_SHAPES.values(), ids=GPT2_SHAPES.keys())
def test_gpt2_dir_imports_with_equal_logits_and_ids(tmp_path, gpt2_backend, shape):
    hf = gpt2_model(gpt2_backend, **shape)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, gpt2_backend, "<|endoftext|>")
    import_hf_dir(hf_dir, tmp_path / "ours")
    ours, tokenizer = load_model_dir(tmp_path / "ours")
    assert ours.config.position == "learned" and ours.config.tie_embeddings == hf.config.tie_word_embeddings
    assert_logits_match(hf, ours, hf.config.vocab_size)
    hf_tok = AutoTokenizer.from_pretrained(str(hf_dir))
    for text in TEXTS + ["a<|endoftext|>b"]:
        assert tokenizer.encode(text) == hf_tok.encode(text, add_special_tokens=False)
    assert tokenizer.eot_token == "<|endoftext|>"


@pytest.mark.parametrize("shape", LLAMA_SHAPES.values(), ids=LLAMA_SHAPES.keys())
def test_llama_dir_imports_with_equal_logits_and_ids(tmp_path, llama_backend, shape):
    hf = llama_model(llama_backend, **shape)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, llama_backend, "</s>")
    import_hf_dir(hf_dir, tmp_path / "ours")
    ours, tokenizer = load_model_dir(tmp_path / "ours")
    assert ours.config.kv_heads == hf.config.num_key_value_heads
    assert ours.config.rope_theta == shape.get("rope_theta", 10000.0)
    assert_logits_match(hf, ours, hf.config.vocab_size)
    hf_tok = AutoTokenizer.from_pretrained(str(hf_dir))
    for text in TEXTS + ["a</s>b"]:
        assert tokenizer.encode(text) == hf_tok.encode(text, add_special_tokens=False)
    assert tokenizer.eot_token == "</s>" and tokenizer.eot_id == llama_backend.token_to_id("</s>")


def test_mistral_without_a_short_window_imports(tmp_path, llama_backend):
    hf = llama_model(llama_backend, cls=MistralForCausalLM, config_cls=MistralConfig, hidden_size=64,
                     intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     sliding_window=None)
    import_hf_dir(make_hf_dir(tmp_path / "hf", hf, llama_backend, "</s>"), tmp_path / "ours")
    ours, _ = load_model_dir(tmp_path / "ours")
    assert ours.config.block_size == 48
    assert_logits_match(hf, ours, hf.config.vocab_size)


def test_mistral_context_is_cut_to_its_sliding_window(tmp_path, llama_backend):
    hf = llama_model(llama_backend, cls=MistralForCausalLM, config_cls=MistralConfig, hidden_size=32,
                     intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                     sliding_window=16)
    ours = hf_model_to_ours(hf)
    assert ours.config.block_size == 16
    assert_logits_match(hf, ours, hf.config.vocab_size, length=16)


def test_hub_style_gpt2_dir_with_vocab_and_merges(tmp_path, gpt2_backend):
    """The original gpt2 on the Hub: names without 'transformer.', saved attention-mask buffers,
    an old config with n_ctx, and a tokenizer given only as vocab.json + merges.txt."""
    hf = gpt2_model(gpt2_backend, n_layer=2, n_head=2, n_embd=32)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 48, 48))
    save_file(state, str(hf_dir / "model.safetensors"))
    eot = gpt2_backend.token_to_id("<|endoftext|>")
    (hf_dir / "config.json").write_text(json.dumps({
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": eot, "embd_pdrop": 0.1, "eos_token_id": eot, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 48, "n_embd": 32, "n_head": 2, "n_layer": 2,
        "n_positions": 48, "resid_pdrop": 0.1, "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": gpt2_backend.get_vocab_size(),
    }))
    gpt2_backend.model.save(str(hf_dir))  # vocab.json + merges.txt
    import_hf_dir(hf_dir, tmp_path / "ours")
    ours, tokenizer = load_model_dir(tmp_path / "ours")
    assert_logits_match(hf, ours, hf.config.vocab_size)
    reference = GPT2Tokenizer.from_pretrained(str(hf_dir))  # built by transformers from the two files
    assert reference.vocab_size == gpt2_backend.get_vocab_size()
    for text in TEXTS + ["a<|endoftext|>b"]:
        assert tokenizer.encode(text) == reference.encode(text, add_special_tokens=False)
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eot_token == "<|endoftext|>"


def test_pytorch_bin_checkpoint_is_read_without_unpickling_code(tmp_path, gpt2_backend):
    hf = gpt2_model(gpt2_backend, n_layer=1, n_head=2, n_embd=32)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, gpt2_backend, "<|endoftext|>")
    (hf_dir / "model.safetensors").unlink()
    torch.save(hf.state_dict(), hf_dir / "pytorch_model.bin")
    import_hf_dir(hf_dir, tmp_path / "ours")
    ours, _ = load_model_dir(tmp_path / "ours")
    assert_logits_match(hf, ours, hf.config.vocab_size)

    torch.save({"weights": hf.state_dict(), "extra": Path("not a tensor")}, hf_dir / "pytorch_model.bin")
    with pytest.raises(UserError, match="cannot be read safely"):
        import_hf_dir(hf_dir, tmp_path / "ours2")
    assert not (tmp_path / "ours2").exists()


def test_sharded_safetensors_checkpoint(tmp_path, llama_backend):
    hf = llama_model(llama_backend, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, llama_backend, "</s>")
    state = load_file(str(hf_dir / "model.safetensors"))
    (hf_dir / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(hf_dir / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    import_hf_dir(hf_dir, tmp_path / "ours")
    ours, _ = load_model_dir(tmp_path / "ours")
    assert_logits_match(hf, ours, hf.config.vocab_size)


# ---------------------------------------------------------------------------------------------
# Ours -> Hugging Face


OUR_SHAPES = {
    "gpt2-tied": dict(preset="gpt2", n_layer=2, n_head=4, n_embd=64, block_size=48, dropout=0.0),
    "gpt2-untied-exact-gelu": dict(preset="gpt2", n_layer=1, n_head=2, n_embd=32, block_size=48, ffn_hidden=40,
                                   gelu_approximate="none", tie_embeddings=False),
    "gpt2-shape-without-biases": dict(preset="gpt2", n_layer=2, n_head=2, n_embd=32, block_size=48, bias=False),
    "llama-GQA": dict(preset="llama", n_layer=2, n_head=8, n_kv_head=2, n_embd=64, ffn_hidden=96, block_size=48),
    "llama-MHA-tied-bias-theta": dict(preset="llama", n_layer=2, n_head=4, n_kv_head=None, n_embd=32, ffn_hidden=64,
                                      block_size=48, tie_embeddings=True, bias=True, rope_theta=1000.0),
}


def our_model_dir(path: Path, backend: Backend, eot: str, shape: dict, seed: int = 0) -> Path:
    from lmsmith.core.config import parse_section

    config = parse_section(ModelConfig, {**shape, "vocab_size": backend.get_vocab_size() + 5}, "model")
    torch.manual_seed(seed)
    model = GPT(config)
    perturb(model, seed)
    return save_model_dir(path, model, Tokenizer(backend, eot_token=eot), made_by="test")


@pytest.mark.parametrize("shape", OUR_SHAPES.values(), ids=OUR_SHAPES.keys())
def test_export_loads_in_transformers_with_equal_logits_and_ids(tmp_path, gpt2_backend, shape):
    our_dir = our_model_dir(tmp_path / "ours", gpt2_backend, "<|endoftext|>", shape)
    export_hf_dir(our_dir, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(hf).__name__ == ("GPT2LMHeadModel" if shape["preset"] == "gpt2" else "LlamaForCausalLM")
    assert next(hf.parameters()).dtype == torch.float32
    ours, tokenizer = load_model_dir(our_dir)
    assert_logits_match(hf, ours, ours.config.vocab_size)
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in TEXTS + ["a<|endoftext|>b"]:
        assert hf_tok.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    assert hf_tok.eos_token == "<|endoftext|>" and hf.generation_config.eos_token_id == tokenizer.eot_id
    assert json.loads((tmp_path / "hf" / "manifest.json").read_text())["stage"] == "hf-export"


def test_hf_generate_runs_on_exported_weights_and_greedy_matches_ours(gpt2_backend):
    """The generation benchmark runs transformers' generate on ours_to_hf_model's output."""
    config = ModelConfig(**{**OUR_SHAPES["llama-GQA"], "preset": None, "vocab_size": 300, "position": "rope",
                            "norm": "rmsnorm", "feed_forward": "swiglu", "bias": False, "tie_embeddings": False})
    torch.manual_seed(0)
    ours = GPT(config).eval()
    perturb(ours)
    hf = ours_to_hf_model(ours, eot_id=None)
    prompt = token_batch(300, shape=(1, 5))
    out = hf.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0)
    idx = prompt
    with torch.no_grad():
        for _ in range(10):
            idx = torch.cat([idx, ours(idx).logits[:, -1:].argmax(-1)], dim=1)
    assert out.tolist() == idx.tolist()


# ---------------------------------------------------------------------------------------------
# Round trips are lossless


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hf_to_ours_to_hf_gives_identical_tensors(tmp_path, gpt2_backend, llama_backend, family):
    if family == "gpt2":
        hf = gpt2_model(gpt2_backend, n_layer=2, n_head=4, n_embd=32)
        hf_dir = make_hf_dir(tmp_path / "hf", hf, gpt2_backend, "<|endoftext|>")
    else:
        hf = llama_model(llama_backend, **LLAMA_SHAPES["GQA-8q-2kv-theta"])
        hf_dir = make_hf_dir(tmp_path / "hf", hf, llama_backend, "</s>")
    import_hf_dir(hf_dir, tmp_path / "ours")
    export_hf_dir(tmp_path / "ours", tmp_path / "back")
    before, after = (load_file(str(hf_dir / "model.safetensors")),
                     load_file(str(tmp_path / "back" / "model.safetensors")))
    assert sorted(before) == sorted(after)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert (tmp_path / "back" / "tokenizer.json").read_text() == (tmp_path / "ours" / "tokenizer.json").read_text()


@pytest.mark.parametrize("shape", [OUR_SHAPES["gpt2-untied-exact-gelu"], OUR_SHAPES["llama-GQA"]],
                         ids=["gpt2", "llama"])
def test_ours_to_hf_to_ours_gives_identical_tensors(tmp_path, gpt2_backend, shape):
    our_dir = our_model_dir(tmp_path / "ours", gpt2_backend, "<|endoftext|>", shape)
    export_hf_dir(our_dir, tmp_path / "hf")
    import_hf_dir(tmp_path / "hf", tmp_path / "again")
    before, after = (load_file(str(our_dir / "model.safetensors")),
                     load_file(str(tmp_path / "again" / "model.safetensors")))
    assert sorted(before) == sorted(after)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    a, b = load_model_dir(our_dir)[0].config, load_model_dir(tmp_path / "again")[0].config
    for key in ("n_layer", "n_head", "kv_heads", "n_embd", "hidden_size", "block_size", "position", "norm",
                "feed_forward", "gelu_approximate", "bias", "tie_embeddings", "rope_theta", "norm_eps"):
        assert getattr(a, key) == getattr(b, key), key


# ---------------------------------------------------------------------------------------------
# Refusals: one clear message, exit code 2, nothing written


def write_config(path: Path, **fields) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(fields))
    return path


@pytest.mark.parametrize("config, message", [
    (dict(model_type="bert"), "'bert' is not supported; lmsmith converts gpt2"),
    (dict(model_type="phi3"), "'phi3' is not supported"),
    (dict(model_type="llama", hidden_size=64, num_attention_heads=4,
          rope_scaling={"rope_type": "linear", "factor": 2.0}),
     "RoPE scaling 'linear'"),
    (dict(model_type="qwen3", hidden_size=64, num_attention_heads=4, head_dim=32, attention_bias=True),
     "attention_bias=True with mlp_bias=False"),
    (dict(model_type="llama", hidden_size=64, num_attention_heads=4, attention_bias=True), "one bias switch"),
    (dict(model_type="llama", hidden_size=64, num_attention_heads=4, hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(model_type="gpt2", n_embd=64, n_head=4, scale_attn_by_inverse_layer_idx=True),
     "scale_attn_by_inverse_layer_idx"),
    (dict(model_type="gpt2", n_embd=64, n_head=4, activation_function="relu"), "activation_function 'relu'"),
])
def test_unsupported_configs_are_refused_by_name(tmp_path, capsys, config, message):
    hf_dir = write_config(tmp_path / "hf", **config)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        import_hf_dir(hf_dir, tmp_path / "out")
    assert main(["convert", "--from-hf", str(hf_dir), "-o", str(tmp_path / "out")]) == 2
    assert message.split(" ")[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_broken_hf_dirs_are_refused(tmp_path, gpt2_backend):
    hf = gpt2_model(gpt2_backend, n_layer=1, n_head=2, n_embd=32)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, gpt2_backend, "<|endoftext|>")
    weights = hf_dir / "model.safetensors"
    state = load_file(str(weights))

    del state["transformer.h.0.mlp.c_fc.weight"]
    save_file(state, str(weights))
    with pytest.raises(UserError, match=r"missing transformer\.h\.0\.mlp\.c_fc\.weight"):
        import_hf_dir(hf_dir, tmp_path / "out")

    state["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(32, 100)
    save_file(state, str(weights))
    with pytest.raises(UserError, match=r"blocks\.0\.ffn\.fc\.weight has shape \[100, 32\]"):
        import_hf_dir(hf_dir, tmp_path / "out")

    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated or corrupted"):
        import_hf_dir(hf_dir, tmp_path / "out")

    weights.unlink()
    with pytest.raises(UserError, match="has no weights"):
        import_hf_dir(hf_dir, tmp_path / "out")

    (hf_dir / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is corrupted"):
        import_hf_dir(hf_dir, tmp_path / "out")
    with pytest.raises(UserError, match="is not a directory"):
        import_hf_dir(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hf_dir_without_tokenizer_is_refused(tmp_path, gpt2_backend):
    hf = gpt2_model(gpt2_backend, n_layer=1, n_head=2, n_embd=32)
    hf.save_pretrained(str(tmp_path / "hf"))
    with pytest.raises(UserError, match="has no tokenizer.json"):
        import_hf_dir(tmp_path / "hf", tmp_path / "out")


def test_tokenizer_larger_than_model_vocab_is_refused(tmp_path, gpt2_backend):
    hf = gpt2_model(gpt2_backend, n_layer=1, n_head=2, n_embd=32, vocab_size=200)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, gpt2_backend, "<|endoftext|>")
    with pytest.raises(UserError, match="tokenizer has 300 tokens but the model only 200"):
        import_hf_dir(hf_dir, tmp_path / "out")


def test_model_outside_both_families_is_refused_with_the_misfits(tmp_path, gpt2_backend, capsys):
    shape = dict(n_layer=1, n_head=2, n_embd=32, position="sinusoidal", norm="layernorm", feed_forward="relu2",
                 qk_norm=True)
    our_dir = our_model_dir(tmp_path / "ours", gpt2_backend, "<|endoftext|>", shape)
    with pytest.raises(UserError) as err:
        export_hf_dir(our_dir, tmp_path / "hf")
    message = str(err.value)
    assert 'as gpt2 it would need position="learned" (has "sinusoidal")' in message
    assert 'feed_forward="gelu" (has "relu2")' in message
    assert 'as llama it would need position="rope"' in message and "qk_norm=false (has true)" in message
    assert 'norm="rmsnorm"' in message and "layernorm" in message
    assert main(["convert", "--to-hf", str(our_dir), "-o", str(tmp_path / "hf")]) == 2
    assert "fits no Hugging Face family" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_cli_converts_both_ways(tmp_path, gpt2_backend, capsys):
    hf = gpt2_model(gpt2_backend, n_layer=1, n_head=2, n_embd=32)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, gpt2_backend, "<|endoftext|>")
    assert main(["convert", "--from-hf", str(hf_dir), "-o", str(tmp_path / "ours")]) == 0
    assert main(["convert", "--to-hf", str(tmp_path / "ours"), "-o", str(tmp_path / "back")]) == 0
    assert "converted" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "ours" / "manifest.json").read_text())
    assert manifest["inputs"]["hf_dir"]["model_type"] == "gpt2"
    assert set(manifest["inputs"]["hf_dir"]["sha256"]) == {"config.json", "model.safetensors"}
    assert_logits_match(AutoModelForCausalLM.from_pretrained(str(tmp_path / "back")), hf_model_to_ours(hf),
                        hf.config.vocab_size)


def test_outputs_never_replace_the_input_or_the_users_files(tmp_path, gpt2_backend):
    hf = gpt2_model(gpt2_backend, n_layer=1, n_head=2, n_embd=32)
    hf_dir = make_hf_dir(tmp_path / "hf", hf, gpt2_backend, "<|endoftext|>")
    with pytest.raises(UserError, match="would replace the input"):
        import_hf_dir(hf_dir, hf_dir)
    with pytest.raises(UserError, match="would replace the input"):
        import_hf_dir(hf_dir, tmp_path)
    own = tmp_path / "notes"
    own.mkdir()
    (own / "diary.txt").write_text("mine")
    with pytest.raises(UserError, match="lmsmith did not make.*kept as it is"):
        import_hf_dir(hf_dir, own)
    assert (own / "diary.txt").read_text() == "mine"

    import_hf_dir(hf_dir, tmp_path / "ours")
    with pytest.raises(UserError, match="already holds a trained model: add --force"):
        import_hf_dir(hf_dir, tmp_path / "ours")
    import_hf_dir(hf_dir, tmp_path / "ours", force=True)  # an earlier conversion is replaced only when asked
    with pytest.raises(UserError, match="would replace the input"):
        export_hf_dir(tmp_path / "ours", tmp_path / "ours")
    import_hf_dir(hf_dir, tmp_path / "other")
    with pytest.raises(UserError, match="holds the output of stage 'model', not of hf-export"):
        export_hf_dir(tmp_path / "ours", tmp_path / "other")
    export_hf_dir(tmp_path / "ours", tmp_path / "back")
    export_hf_dir(tmp_path / "ours", tmp_path / "back")
    with pytest.raises(UserError, match="holds the output of stage 'hf-export', not of model"):
        import_hf_dir(hf_dir, tmp_path / "back")
    assert load_model_dir(tmp_path / "ours")[0].config.n_layer == 1
