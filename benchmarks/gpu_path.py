"""The CUDA path in one run: bf16, torch.compile, FSDP on one GPU, MFU, nanoGPT, and shakespeare-char.

Run on a machine with one NVIDIA GPU (nothing here runs without one):

    python benchmarks/gpu_path.py --nanogpt PATH/TO/nanoGPT --text PATH/TO/tinyshakespeare.txt

Each part runs as its own process, as a user would run it, and the script prints one JSON line:

    device          the GPU, its bf16 support, torch and CUDA versions
    throughput      benchmarks/train_throughput.py on CUDA: the GPT-2 124M shape at block 1024
                    (bf16, torch.compile) with its MFU against the card's measured bf16 matrix
                    rate (target 0.5), and nanoGPT's own train.py at the same shapes (--nanogpt)
    fsdp            `lmsmith build quickstart --until train` under torchrun with one process and
                    train.parallel=fsdp: that it trains (exit code, final validation loss, seconds)
    generate        benchmarks/generate.py --device cuda: batch-1 decoding, eager and compiled, against
                    Hugging Face generate (eager, and with its static cache compiled)
    shakespeare     `lmsmith build shakespeare-char` on --text (the tiny Shakespeare file nanoGPT
                    uses): validation loss and minutes, beside nanoGPT's published 1.4697 in about
                    3 minutes on an A100

Parts whose input is missing (no --text, no --nanogpt) are skipped with a note. The machine need
not reach the internet: everything comes from the working tree and the paths given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

NANOGPT_SHAKESPEARE_VAL_LOSS = 1.4697  # nanoGPT's README, about 3 minutes on one A100


def run(command: list[str], cwd: Path | None = None, timeout: float = 1800) -> tuple[int, str, float]:
    """Exit code, combined output and seconds of one command."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, round(time.perf_counter() - started, 1)


def last_json_line(output: str) -> dict | None:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def final_val_loss(run_dir: Path) -> float | None:
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("counts", {}).get("val_loss")


def device_part() -> dict:
    return {"name": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported(),
            "torch": torch.__version__, "cuda": torch.version.cuda}


def throughput_part(nanogpt: Path | None) -> dict:
    command = [sys.executable, "benchmarks/train_throughput.py", "--steps", "20"]
    if nanogpt is not None:
        command += ["--nanogpt", str(nanogpt)]
    code, output, seconds = run(command)
    line = last_json_line(output)
    if code != 0 or line is None:
        return {"error": output.strip().splitlines()[-1:] or ["no output"], "seconds": seconds}
    gpt2 = line["shapes"].get("gpt2_124m", {})
    return {"gpt2_124m_mfu": gpt2.get("ours_gpt2", {}).get("mfu"), "target_mfu": 0.5,
            "gpt2_124m_tokens_per_s": gpt2.get("ours_gpt2", {}).get("tokens_per_s"),
            "nanogpt": {name: shape.get("nanogpt") for name, shape in line["shapes"].items()},
            "seconds": seconds, "line": line}


def generate_part() -> dict:
    code, output, seconds = run([sys.executable, "benchmarks/generate.py", "--device", "cuda"])
    line = last_json_line(output)
    if code != 0 or line is None:
        return {"error": output.strip().splitlines()[-1:] or ["no output"], "seconds": seconds}
    return {"seconds": seconds, "line": line}


def fsdp_part(work: Path) -> dict:
    out = work / "fsdp"
    command = [sys.executable, "-m", "lmsmith", "build", "quickstart", "-o", str(out), "--until", "train",
               "--nproc-per-node", "1", "train.parallel=fsdp", "train.steps=60", "train.eval_every=30", "--quiet"]
    code, output, seconds = run(command)
    return {"exit_code": code, "val_loss": final_val_loss(out / "runs" / "main"), "seconds": seconds,
            **({"error": output.strip().splitlines()[-1:]} if code else {})}


def shakespeare_part(text: Path | None, work: Path) -> dict:
    if text is None:
        return {"skipped": "give --text PATH (the tiny Shakespeare file nanoGPT uses)"}
    out = work / "shakespeare"
    command = [sys.executable, "-m", "lmsmith", "build", "shakespeare-char", f"tokenize.inputs=[{text}]",
               "-o", str(out), "--until", "train", "--quiet"]
    code, output, seconds = run(command, timeout=3600)
    return {"exit_code": code, "val_loss": final_val_loss(out / "runs" / "main"), "minutes": round(seconds / 60, 2),
            "nanogpt_val_loss": NANOGPT_SHAKESPEARE_VAL_LOSS,
            **({"error": output.strip().splitlines()[-1:]} if code else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, default=None, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--text", type=Path, default=None, help="tiny Shakespeare (input.txt) for shakespeare-char")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["throughput", "generate", "fsdp", "shakespeare"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this script measures the GPU path only")
    line: dict = {"benchmark": "gpu_path", "device": device_part()}
    with tempfile.TemporaryDirectory(prefix="lmsmith-gpu-") as tmp:
        work = Path(tmp)
        if "throughput" not in args.skip:
            line["throughput"] = throughput_part(args.nanogpt)
        if "generate" not in args.skip:
            line["generate"] = generate_part()
        if "fsdp" not in args.skip:
            line["fsdp"] = fsdp_part(work)
        if "shakespeare" not in args.skip:
            line["shakespeare"] = shakespeare_part(args.text, work)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
