"""Serving throughput and time to first token: continuous batching against one request at a time.

    batched        `lmsmith serve --max-batch 32`: every request in flight decoded together
    one_at_a_time  the same server with --max-batch 1: requests queue and run one after another
    compiled       the batched server with --compile: its decode step compiled at start-up
    hf_pipeline    transformers' text-generation pipeline on the same weights, in this process,
                   one prompt at a time and in batches of 32 (if transformers is installed)

A GPT-2-shaped model with random weights (speed does not depend on them) is served by a real
`lmsmith serve` process on a loopback port; 1, 8 and 32 concurrent clients each stream
completions over HTTP (the bytes an OpenAI client would send), `--requests` each. Reported per
level: aggregate new tokens/s (all clients' tokens over the wall time), and the median and 95th
percentile time from sending a request to its first streamed text, and the server's memory
(resident set) after start-up and at its peak. Prints one JSON line, with the ratios the issue
sets targets for: batched / one-at-a-time throughput at 32 clients, and time to first token at 8
clients over 1 client.

    with_schema    the batched server again, every request held to a JSON schema (response_format):
                   what the token masks cost (the answers end when their JSON does, so fewer tokens)

    memory         (--memory) one line per model, the quickstart's shape (256-token context) and SmolLM2-135M's
                   (30 layers, 3 key/value heads, an 8k context; random weights, made here): resident memory at
                   start-up and at its peak, and tokens/s, at 1/8/32 clients, with the slot cache
                   (serve.kv_slots=true: 32 slots of the whole context, the cache before the pool) and with the
                   default pool of blocks allocated as requests need them
    prefix         (--prefix) one line: time to first token of requests that all begin with the same 500-token
                   system prompt, one client after another, with and without prefix sharing
                   (serve.share_prefixes=false), on the benchmark's model with a 1,024-token context
    adapters       (--adapters) one line: tokens/s at 8 and 32 clients of the base alone against two LoRA
                   adapters (made here by `lmsmith finetune --method lora`) and the base in one batch

    python benchmarks/serve.py [--new-tokens 64] [--requests 2] [--no-compile] [--schema-only]
                               [--memory] [--prefix] [--adapters]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from lmsmith.core.config import parse_section
from lmsmith.model.directory import save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import train_bpe

MODEL = dict(preset="gpt2", vocab_size=8192, block_size=256, n_layer=4, n_head=4, n_embd=256, dropout=0.0)
LEVELS = (1, 8, 32)
# A schema whose answers run to dozens of tokens: nested objects, enums, an array, required fields
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["story", "mood", "ships", "port"],
          "properties": {"story": {"type": "string", "maxLength": 40}, "mood": {"enum": ["calm", "stormy"]},
                         "ships": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
                         "port": {"type": "object", "additionalProperties": False, "required": ["name"],
                                  "properties": {"name": {"type": "string", "maxLength": 16}}}}}
SCHEMA_FORMAT = {"response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}}}


# The quickstart's shape (configs/quickstart.yaml), and SmolLM2-135M's (a model with an 8k context)
QUICKSTART = dict(vocab_size=4096, block_size=256, n_layer=3, n_head=3, n_embd=192, dropout=0.0)
SMOL = dict(vocab_size=49152, block_size=8192, n_layer=30, n_head=9, n_kv_head=3, n_embd=576, ffn_hidden=1536,
            dropout=0.0)


def make_model_dir(folder: Path, block_size: int | None = None, shape: dict | None = None) -> Path:
    """A byte-level BPE trained on a few standard-library modules (prompts of realistic token counts), and a
    model of `shape` (default: MODEL) with random weights."""
    import inspect
    import json as json_module
    import statistics as statistics_module

    shape = dict(shape or MODEL, **({"block_size": block_size} if block_size else {}))
    texts = [inspect.getsource(m) for m in (json_module.decoder, json_module.encoder, statistics_module, string)]
    tokenizer = train_bpe(texts, vocab_size=min(shape["vocab_size"], MODEL["vocab_size"]), show_progress=False)
    torch.manual_seed(0)
    model = GPT(parse_section(ModelConfig, shape, "model")).eval()
    name = f"model-{shape['n_layer']}x{shape['n_embd']}-{shape['block_size']}"
    return save_model_dir(folder / name, model, tokenizer, made_by="benchmark")


def start_server(model_dir: Path, max_batch: int, threads: int, log: Path, compile: bool = False,
                 args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, "-m", "lmsmith", "serve", str(model_dir), "--port", "0",
                                "--max-batch", str(max_batch), "--threads", str(threads), "--quiet",
                                *(["--compile"] if compile else []), *args],
                               stderr=open(log, "w"))
    deadline = time.monotonic() + 600  # a compiling server takes a minute or so to listen
    while time.monotonic() < deadline:
        found = re.search(r"127\.0\.0\.1:(\d+)/v1", log.read_text())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.1)
    raise RuntimeError("the server did not start")


def stream_one(port: int, prompt: str, new_tokens: int, extra: dict | None = None) -> tuple[float, int]:
    """(seconds to the first text, new tokens) of one streamed completion."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **(extra or {})}
    started = time.perf_counter()
    connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:  # a refused request would count as a fast one with no tokens
        raise RuntimeError(f"the server answered {response.status}: {response.read()[:300]!r}")
    first, tokens = None, 0
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        if first is None and event["choices"] and event["choices"][0]["text"]:
            first = time.perf_counter() - started
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
    connection.close()
    return (first if first is not None else time.perf_counter() - started), tokens


def load(port: int, clients: int, requests: int, new_tokens: int, extra: dict | None = None,
         models: list[str] | None = None) -> dict:
    """`clients` threads, each streaming `requests` completions one after another (client c names
    models[c % len(models)] as its model, if given)."""
    ttfts, tokens, lock = [], [0], threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        start.wait()
        for r in range(requests):
            body = dict(extra or {}, **({"model": models[c % len(models)]} if models else {}))
            ttft, n = stream_one(port, f"Request {c}.{r}: tell me a story about the sea. " * 2, new_tokens, body)
            with lock:
                ttfts.append(ttft)
                tokens[0] += n

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    ttfts.sort()
    return {"tokens_per_s": round(tokens[0] / wall, 1), "ttft_median_ms": round(statistics.median(ttfts) * 1000, 1),
            "ttft_p95_ms": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] * 1000, 1),
            "new_tokens": tokens[0], "wall_s": round(wall, 2)}


def memory_mb(pid: int) -> dict:
    """The process's resident memory now and at its peak (Linux's /proc; empty elsewhere)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status.splitlines()) if k in
          ("VmRSS", "VmHWM")}
    return {"rss_mb": round(kb["VmRSS"] / 1024, 1), "peak_rss_mb": round(kb["VmHWM"] / 1024, 1)}


def serve_levels(model_dir: Path, max_batch: int, threads: int, levels, requests: int, new_tokens: int,
                 folder: Path, compile: bool = False, extra: dict | None = None, args: tuple[str, ...] = (),
                 models: list[str] | None = None) -> dict:
    process, port = start_server(model_dir, max_batch, threads, folder / f"serve-{max_batch}-{compile}.log", compile,
                                 args)
    try:
        result = {"memory_at_start": memory_mb(process.pid)}
        stream_one(port, "warm up", 8, extra)
        for n in levels:
            result[str(n)] = {**load(port, n, requests, new_tokens, extra, models), **memory_mb(process.pid)}
        return result
    finally:
        process.terminate()
        process.wait(60)


def memory_lines(folder: Path, args) -> list[dict]:
    """Per model shape: the slot cache against the pool, memory and tokens/s at 1/8/32 clients."""
    lines = []
    for label, shape in (("quickstart", QUICKSTART), ("smollm2-135m-8k", SMOL)):
        model_dir = make_model_dir(folder, shape=shape)
        kinds = {}
        for kind, extra_args in (("slots", ("serve.kv_slots=true",)), ("pool", ())):
            kinds[kind] = serve_levels(model_dir, 32, args.threads, LEVELS, args.requests, args.new_tokens, folder,
                                       args=extra_args)
        lines.append({"benchmark": "serve", "measure": "kv_cache_memory", "model": label, "shape": shape,
                      "threads": args.threads, "new_tokens": args.new_tokens, "requests_per_client": args.requests,
                      **kinds,
                      "start_rss_mb_slots_vs_pool": [kinds["slots"]["memory_at_start"].get("rss_mb"),
                                                     kinds["pool"]["memory_at_start"].get("rss_mb")],
                      "tokens_per_s_32_clients_pool_vs_slots": round(
                          kinds["pool"]["32"]["tokens_per_s"] / kinds["slots"]["32"]["tokens_per_s"], 2)})
    return lines


def system_prompt(model_dir: Path, tokens: int) -> tuple[str, int]:
    """A system prompt of about `tokens` tokens of the model's tokenizer, and its exact count."""
    from lmsmith.model.directory import load_model_dir

    _, tokenizer = load_model_dir(model_dir)
    text = "You are the support assistant of a shipping company. Answer briefly, kindly and precisely. " * 60
    text = tokenizer.decode(tokenizer.encode(text)[:tokens])
    return text, len(tokenizer.encode(text))


def prefix_line(folder: Path, args, requests: int = 8) -> dict:
    """Time to first token, one request after another, each a shared system prompt and its own question."""
    model_dir = make_model_dir(folder, 1024)
    system, count = system_prompt(model_dir, 500)
    result = {}
    for label, extra_args in (("sharing", ()), ("no_sharing", ("serve.share_prefixes=false",))):
        process, port = start_server(model_dir, 32, args.threads, folder / f"prefix-{label}.log", args=extra_args)
        try:
            stream_one(port, system + "Question 0: where is it?", 4)  # the first puts the prefix in the pool
            ttfts = sorted(stream_one(port, system + f"Question {r + 1}: where is my parcel?", 4)[0]
                           for r in range(requests))
        finally:
            process.terminate()
            process.wait(60)
        result[label] = {"ttft_median_ms": round(statistics.median(ttfts) * 1000, 1),
                         "ttft_min_ms": round(ttfts[0] * 1000, 1)}
    return {"benchmark": "serve", "measure": "shared_system_prompt_ttft", "model": dict(MODEL, block_size=1024),
            "threads": args.threads, "system_prompt_tokens": count, "requests": requests, **result,
            "ttft_median_sharing_vs_not": round(result["sharing"]["ttft_median_ms"]
                                                / result["no_sharing"]["ttft_median_ms"], 2)}


def lora_adapter(base: Path, folder: Path, name: str, digit: int) -> Path:
    """A LoRA adapter of `base` after three steps of `lmsmith finetune --method lora` (its answers are beside
    the point; its cost per token is what is measured)."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Order {i}?", "response": f"{digit} days"}) + "\n"
                            for i in range(32)), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "lmsmith", "finetune", str(base), "--data", str(data), "-o",
                    str(folder / name), "--method", "lora", "--quiet", "train.steps=3",
                    "train.eval_every=3", "train.micro_batch=8", "train.peak_flops=1e11", "exact_match=0"],
                   check=True)
    return folder / name


def adapters_line(folder: Path, args) -> dict:
    """tokens/s of the base alone against the base and two adapters in one batch, on one server."""
    model_dir = make_model_dir(folder)
    runs = [lora_adapter(model_dir, folder, name, d) for d, name in enumerate(("support", "sql"))]
    served = ("--adapter", f"support={runs[0]}", "--adapter", f"sql={runs[1]}")
    base_name = model_dir.name
    levels = (8, 32)
    base = serve_levels(model_dir, 32, args.threads, levels, args.requests, args.new_tokens, folder, args=served)
    mixed = serve_levels(model_dir, 32, args.threads, levels, args.requests, args.new_tokens, folder, args=served,
                         models=["support", "sql", base_name])
    return {"benchmark": "serve", "measure": "adapters_in_one_batch", "model": MODEL, "threads": args.threads,
            "new_tokens": args.new_tokens, "requests_per_client": args.requests, "base_alone": base,
            "support_sql_and_base": mixed,
            "tokens_per_s_mixed_vs_base": {n: round(mixed[str(n)]["tokens_per_s"] / base[str(n)]["tokens_per_s"], 2)
                                           for n in levels}}


def hf_pipeline(model_dir: Path, new_tokens: int, prompts: list[str]) -> dict | None:
    """transformers' own text-generation pipeline on the same weights, or None without transformers."""
    try:
        from transformers import PreTrainedTokenizerFast, pipeline
    except ImportError:
        return None
    from lmsmith.interop.convert import ours_to_hf_model
    from lmsmith.model.directory import load_model_dir

    model, tokenizer = load_model_dir(model_dir)
    hf_model = ours_to_hf_model(model, eot_id=tokenizer.eot_id).eval()
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token=tokenizer.eot_token,
                                           pad_token=tokenizer.eot_token, padding_side="left")
    generator = pipeline("text-generation", model=hf_model, tokenizer=hf_tokenizer, device="cpu")
    # every prompt writes exactly new_tokens tokens (no stopping at end-of-text), so tokens/s is exact
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, return_full_text=False,
                  pad_token_id=tokenizer.eot_id)
    generator(prompts[0], **kwargs)  # warm-up
    result = {}
    for batch in (1, 32):
        started = time.perf_counter()
        generator(prompts, batch_size=batch, **kwargs)
        result[f"batch_{batch}_tokens_per_s"] = round(len(prompts) * new_tokens / (time.perf_counter() - started), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2, help="completions each client streams, one after another")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of the model, in both servers and the pipeline (1: the clients need a core)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled server")
    parser.add_argument("--memory", action="store_true",
                        help="only the slot cache against the pool: memory and tokens/s, two model shapes")
    parser.add_argument("--prefix", action="store_true",
                        help="only time to first token with a shared 500-token system prompt, sharing on and off")
    parser.add_argument("--adapters", action="store_true",
                        help="only tokens/s of the base alone against two adapters and the base in one batch")
    parser.add_argument("--schema-only", action="store_true",
                        help="only the batched server, without and with a JSON schema on every request")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.memory or args.prefix or args.adapters:  # one JSON line per measurement asked for
            lines = memory_lines(folder, args) if args.memory else []
            lines += [prefix_line(folder, args)] if args.prefix else []
            lines += [adapters_line(folder, args)] if args.adapters else []
            for line in lines:
                print(json.dumps(line), flush=True)
            return
        model_dir = make_model_dir(folder)
        batched = serve_levels(model_dir, 32, args.threads, LEVELS, args.requests, args.new_tokens, folder)
        with_schema = serve_levels(model_dir, 32, args.threads, LEVELS, args.requests, args.new_tokens, folder,
                                   extra=SCHEMA_FORMAT)
        if args.schema_only:
            print(json.dumps({"benchmark": "serve", "model": MODEL, "device": "cpu", "threads": args.threads,
                              "new_tokens": args.new_tokens, "requests_per_client": args.requests,
                              "batched": batched, "with_schema": with_schema}))
            return
        single = serve_levels(model_dir, 1, args.threads, (1, 32), args.requests, args.new_tokens, folder)
        compiled = None
        if not args.no_compile:
            compiled = serve_levels(model_dir, 32, args.threads, LEVELS, args.requests, args.new_tokens, folder,
                                    compile=True)
        prompts = [f"Request {c}.0: tell me a story about the sea. " * 2 for c in range(32)]
        hf = hf_pipeline(model_dir, args.new_tokens, prompts)
    result = {
        "benchmark": "serve", "model": MODEL, "device": "cpu", "threads": args.threads,
        "new_tokens": args.new_tokens, "requests_per_client": args.requests,
        "batched": batched, "with_schema": with_schema, "one_at_a_time": single, "compiled": compiled,
        "hf_pipeline": hf,
        "throughput_32_clients_vs_one_at_a_time": round(
            batched["32"]["tokens_per_s"] / single["32"]["tokens_per_s"], 2),
        "ttft_median_8_clients_vs_1": round(batched["8"]["ttft_median_ms"] / batched["1"]["ttft_median_ms"], 2),
    }
    if compiled is not None:
        result["compiled_vs_batched_tokens_per_s"] = {
            n: round(compiled[n]["tokens_per_s"] / batched[n]["tokens_per_s"], 2) for n in batched}
    if hf is not None:
        result["throughput_32_clients_vs_hf_pipeline_batch_1"] = round(
            batched["32"]["tokens_per_s"] / hf["batch_1_tokens_per_s"], 2)
        result["throughput_32_clients_vs_hf_pipeline_batch_32"] = round(
            batched["32"]["tokens_per_s"] / hf["batch_32_tokens_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
