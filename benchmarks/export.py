"""GGUF export: seconds, file size and logit error per quantization; llama.cpp's speed beside ours.

A model directory (--model, e.g. SmolLM2-135M-Instruct from `lmsmith convert --from-gguf`; by default a
llama-shaped model of about 27M parameters with random weights, RoPE, RMSNorm, SwiGLU and grouped-query
attention) is exported once per quantization. Random weights are no guide to how much quantization costs a
trained model: measure a real one with --model. For each quantization:

    seconds      lmsmith.export.gguf.export_gguf, model directory to file
    mb           the file's size
    max_error    the largest logit difference against our model, on 2 x 128 tokens of English text
                 (the standard library's documentation of argparse and json), after
                 reading the file back (lmsmith convert --from-gguf dequantizes as transformers does)
    rel_error    max_error over the standard deviation of our logits
    argmax       the fraction of positions whose most likely next token is the same

When llama-cpp-python is installed, llama.cpp generates greedily from the f16 and q8_0 files and
our KV-cache loop from the model directory (same prompt, same number of tokens, one thread each):
tokens/s of both, their ratio, and how many of llama.cpp's tokens equal ours on the f32 file.
Prints one JSON line.

    python benchmarks/export.py [--model MODEL_DIR] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lmsmith.export.gguf import export_gguf
from lmsmith.interop.gguf_import import import_gguf
from lmsmith.model.decoding import generate_tokens, lay_out_for_decoding
from lmsmith.model.directory import load_model_dir, save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import train_bpe

QUANTS = ("f32", "f16", "bf16", "q8_0", "q5_1", "q4_1", "q4_0")
MODEL = dict(block_size=512, n_layer=8, n_head=8, n_kv_head=2, n_embd=512, tie_embeddings=False)


def make_model_dir(path: Path) -> Path:
    text = [Path(torch.__file__).parent.joinpath(name).read_text(encoding="utf-8") for name in ("functional.py",
                                                                                               "serialization.py")]
    tokenizer = train_bpe(text, 4096, show_progress=False)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, **MODEL))
    with torch.no_grad():  # norms away from exactly one
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    save_model_dir(path, model, tokenizer, made_by="benchmark")
    return path


def our_speed(model: GPT, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    config = GenerationConfig(max_new_tokens=new_tokens, temperature=0)
    start = time.perf_counter()
    tokens = [step[0] for step in generate_tokens(model, [prompt], config)]
    return len(tokens) / (time.perf_counter() - start), tokens


def llama_cpp_speed(llama_cpp, file: Path, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    llm = llama_cpp.Llama(model_path=str(file), n_ctx=MODEL["block_size"], n_threads=1, verbose=False)
    tokens = []
    start = time.perf_counter()
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        tokens.append(token)
        if len(tokens) == new_tokens:
            break
    llm.close()
    return len(tokens) / (time.perf_counter() - start), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model directory (default: a random 27M-parameter llama)")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="lmsmith-export-bench-"))
    model_dir = args.model or make_model_dir(work / "model")
    ours, tokenizer = load_model_dir(model_dir)
    ids = tokenizer.encode(inspect.getdoc(argparse) + "\n" + inspect.getdoc(json) + "\n" + inspect.getdoc(shutil))
    idx = torch.tensor([ids[:128], ids[128:256]])
    with torch.no_grad():
        reference = ours(idx).logits
    result: dict = {"model": str(args.model or "random llama"), "parameters": ours.num_params(), "quants": {}}
    for quant in QUANTS:
        file = work / f"model-{quant}.gguf"
        start = time.perf_counter()
        export_gguf(model_dir, file, quant)
        seconds = time.perf_counter() - start
        with contextlib.redirect_stdout(io.StringIO()):  # keep stdout to the one JSON line
            import_gguf(file, work / f"back-{quant}")
        back, _ = load_model_dir(work / f"back-{quant}")
        shutil.rmtree(work / f"back-{quant}")
        with torch.no_grad():
            logits = back(idx).logits
        error = float((logits - reference).abs().max())
        result["quants"][quant] = {
            "seconds": round(seconds, 2), "mb": round(file.stat().st_size / 1e6, 2), "max_error": round(error, 5),
            "rel_error": round(error / float(reference.std()), 5),
            "argmax": round(float((logits.argmax(-1) == reference.argmax(-1)).float().mean()), 4),
        }
    try:
        import llama_cpp
    except ImportError:
        result["llama_cpp"] = "not installed (pip install llama-cpp-python)"
    else:
        prompt = ids[:16]
        model = lay_out_for_decoding(ours)
        our_tps, our_tokens = our_speed(model, prompt, args.new_tokens)
        speeds = {"new_tokens": len(our_tokens), "lmsmith_f32_tokens_per_s": round(our_tps, 1)}
        for quant in ("f32", "f16", "q8_0"):
            tps, tokens = llama_cpp_speed(llama_cpp, work / f"model-{quant}.gguf", prompt, args.new_tokens)
            speeds[f"llama_cpp_{quant}_tokens_per_s"] = round(tps, 1)
            speeds[f"llama_cpp_{quant}_vs_lmsmith"] = round(tps / our_tps, 2)
            if quant == "f32":
                speeds["f32_tokens_equal"] = f"{sum(a == b for a, b in zip(tokens, our_tokens))}/{len(our_tokens)}"
        result["llama_cpp"] = speeds
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
