"""Many LoRA adapters on one base: rows of different adapters (and of the base) decode in one batch,
each giving the greedy tokens of its own merged model alone (RUN/model, what `lmsmith generate` reads)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from serving import ServerProcess, http_request

from lmsmith.model.decoding import TextStream, generate_tokens
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.generate import GenerationConfig
from lmsmith.serve.adapters import BASE, attach_adapters
from lmsmith.serve.engine import Engine, Request, Sampling, Token

PROMPTS = ["1+2=", "hello", "5+5="]
NEW_TOKENS = 10


def lora_run(base, work, name: str, pairs: list[dict], targets: str, rank: int):
    """A LoRA fine-tuning run of `base`, with a learning rate high enough that three steps change its answers."""
    from lmsmith.cli import main

    data = work / f"{name}.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    assert main(["finetune", str(base), "--data", str(data), "-o", str(work / name), "--method", "lora", "--quiet",
                 "train.steps=3", "train.eval_every=3", "train.micro_batch=8", "train.lr=0.05",
                 f"lora.rank={rank}", f"lora.targets={targets}", "train.peak_flops=1e11", "exact_match=0"]) == 0
    return work / name


@pytest.fixture(scope="module")
def runs(chat_model_dir, tmp_path_factory):
    """Two adapters of the chat model, of different ranks and on different layers."""
    work = tmp_path_factory.mktemp("adapters")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        add = lora_run(chat_model_dir, work, "add", [{"prompt": f"{a}+{b}=", "response": str(a + b)}
                                                     for a in range(6) for b in range(6)], "[qkv, fc]", 4)
        mul = lora_run(chat_model_dir, work, "mul", [{"prompt": f"{a}*{b}=", "response": str(a * b)}
                                                     for a in range(6) for b in range(6)], "[proj]", 2)
    finally:
        torch.set_num_threads(before)
    return {"add": add, "mul": mul}


def alone(model_dir, tokenizer) -> dict[str, list[int]]:
    """Each prompt's greedy tokens from the model on its own, up to and with its end token."""
    model, _ = load_model_dir(model_dir)
    out = {}
    for text in PROMPTS:
        tokens = [s[0] for s in generate_tokens(model, [tokenizer.encode(text)],
                                                GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=0))]
        out[text] = tokens[: tokens.index(tokenizer.eot_id) + 1] if tokenizer.eot_id in tokens else tokens
    return out


def as_served(tokenizer, tokens: list[int]) -> str:
    """The text the server writes for these tokens (its TextStream: pieces as they become whole characters)."""
    stream = TextStream(tokenizer, [])
    return "".join(stream.push(t) for t in tokens if t != tokenizer.eot_id) + stream.finish()


@pytest.fixture(scope="module")
def expected(runs, chat_model_dir):
    _, tokenizer = load_model_dir(chat_model_dir)
    return {"base": alone(chat_model_dir, tokenizer),
            **{name: alone(run / "model", tokenizer) for name, run in runs.items()}}


@pytest.mark.parametrize("kv_cache_tokens", [None, 1024])
def test_adapters_and_the_base_in_one_batch_give_each_ones_own_greedy_tokens(runs, chat_model_dir, expected,
                                                                              kv_cache_tokens):
    torch.set_num_threads(1)
    model, tokenizer = load_model_dir(chat_model_dir)
    routing, adapters = attach_adapters(model, {name: str(run) for name, run in runs.items()}, tokenizer)
    indices = {"base": BASE, **{a.name: a.index for a in adapters}}
    engine = Engine(model, tokenizer.vocab_size, max_batch=16, routing=routing, kv_cache_tokens=kv_cache_tokens)
    got: dict[tuple[str, str], list[int]] = {}
    for name, index in indices.items():  # all submitted before the loop starts: they go in as one batch
        for text in PROMPTS:
            tokens = got.setdefault((name, text), [])
            engine.submit(Request(tokenizer.encode(text), Sampling(max_tokens=NEW_TOKENS, temperature=0),
                                  frozenset({tokenizer.eot_id}),
                                  lambda e, tokens=tokens: tokens.append(e.id) if isinstance(e, Token) else None,
                                  adapter=index))
    engine.start()
    engine.stop(60)
    # every request that outlives its first token (a first token that ends it never takes a row) decodes together
    assert engine.largest_batch == sum(len(expected[n][t]) > 1 for n in indices for t in PROMPTS) > len(PROMPTS)
    assert {key: tokens for key, tokens in got.items()} == {(n, t): expected[n][t] for n in indices for t in PROMPTS}
    # the adapters do change the answers: otherwise this test could not tell a row's adapter from the base
    assert expected["add"] != expected["base"] and expected["mul"] != expected["base"]


def test_the_server_lists_the_adapters_and_answers_each_with_its_own(runs, chat_model_dir, expected, tmp_path):
    openai = pytest.importorskip("openai")
    _, tokenizer = load_model_dir(chat_model_dir)
    process = ServerProcess(chat_model_dir, "--model-name", "base", "--threads", "1", "--adapter", f"add={runs['add']}",
                            "--adapter", f"mul={runs['mul']}", log_file=tmp_path / "server.log")
    try:
        client = openai.OpenAI(base_url=process.url, api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["base", "add", "mul"]
        status, body = http_request(process.url, "POST", "/completions", {"model": "sql", "prompt": "hi"})
        assert status == 404 and "'base', 'add', 'mul'" in body["error"]["message"]

        def complete(job):
            name, text = job
            answer = client.completions.create(model=name, prompt=text, max_tokens=NEW_TOKENS, temperature=0)
            return answer.model, answer.choices[0].text

        jobs = [(name, text) for name in expected for text in PROMPTS]
        with ThreadPoolExecutor(len(jobs)) as pool:  # together, so the engine batches them
            answers = list(pool.map(complete, jobs))
        want = [(name, as_served(tokenizer, expected[name][text])) for name, text in jobs]
        assert answers == want
    finally:
        assert process.stop() == 0
    assert "Traceback" not in process.log()


def test_an_adapter_of_another_base_is_refused_at_start_up(runs, model_dir):
    result = subprocess.run([sys.executable, "-m", "lmsmith", "serve", str(model_dir), "--port", "0",
                             "--adapter", f"add={runs['add']}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "adapter 'add'" in lines[0] and "other base weights" in lines[0]
