"""Generation: the cached decode loop against plain recomputation, sampling filters against
Hugging Face's, text streaming, stop strings, the context window and the command line.

Models are tiny and random; equality tests run them in float64 so that a different batch
shape (padding, one token at a time) cannot flip an argmax by rounding.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmsmith.cli import main
from lmsmith.core.device import pick_device
from lmsmith.core.errors import UserError
from lmsmith.model.decoding import (
    IncrementalDecoder,
    PromptTruncatedWarning,
    TextStream,
    generate,
    generate_tokens,
    keep_top_k,
    keep_top_p,
    lay_out_for_decoding,
    penalise_repeats,
)
from lmsmith.model.directory import save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.model import ModelConfig
from lmsmith.schema.text import EOT
from lmsmith.text.tokenizer import Tokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Transformers predict the next token from the ones before it.",
    "Καλημέρα κόσμε. 你好，世界。 Emoji: 🙂🚀",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(SENTENCES * 4, trainer)
    return Tokenizer(backend)


def tiny_model(vocab_size: int, seed: int = 0, dtype=torch.float64, **shape) -> GPT:
    # A large init_std gives peaked, varied predictions, so greedy output is not one token repeated.
    config = dict(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=32, init_std=0.3)
    config.update(shape)
    torch.manual_seed(seed)
    return GPT(ModelConfig(**config)).to(dtype).eval()


def greedy_without_cache(model: GPT, prompt: list[int], steps: int, pad: int = 0) -> list[int]:
    """The plain reference: recompute the whole context for every token (nanoGPT's sample).

    The window rule generate.py documents: the context is counted in slots, `pad` empty ones
    first (a prompt padded in a batch), and when it would pass block_size it restarts from the
    last three quarters.
    """
    block = model.config.block_size
    keep = block - block // 4
    sequence, start, out = list(prompt[-block:]), 0, []
    with torch.no_grad():
        for _ in range(steps):
            slots = pad + len(sequence)
            if slots - start > block:
                start = slots - keep
            logits = model(torch.tensor([sequence[max(start - pad, 0):]])).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            sequence.append(token)
    return out


def run_tokens(model, prompts, eot_id=None, **config) -> list[list[int]]:
    """All tokens generated per prompt, as lists (None steps dropped)."""
    out = [[] for _ in prompts]
    for step in generate_tokens(model, prompts, GenerationConfig(**config), eot_id=eot_id):
        for row, token in enumerate(step):
            if token is not None:
                out[row].append(token)
    return out


SHAPES = {
    "rope": dict(position="rope"),
    "learned": dict(position="learned", norm="layernorm", feed_forward="gelu", bias=True),
    "sinusoidal": dict(position="sinusoidal", feed_forward="relu2"),
    "rope-gqa": dict(position="rope", n_kv_head=2, qk_norm=True),
    "learned-gqa-untied": dict(position="learned", n_kv_head=1, tie_embeddings=False),
}


# ---------------------------------------------------------------------------------------------
# The cache changes nothing


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_greedy_with_cache_equals_recomputation(shape):
    model = tiny_model(97, **shape)
    prompt = [5, 17, 3, 88, 42, 9, 60]
    (cached,) = run_tokens(model, [prompt], max_new_tokens=40, temperature=0)
    assert cached == greedy_without_cache(model, prompt, 40)
    assert len(set(cached)) > 3  # a real sequence, not one token repeated


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_batch_with_left_padding_equals_each_prompt_alone(shape):
    model = tiny_model(97, **shape)
    prompts = [[1, 2, 3], [40], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [50, 51, 52, 53, 54]]
    batched = run_tokens(model, prompts, max_new_tokens=20, temperature=0)
    alone = [run_tokens(model, [p], max_new_tokens=20, temperature=0)[0] for p in prompts]
    assert batched == alone
    assert alone[0] == greedy_without_cache(model, prompts[0], 20)


@pytest.mark.parametrize("shape", [SHAPES["rope"], SHAPES["learned"]], ids=["rope", "learned"])
def test_generation_past_the_context_slides_the_window(shape):
    model = tiny_model(97, block_size=16, **shape)
    prompts = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5, 8, 9, 7], [2, 7]]
    for prompt in prompts:
        (tokens,) = run_tokens(model, [prompt], max_new_tokens=45, temperature=0)
        assert tokens == greedy_without_cache(model, prompt, 45)
    # In a batch the window is shared: padding counts toward a short prompt's context, so a
    # padded row matches its lone run until the first slide and the slot rule throughout.
    batched = run_tokens(model, prompts, max_new_tokens=45, temperature=0)
    longest = max(len(p) for p in prompts)
    for prompt, tokens in zip(prompts, batched):
        assert tokens == greedy_without_cache(model, prompt, 45, pad=longest - len(prompt))
        before_slide = 16 - longest + 1
        assert tokens[:before_slide] == greedy_without_cache(model, prompt, before_slide)


def test_prompt_longer_than_context_keeps_its_end_with_a_warning():
    model = tiny_model(97, block_size=16)
    prompt = list(range(1, 41))
    with pytest.warns(PromptTruncatedWarning, match="40 tokens but the model's context is 16"):
        (tokens,) = run_tokens(model, [prompt], max_new_tokens=10, temperature=0)
    assert tokens == greedy_without_cache(model, prompt[-16:], 10)


def test_generation_stops_at_end_of_text_per_row():
    model = tiny_model(97)
    prompts = [[5, 6, 7], [20, 30]]
    free = run_tokens(model, prompts, max_new_tokens=15, temperature=0)
    eot = free[0][4]
    first = free[0].index(eot)  # the first time row 0 says it
    stopped = run_tokens(model, prompts, eot_id=eot, max_new_tokens=15, temperature=0)
    assert stopped[0] == free[0][: first + 1]
    expected_row1 = free[1][: free[1].index(eot) + 1] if eot in free[1] else free[1]
    assert stopped[1] == expected_row1


def test_decoding_layout_changes_strides_not_results(tmp_path, tokenizer):
    model = tiny_model(97, dtype=torch.float32, **SHAPES["learned"])
    prompt = [5, 17, 3, 88]
    before = run_tokens(model, [prompt], max_new_tokens=20, temperature=0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    lay_out_for_decoding(model)
    assert not model.blocks[0].attn.qkv.weight.is_contiguous()
    assert model.head.weight is model.tok_emb.weight  # still tied
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert run_tokens(model, [prompt], max_new_tokens=20, temperature=0) == before
    save_model_dir(tmp_path / "m", model, tokenizer, made_by="test")  # saving copes with the strides


# ---------------------------------------------------------------------------------------------
# Sampling


def test_same_seed_same_text_different_seed_different_text():
    model = tiny_model(97, dtype=torch.float32)
    prompts = [[1, 2, 3], [4, 5]]
    settings = dict(max_new_tokens=30, temperature=1.0, top_p=0.95, repetition_penalty=1.2)
    first = run_tokens(model, prompts, seed=7, **settings)
    torch.manual_seed(123)  # the global generator must not matter
    again = run_tokens(model, prompts, seed=7, **settings)
    other = run_tokens(model, prompts, seed=8, **settings)
    assert first == again
    assert first != other


@pytest.mark.parametrize("narrow", [dict(top_k=1), dict(top_p=1e-6)], ids=["top_k=1", "top_p~0"])
def test_sampling_from_one_token_is_greedy(narrow):
    model = tiny_model(97)
    prompts = [[1, 2, 3], [60, 61, 62, 63]]
    greedy = run_tokens(model, prompts, max_new_tokens=25, temperature=0)
    sampled = run_tokens(model, prompts, max_new_tokens=25, temperature=1.5, seed=0, **narrow)
    assert sampled == greedy


def test_sampled_tokens_follow_the_filters():
    model = tiny_model(97, dtype=torch.float32)
    prompt = [1, 2, 3]
    (tokens,) = run_tokens(model, [prompt], max_new_tokens=30, temperature=1.0, top_k=3, seed=1)
    sequence = prompt + tokens
    with torch.no_grad():
        logits = model(torch.tensor([sequence])).logits[0]
    for i, token in enumerate(tokens):
        allowed = torch.topk(logits[len(prompt) - 1 + i], 3).indices.tolist()
        assert token in allowed


@pytest.mark.parametrize("k", [1, 5, 50])
def test_top_k_matches_hugging_face(k):
    from transformers import TopKLogitsWarper

    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(k))
    ours = keep_top_k(logits, k)
    theirs = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(ours.isinf(), theirs.isinf())
    assert (ours.isfinite().sum(-1) == k).all()


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7, 0.95, 1.0])
def test_top_p_matches_hugging_face(p):
    from transformers import TopPLogitsWarper

    logits = 3 * torch.randn(4, 200, generator=torch.Generator().manual_seed(int(p * 100)))
    ours = keep_top_p(logits, p)
    theirs = TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(ours.isinf(), theirs.isinf())
    assert (ours.isfinite().sum(-1) >= 1).all()


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty_matches_hugging_face(penalty):
    from transformers import RepetitionPenaltyLogitsProcessor

    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=rng)
    history = torch.randint(0, 50, (3, 12), generator=rng)
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, history, True)
    ours = penalise_repeats(logits, seen, penalty)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(history, logits.clone())
    torch.testing.assert_close(ours, theirs)


def test_repetition_penalty_ignores_left_padding():
    """Pad slots are filled with token 0; a short prompt in a batch must not see it as repeated."""
    model = tiny_model(97)
    prompts = [[0, 0, 0, 0, 0, 0, 2], [9]]
    settings = dict(max_new_tokens=12, temperature=0, repetition_penalty=5.0)
    assert run_tokens(model, prompts, **settings)[1] == run_tokens(model, [prompts[1]], **settings)[0]


@pytest.mark.parametrize(
    "bad",
    [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0), dict(repetition_penalty=0.0),
     dict(max_new_tokens=0), dict(stop=[""])],
)
def test_impossible_settings_are_user_errors(bad, tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    with pytest.raises(UserError, match=next(iter(bad))):
        generate(model, tokenizer, "hello", GenerationConfig(**bad))


def test_empty_prompt_is_a_user_error(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    with pytest.raises(UserError, match="prompt 2 is empty"):
        generate(model, tokenizer, ["hello", ""], GenerationConfig(max_new_tokens=3))


# ---------------------------------------------------------------------------------------------
# Text: incremental decoding, stop strings, streaming


def test_incremental_decoding_never_splits_a_character(tokenizer):
    text = "naïve café 日本語の文章 ✨🙂🚀 Ωμέγα\n\tend"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text) // 2  # characters really are split across byte-level tokens
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert any(piece == "" for piece in pieces)  # some tokens had to wait for the rest of their character


def test_stop_string_is_cut_and_never_streamed(tokenizer):
    text = "return a + b\nSTOP here and more"
    stream = TextStream(tokenizer, stop=["\nSTOP", "never"])
    pieces = [stream.push(i) for i in tokenizer.encode(text)]
    assert stream.done
    assert stream.text == "return a + b"
    assert "".join(pieces) == "return a + b"


def test_generation_ends_before_the_stop_string(tokenizer):
    model = tiny_model(tokenizer.vocab_size, dtype=torch.float32)
    settings = dict(max_new_tokens=40, temperature=0)
    (free,) = generate(model, tokenizer, ["The quick"], GenerationConfig(**settings))
    stop = free[len(free) // 2: len(free) // 2 + 3]
    assert len(stop) == 3
    (stopped,) = generate(model, tokenizer, ["The quick"], GenerationConfig(stop=[stop], **settings))
    assert stopped == free[: free.index(stop)]


def test_end_of_text_ends_the_text(tokenizer):
    model = tiny_model(tokenizer.vocab_size, dtype=torch.float32)
    prompt = tokenizer.encode("The quick")
    (tokens,) = run_tokens(model, [prompt], max_new_tokens=20, temperature=0)
    pretend = copy.copy(tokenizer)
    pretend.eot_id = tokens[6]  # pretend the seventh token ends the document
    (text,) = generate(model, pretend, [prompt], GenerationConfig(max_new_tokens=20, temperature=0))
    assert text == tokenizer.decode(tokens[: tokens.index(tokens[6])])


def test_streamed_pieces_join_to_the_returned_texts(tokenizer):
    model = tiny_model(tokenizer.vocab_size, dtype=torch.float32, block_size=24)
    prompts = ["The quick", "你好", "def add(a, b):\n"]
    pieces: dict[int, list[str]] = {i: [] for i in range(len(prompts))}
    finished = []

    def on_text(i, piece, done):
        assert i not in finished
        pieces[i].append(piece)
        if done:
            finished.append(i)

    config = GenerationConfig(max_new_tokens=60, temperature=1.0, seed=3, stop=["e", "\n\n"])
    texts = generate(model, tokenizer, prompts, config, on_text=on_text)
    assert sorted(finished) == [0, 1, 2]
    assert ["".join(pieces[i]) for i in range(len(prompts))] == texts
    assert not any("e" in t for t in texts)


# ---------------------------------------------------------------------------------------------
# Device and command line


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no usable CUDA GPU"):
            pick_device("cuda")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    model = tiny_model(tokenizer.vocab_size, dtype=torch.float32, position="learned", norm="layernorm", bias=True)
    path = tmp_path_factory.mktemp("gen") / "model"
    save_model_dir(path, model, tokenizer, made_by="test")
    return path, model


def cli(*argv) -> int:
    return main(["generate", *map(str, argv)])


def test_cli_streams_the_prompt_and_its_continuation(model_dir, tokenizer, capsys):
    path, model = model_dir
    (expected,) = generate(model, tokenizer, ["def add(a,\n"], GenerationConfig(max_new_tokens=15, temperature=0))
    assert cli(path, "--prompt", "def add(a,\\n", "--max-new-tokens", 15, "--temperature", 0, "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert captured.out == "def add(a,\n" + expected + "\n"
    assert "new tokens in" in captured.err


def test_cli_batch_prints_each_output_whole_and_in_order(model_dir, tokenizer, capsys):
    path, model = model_dir
    prompts = ["The quick", "Καλη", "def"]
    settings = dict(max_new_tokens=12, temperature=0.9, top_k=20, seed=5)
    texts = generate(model, tokenizer, prompts, GenerationConfig(**settings))
    args = [a for p in prompts for a in ("--prompt", p)]
    flags = ["--max-new-tokens", 12, "--temperature", 0.9, "--top-k", 20, "--seed", 5]
    expected = "".join(f"──── {i + 1}/3 ────\n{p}{t}\n" for i, (p, t) in enumerate(zip(prompts, texts)))
    assert cli(path, *args, *flags) == 0
    assert capsys.readouterr().out == expected
    assert cli(path, *args, *flags, "--no-stream") == 0
    assert capsys.readouterr().out == expected


def test_cli_stop_string_with_escaped_newline(model_dir, tokenizer, capsys):
    path, model = model_dir
    (free,) = generate(model, tokenizer, ["Trans"], GenerationConfig(max_new_tokens=30, temperature=0))
    stop = free[10:12]
    assert cli(path, "--prompt", "Trans", "--max-new-tokens", 30, "--temperature", 0,
               "--stop", stop.replace("\n", "\\n")) == 0
    assert capsys.readouterr().out == "Trans" + free[: free.index(stop)] + "\n"


def test_cli_without_a_prompt_writes_from_scratch(model_dir, capsys):
    path, _ = model_dir
    assert cli(path, "--max-new-tokens", 5, "--seed", 1) == 0
    assert capsys.readouterr().out.strip() != ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt", "hi", "--temperature", "-1"], "generate.temperature (--temperature) must be 0"),
        (["--prompt", "hi", "--top-p", "2"], "generate.top_p (--top-p) must be in"),
        (["--prompt", "hi", "--device", "tpu"], "unknown device"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(model_dir, capsys, argv, message):
    path, _ = model_dir
    assert cli(path, *argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1
    assert captured.out == ""


def test_cli_missing_model_dir(tmp_path, capsys):
    assert cli(tmp_path / "nope", "--prompt", "hi") == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_long_prompt_warns_once_on_stderr(model_dir, tokenizer, capsys):
    path, _ = model_dir
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 20
    assert len(tokenizer.encode(long_prompt)) > 64
    assert cli(path, "--prompt", long_prompt, "--max-new-tokens", 3) == 0
    err = capsys.readouterr().err
    assert err.count("warning: prompt 1 has") == 1


SMALL_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["s", "m", "l"]},
                                                 "ids": {"type": "array", "items": {"type": "integer", "maximum": 99},
                                                         "maxItems": 2}},
                "required": ["ok", "size", "ids"], "additionalProperties": False}


def test_cli_json_schema_and_regex_hold_every_sampled_output(model_dir, tmp_path, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("llguidance")
    path, _ = model_dir
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SMALL_SCHEMA), encoding="utf-8")
    prompts = [a for p in ("The quick", "def", "") for a in ("--prompt", p)]
    assert cli(path, *prompts, "--json-schema", schema_file, "--max-new-tokens", 40, "--temperature", 1.0,
               "--seed", 3, "-o", tmp_path / "json", "--quiet") == 0
    for sample in json.loads((tmp_path / "json" / "samples.json").read_text(encoding="utf-8")):
        jsonschema.validate(json.loads(sample["text"]), SMALL_SCHEMA)
    assert cli(path, *prompts, "--regex", "[a-c]{3}-[0-9]", "--max-new-tokens", 10, "--temperature", 1.0,
               "-o", tmp_path / "regex", "--quiet") == 0
    for sample in json.loads((tmp_path / "regex" / "samples.json").read_text(encoding="utf-8")):
        assert re.fullmatch("[a-c]{3}-[0-9]", sample["text"]), sample
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--regex", "(ab"], "the regex cannot be compiled"),
    (["--json-schema", "missing.json"], "missing.json"),
    (["--regex", "a", "--json-schema", "x.json"], "give one of them, not both"),
])
def test_cli_a_constraint_it_cannot_use_is_one_line_and_exit_2(model_dir, capsys, argv, message):
    pytest.importorskip("llguidance")
    path, _ = model_dir
    assert cli(path, "--prompt", "hi", *argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize("stream", [[], ["--no-stream"]], ids=["streamed", "no-stream"])
def test_cli_chat_sets_the_answer_apart_from_the_question(model_dir, tokenizer, capsys, stream):
    path, _ = model_dir
    question = "What is the capital of France?"
    assert cli(path, "--chat", "--template", "plain", "--prompt", question, "--max-new-tokens", 5,
               "--temperature", 0, *stream) == 0
    out = capsys.readouterr().out
    assert out.startswith(question + "\n"), out
