"""Fine-tuning: turn a general model into a specialist, on the same training engine as pretraining.

Its settings (the finetune: section, and fine-tuning's defaults for train:) are in lmsmith.schema.finetune;
the chat templates in lmsmith.text.chat_template.

    job.py            `lmsmith finetune`: start point -> data -> what learns -> engine -> report
    start.py          start points: our run/model dirs, Hugging Face dirs, hf:NAME
    instruct_data.py  JSONL -> checked examples -> tokens with the loss on answers only -> batches
    vocabulary.py     special tokens a template needs, added to tokenizer and embedding
    domain_text.py    text for continued pretraining and for the general-skill guard
    methods.py        full fine-tuning (optionally freezing parts) or LoRA
    lora.py           the LoRA layer: inject, merge, adapter state, base hash
    adapter_dir.py    the adapter directory, and `--merge`
    answers.py        greedy answers and exact-match accuracy
    preferences.py    DPO's pairs: JSONL -> tokens -> batches;  dpo.py  its loss, and the cached reference
    rl_tasks.py       RL's data (exam items) and reward (the exam's checkers, or rl.reward), held-out pass@1
    rollouts.py       RL's batches: a group of completions per prompt, sampled by generate's decoder, scored
    rl_loss.py        RL's objective: group-relative advantages, clipped policy gradient, KL to the start
    synth_items.py    a synth output directory as --data: the items file of the kind the mode reads
"""

from __future__ import annotations

from pathlib import Path

from lmsmith.core.config import apply_overrides
from lmsmith.core.errors import UserError
from lmsmith.schema.finetune import finetune_from_sections
from lmsmith.text.chat_template import get_template


def finetune(base: str, data: str, out: str | Path, overrides: list[str] = (), quiet: bool = False,
             **flags) -> dict:
    """Fine-tune `base` on `data` into the run directory `out`; returns the report.

    `flags` are keys of the finetune section (mode, method, template); `overrides` are `key=value`
    items such as `lora.rank=16` or `train.lr=1e-4` (a key without `train.` is the finetune section's).
    """
    from lmsmith.finetune.job import finetune as finetune_run

    routed = [o if o.split("=", 1)[0].split(".")[0] in ("train", "finetune") else f"finetune.{o}" for o in overrides]
    config = finetune_from_sections(apply_overrides({"finetune": dict(flags)}, routed))
    get_template(config.finetune.template)
    return finetune_run(base, data, out, config, quiet=quiet)


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False, force: bool = False,
        resume: str | None = None) -> dict:
    """The finetune stage: a run directory at `out`, or with `--merge`, an adapter folded into its base.

    An interrupted run in `out` always continues from its newest checkpoint; `resume` is what `build` passes to
    a resumable step (it removes the folder itself when the step's settings changed), so it needs no reading."""
    from lmsmith.finetune.job import finetune as finetune_run

    get_template(config.finetune.template)  # before any work: a misspelt template is refused at once
    base, data = inputs.get("base"), inputs.get("data")
    if inputs.get("merge"):
        if base or data:
            raise UserError("--merge takes only the run (or adapter directory), -o and optionally --base: "
                            "e.g. lmsmith finetune --merge runs/sql -o models/sql-merged")
        from lmsmith.core.manifest import read_manifest
        from lmsmith.finetune.adapter_dir import merge_adapter

        return read_manifest(merge_adapter(inputs["merge"], out, base=inputs.get("merge_base"), force=force))
    if inputs.get("merge_base"):
        raise UserError("--base goes with --merge; to fine-tune, give the start model as the first argument")
    if not base:
        raise UserError("give the start model (a run or model directory, a Hugging Face directory, or hf:NAME)")
    if not data:
        raise UserError("--data is missing: "
                        "give the domain data (a JSONL file for --mode instruct, dpo or rl; text for --mode continue)")
    return finetune_run(base, data, out, config, quiet=quiet, force=force)
