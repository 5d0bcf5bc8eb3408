"""Generation speed at batch 1: our KV-cache decode loop, eager and compiled, against references (CPU; --device cuda).

    kv_cache             lmsmith.model.decoding.generate_tokens (prefill, then one token per forward
                         pass) on the model as `lmsmith generate` prepares it (lay_out_for_decoding)
    kv_cache_row_major   the same loop on the model exactly as loaded (nn.Linear's weight layout)
    kv_cache_compiled    the same loop through compiled_decode.CompiledDecoder (`lmsmith generate --compile`)
    no_cache             the model recomputing the whole context for every token (nanoGPT's sample)
    hf_generate          transformers' GPT2LMHeadModel.generate(use_cache=True) on the same weights
    hf_generate_compiled the same with Hugging Face's own fast path: a static cache and
                         torch.compile of the model's forward (their documented recipe)

A ~14M-parameter (10.6M without embeddings) GPT-2-shaped model with random weights (speed does
not depend on them) greedily writes the same number of tokens from the same prompt in each.
After a warm-up of the same length (which is when the compiled ones compile: its seconds are
reported apart) the methods take turns, round after round, so load from other processes falls
on all of them alike; each reports its best round (as timeit does: the least disturbed).
Prints one JSON line: tokens/s of each, the ratios, and how many of the generated tokens
agree with ours (greedy decoding of the same weights: all of them, barring float ties).

    python benchmarks/generate.py [--new-tokens 256] [--rounds 5] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from lmsmith.core.config import parse_section
from lmsmith.interop.convert import ours_to_hf_model
from lmsmith.model.compiled_decode import CompiledDecoder
from lmsmith.model.decoding import generate_tokens, lay_out_for_decoding
from lmsmith.model.transformer import GPT
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.model import ModelConfig

MODEL = dict(preset="gpt2", vocab_size=8192, block_size=512, n_layer=6, n_head=6, n_embd=384, dropout=0.0)


def with_kv_cache(model: GPT, prompt: list[int], new_tokens: int, decoder=None) -> list[int]:
    config = GenerationConfig(max_new_tokens=new_tokens, temperature=0)
    return [step[0] for step in generate_tokens(model, [prompt], config, decoder=decoder)]


@torch.inference_mode()
def without_cache(model: GPT, prompt: list[int], new_tokens: int) -> list[int]:
    idx = torch.tensor([prompt], device=next(model.parameters()).device)
    for _ in range(new_tokens):
        logits = model(idx[:, -model.config.block_size:], last_only=True).logits[:, -1]
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx[0, len(prompt):].tolist()


@torch.inference_mode()
def with_hf_generate(hf_model, prompt: list[int], new_tokens: int, **options) -> list[int]:
    idx = torch.tensor([prompt], device=hf_model.device)
    out = hf_model.generate(
        idx, attention_mask=torch.ones_like(idx), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None, **options,
    )
    return out[0, len(prompt):].tolist()


def hf_compiled(hf_model):
    """A copy of the Hugging Face model whose forward is compiled, for generate with a static cache."""
    model = copy.deepcopy(hf_model)
    model.forward = torch.compile(model.forward, fullgraph=True)
    return model


def race(runs: dict, rounds: dict[str, int], new_tokens: int, warm_up: dict[str, int] | None = None
         ) -> tuple[dict[str, float], dict[str, list[int]], dict[str, float]]:
    """Best tokens/s of each run over its rounds, taking turns; each run's tokens; and each
    warm-up's seconds (`warm_up` gives a run's warm-up length, by default 16 tokens)."""
    tokens, warm_up_s = {}, {}
    for name, run in runs.items():
        start = time.perf_counter()
        tokens[name] = run((warm_up or {}).get(name, 16))
        warm_up_s[name] = time.perf_counter() - start
    best = {name: 0.0 for name in runs}
    for r in range(max(rounds.values())):
        for name, run in runs.items():
            if r >= rounds[name]:
                continue
            start = time.perf_counter()
            tokens[name] = run(new_tokens)
            best[name] = max(best[name], new_tokens / (time.perf_counter() - start))
            assert len(tokens[name]) == new_tokens
    return best, tokens, warm_up_s


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per method (the best counts)")
    parser.add_argument("--no-cache-rounds", type=int, default=1, help="timed runs of the slow no-cache loop")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--no-compile", action="store_true", help="skip the two compiled methods")
    parser.add_argument("--device", default="cpu", help="cpu (the default), or cuda for benchmarks/gpu_path.py")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    torch.manual_seed(0)
    model = GPT(parse_section(ModelConfig, MODEL, "model")).eval().to(args.device)
    hf_model = ours_to_hf_model(model)
    fast = lay_out_for_decoding(copy.deepcopy(model))
    prompt = torch.randint(0, MODEL["vocab_size"], (args.prompt_tokens,)).tolist()

    runs = {
        "kv_cache": lambda n: with_kv_cache(fast, prompt, n),
        "kv_cache_row_major": lambda n: with_kv_cache(model, prompt, n),
        "hf_generate": lambda n: with_hf_generate(hf_model, prompt, n),
        "no_cache": lambda n: without_cache(model, prompt, n),
    }
    compiled = {}
    if not args.no_compile:
        decoder, hf_fast = CompiledDecoder(lay_out_for_decoding(copy.deepcopy(model))), hf_compiled(hf_model)
        compiled = {
            "kv_cache_compiled": lambda n: with_kv_cache(decoder.model, prompt, n, decoder=decoder),
            "hf_generate_compiled": lambda n: with_hf_generate(hf_fast, prompt, n, cache_implementation="static"),
        }
    runs |= compiled
    rounds = {name: args.rounds for name in runs} | {"no_cache": args.no_cache_rounds}
    # The compiled ones warm up at the measured length: HF's static cache is sized by it (a new size recompiles).
    rate, tokens, warm_up_s = race(runs, rounds, args.new_tokens, warm_up={name: args.new_tokens for name in compiled})
    ratios = {}
    if compiled:
        ratios = {
            "compiled_vs_hf_generate": round(rate["kv_cache_compiled"] / rate["hf_generate"], 2),
            "compiled_vs_hf_generate_compiled": round(rate["kv_cache_compiled"] / rate["hf_generate_compiled"], 2),
            "compiled_vs_kv_cache": round(rate["kv_cache_compiled"] / rate["kv_cache"], 2),
            "compiled_warm_up_s": {name: round(warm_up_s[name], 1) for name in compiled},  # compiling, mostly
        }

    print(json.dumps({
        "benchmark": "generate",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "parameters": model.num_params(),
        "model": {k: MODEL[k] for k in ("n_layer", "n_embd", "n_head", "vocab_size", "block_size")},
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "tokens_per_s": {name: round(r, 1) for name, r in rate.items()},
        "speedup_vs_no_cache": round(rate["kv_cache"] / rate["no_cache"], 2),
        "speedup_vs_hf_generate": round(rate["kv_cache"] / rate["hf_generate"], 2),
        "row_major_vs_hf_generate": round(rate["kv_cache_row_major"] / rate["hf_generate"], 2),
        **ratios,
        "targets": {"vs_no_cache": 5.0, "vs_hf_generate": 1.5, "compiled_vs_hf_generate": 2.0},
        "tokens_agreeing_with_kv_cache": {
            name: agreeing_prefix(tokens["kv_cache"], t) for name, t in tokens.items() if name != "kv_cache"
        },
        "rounds": args.rounds,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
