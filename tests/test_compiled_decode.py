"""The compiled decode step against the eager loop: the same greedy tokens (in float64, where
rounding cannot flip an argmax) through padding and window slides, one graph for every cache
length, the same logits in float32 (the shipped CPU path: autotuned kernels on packed weights),
the command line's --compile, and a clear error where no C++ compiler is installed.

Each test compiles for real (seconds each on 2 cores), so the shapes are few and tiny.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from lmsmith.cli import main
from lmsmith.core.errors import UserError
from lmsmith.model.compiled_decode import CompiledDecoder
from lmsmith.model.decoding import EagerDecoder, generate_tokens
from lmsmith.model.directory import save_model_dir
from lmsmith.schema.generate import GenerationConfig
from tests.test_generate import (
    greedy_without_cache,
    run_tokens,
    tiny_model,
    tokenizer,  # noqa: F401  (a fixture: the small BPE tokenizer)
)


def compiled_tokens(decoder: CompiledDecoder, prompts, max_new_tokens: int) -> list[list[int]]:
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0)
    out = [[] for _ in prompts]
    for step in generate_tokens(decoder.model, prompts, config, decoder=decoder):
        for row, token in enumerate(step):
            out[row].append(token)
    return out


SHAPES = {
    "llama-like": dict(position="rope", n_kv_head=2, qk_norm=True, feed_forward="swiglu"),
    "gpt2-like-windowed": dict(position="learned", norm="layernorm", feed_forward="gelu", bias=True,
                               attention_windows=[None, 5]),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_compiled_greedy_tokens_equal_the_eager_loop(shape):
    model = tiny_model(97, block_size=16, **shape)
    decoder = CompiledDecoder(model)
    graphs_before = counters["stats"]["unique_graphs"]
    prompts = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5, 8, 9, 7], [2, 7]]
    # Alone: 45 tokens slide the 16-slot window several times, and each prompt needs its own cache length.
    first = compiled_tokens(decoder, [prompts[0]], 45)[0]
    assert first == greedy_without_cache(model, prompts[0], 45)
    assert len(set(first)) > 3
    with torch.compiler.set_stance("fail_on_recompile"):  # one graph serves every length
        for prompt, max_new in zip(prompts[1:], (45, 6)):
            assert compiled_tokens(decoder, [prompt], max_new)[0] == greedy_without_cache(model, prompt, max_new)
    # A batch is left-padded: the eager loop's rule for padding and a shared window, exactly.
    assert compiled_tokens(decoder, prompts, 30) == run_tokens(model, prompts, max_new_tokens=30, temperature=0)
    # Graphs: one row; three padded rows; three rows again after the window slid past the padding.
    assert decoder.compiled_for == {(1, False), (3, True), (3, False)}
    assert counters["stats"]["unique_graphs"] - graphs_before == 3  # compiled indeed, not run eagerly
    assert decoder.compile_seconds > 0
    assert not any(block.attn.in_the_open for block in model.blocks)  # the eager path is left as it was


@torch.inference_mode()
def test_float32_logits_match_the_eager_step():
    model = tiny_model(97, dtype=torch.float32, n_embd=64, position="learned", norm="layernorm",
                       feed_forward="gelu", bias=True)
    compiled, eager = CompiledDecoder(model), EagerDecoder(model)
    prompt = torch.tensor([[5, 17, 3, 88, 42]])
    pad = torch.zeros(1, dtype=torch.long)
    (c_cache, c_logits), (e_cache, e_logits) = compiled.prefill(prompt, pad, 40), eager.prefill(prompt, pad, 40)
    for _ in range(30):
        torch.testing.assert_close(c_logits, e_logits, rtol=1e-4, atol=1e-4)
        token = e_logits.argmax(dim=-1)
        assert torch.equal(c_logits.argmax(dim=-1), token)
        c_logits, e_logits = compiled(token, c_cache), eager(token, e_cache)
    assert c_cache.length == e_cache.length == 35


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):  # noqa: F811
    model = tiny_model(tokenizer.vocab_size, dtype=torch.float32, position="learned", norm="layernorm", bias=True)
    path = tmp_path_factory.mktemp("compiled") / "model"
    save_model_dir(path, model, tokenizer, made_by="test")
    return path


def test_cli_compile_writes_the_same_text(model_dir, capsys):
    argv = ["generate", str(model_dir), "--prompt", "def add(", "--max-new-tokens", "25", "--temperature", "0",
            "--device", "cpu"]
    assert main(argv) == 0
    eager = capsys.readouterr()
    assert main([*argv, "--compile"]) == 0
    compiled = capsys.readouterr()
    assert compiled.out == eager.out
    assert "compiling the decode step took" in compiled.err


def test_no_cpp_compiler_is_one_clear_error(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no g++, c++ or clang++ on it
    with pytest.raises(UserError, match="needs a C\\+\\+ compiler"):
        CompiledDecoder(tiny_model(97))
    assert main(["generate", str(model_dir), "--compile", "--device", "cpu", "--prompt", "x"]) == 2
    assert "needs a C++ compiler" in capsys.readouterr().err
