"""`lmsmith serve` against real clients: the official openai package and raw HTTP, on a loopback port.

One server (a tiny chat-tuned model, an API key; conftest.py) serves every test; a second one with
one slot and a tiny queue shows floods, disconnects and shutdown.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from serve_models import BLOCK_SIZE, KEY, NAME
from serving import ServerProcess, http_request, open_request

from lmsmith.cli import main
from lmsmith.model.decoding import generate, generate_tokens
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.generate import GenerationConfig

openai = pytest.importorskip("openai")

PROMPTS = [f"Order {i}: where is it?" + " more" * (i % 7) for i in range(32)]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def local(chat_model_dir):
    torch.set_num_threads(1)
    return load_model_dir(chat_model_dir)


def greedy(local, prompt: str, max_tokens: int) -> str:
    model, tokenizer = local
    return generate(model, tokenizer, prompt, GenerationConfig(max_new_tokens=max_tokens, temperature=0))[0]


def post(server, path: str, body, key: str | None = KEY) -> tuple[int, dict]:
    return http_request(server.url, "POST", path, body, key)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [NAME]


def test_a_greedy_completion_is_what_lmsmith_generate_writes(client, local):
    result = client.completions.create(model=NAME, prompt=PROMPTS[3], max_tokens=20, temperature=0)
    assert result.choices[0].text == greedy(local, PROMPTS[3], 20)
    assert result.choices[0].finish_reason in ("length", "stop")
    _, tokenizer = local
    assert result.usage.prompt_tokens == len(tokenizer.encode(PROMPTS[3]))
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_a_shared_prompt_prefix_is_reported_as_cached_and_changes_no_answer(client, local):
    """Two prompts that begin alike: the second finds the first's full blocks in the pool (usage's cached_tokens,
    as OpenAI reports a prompt cache hit), and its greedy answer is still what lmsmith generate writes."""
    shared = "You answer questions about orders, in one line: " * 2  # 98 characters: six 16-token blocks
    _, tokenizer = local
    common = len(tokenizer.encode(shared))
    for question in ("Order 7?", "Order 12?"):
        prompt = shared + question
        result = client.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=0)
        assert result.choices[0].text == greedy(local, prompt, 8)
    cached = result.usage.prompt_tokens_details.cached_tokens
    assert 16 <= cached <= common and cached % 16 == 0, cached  # whole blocks of the common part only
    fresh = client.completions.create(model=NAME, prompt="Nothing in common with the others.", max_tokens=4,
                                      temperature=0)
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0


def test_a_compiled_server_answers_as_the_eager_one(chat_model_dir, local, tmp_path):
    compiled = ServerProcess(chat_model_dir, "--compile", "--threads", "1", log_file=tmp_path / "compiled.log")
    try:
        assert "compiled the decode step in" in compiled.log()  # before the address was printed
        for prompt in PROMPTS[:3]:
            code, answer = post(compiled, "/completions", {"prompt": prompt, "max_tokens": 20, "temperature": 0},
                                key=None)
            assert code == 200 and answer["choices"][0]["text"] == greedy(local, prompt, 20)
    finally:
        assert compiled.stop() == 0


def test_log_text_logs_prompts_and_outputs(client, server):
    text = client.completions.create(model=NAME, prompt="a prompt to find in the log", max_tokens=4,
                                     temperature=0).choices[0].text
    assert "'a prompt to find in the log'" in server.log() and repr(text) in server.log()


def test_streamed_pieces_join_into_the_whole_text_and_usage_comes_last(client, local):
    chunks = list(client.completions.create(model=NAME, prompt=PROMPTS[5], max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == greedy(local, PROMPTS[5], 16)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 16
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")


def test_token_id_prompts_several_prompts_and_n_choices(client, local):
    _, tokenizer = local
    ids = tokenizer.encode(PROMPTS[1])
    result = client.completions.create(model=NAME, prompt=[ids, tokenizer.encode(PROMPTS[2])], max_tokens=8,
                                       temperature=0, n=2)
    texts = [c.text for c in sorted(result.choices, key=lambda c: c.index)]
    assert texts == [greedy(local, PROMPTS[1], 8)] * 2 + [greedy(local, PROMPTS[2], 8)] * 2


def test_a_seed_gives_the_same_sample_and_stop_strings_cut_the_text(client):
    args = dict(model=NAME, prompt=PROMPTS[0], max_tokens=30, temperature=1.0, top_p=0.9, seed=7)
    first, second = (client.completions.create(**args).choices[0].text for _ in range(2))
    assert first == second
    stop = first[5:7]
    cut = client.completions.create(**args, stop=[stop]).choices[0]
    assert cut.text == first[: first.index(stop)] and cut.finish_reason == "stop"


def test_echo_with_logprobs_scores_every_prompt_token(client, local):
    model, tokenizer = local
    ids = tokenizer.encode(PROMPTS[4])
    result = client.completions.create(model=NAME, prompt=PROMPTS[4], max_tokens=0, echo=True, logprobs=2)
    lp = result.choices[0].logprobs
    assert result.choices[0].text == PROMPTS[4]
    assert lp.tokens == [tokenizer.decode([t]) for t in ids] and lp.token_logprobs[0] is None
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
    want = expected.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert torch.allclose(torch.tensor(lp.token_logprobs[1:]), want, atol=1e-4)
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])


def test_chat_goes_through_the_models_template_and_streams(client, local):
    model, tokenizer = local
    messages = [{"role": "system", "content": "Add."}, {"role": "user", "content": "2+3="}]
    whole = client.chat.completions.create(model=NAME, messages=messages, max_tokens=12, temperature=0)
    prompt = "<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n2+3=<|im_end|>\n<|im_start|>assistant\n"
    expected = generate(model, tokenizer, prompt, GenerationConfig(max_new_tokens=12, temperature=0,
                                                                   stop=["<|im_end|>"]))[0]
    assert whole.choices[0].message.content == expected
    assert whole.usage.prompt_tokens == len(tokenizer.encode(prompt))
    chunks = list(client.chat.completions.create(model=NAME, messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_chat_logprobs_are_the_models_own(client, local):
    model, tokenizer = local
    messages = [{"role": "user", "content": "4+1="}]
    result = client.chat.completions.create(model=NAME, messages=messages, max_tokens=5, temperature=0,
                                            logprobs=True, top_logprobs=3)
    content = result.choices[0].logprobs.content
    prompt = tokenizer.encode("<|im_start|>user\n4+1=<|im_end|>\n<|im_start|>assistant\n")
    ids = [step[0] for step in generate_tokens(model, [prompt], GenerationConfig(max_new_tokens=5, temperature=0))]
    ids = ids[: next((i for i, t in enumerate(ids) if t in (tokenizer.eot_id, tokenizer.backend.token_to_id(
        "<|im_end|>"))), len(ids))]
    assert [bytes(t.bytes) for t in content] == [tokenizer.token_bytes(t) for t in ids]
    for t in content:  # greedy: each token is its own likeliest
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == pytest.approx(t.logprob)


def test_32_concurrent_clients_get_the_texts_they_get_alone(client, server):
    alone = [client.completions.create(model=NAME, prompt=p, max_tokens=24, temperature=0).choices[0].text
             for p in PROMPTS]
    start = threading.Barrier(len(PROMPTS))

    def ask(prompt: str) -> str:
        start.wait()
        return client.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0).choices[0].text

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(ask, PROMPTS))
    assert together == alone


@pytest.mark.parametrize(("body", "status", "words"), [
    ("{not json", 400, "not valid JSON"),
    ({"model": NAME}, 400, "'messages' is required"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role 'robot'"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": BLOCK_SIZE + 1}, 400, "at most"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 99}, 400, "'n'"),
    ({"messages": [{"role": "user", "content": "hi " * BLOCK_SIZE}]}, 400, f"maximum context length is {BLOCK_SIZE}"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}, 404, "does not exist"),
    ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "nested too deeply"),
    ('{"messages": [{"role": "user", "content": "a \\ud800 b"}]}', 400, "lone surrogate"),
])
def test_bad_chat_requests_get_openai_errors(server, body, status, words):
    code, answer = post(server, "/chat/completions", body)
    assert code == status
    error = answer["error"]
    assert words in error["message"] and error["type"]


def test_a_lone_surrogate_in_a_prompt_is_400(server):
    code, answer = post(server, "/completions", '{"prompt": "\\udcff", "max_tokens": 1}')
    assert code == 400 and "lone surrogate" in answer["error"]["message"]


def test_a_prompt_longer_than_the_context_is_refused_naming_the_limit(client):
    with pytest.raises(openai.BadRequestError, match=f"maximum context length is {BLOCK_SIZE}"):
        client.completions.create(model=NAME, prompt="x" * (BLOCK_SIZE + 5), max_tokens=1)


def test_a_body_past_the_size_limit_is_refused_and_a_bad_field_is_named(server):
    code, answer = post(server, "/completions", {"prompt": "x" * (1100 * 1024)})
    assert code == 400 and "bytes" in answer["error"]["message"]
    code, answer = post(server, "/completions", {"prompt": "hi", "temperature": "hot"})
    assert code == 400 and answer["error"]["param"] == "temperature"


def test_a_wrong_or_missing_api_key_is_401(server):
    wrong = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert post(server, "/completions", {"prompt": "hi"}, key=None)[0] == 401


def test_serving_on_a_port_in_use_is_one_line_and_exit_2(server, chat_model_dir, capsys):
    assert main(["serve", str(chat_model_dir), "--port", str(server.port)]) == 2
    error = capsys.readouterr().err
    assert error.strip().count("\n") == 0 and "already in use" in error


def test_a_model_directory_without_a_tokenizer_is_one_line_and_exit_2(tmp_path, model_dir, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "tokenizer.json").unlink()
    assert main(["serve", str(bare), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert error.strip().count("\n") == 0 and "tokenizer.json" in error


def test_a_flood_gets_429_a_disconnect_frees_its_slot_and_sigterm_finishes_what_is_in_flight(model_dir, tmp_path):
    small = ServerProcess(model_dir, "--max-batch", "1", "--max-queue", "1", "--threads", "1",
                          log_file=tmp_path / "small.log")
    body = {"prompt": "Hello there", "max_tokens": 40, "temperature": 0}
    try:
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda _: post(small, "/completions", body, key=None)[0], range(12)))
        assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
        assert post(small, "/completions", body, key=None)[0] == 200  # it stays up

        connection = open_request(small.url, "POST", "/completions", {**body, "stream": True})
        connection.getresponse().readline()
        connection.close()  # the client goes away mid-stream
        assert post(small, "/completions", {**body, "max_tokens": 5}, key=None)[0] == 200
        assert "cancelled" in small.log()

        connection = open_request(small.url, "POST", "/completions", {**body, "max_tokens": 110, "stream": True})
        response = connection.getresponse()
        lines = [response.readline().decode()]
        small.process.send_signal(15)
        lines += [line.decode() for line in response]
        lines = [line.strip() for line in lines if line.strip()]
        assert "data: [DONE]" in lines
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
        assert small.process.wait(30) == 0
    finally:
        small.stop()
    assert "Traceback" not in small.log()
    assert "Hello there" not in small.log()  # no request text in the log unless asked


def test_kv_cache_tokens_bounds_a_request_with_a_400_naming_the_limit(model_dir, tmp_path):
    process = ServerProcess(model_dir, "--kv-cache-tokens", "64", "--threads", "1", log_file=tmp_path / "kv.log")
    try:
        code, answer = http_request(process.url, "POST", "/completions",
                                    {"prompt": "Where is my order?", "max_tokens": 60, "temperature": 0})
        assert code == 400 and "KV cache holds 64 tokens" in answer["error"]["message"]
        code, answer = http_request(process.url, "POST", "/completions",
                                    {"prompt": "Where is my order?", "max_tokens": 20, "temperature": 0})
        assert code == 200 and answer["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        assert process.stop() == 0
