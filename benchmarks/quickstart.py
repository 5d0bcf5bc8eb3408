"""The quickstart as a learner meets it: build time per stage, test bits per byte, and code that parses.

Runs `lmsmith build` (the default recipe, plus any overrides given) into a fresh work directory
in its own process, exactly as the README's first command does after the install, then scores:

    seconds       the whole command (report and explanation included) and each stage (build.json)
    test          loss, perplexity and bits per byte on the held-out test split (eval/result.json)
    parse_share   over `--samples` completions at the recipe's sampling settings (its prompts in
                  turn, seeds 0, 1, ...): the share of each completion's characters that belong to
                  the longest prefix, cut at a line end, that Python's `ast` accepts after the
                  prompt; a block left open at the cut is closed with `pass` first. 1.0 is code that
                  parses to the end; a sample that never parses scores 0.

Prints one JSON line. Time it alone on the machine: another busy process halves a 2-core CPU.

    python benchmarks/quickstart.py [--samples 20] [--keep DIR] [section.key=value ...]
"""

from __future__ import annotations

import argparse
import ast
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None, help="build into DIR and keep it (default: a temp dir)")
    parser.add_argument("--minutes", type=float, default=None, help="pass --minutes to lmsmith build")
    parser.add_argument("overrides", nargs="*", help="section.key=value for the recipe")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lmsmith-quickstart-") as tmp:
        workdir = args.keep or Path(tmp) / "work"
        command = [sys.executable, "-m", "lmsmith", "build", "-o", str(workdir), *args.overrides]
        if args.minutes:
            command += ["--minutes", str(args.minutes)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"lmsmith build failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        stages = json.loads((workdir / "build.json").read_text())["stages"]
        test = json.loads((workdir / "eval" / "result.json").read_text())
        train = json.loads((workdir / "runs" / "main" / "manifest.json").read_text())["counts"]
        scores = sample_scores(workdir, args.samples)
    print(json.dumps({
        "benchmark": "quickstart",
        "overrides": args.overrides + ([f"--minutes {args.minutes}"] if args.minutes else []),
        "seconds": round(seconds, 1),
        "stage_seconds": {name: record.get("seconds") for name, record in stages.items()},
        "train": {k: train.get(k) for k in ("steps", "tokens", "seconds", "val_loss")},
        "test": {k: test.get(k) for k in ("loss", "perplexity", "bits_per_byte")},
        "parse_share": round(statistics.mean(scores), 3),
        "parse_share_each": [round(s, 2) for s in scores],
    }))


if __name__ == "__main__":
    main()
