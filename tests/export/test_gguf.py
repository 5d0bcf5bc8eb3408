"""GGUF export, checked by readers that are not ours: transformers' GGUF loader (always) and llama.cpp
itself through llama-cpp-python (when it is installed; it is not a dev dependency: it builds from source).

Tolerances, measured on these tiny random models (logits of standard deviation about 0.85):
f32 agrees within 1e-4 (measured 3e-6); f16 within 2e-2 (measured 2e-3 .. 5e-3);
q8_0 within 0.3 (measured 0.05 .. 0.1), with the same argmax almost everywhere.
llama.cpp, given the f32 file, writes exactly the greedy tokens `lmsmith generate` writes, for llama, gpt2,
qwen2 and qwen3 models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmsmith.cli import main
from lmsmith.core.errors import UserError
from lmsmith.export.gguf import MARKER, export_gguf, gguf_architecture
from lmsmith.export.ollama import export_ollama, go_template
from lmsmith.model.decoding import generate_tokens
from lmsmith.model.directory import load_model_dir, save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.export import ExportConfig
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import train_bpe

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load a GGUF file

CORPUS = ["hello world, the quick brown fox jumps over the lazy dog. " * 20, "lorem ipsum dolor sit amet " * 20,
          "def add(a, b):\n    return a + b\n" * 10, "émoji 🤖, CJK 中文字, accents ñandú " * 5]
TEXTS = ["hello world", "émoji 🤖 中文 <|endoftext|> x", " def  add(a, b):\n\treturn"]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

SHAPES = {
    "llama-gqa-untied": dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, tie_embeddings=False, rope_theta=50000.0),
    "llama-mha-tied": dict(n_layer=1, n_head=2, n_embd=32, norm_eps=1e-6),
    "gpt2-tied": dict(n_layer=2, n_head=4, n_embd=64, position="learned", norm="layernorm", feed_forward="gelu",
                      bias=True),
    "qwen2-qkv-bias": dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, qkv_bias=True, rope_theta=1e6,
                           tie_embeddings=False),
    "qwen3-qk-norm-wide-heads": dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, qk_norm=True, head_size=24),
}
ARCHITECTURE = {"llama-gqa-untied": "llama", "llama-mha-tied": "llama", "gpt2-tied": "gpt2",
                "qwen2-qkv-bias": "qwen2", "qwen3-qk-norm-wide-heads": "qwen3"}
TOLERANCE = {"f32": 1e-4, "f16": 2e-2, "q8_0": 0.3}


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(CORPUS, 400, special_tokens=["<|im_start|>", "<|im_end|>"], show_progress=False)


def make_model_dir(path: Path, tokenizer, seed: int = 0, template: str | None = None, **shape) -> Path:
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size + 3, block_size=64, **shape))  # padded vocabulary
    with torch.no_grad():  # fresh norms (ones) and biases (zeros) would hide mapping mistakes
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_model_dir(path, model, tokenizer, made_by="test")
    if template is not None:
        file = path / "tokenizer_config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), "chat_template": template}))
    return path


def load_with_transformers(file: Path, block_size: int = 64):
    from transformers import AutoModelForCausalLM

    reader = gguf.GGUFReader(str(file))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    extra = {}
    if arch == "gpt2":  # transformers reads gpt2's context length into n_ctx, which GPT2Config no longer uses
        extra = {"n_positions": block_size}
    elif arch == "qwen3":  # ... and does not read qwen3's head width (attention.key_length): say it here
        extra = {"head_dim": int(reader.fields["qwen3.attention.key_length"].parts[-1][0])}
    return AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, **extra).eval()


@pytest.mark.parametrize("quant", TOLERANCE)
@pytest.mark.parametrize("name", SHAPES)
def test_transformers_loads_the_file_with_our_logits(tmp_path, tokenizer, name, quant):
    model_dir = make_model_dir(tmp_path / "model", tokenizer, **SHAPES[name])
    out = tmp_path / "gguf" / f"model-{quant}.gguf"
    written = export_gguf(model_dir, out, quant)
    assert written["architecture"] == ARCHITECTURE[name]
    ours, _ = load_model_dir(model_dir)
    theirs = load_with_transformers(out)
    idx = torch.randint(0, tokenizer.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine, other = ours(idx).logits, theirs(idx).logits
    assert other.shape == mine.shape
    torch.testing.assert_close(other, mine, atol=TOLERANCE[quant], rtol=0)
    if quant != "f32":
        assert (other.argmax(-1) == mine.argmax(-1)).float().mean() > 0.9


def test_file_carries_the_tokenizer_and_chat_template(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    model_dir = make_model_dir(tmp_path / "model", tokenizer, template=CHATML, **SHAPES["llama-mha-tied"])
    out = tmp_path / "model.gguf"
    export_gguf(model_dir, out, "f32")
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=out.name)
    for text in TEXTS + ["<|im_start|>user\nhi<|im_end|>"]:
        assert theirs.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    reader = gguf.GGUFReader(str(out))
    field = reader.fields["tokenizer.chat_template"]
    assert bytes(field.parts[-1]).decode() == CHATML
    assert int(reader.fields["tokenizer.ggml.eos_token_id"].parts[-1][0]) == tokenizer.eot_id
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == tokenizer.vocab_size + 3  # padded like the model
    assert MARKER in reader.fields


@pytest.mark.parametrize("settings, named", [
    (dict(position="sinusoidal"), 'position="rope" (has "sinusoidal")'),
    (dict(qk_norm=True, qkv_bias=True), "qk_norm=false (has true)"),
    (dict(attention_scale="none"), 'attention_scale="inverse_sqrt" (has "none")'),
    (dict(feed_forward="relu2"), 'feed_forward="swiglu" (has "relu2")'),
    (dict(position="learned", norm="layernorm", feed_forward="gelu", gelu_approximate="none"),
     'gelu_approximate="tanh" (has "none")'),
])
def test_architectures_gguf_cannot_express_are_refused(settings, named):
    with pytest.raises(UserError, match="GGUF cannot express this model exactly") as refused:
        gguf_architecture(ModelConfig(vocab_size=300, **settings))
    assert named in str(refused.value)


def test_cli_exports_refuses_and_replaces_only_its_own_files(tmp_path, tokenizer, capsys):
    model_dir = make_model_dir(tmp_path / "model", tokenizer, **SHAPES["llama-mha-tied"])
    out = tmp_path / "support-q8.gguf"
    assert main(["export", str(model_dir), "-o", str(out), "--quant", "q8_0", "--quiet"]) == 0
    assert main(["export", str(model_dir), "-o", str(out), "--quiet"]) == 0  # our own file: replaced
    assert gguf.GGUFReader(str(out)).fields["general.file_type"].parts[-1][0] == gguf.LlamaFileType.MOSTLY_F16
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("my notes")
    assert main(["export", str(model_dir), "-o", str(foreign)]) == 2
    assert "not a GGUF file lmsmith wrote" in capsys.readouterr().err and foreign.read_text() == "my notes"
    assert main(["export", str(model_dir), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    odd = make_model_dir(tmp_path / "odd", tokenizer, n_layer=1, n_head=2, n_embd=32, feed_forward="relu2")
    assert main(["export", str(odd), "-o", str(tmp_path / "odd.gguf")]) == 2
    assert "GGUF cannot express" in capsys.readouterr().err and not (tmp_path / "odd.gguf").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_ollama_directory_has_an_exact_go_template(tmp_path, tokenizer):
    model_dir = make_model_dir(tmp_path / "model", tokenizer, template=CHATML, **SHAPES["llama-mha-tied"])
    out = tmp_path / "ollama" / "support"
    result = export_ollama(model_dir, out, ExportConfig(ollama=True, quant="q8_0"))
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "manifest.json", "model.gguf"]
    text = (out / "Modelfile").read_text()
    assert "FROM ./model.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert 'PARAMETER stop "<|endoftext|>"' in text and "PARAMETER num_ctx 64" in text
    assert '{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n' in text
    assert result["stop"] == ["<|im_end|>", "<|endoftext|>"]
    assert go_template(None, "<|endoftext|>") == ("{{ .Prompt }}", [])
    uneven = (
        "{% for m in messages %}{% if loop.index0 % 2 %}{{ m['content'] }}"
        "{% else %}[{{ m['content'] }}]{% endif %}{% endfor %}"
    )
    with pytest.raises(UserError, match="does not wrap each message in fixed text"):
        go_template(uneven, "<|endoftext|>")


@pytest.mark.parametrize("name,separator", [("chatml", "\n"), ("plain", "\n\n")])
def test_our_own_templates_put_their_separator_between_messages_in_go(name, separator):
    from lmsmith.text.chat_template import get_template, jinja_source

    go, stops = go_template(jinja_source(get_template(name)), "<|endoftext|>")  # checked against Jinja inside
    assert go.startswith("{{ range $i, $m := .Messages }}{{ if $i }}" + separator + "{{ end }}")
    assert stops == (["<|im_end|>"] if name == "chatml" else ["<|endoftext|>"])


# ---------------------------------------------------------------------------------------------
# llama.cpp itself


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python; it builds llama.cpp from source)")
    return llama_cpp


@pytest.mark.parametrize("shape", ["llama-gqa-untied", "gpt2-tied", "qwen2-qkv-bias", "qwen3-qk-norm-wide-heads"])
def test_llama_cpp_generates_the_tokens_lmsmith_generates(tmp_path, tokenizer, shape):
    llama_cpp = _llama_cpp()
    model_dir = make_model_dir(tmp_path / "model", tokenizer, seed=3, **SHAPES[shape])
    out = tmp_path / "model.gguf"
    export_gguf(model_dir, out, "f32")
    ours, _ = load_model_dir(model_dir)
    prompt = tokenizer.encode("the quick brown fox")
    steps = list(generate_tokens(ours, [prompt], GenerationConfig(max_new_tokens=20, temperature=0.0)))
    mine = [step[0] for step in steps if step[0] is not None]
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, n_threads=1, verbose=False, logits_all=False)
    theirs = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        theirs.append(token)
        if len(theirs) == len(mine) or token == tokenizer.eot_id:
            break
    llm.close()
    assert theirs == mine
