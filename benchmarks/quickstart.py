"""The quickstart as a learner meets it: build time per stage, test bits per byte, and code that parses.

Runs `lmsmith build` (the default recipe, plus any overrides given) into a fresh work directory
in its own process, exactly as the README's first command does after the install, then scores:

    seconds       the whole command (report and explanation included) and each stage (build.json)
    test          loss, perplexity and bits per byte on the held-out test split (eval/result.json)
    unseen        bits per byte on third-party pure-Python source installed beside lmsmith (PyYAML, Jinja2,
                  markdown-it-py: about 950 KB the model never trained on), scored by `lmsmith eval --text`,
                  with gzip -9, bzip2 -9 and xz -9e on the same bytes
    peak_rss_gb   the largest resident memory of the build's processes
    parse_share   over `--samples` completions at the recipe's sampling settings (its prompts in
                  turn, seeds 0, 1, ...): the share of each completion's characters that belong to
                  the longest prefix, cut at a line end, that Python's `ast` accepts after the
                  prompt; a block left open at the cut is closed with `pass` first. 1.0 is code that
                  parses to the end; a sample that never parses scores 0.

Prints one JSON line. Time it alone on the machine: another busy process halves a 2-core CPU.

    python benchmarks/quickstart.py [--samples 20] [--keep DIR] [--cpu-class avx2] [section.key=value ...]

`--cpu-class avx2` runs the build as a CPU with only AVX2 would: fp32, and torch's, MKL's and
oneDNN's kernels held to AVX2 (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA).
It calibrates that class on a machine of the other; say so beside its numbers.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def closes(code: str) -> bool:
    """The code parses as it is, or with `pass` closing a block its last line opened."""
    if parses(code):
        return True
    last = code.rstrip("\n").splitlines()[-1] if code.strip() else ""
    indent = len(last) - len(last.lstrip())
    return any(parses(code.rstrip() + "\n" + " " * (indent + extra) + "pass\n") for extra in (4, 0))


def parse_share(prompt: str, completion: str) -> float:
    """Share of `completion` in the longest line-end prefix that parses after `prompt`."""
    if not completion:
        return 0.0
    best = 0
    ends = [i + 1 for i, c in enumerate(completion) if c == "\n"] + [len(completion)]
    for end in ends:
        if closes(prompt + completion[:end]):
            best = end
    return best / len(completion)


def sample_scores(workdir: Path, n: int) -> list[float]:
    """`n` completions of the recipe's prompts at its settings, each scored by parse_share."""
    import yaml

    from lmsmith.model.decoding import generate
    from lmsmith.model.directory import load_model_dir
    from lmsmith.schema.generate import GenerationConfig

    recipe = yaml.safe_load((workdir / "recipe.yaml").read_text())
    settings = recipe.get("generate", {})
    prompts = settings.get("prompts") or [""]
    model, tokenizer = load_model_dir(workdir / "runs" / "main")
    scores = []
    for i in range(n):
        prompt = prompts[i % len(prompts)]
        config = GenerationConfig(max_new_tokens=settings.get("max_new_tokens", 80),
                                  temperature=settings.get("temperature", 0.8), top_k=settings.get("top_k"),
                                  top_p=settings.get("top_p"), seed=i)
        completion = generate(model, tokenizer, [prompt], config)[0]
        scores.append(parse_share(prompt, completion))
    return scores


UNSEEN_PACKAGES = ("yaml", "jinja2", "markdown_it")  # pure Python, installed with lmsmith, never in its corpus
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def unseen_python() -> tuple[list[Path], dict[str, str]]:
    """The .py files of the unseen packages, sorted, and the packages' versions (the bytes depend on them)."""
    from importlib import metadata, util

    files, versions = [], {}
    for package in UNSEEN_PACKAGES:
        folder = Path(util.find_spec(package).origin).parent
        files += sorted(folder.rglob("*.py"))
        dist = {"yaml": "PyYAML", "jinja2": "Jinja2", "markdown_it": "markdown-it-py"}[package]
        versions[dist] = metadata.version(dist)
    return files, versions


def score_unseen(workdir: Path, env: dict) -> dict:
    """`lmsmith eval --text` of the trained model on the unseen packages: its bits per byte and the compressors'."""
    files, versions = unseen_python()
    command = [sys.executable, "-m", "lmsmith", "eval", str(workdir / "runs" / "main"), "--json",
               "--text", *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"lmsmith eval --text failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    return {"bits_per_byte": round(scored["bits_per_byte"], 4), "bytes": scored["bytes"],
            "compressors": {k: round(v, 4) for k, v in scored["compressors"].items()}, "packages": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None, help="build into DIR and keep it (default: a temp dir)")
    parser.add_argument("--minutes", type=float, default=None, help="pass --minutes to lmsmith build")
    parser.add_argument("--cpu-class", choices=["native", "avx2"], default="native",
                        help="avx2: run as a CPU with only AVX2 and fp32 would (see the module's docstring)")
    parser.add_argument("overrides", nargs="*", help="section.key=value for the recipe")
    args = parser.parse_args()
    env = {**os.environ, **(AVX2_ENV if args.cpu_class == "avx2" else {})}
    overrides = args.overrides + (["train.precision=fp32"] if args.cpu_class == "avx2" else [])

    with tempfile.TemporaryDirectory(prefix="lmsmith-quickstart-") as tmp:
        workdir = args.keep or Path(tmp) / "work"
        command = [sys.executable, "-m", "lmsmith", "build", "-o", str(workdir), *overrides]
        if args.minutes:
            command += ["--minutes", str(args.minutes)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        peak_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        if done.returncode != 0:
            raise SystemExit(f"lmsmith build failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        stages = json.loads((workdir / "build.json").read_text())["stages"]
        test = json.loads((workdir / "eval" / "result.json").read_text())
        train = json.loads((workdir / "runs" / "main" / "manifest.json").read_text())["counts"]
        sizing_file = workdir / "runs" / "main" / "sizing.json"
        sized = json.loads(sizing_file.read_text()) if sizing_file.is_file() else None
        unseen = score_unseen(workdir, env)
        scores = sample_scores(workdir, args.samples)
    print(json.dumps({
        "benchmark": "quickstart",
        "cpu_class": args.cpu_class,
        "overrides": overrides + ([f"--minutes {args.minutes}"] if args.minutes else []),
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak_rss_gb, 2),
        "sizing": sized and {"chosen": sized["candidate"], "precision": sized["precision"],
                             "matmul_gflops": round(sized["matmul_flops"] / 1e9),
                             "probe_seconds": sized["probe_seconds"],
                             "tokens_per_s": [round(m["tokens_per_s"]) for m in sized["measured"]]},
        "stage_seconds": {name: record.get("seconds") for name, record in stages.items()},
        "train": {k: train.get(k) for k in ("steps", "tokens", "seconds", "val_loss")},
        "test": {k: test.get(k) for k in ("loss", "perplexity", "bits_per_byte", "compressors")},
        "unseen_python": unseen,
        "parse_share": round(statistics.mean(scores), 3),
        "parse_share_each": [round(s, 2) for s in scores],
    }))


if __name__ == "__main__":
    main()
