"""The engine alone (no HTTP): requests join and leave a running batch, each with its own settings."""

from __future__ import annotations

import threading

import pytest
import torch
from serve_models import tiny_model

from lmsmith.model.decoding import generate_tokens
from lmsmith.schema.generate import GenerationConfig
from lmsmith.serve.engine import Engine, Finished, PromptScores, Request, Sampling, Token
from lmsmith.serve.kv_blocks import BLOCK_TOKENS, FIRST_BLOCKS, BlockPool, prefix_hashes


@pytest.fixture(scope="module")
def model(char_tokenizer):
    torch.set_num_threads(1)
    return tiny_model(char_tokenizer.vocab_size, seed=3)


class Recorder:
    """Collects the events of a set of requests, in the order the engine sent them."""

    def __init__(self):
        self.events: list[tuple[str, object]] = []
        self.finished = threading.Event()
        self.open = 0
        self.lock = threading.Lock()

    def request(self, name: str, prompt, sampling: Sampling, stop_ids=frozenset()) -> Request:
        with self.lock:
            self.open += 1

        def on_event(event) -> None:
            with self.lock:
                self.events.append((name, event))
                if isinstance(event, Finished):
                    self.open -= 1
                    if self.open == 0:
                        self.finished.set()

        return Request(list(prompt), sampling, frozenset(stop_ids), on_event)

    def tokens(self, name: str) -> list[int]:
        return [e.id for n, e in self.events if n == name and isinstance(e, Token)]

    def finish(self, name: str) -> Finished:
        return next(e for n, e in self.events if n == name and isinstance(e, Finished))


def run_all(engine: Engine, recorder: Recorder, requests: list[Request]) -> None:
    for request in requests:
        engine.submit(request)
    assert recorder.finished.wait(60)


@pytest.mark.parametrize("kv_cache_tokens", [None, 512])
def test_a_compiled_engine_writes_the_eager_tokens_with_one_graph(model, char_tokenizer, kv_cache_tokens,
                                                                  monkeypatch):
    """A request alone is decoded by the compiled one-row graph, step after step as its length
    grows; in a crowd the rows go eagerly and a row left alone goes back to the graph. The warm-up
    compiles that graph once, and nothing compiles again: with the slot cache or a block pool, which
    here starts at 2 blocks and grows (doubling) while the compiled graph decodes."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr("lmsmith.serve.kv_blocks.FIRST_BLOCKS", 2)

    prompts = [char_tokenizer.encode(t) for t in ("abc", "hello world", "x", "a longer prompt here", "yo")]
    lengths = [40, 5, 20, 8, 15]
    expected = [[s[0] for s in generate_tokens(model, [p], GenerationConfig(max_new_tokens=n, temperature=0))]
                for p, n in zip(prompts, lengths)]
    engine = Engine(model, char_tokenizer.vocab_size, max_batch=3, compile=True, kv_cache_tokens=kv_cache_tokens)
    before = counters["stats"]["unique_graphs"]
    assert engine.warm_up() > 0
    assert counters["stats"]["unique_graphs"] - before == 1
    engine.start()
    alone, crowd = Recorder(), Recorder()
    run_all(engine, alone, [alone.request("0", prompts[0], Sampling(max_tokens=lengths[0], temperature=0))])
    assert engine.compiled_steps == engine.steps == lengths[0] - 1  # the first token comes from the prefill
    if kv_cache_tokens is not None:
        assert engine.pool.blocks == 4  # 2 at start-up, doubled as the request reached its third block
    run_all(engine, crowd, [crowd.request(str(i), p, Sampling(max_tokens=n, temperature=0))
                            for i, (p, n) in enumerate(zip(prompts, lengths))])
    engine.stop()
    assert alone.tokens("0") == expected[0]
    assert [crowd.tokens(str(i)) for i in range(len(prompts))] == expected
    assert engine.largest_batch == 3 and lengths[0] - 1 < engine.compiled_steps < engine.steps
    assert counters["stats"]["unique_graphs"] - before == 1
    assert not any(block.attn.in_the_open for block in model.blocks)


def test_a_short_request_streams_before_a_long_prompt_is_in(model, char_tokenizer):
    engine = Engine(model, char_tokenizer.vocab_size, max_batch=4, prefill_chunk=8).start()
    recorder = Recorder()
    long = recorder.request("long", char_tokenizer.encode("a long document " * 7),
                            Sampling(max_tokens=3, temperature=0))
    short = recorder.request("short", char_tokenizer.encode("hi"), Sampling(max_tokens=3, temperature=0))
    run_all(engine, recorder, [long, short])
    engine.stop()
    order = [name for name, event in recorder.events if isinstance(event, Token)]
    assert order.index("short") < order.index("long")  # the short one did not wait for the long prefill


def test_seeded_sampling_is_the_same_alone_or_beside_others(model, char_tokenizer):
    sampling = Sampling(max_tokens=12, temperature=1.0, top_k=20, seed=11)
    alone = Recorder()
    engine = Engine(model, char_tokenizer.vocab_size, max_batch=8).start()
    run_all(engine, alone, [alone.request("me", char_tokenizer.encode("Once"), sampling)])
    crowd = Recorder()
    others = [crowd.request(f"o{i}", char_tokenizer.encode(f"Other {i}"), Sampling(max_tokens=20, temperature=0.7))
              for i in range(5)]
    run_all(engine, crowd, [*others[:3], crowd.request("me", char_tokenizer.encode("Once"), sampling), *others[3:]])
    engine.stop()
    assert crowd.tokens("me") == alone.tokens("me") and len(alone.tokens("me")) == 12


def test_greedy_tokens_equal_generate_and_stop_tokens_and_limits_end_requests(model, char_tokenizer):
    prompts = [char_tokenizer.encode(t) for t in ("abc", "hello world", "x")]
    engine = Engine(model, char_tokenizer.vocab_size, max_batch=2).start()  # more requests than slots: some wait
    recorder = Recorder()
    expected = [[s[0] for s in generate_tokens(model, [p], GenerationConfig(max_new_tokens=10, temperature=0))]
                for p in prompts]
    stop = expected[1][4]
    requests = [recorder.request("0", prompts[0], Sampling(max_tokens=10, temperature=0)),
                recorder.request("1", prompts[1], Sampling(max_tokens=10, temperature=0), stop_ids={stop}),
                recorder.request("2", prompts[2], Sampling(max_tokens=10, temperature=0))]
    run_all(engine, recorder, requests)
    engine.stop()
    assert recorder.tokens("0") == expected[0] and recorder.finish("0").reason == "length"
    cut = expected[1].index(stop) + 1
    assert recorder.tokens("1") == expected[1][:cut] and recorder.finish("1").reason == "stop"
    assert recorder.finish("1").completion_tokens == cut
    assert recorder.tokens("2") == expected[2]
    assert engine.largest_batch == 2 and not engine.decoding


def test_a_cancelled_request_leaves_and_frees_its_row(model, char_tokenizer):
    engine = Engine(model, char_tokenizer.vocab_size, max_batch=2).start()
    recorder = Recorder()
    first = threading.Event()
    victim = recorder.request("victim", char_tokenizer.encode("go on"), Sampling(max_tokens=100, temperature=0))
    inner = victim.on_event

    def cancel_after_first(event):
        inner(event)
        if isinstance(event, Token) and not first.is_set():
            first.set()
            victim.cancel()

    victim.on_event = cancel_after_first
    other = recorder.request("other", char_tokenizer.encode("and on"), Sampling(max_tokens=30, temperature=0))
    run_all(engine, recorder, [victim, other])
    engine.stop()
    assert recorder.finish("victim").reason == "cancelled" and len(recorder.tokens("victim")) < 100
    assert len(recorder.tokens("other")) == 30 and not engine.decoding


def test_prompt_scores_are_the_log_probabilities_of_one_forward_pass(model, char_tokenizer):
    ids = char_tokenizer.encode("score this text, in chunks")
    engine = Engine(model, char_tokenizer.vocab_size, prefill_chunk=5).start()  # several chunks
    recorder = Recorder()
    run_all(engine, recorder, [recorder.request("s", ids, Sampling(max_tokens=0, prompt_logprobs=1))])
    engine.stop()
    scores = next(e for _, e in recorder.events if isinstance(e, PromptScores))
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
    assert scores.logprobs[0] is None and len(scores.logprobs) == len(ids)
    assert torch.allclose(torch.tensor(scores.logprobs[1:]), logprobs.gather(1, torch.tensor(ids[1:])[:, None])[:, 0],
                          atol=1e-5)
    assert [t[0][0] for t in scores.top[1:]] == logprobs.argmax(-1).tolist()
    assert recorder.finish("s").reason == "length" and recorder.tokens("s") == []


def assert_every_block_came_back(pool) -> None:
    """No block held or promised: each is free, or idle under its prefix's name (kept for a later prompt)."""
    assert pool.held == pool.promised == 0 and all(n == 0 for n in pool.refs)
    assert sorted([*pool.free, *pool.idle]) == list(range(pool.blocks))
    assert set(pool.idle) == set(pool.name_of) == set(pool.named.values())


@pytest.mark.parametrize("kv_cache_tokens", [4096, 200])
def test_a_block_pool_writes_the_slot_caches_greedy_tokens_and_gets_its_blocks_back(model, char_tokenizer,
                                                                                    kv_cache_tokens):
    """At 1 and at 32 clients; with 200 tokens only a few requests fit at once and the others wait for
    blocks to come back, in order, with the same tokens. The pool allocates blocks as requests reach them:
    one client's tokens stay within the blocks allocated at start-up."""
    prompts = [char_tokenizer.encode(f"Order {i}: where is it?" + " more" * (i % 7)) for i in range(32)]
    outputs = {}
    for name, tokens in (("slots", None), ("blocks", kv_cache_tokens)):
        engine = Engine(model, char_tokenizer.vocab_size, max_batch=32, kv_cache_tokens=tokens).start()
        try:
            for clients in (1, 32):
                recorder = Recorder()
                run_all(engine, recorder, [recorder.request(str(i), p, Sampling(max_tokens=30, temperature=0))
                                           for i, p in enumerate(prompts[:clients])])
                outputs[name, clients] = [recorder.tokens(str(i)) for i in range(clients)]
                if tokens == 4096 and clients == 1:
                    assert engine.pool.blocks == FIRST_BLOCKS < engine.pool.limit
        finally:
            engine.stop(10)
        if tokens is not None:
            assert_every_block_came_back(engine.pool)
    assert outputs["blocks", 1] == outputs["slots", 1]
    assert outputs["blocks", 32] == outputs["slots", 32]


def test_the_pool_grows_as_blocks_are_taken_keeps_what_they_hold_and_reserves_what_it_promised(model):
    """Admission promises blocks; memory is allocated only as they are taken (doubling, up to the limit), and
    a request admitted is never short of a block: one that would overcommit waits (admit says None)."""
    pool = BlockPool(model, tokens=16 * 10, first_blocks=2)
    assert pool.blocks == 2 and pool.keys[0].size(0) == 2
    assert pool.admit([], 8) == [] and pool.blocks == 2  # promised, not allocated
    taken = [pool.take() for _ in range(3)]
    assert pool.blocks == 4 and sorted(taken) == [0, 1, 2]
    pool.keys[1][taken[0]].fill_(7.0)
    taken += [pool.take() for _ in range(2)]  # 5 blocks: grows to 8, copying what the first ones hold
    assert pool.blocks == 8 and bool((pool.keys[1][taken[0]] == 7.0).all())
    assert pool.admit([], 3) is None  # 8 promised + 3 > 10: waits, nothing taken
    assert pool.admit([], 2) == [] and pool.promised == 3 + 2
    pool.release(taken, unused=3)  # the first request ends having taken 5 of its 8
    assert pool.held == 0 and pool.promised == 2 and sorted(pool.free) == list(range(8))


@pytest.mark.parametrize("clients", [1, 32])
def test_prompts_sharing_a_system_prompt_reuse_its_blocks_and_write_the_same_tokens(model, char_tokenizer, clients):
    """A system prompt of several full blocks is prefilled once; later requests starting with it hold its
    blocks and prefill only their own question, with the same greedy tokens as without sharing. Requests
    for another adapter never share (their keys differ)."""
    system = char_tokenizer.encode("You are a helpful support bot for a parcel company. Be brief and kind. ")
    prompts = [system + char_tokenizer.encode(f"Order {i}?" + " now" * (i % 3)) for i in range(clients)]
    outputs = {}
    for sharing in (False, True):
        engine = Engine(model, char_tokenizer.vocab_size, max_batch=32, kv_cache_tokens=8192,
                        share_prefixes=sharing).start()
        try:
            first = Recorder()  # one request alone first, so its prompt's blocks are in the pool for the others
            run_all(engine, first, [first.request("first", prompts[0], Sampling(max_tokens=20, temperature=0))])
            recorder = Recorder()
            run_all(engine, recorder, [recorder.request(str(i), p, Sampling(max_tokens=20, temperature=0))
                                       for i, p in enumerate(prompts)])
            outputs[sharing] = [first.tokens("first")] + [recorder.tokens(str(i)) for i in range(clients)]
        finally:
            engine.stop(10)
        assert_every_block_came_back(engine.pool)
        shared_blocks = len(system) // BLOCK_TOKENS
        if sharing:
            assert engine.pool.hits >= clients * shared_blocks
        else:
            assert engine.pool.hits == 0 and not engine.pool.named
    assert outputs[True] == outputs[False]


def test_idle_prefix_blocks_are_reused_by_name_and_make_room_before_the_pool_grows(model):
    """A finished request's named blocks stay, idle, for the next prompt with that prefix; a request that needs
    their room takes them (longest idle first, forgetting their names) before the pool allocates more."""
    pool = BlockPool(model, tokens=16 * 4, first_blocks=2)
    names = prefix_hashes(list(range(32)), adapter=-1)
    assert pool.admit(names, 2) == []  # nothing named yet
    first = [pool.take(), pool.take()]
    pool.name(names, first)
    pool.release(first, unused=0)
    assert pool.held == 0 and list(pool.idle) == first[::-1]  # the last block goes idle first
    assert pool.admit(names[:1], 3) == [first[0]] and pool.held == 1 and pool.hits == 1  # woken by name
    pool.release([first[0]], unused=2)
    assert pool.admit([], 4) == []  # every block: the idle ones make room first, then the pool grows
    taken = [pool.take() for _ in range(4)]
    assert sorted(taken) == [0, 1, 2, 3] and pool.blocks == 4 and not pool.named and not pool.idle
    assert pool.admit([], 1) is None


def test_a_prefix_is_named_per_adapter_and_by_every_token_before_it():
    tokens = list(range(40))
    names = prefix_hashes(tokens, adapter=-1, block=16)
    assert len(names) == 2 and len(set(names)) == 2  # two full blocks; the last 8 tokens are no block
    assert prefix_hashes(tokens, adapter=0, block=16)[0] != names[0]
    changed = prefix_hashes([99] + tokens[1:], adapter=-1, block=16)
    assert changed[1] != names[1]  # the second block's tokens are the same, its prefix is not
    assert prefix_hashes(tokens[:32] + [5] * 8, adapter=-1, block=16) == names


def test_a_request_that_never_fits_the_block_pool_is_refused(model, char_tokenizer):
    engine = Engine(model, char_tokenizer.vocab_size, kv_cache_tokens=32)
    recorder = Recorder()
    with pytest.raises(ValueError, match="never fits the KV cache's 32"):
        engine.submit(recorder.request("long", range(1, 20), Sampling(max_tokens=20, temperature=0)))
