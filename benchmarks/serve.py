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

    blocks         (--blocks-only) memory and tokens/s of the slot cache (32 slots of the whole context)
                   against a block pool of --kv-cache-tokens, at the model's 256-token context and at 4,096

    python benchmarks/serve.py [--new-tokens 64] [--requests 2] [--no-compile] [--schema-only] [--blocks-only]
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


def make_model_dir(folder: Path, block_size: int | None = None) -> Path:
    """A byte-level BPE trained on a few standard-library modules (prompts of realistic token counts)."""
    import inspect
    import json as json_module
    import statistics as statistics_module

    texts = [inspect.getsource(m) for m in (json_module.decoder, json_module.encoder, statistics_module, string)]
    tokenizer = train_bpe(texts, vocab_size=MODEL["vocab_size"], show_progress=False)
    torch.manual_seed(0)
    shape = dict(MODEL, **({"block_size": block_size} if block_size else {}))
    model = GPT(parse_section(ModelConfig, shape, "model")).eval()
    return save_model_dir(folder / f"model-{shape['block_size']}", model, tokenizer, made_by="benchmark")


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


def load(port: int, clients: int, requests: int, new_tokens: int, extra: dict | None = None) -> dict:
    """`clients` threads, each streaming `requests` completions one after another."""
    ttfts, tokens, lock = [], [0], threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        start.wait()
        for r in range(requests):
            ttft, n = stream_one(port, f"Request {c}.{r}: tell me a story about the sea. " * 2, new_tokens, extra)
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
                 folder: Path, compile: bool = False, extra: dict | None = None, args: tuple[str, ...] = ()) -> dict:
    process, port = start_server(model_dir, max_batch, threads, folder / f"serve-{max_batch}-{compile}.log", compile,
                                 args)
    try:
        result = {"memory_at_start": memory_mb(process.pid)}
        stream_one(port, "warm up", 8, extra)
        for n in levels:
            result[str(n)] = {**load(port, n, requests, new_tokens, extra), **memory_mb(process.pid)}
        return result
    finally:
        process.terminate()
        process.wait(60)


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
    parser.add_argument("--blocks-only", action="store_true",
                        help="only the slot cache against the block pool, at two context lengths")
    parser.add_argument("--kv-cache-tokens", type=int, default=8192, help="the block pool's size, with --blocks-only")
    parser.add_argument("--schema-only", action="store_true",
                        help="only the batched server, without and with a JSON schema on every request")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.blocks_only:
            blocks = {}
            for context in (MODEL["block_size"], 4096):
                model_dir = make_model_dir(folder, context)
                for name, extra_args in (("slots", ()), ("blocks", ("--kv-cache-tokens", str(args.kv_cache_tokens)))):
                    blocks[f"{name}_context_{context}"] = serve_levels(
                        model_dir, 32, args.threads, LEVELS, args.requests, args.new_tokens, folder, args=extra_args)
            print(json.dumps({"benchmark": "serve", "model": MODEL, "device": "cpu", "threads": args.threads,
                              "new_tokens": args.new_tokens, "requests_per_client": args.requests,
                              "kv_cache_tokens": args.kv_cache_tokens, "blocks": blocks}))
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
