"""`lmsmith finetune`: a general model becomes a specialist, on the training engine of `lmsmith train`.

    load the start point (our run/model dir, a Hugging Face dir, hf:NAME)
    read the domain data:  instruct  JSONL -> chat template -> loss on answers only
                           continue  text -> a tokens directory -> windows, epoch by epoch
                           dpo       pairs -> the preference loss against the start's cached log-probs
                           rl        exam items -> completions sampled each step -> reward -> policy gradient
    choose what learns:    full (optionally freezing embeddings / the first N blocks) or LoRA
    score before:          domain validation loss, general validation loss (if given)
    train:                 the training engine's own loop, with this data and this parameter set;
                           it validates every train.eval_every steps, keeps the best model and
                           stops early when the validation loss stops improving
    score after, report:   RUN/finetune.json and a summary of what the specialty cost

The run directory is the engine's, plus the report:

    RUN/model/            the fine-tuned model, an ordinary model directory (`lmsmith generate RUN`)
    RUN/model/adapter/    LoRA only: the adapter alone, with the hash of its base (`--merge` input)
    RUN/best/             the model at its best validation (RUN/model is a copy of it with restore_best)
    RUN/metrics.jsonl  RUN/checkpoints/  RUN/config.yaml  RUN/manifest.json  RUN/finetune.json

With LoRA, RUN/model holds the adapter already folded into the base, so everything that reads a
model directory (generate, evaluate, convert) works on a LoRA run unchanged; the adapter next
to it is the small file to share, and `--merge` folds it into a base copy of your own.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmsmith.core.atomic import atomic_directory, write_json
from lmsmith.core.config import section_to_dict
from lmsmith.core.errors import UserError
from lmsmith.core.output import check_replaceable
from lmsmith.finetune.adapter_dir import save_adapter_dir
from lmsmith.finetune.domain_text import domain_tokens, general_tokens
from lmsmith.finetune.dpo import cache_reference, preference_objective
from lmsmith.finetune.instruct_data import (
    InstructBatches,
    InstructEvalBatches,
    TokenizedSet,
    read_jsonl,
    split_examples,
    tokenize_examples,
)
from lmsmith.finetune.lora import base_weights_sha256, inject_lora, lora_layers, merge_lora
from lmsmith.finetune.methods import check_method, choose_trainable
from lmsmith.finetune.preferences import PreferenceBatches, PreferenceEvalBatches, read_pairs, tokenize_pairs
from lmsmith.finetune.start import load_start, start_general_metadata
from lmsmith.finetune.synth_items import is_synth_output, synth_items_file
from lmsmith.finetune.vocabulary import add_special_tokens, grow_vocabulary, missing_special_tokens
from lmsmith.model.transformer import GPT
from lmsmith.schema.finetune import FinetuneRecipe
from lmsmith.text.chat_template import get_template
from lmsmith.train.trainer import next_token_loss

STAGE = "finetune"
REPORT = "finetune.json"
ADAPTER = "adapter"


def note(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"note: {message}", file=sys.stderr)


@dataclass
class DomainData:
    """What the engine trains and validates on, and what the report says about it."""

    batches: object  # the engine's batch protocol: plan, micro_batches(step), epochs(steps), seconds
    eval_batches: object  # (inputs, targets) micro-batches of the domain validation set
    description: dict = field(default_factory=dict)
    val_examples: list = field(default_factory=list)  # instruct: for exact-match scoring
    objective: Callable = next_token_loss  # what the engine minimises on these batches
    validate: Callable | None = None  # rl: (model) -> (1 - pass@1 on the held-out items, statistics)


# ---------------------------------------------------------------------------------------------
# Data


def instruct_data(recipe: FinetuneRecipe, data: str, model: GPT, tokenizer, plan, info, quiet: bool) -> DomainData:
    cfg = recipe.finetune
    template = get_template(cfg.template)
    examples = read_jsonl(data)
    if cfg.val_data:
        train_examples, val_examples = examples, read_jsonl(cfg.val_data)
    else:
        train_examples, val_examples = split_examples(examples, cfg.val_fraction, recipe.train.seed)
    if not val_examples:
        raise UserError(f"{data} gives no validation examples (it has {len(examples)}; finetune.val_fraction is "
                        f"{cfg.val_fraction}): give finetune.val_data, or more examples and a val_fraction above 0")
    block = model.config.block_size
    train_set = tokenize_examples(train_examples, template, tokenizer, block, "training")
    val_set = tokenize_examples(val_examples, template, tokenizer, block, "validation")
    for what, part in (("training", train_set), ("validation", val_set)):
        if part.dropped or part.truncated:
            note(f"{part.dropped} {what} example(s) dropped (the prompt fills the context of {block} tokens) and "
                 f"{part.truncated} cut short at the context", quiet)
    pad = tokenizer.eot_id
    batches = InstructBatches(train_set, plan, recipe.train.seed, info.rank, info.device, pad, cfg.packing)
    eval_batches = InstructEvalBatches(val_set, plan.micro_batch, info.device, pad)
    description = {"kind": "instruct", "path": str(data), "template": template.name, "packing": cfg.packing,
                   "train_examples": len(train_set.examples), "val_examples": len(val_set.examples),
                   "train_answer_tokens": train_set.trained_tokens, "rows_per_epoch": len(batches.items)}
    return DomainData(batches, eval_batches, description, val_examples)


def preference_data(recipe: FinetuneRecipe, data: str, model: GPT, tokenizer, plan, info, precision,
                    quiet: bool) -> DomainData:
    """Pairs for --mode dpo, with the starting model's log-probabilities cached in each (the reference)."""
    cfg = recipe.finetune
    template = get_template(cfg.template)
    given = read_pairs(data)
    if cfg.val_data:
        validation = read_pairs(cfg.val_data)
        train_pairs, val_pairs, identical = given.pairs, validation.pairs, given.identical + validation.identical
    else:
        train_pairs, val_pairs = split_examples(given.pairs, cfg.val_fraction, recipe.train.seed)
        identical = given.identical
    if not val_pairs:
        raise UserError(f"{data} gives no validation pairs (it has {len(given.pairs)}; finetune.val_fraction is "
                        f"{cfg.val_fraction}): give finetune.val_data, or more pairs and a val_fraction above 0")
    if identical:
        note(f"{identical} pair(s) dropped: the chosen answer equals the rejected one", quiet)
    block, pad = model.config.block_size, tokenizer.eot_id
    train_set, dropped = tokenize_pairs(train_pairs, template, tokenizer, block, "training")
    val_set, val_dropped = tokenize_pairs(val_pairs, template, tokenizer, block, "validation")
    if dropped or val_dropped:
        note(f"{dropped + val_dropped} pair(s) dropped: a prompt fills the context of {block} tokens", quiet)
    model.to(info.device)
    dpo = cfg.dpo
    if dpo.loss == "sigmoid":  # SimPO needs no reference
        cache_reference(model, train_set + val_set, plan.micro_batch, info.device, pad, precision)
    batches = PreferenceBatches(TokenizedSet(train_set, dropped, 0), plan, recipe.train.seed, info.rank, info.device,
                                pad)
    eval_batches = PreferenceEvalBatches(val_set, plan.micro_batch, info.device, pad)
    description = {"kind": "dpo", "path": str(data), "template": template.name, "loss": dpo.loss,
                   "train_pairs": len(train_set), "val_pairs": len(val_set), "identical_dropped": identical}
    return DomainData(batches, eval_batches, description, [pair.chosen for pair in val_pairs],
                      preference_objective(dpo.loss, dpo.beta, dpo.gamma))


def rl_items(recipe: FinetuneRecipe, data: str, quiet: bool) -> tuple[list, list]:
    """The training and held-out items of --mode rl: finetune.val_data's, or a share of --data held out."""
    from lmsmith.finetune.rl_tasks import read_rl_items

    cfg, custom = recipe.finetune, recipe.finetune.rl.reward is not None
    given = read_rl_items(data, custom)
    if given.not_checkable:
        note(f"{given.not_checkable} line(s) of {data} left out: no prompt, or nothing to check a completion with "
             "(multiple-choice items are scored by likelihood, not generated)", quiet)
    if cfg.val_data:
        return given.items, read_rl_items(cfg.val_data, custom).items
    train_items, val_items = split_examples(given.items, cfg.val_fraction, recipe.train.seed)
    if not val_items:
        raise UserError(f"{data} gives no held-out items (it has {len(given.items)}; finetune.val_fraction is "
                        f"{cfg.val_fraction}): give finetune.val_data, or more items and a val_fraction above 0")
    return train_items, val_items


def rl_data(recipe: FinetuneRecipe, data: str, model: GPT, tokenizer, info, precision, out: Path,
            quiet: bool) -> DomainData:
    """Prompts for --mode rl and how their completions are rewarded; the rollouts are sampled from `model`
    itself as it trains. With rl.kl and full fine-tuning a frozen copy of the start is the reference; with
    LoRA the reference is the same model with its adapters off, so no copy is needed."""
    import copy

    from lmsmith.finetune.rl_loss import policy_objective
    from lmsmith.finetune.rl_tasks import HeldOutExam, Reward, rl_prompts
    from lmsmith.finetune.rollouts import RolloutBatches, check_rollouts_fit

    cfg, rl = recipe.finetune, recipe.finetune.rl
    if info.world_size > 1:
        raise UserError("--mode rl runs in one process (its rollouts sample from the whole model): "
                        "start it without torchrun")
    reward = Reward(rl.reward)
    train_items, val_items = rl_items(recipe, data, quiet)
    prompts = rl_prompts(train_items, model, tokenizer, cfg.template, rl.max_new_tokens, data)
    if prompts.dropped:
        note(f"{prompts.dropped} training prompt(s) dropped: with rl.max_new_tokens={rl.max_new_tokens} they would "
             f"pass the context of {model.config.block_size} tokens", quiet)
    copy_reference = rl.kl > 0 and cfg.method == "full"
    check_rollouts_fit(model, rl, max(map(len, prompts.ids)), recipe.train.micro_batch, info.device, copy_reference)
    reference = copy.deepcopy(model).eval().requires_grad_(False).to(info.device) if copy_reference else None
    batches = RolloutBatches(model, prompts, reward, rl, recipe.train.micro_batch, recipe.train.seed, info.device,
                             precision, tokenizer, reference, out)
    validate = HeldOutExam(val_items, reward, tokenizer, cfg.template, rl.max_new_tokens, batch_size=16)
    description = {"kind": "rl", "path": str(data), "template": cfg.template, "reward": reward.name,
                   "train_items": len(prompts.items), "val_items": len(val_items), "group": rl.group,
                   "prompts_per_step": rl.prompts}
    return DomainData(batches, [], description, [], policy_objective(rl.clip, rl.kl), validate)


def continue_data(recipe: FinetuneRecipe, data: str, tokenizer, plan, info, work: Path, quiet: bool) -> DomainData:
    from lmsmith.train.data import EvalBatches, TokenWindows, TrainBatches

    if recipe.finetune.val_data:
        raise UserError("finetune.val_data is for instruct data; continued pretraining validates on the val split of "
                        "its --data (a curated or tokens directory), or on the last finetune.val_fraction of its text")
    tokens = domain_tokens(data, tokenizer, work, recipe.finetune.val_fraction, quiet)
    train_windows = TokenWindows(tokens, "train", plan.block_size)
    val_windows = TokenWindows(tokens, "val", plan.block_size)
    seed = recipe.train.seed
    batches = TrainBatches(train_windows, plan, seed, info.rank, info.device, recipe.train.data_order)
    eval_batches = EvalBatches(val_windows, plan, recipe.train.eval_batches, seed, info.rank, info.device)
    description = {"kind": "continue", "path": str(data), "train_tokens": tokens.split_tokens("train"),
                   "val_tokens": tokens.split_tokens("val")}
    return DomainData(batches, eval_batches, description)


def add_template_tokens(recipe: FinetuneRecipe, model: GPT, tokenizer, quiet: bool):
    """The tokenizer with the chat template's special tokens, added if missing (the embedding grows to match),
    and the template itself as Jinja, so the model directory says how to chat with it."""
    from lmsmith.text.chat_template import jinja_source
    from lmsmith.text.tokenizer import Tokenizer

    if recipe.finetune.mode == "continue":  # plain text: no template, no special tokens to add
        return tokenizer, []
    template = get_template(recipe.finetune.template)
    tokenizer = Tokenizer(tokenizer.backend, eot_token=tokenizer.eot_token, kind=tokenizer.kind,
                          chat_template=jinja_source(template), specials=tokenizer.specials)
    missing = missing_special_tokens(tokenizer, template.special_tokens)
    if not missing:
        return tokenizer, []
    grown = add_special_tokens(tokenizer, missing)
    rows = grow_vocabulary(model, grown.vocab_size)
    learned = "they are learned with the rest" if recipe.finetune.method == "full" else \
        "with LoRA they stay as they start and the adapters learn to use them"
    rows_text = (f"the embedding got {rows} new row(s), started at the mean of the others" if rows else
                 "they take spare rows of the model's padded vocabulary")
    note(f"the tokenizer lacks the {template.name} template's special token(s) {', '.join(missing)}: added as ids "
         f"{tokenizer.vocab_size}..{grown.vocab_size - 1}; {rows_text} ({learned})", quiet)
    return grown, missing


# ---------------------------------------------------------------------------------------------
# Writing models


@dataclass
class ModelWriter:
    """Writes the model directories of the run (RUN/best, RUN/model) from the training model.

    Full fine-tuning writes the weights as they are. LoRA writes the base with the adapters
    folded in, and the adapter alone in an `adapter/` folder inside, with its base's hash.
    """

    config: object  # ModelConfig of the fine-tuned model (vocabulary grown if tokens were added)
    tokenizer: object
    recipe: FinetuneRecipe
    base: dict  # source, kind, sha256, vocab_size of the start point
    added_tokens: list[str]
    lora_layers: list[str]
    made_from: dict  # the manifest's inputs
    general: dict = field(default_factory=dict)  # the start model's name, license ... (see start_general_metadata)

    def plain_model(self, tensors: dict[str, torch.Tensor]) -> GPT:
        """A CPU model holding `tensors` (the training model's full state, adapters included)."""
        model = GPT(self.config)
        if self.lora_layers:
            lora = self.recipe.finetune.lora
            inject_lora(model, self.lora_layers, lora.rank, lora.alpha, lora.dropout)
        if self.config.tie_embeddings:
            tensors = {**tensors, "head.weight": tensors["tok_emb.weight"]}
        model.load_state_dict(tensors)
        return model.eval()

    def __call__(self, path: Path, tensors: dict[str, torch.Tensor], extra: dict) -> None:
        from lmsmith.model.directory import save_model_dir

        model = self.plain_model(tensors)
        adapter_model = None
        if self.lora_layers:
            adapter_model, model = model, merge_lora(self.plain_model(tensors))
        extra = {**extra, "finetune": section_to_dict(self.recipe.finetune), "base": self.base,
                 **({"general": self.general} if self.general else {})}
        save_model_dir(path, model, self.tokenizer, made_by="finetune", inputs=self.made_from, extra=extra)
        if adapter_model is not None:
            lora = self.recipe.finetune.lora
            save_adapter_dir(path / ADAPTER, adapter_model, self.tokenizer,
                             lora={"rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout,
                                   "targets": lora.targets},
                             layers=self.lora_layers, base=self.base, added_tokens=self.added_tokens,
                             extra={"template": self.recipe.finetune.template, **extra})


def restore_best(run_dir: Path) -> bool:
    """Make RUN/model a copy of RUN/best; False when there is no best model to restore."""
    from lmsmith.train.trainer import BEST_MODEL, FINAL_MODEL

    best = run_dir / BEST_MODEL
    if not best.is_dir():
        return False
    with atomic_directory(run_dir / FINAL_MODEL) as tmp:
        shutil.copytree(best, tmp, dirs_exist_ok=True)
    return True


# ---------------------------------------------------------------------------------------------
# Scoring


def general_loss(model, tokens: np.ndarray | None, tokenizer, device) -> dict | None:
    """Loss and bits per byte of the general validation text, scored in non-overlapping windows."""
    if tokens is None:
        return None
    from lmsmith.model.scoring import evaluate_tokens, token_byte_lengths

    was_training = model.training
    context = model.config.block_size
    result = evaluate_tokens(model, tokens, token_byte_lengths(tokenizer), context=context, stride=context,
                             device=device)
    model.train(was_training)
    return {"loss": round(result.loss, 5), "bits_per_byte": round(result.bits_per_byte, 5), "tokens": result.tokens}


def exact_match_score(model, tokenizer, recipe: FinetuneRecipe, examples: list) -> dict | None:
    n = recipe.finetune.exact_match
    if not n or not examples:
        return None
    from lmsmith.finetune.answers import exact_match, greedy_answers

    answers = greedy_answers(model, tokenizer, get_template(recipe.finetune.template), examples[:n])
    return {"exact_match": round(exact_match(answers), 4), "examples": len(answers),
            "samples": [{"prompt": a.prompt, "expected": a.expected, "got": a.got} for a in answers[:3]]}


def exam_scores(model, tokenizer, recipe: FinetuneRecipe) -> dict | None:
    """`finetune.exam`: the exam's tasks, answered through the fine-tuning template; each task's summary."""
    if not recipe.finetune.exam:
        return None
    from lmsmith.exam.items import read_task, task_files
    from lmsmith.exam.models import LocalModel
    from lmsmith.exam.scoring import score_task
    from lmsmith.exam.stage import finite
    from lmsmith.schema.exam import ExamConfig

    config = ExamConfig(tasks=[recipe.finetune.exam], template=recipe.finetune.template, chat=True,
                        device=str(next(model.parameters()).device))
    was_training = model.training
    model.eval()
    try:
        exam_model = LocalModel("fine-tuning", config, loaded=(model, tokenizer))
        results = {}
        for path in task_files(config.tasks):
            summary = score_task(exam_model, read_task(path), config).summary()
            results[path.stem] = finite({k: summary[k] for k in ("metric", "score", "stderr", "n")})
    finally:
        model.train(was_training)
    return results


# ---------------------------------------------------------------------------------------------
# The run


def check_output(out: Path, base: str, data: str, force: bool = False) -> None:
    """The run directory may be new, empty, an interrupted fine-tuning run (it resumes) or, with --force, a
    finished one; never the start model, the data, or a folder of anything else."""
    for source in (base, data):
        if not str(source).startswith("hf:") and Path(source).exists():
            check_replaceable(out, STAGE, source=source, force=True)
    check_replaceable(out, STAGE, force=True)  # the rule for a finished run is below: an interrupted one resumes
    if (out / REPORT).is_file() and not force:
        raise UserError(f"{out} already holds a trained model: add --force to replace it, or choose another -o")


def prepare_run_dir(out: Path, force: bool, info) -> Path | None:
    """Under the run's lock: the checkpoint an interrupted run resumes from (as `train --resume auto` does), or
    None after clearing what a replaced finished run (--force) or a checkpoint-less interrupted run left.
    An interrupted run resumes with --force too: --force replaces a trained model, and `build` always gives it."""
    from lmsmith.core.output import LOCK
    from lmsmith.train import checkpoint as ckpt
    from lmsmith.train.distributed import barrier

    check_replaceable(out, STAGE, force=True)  # again, now that no other run can write here
    finished = (out / REPORT).is_file()
    if finished and not force:  # another run finished here while this one started
        raise UserError(f"{out} already holds a trained model: add --force to replace it, or choose another -o")
    if info.is_main and (finished or not ckpt.checkpoint_dirs(out)) and out.is_dir():
        for path in out.iterdir():
            if path.name == LOCK:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    barrier(info)
    return ckpt.find_checkpoint(out, "auto")


def finetune(base: str, data: str, out: str | Path, recipe: FinetuneRecipe, quiet: bool = False,
             force: bool = False) -> dict:
    """Fine-tune `base` on `data` into the run directory `out`; returns the report (also RUN/finetune.json).
    A run killed after a checkpoint continues from it when the same command is given again."""
    import contextlib

    from lmsmith.core.output import directory_lock
    from lmsmith.train.distributed import barrier, process_group

    out = Path(out)
    mode = recipe.finetune.mode
    if is_synth_output(data):
        data = synth_items_file(data, mode)
    check_output(out, base, data, force)
    if mode != "continue" and Path(data).is_dir():
        raise UserError(f"--mode {mode} reads a JSONL file, but {data} is a directory: give the .jsonl file, "
                        "or use --mode continue for domain text")
    with process_group(recipe.train.device) as info, tempfile.TemporaryDirectory(prefix="lmsmith-finetune-") as work:
        # One run writes a run directory at a time; the lock comes before the look that decides to resume or clear.
        with directory_lock(out, "fine-tuning run") if info.is_main else contextlib.nullcontext():
            barrier(info)
            resume_from = prepare_run_dir(out, force, info)
            return _finetune(base, data, out, recipe, info, Path(work), quiet, resume_from)


def _finetune(base: str, data: str, out: Path, recipe: FinetuneRecipe, info, work: Path, quiet: bool,
              resume_from: Path | None = None) -> dict:
    from lmsmith.model.directory import load_model_dir
    from lmsmith.train.distributed import barrier
    from lmsmith.train.loop import run_job
    from lmsmith.train.precision import resolve_precision
    from lmsmith.train.trainer import FINAL_MODEL, TrainingJob

    cfg, train = recipe.finetune, recipe.train
    start = load_start(base)
    model, tokenizer = start.model, start.tokenizer
    check_method(model, cfg)
    general = general_tokens(cfg.general_val, tokenizer, cfg.general_val_tokens) if cfg.general_val else None
    source = str(base) if start.kind == "hf-hub" else str(Path(base).resolve())  # --merge may run elsewhere
    base_info = {"source": source, "kind": start.kind, "sha256": base_weights_sha256(model),
                 "vocab_size": model.config.vocab_size}
    tokenizer, added = add_template_tokens(recipe, model, tokenizer, quiet)
    plan = batch_plan(recipe, model.config.block_size, info.world_size)
    precision = resolve_precision(train.precision, info.device)
    if cfg.mode == "instruct":
        domain = instruct_data(recipe, data, model, tokenizer, plan, info, quiet)
    elif cfg.mode == "dpo":
        domain = preference_data(recipe, data, model, tokenizer, plan, info, precision, quiet)
    elif cfg.mode == "rl":
        domain = rl_data(recipe, data, model, tokenizer, info, precision, out, quiet)
    else:
        domain = continue_data(recipe, data, tokenizer, plan, info, work, quiet)
    model.to(info.device)
    chosen = choose_trainable(model, cfg)
    if not quiet and info.is_main:
        print(f"fine-tuning {base} ({start.kind}) with {cfg.method}: {chosen['trainable_parameters']:,} of "
              f"{chosen['total_parameters']:,} parameters train "
              f"({chosen['trainable_parameters'] / chosen['total_parameters']:.2%})")
    before = score(model, tokenizer, recipe, domain, general, precision, info)

    inputs = {"base": base_info, "data": domain.description}
    writer = ModelWriter(model.config, tokenizer, recipe, base_info, added, list(lora_layers(model)), inputs,
                         general=start_general_metadata(str(base), start.kind))
    job = TrainingJob(model=model, batches=domain.batches, eval_batches=domain.eval_batches, write_model=writer,
                      stage=STAGE, inputs=inputs, objective=domain.objective, validate=domain.validate,
                      config={"finetune": section_to_dict(cfg), "train": section_to_dict(train)})
    result = run_job(job, train, out, info, resume_from, quiet=quiet)

    restored = cfg.restore_best and info.is_main and restore_best(out)
    barrier(info)
    final, _ = load_model_dir(out / FINAL_MODEL, info.device)
    after = score(final, tokenizer, recipe, domain, general, precision, info)  # every rank: evaluation is collective
    if not info.is_main:
        return {}
    report = make_report(recipe, chosen, base_info, domain, before, after, result, restored, added)
    write_json(out / REPORT, report)
    if not quiet:
        print_summary(report, out)
    return report


def batch_plan(recipe: FinetuneRecipe, block_size: int, world_size: int):
    """Rows of the model's full context; unless train.batch_tokens was given, one micro-batch per step."""
    from lmsmith.schema.train import plan_batch

    if not recipe.batch_tokens_given:
        recipe.train.batch_tokens = recipe.train.micro_batch * block_size * world_size
    return plan_batch(recipe.train, block_size, world_size)


def score(model, tokenizer, recipe, domain: DomainData, general, precision, info) -> dict:
    """Domain validation loss (the engine's own evaluation, with its statistics), general loss, exact match."""
    from lmsmith.train.trainer import evaluate_objective

    if domain.validate is not None:
        val_loss, val_stats = domain.validate(model)
    else:
        val_loss, val_stats = evaluate_objective(model, domain.eval_batches, precision, info, domain.objective)
    return {
        "val_loss": round(val_loss, 5), **({"val": val_stats} if val_stats else {}),
        "general": general_loss(model, general, tokenizer, info.device),
        "answers": exact_match_score(model, tokenizer, recipe, domain.val_examples),
        "exam": exam_scores(model, tokenizer, recipe),
    }


def make_report(recipe, chosen, base_info, domain, before, after, result, restored, added) -> dict:
    report = {
        "base": base_info, "data": domain.description, "parameters": chosen,
        "added_tokens": added, "steps": result.step, "stopped_early": result.stopped_early,
        "restored_best": bool(restored), "before": before, "after": after,
        "finetune": section_to_dict(recipe.finetune), "train": section_to_dict(recipe.train),
    }
    if before["general"] and after["general"]:
        report["general_loss_change"] = round(after["general"]["loss"] - before["general"]["loss"], 5)
    return report


def print_summary(report: dict, out: Path) -> None:
    before, after = report["before"], report["after"]
    if report["data"]["kind"] == "rl":
        lines = [f"held-out pass@1 on {report['data']['val_items']} items (reward: {report['data']['reward']}): "
                 f"{_score(pass_at_1(before))} -> {_score(pass_at_1(after))}"]
    else:
        lines = [f"domain val loss {before['val_loss']:.4f} -> {after['val_loss']:.4f}"
                 f" (perplexity {math.exp(min(before['val_loss'], 700)):.2f}"
                 f" -> {math.exp(min(after['val_loss'], 700)):.2f})"]
    if before["general"]:
        change = report["general_loss_change"]
        lines.append(f"general val loss {before['general']['loss']:.4f} -> {after['general']['loss']:.4f} "
                     f"({'+' if change >= 0 else ''}{change:.4f}: what the specialty cost)")
    if before.get("val") and "preference_accuracy" in before["val"]:
        b, a = before["val"], after["val"]
        lines.append(f"preference accuracy on val pairs {b['preference_accuracy']:.1%} -> "
                     f"{a['preference_accuracy']:.1%} (reward margin {b['reward_margin']:.3f} -> "
                     f"{a['reward_margin']:.3f})")
    if before["answers"]:
        lines.append(f"exact match on {after['answers']['examples']} val examples: "
                     f"{before['answers']['exact_match']:.1%} -> {after['answers']['exact_match']:.1%}")
    for task, was in (before.get("exam") or {}).items():
        now = after["exam"][task]
        lines.append(f"exam {task} ({was['metric']}, {now['n']} items): {_score(was)} -> {_score(now)}")
    where = f"{out / 'model'}" + (f", adapter in {out / 'model' / ADAPTER}"
                                  if report["parameters"]["method"] == "lora" else "")
    print("\n".join(lines) + f"\nfine-tuned model in {where}; report in {out / REPORT}")


def pass_at_1(scores: dict) -> dict:
    """An RL run's held-out score, in the shape of an exam task's summary."""
    return {"score": scores["val"]["pass_at_1"], "stderr": scores["val"]["pass_at_1_stderr"]}


def _score(summary: dict) -> str:
    error = summary["stderr"]
    return f"{summary['score']:.3f}" + (f" ± {error:.3f}" if error is not None else "")


def show_report(out: Path) -> None:
    """The before -> after scores of a finished fine-tuning step (at the end of a build)."""
    import json

    print_summary(json.loads((Path(out) / REPORT).read_text(encoding="utf-8")), Path(out))
    print(f"chat with it: lmsmith chat {out}")
