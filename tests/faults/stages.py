"""The table of stages that write: for each, a minimal valid command line on the session's tiny outputs.

Every fault class in test_every_stage.py runs over this one table, so a new stage is covered by adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TINY_MODEL = ("model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=32")
TINY_TRAIN = ("train.steps=2", "train.warmup_steps=0", "train.batch_tokens=256", "train.micro_batch=8",
              "train.max_minutes=null", "train.device=cpu", "train.eval_every=2", "train.eval_batches=1",
              "train.save_every=2")


@dataclass(frozen=True)
class StageRow:
    name: str
    reads: str  # the key of `made` this stage reads (the input the special-file faults replace)
    line: tuple[str, ...]  # the command, with {input} and {out} (and {made-key}) to fill in
    out_name: str = "out"  # what -o is called (export writes a file)
    in_place: bool = False  # written in place under out/.lock (a run that resumes), not renamed into place
    rerun: tuple[str, ...] = field(default=())  # what the same command adds to continue after a crash

    def argv(self, made: dict[str, Path], out: Path, given_input: Path | None = None) -> list[str]:
        values = {key: str(path) for key, path in made.items()}
        values.update(input=str(given_input or made[self.reads]), out=str(out))
        return [part.format(**values) for part in self.line]


STAGES = [
    StageRow("curate", "corpus", ("curate", "{input}", "-o", "{out}", "--workers", "1", "--quiet")),
    StageRow("tokenizer", "data", ("tokenizer", "train", "{input}", "-o", "{out}", "tokenizer.vocab_size=300")),
    StageRow("tokenize", "data", ("tokenize", "{input}", "-t", "{tokenizer}", "-o", "{out}")),
    StageRow("init", "tokenizer", ("init", "--tokenizer", "{input}", "-o", "{out}", *TINY_MODEL)),
    StageRow("train", "tokens", ("train", "{input}", "-o", "{out}", *TINY_MODEL, *TINY_TRAIN), in_place=True,
             rerun=("--resume", "auto")),
    StageRow("finetune", "run", ("finetune", "{input}", "--data", "{kv}", "-o", "{out}", "--quiet", "train.steps=2",
                                 "train.micro_batch=4", "train.device=cpu"), in_place=True),
    StageRow("eval", "run", ("eval", "{input}", "-o", "{out}", "--split", "val")),
    StageRow("generate", "run", ("generate", "{input}", "-o", "{out}", "--prompt", "def", "--max-new-tokens", "4")),
    StageRow("report", "run", ("report", "{input}", "-o", "{out}", "--quiet")),
    StageRow("explain", "run", ("explain", "{input}", "def", "-o", "{out}")),
    StageRow("export", "run", ("export", "{input}", "-o", "{out}", "export.quant=f32"), out_name="model.gguf"),
]
