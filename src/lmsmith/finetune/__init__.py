"""Fine-tuning: turn a general model into a specialist, on the same training engine as pretraining.

    run.py            `lmsmith finetune`: start point -> data -> what learns -> engine -> report
    start.py          start points: our run/model dirs, Hugging Face dirs, hf:NAME
    config.py         the finetune: section, and fine-tuning defaults for the train: section
    instruct_data.py  JSONL -> checked examples -> tokens with the loss on answers only -> batches
    templates.py      chat templates (chatml, plain, raw)
    vocabulary.py     special tokens a template needs, added to tokenizer and embedding
    domain_text.py    text for continued pretraining and for the general-skill guard
    methods.py        full fine-tuning (optionally freezing parts) or LoRA
    lora.py           the LoRA layer: inject, merge, adapter state, base hash
    adapter_dir.py    the adapter directory, and `--merge`
    answers.py        greedy answers and exact-match accuracy
"""

from __future__ import annotations

import re
from pathlib import Path

from lmsmith.errors import UserError

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def finetune(base: str, data: str, out: str | Path, config: str | Path | None = None, overrides: list[str] = (),
             quiet: bool = False, **flags) -> dict:
    """Fine-tune `base` on `data` into the run directory `out`; returns the report.

    `flags` are mode, method and template; `overrides` are `key=value` items such as
    `lora.rank=16` or `train.lr=1e-4`.
    """
    from lmsmith.finetune.config import load_finetune_config
    from lmsmith.finetune.run import finetune as run

    return run(base, data, out, load_finetune_config(config, list(overrides), **flags), quiet=quiet)


def finetune_cli(args) -> None:
    """`lmsmith finetune`: a run, or with --merge, an adapter folded into its base."""
    items = ([args.base] if args.base is not None else []) + list(args.overrides)
    positional = [a for a in items if not _OVERRIDE.match(a) or Path(a).exists()]
    overrides = [a for a in items if a not in positional]
    if args.merge:
        if positional or args.data or overrides or args.config:
            raise UserError("--merge takes only the run (or adapter directory), -o and optionally --base: "
                            "e.g. lmsmith finetune --merge runs/sql -o models/sql-merged")
        from lmsmith.finetune.adapter_dir import merge_adapter

        merge_adapter(args.merge, args.out, base=args.merge_base)
        return
    if args.merge_base:
        raise UserError("--base goes with --merge; to fine-tune, give the start model as the first argument")
    if len(positional) != 1:
        raise UserError("give exactly one start model (a run or model directory, a Hugging Face directory, or hf:NAME), "
                        f"got {len(positional)}: {' '.join(positional) or 'none'}")
    if not args.data:
        raise UserError("--data is missing: give the domain data (a JSONL file for --mode instruct, text for --mode continue)")
    finetune(positional[0], args.data, args.out, args.config, overrides, quiet=args.quiet,
             mode=args.mode, method=args.method, template=args.template)
