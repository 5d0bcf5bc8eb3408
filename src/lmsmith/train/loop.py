"""The training loop: `lmsmith train RECIPE`.

Read top to bottom, `train` does what a textbook training script does, with each concern in its
own module of this package:

    join the ranks (distributed)         open the tokens (tokens_dir, data)
    build the model, check it fits (memory), apply checkpointing/compile/DDP/FSDP (parallel)
    make the optimizers (optim)          resume from a checkpoint if asked (checkpoint)
    for each step:
        learning rate from the step (schedule)
        for each micro-batch: forward in autocast (precision), backward; gradients synced on the last
        clip the gradients; skip the step if anything is not finite (guard); optimizer step
        log (metrics, progress); evaluate and keep the best; checkpoint; stop on a signal
    write the final model directory RUN/model/ (the format `lmsmith generate` reads)

Every random draw depends only on the seed and the step: batch positions (data), dropout masks
(torch is reseeded from (seed, step, rank) at each step). A run resumed from a checkpoint of
step k therefore repeats steps k+1... exactly as the uninterrupted run did.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from lmsmith.core.atomic import write_json, write_text
from lmsmith.core.config import ConfigError
from lmsmith.core.errors import UserError
from lmsmith.core.host_memory import keep_freed_memory
from lmsmith.core.manifest import MANIFEST, file_sha256, make_manifest, read_manifest
from lmsmith.core.output import directory_lock
from lmsmith.model.transformer import GPT
from lmsmith.schema.train import TrainRecipe, plan_batch, recipe_to_dict, train_recipe_of
from lmsmith.text.tokens_dir import TokensDir, open_tokens_dir
from lmsmith.train import checkpoint as ckpt
from lmsmith.train.budget import UNCAPPED, TimeBudget
from lmsmith.train.data import EvalBatches, TokenWindows, TrainBatches
from lmsmith.train.distributed import DistInfo, any_rank, barrier, from_rank_zero, mean_across_ranks, process_group
from lmsmith.train.flops import measure_matmul_peak, mfu
from lmsmith.train.guard import NonFiniteGuard
from lmsmith.train.memory import available_memory, check_fits, estimate_memory
from lmsmith.train.metrics import METRICS, MetricsLog, require_extras, truncate_after
from lmsmith.train.optim import build_optimizers, parameter_kinds
from lmsmith.train.parallel import blocks_to_checkpoint, gradient_sync, parallelize, unwrap
from lmsmith.train.precision import Precision, resolve_precision
from lmsmith.train.progress import TrainProgress
from lmsmith.train.schedule import set_learning_rates

STAGE = "train"
RESOLVED_CONFIG = "config.yaml"
FINAL_MODEL, BEST_MODEL = "model", "best"


@dataclass
class RunState:
    """What the loop carries from step to step, beyond model and optimizer (saved in checkpoints)."""

    step: int = 0
    best_val_loss: float | None = None
    evals_since_best: int = 0
    last_val_loss: float | None = None
    skipped_steps: int = 0
    planned_steps: int | None = None  # with train.max_minutes: the steps that fit the budget
    train_seconds: float = 0.0  # time spent in the loop, over every resumption
    tokens: int | None = None  # positions trained on, all ranks, over every resumption (None: an older checkpoint)


@dataclass
class TrainingJob:
    """What a run trains, on which batches, and how it writes its model directories.

    `lmsmith train` makes one from its recipe: a fresh model and windows of a tokens directory.
    `lmsmith finetune` brings a loaded model (parameters with requires_grad=False stay as they
    are), batches of its own data and a writer that folds LoRA adapters in. The loop below is
    the same for both.
    """

    model: torch.nn.Module  # on the device, not yet parallelized; it has a `.config` (ModelConfig)
    batches: object  # plan, micro_batches(step), epochs(steps_done), seconds: see data.TrainBatches
    eval_batches: object  # (inputs, targets) micro-batches, the same ones at every evaluation
    write_model: Callable[[Path, dict, dict], None]  # (directory, full state dict, extra manifest config)
    stage: str = STAGE  # the stage named in the run directory's manifest
    inputs: dict = field(default_factory=dict)  # what the run read, for the manifest
    config: dict = field(default_factory=dict)  # the resolved configuration, for config.yaml and the manifest
    tokenizer_sha256: str | None = None  # a checkpoint of another tokenizer is refused on resume
    train_tokens: int | None = None  # size of the training data, for the start line


@dataclass
class RunResult:
    run_dir: Path
    step: int
    stopped_early: bool
    best_val_loss: float | None
    last_val_loss: float | None


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the step and stops.

    A second Ctrl-C stops at once (the handler is removed after the first signal).
    """

    def __init__(self):
        self.signal: str | None = None
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a notebook worker): no handlers
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, 2, step, rank]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------
# Setting up


def open_data(recipe: TrainRecipe) -> tuple[TokensDir, object]:
    """The tokens directory and its tokenizer, with the model's vocabulary filled in or checked."""
    tokens = open_tokens_dir(recipe.data)
    tokenizer = tokens.tokenizer()
    model = recipe.model
    if model.vocab_size is None:
        model.vocab_size = tokens.vocab_size
    elif model.vocab_size < tokens.vocab_size:
        raise ConfigError(f"model.vocab_size ({model.vocab_size}) is smaller than the vocabulary of {recipe.data} "
                          f"({tokens.vocab_size} tokens): remove model.vocab_size to take the tokenizer's")
    return tokens, tokenizer


def prepare_run_dir(run_dir: Path, resume: str | None, data: str) -> Path | None:
    """Check the run directory; return the checkpoint to resume from (None: a fresh start)."""
    if Path(data).resolve() == run_dir.resolve():
        raise UserError(f"out={run_dir} is the tokens directory: choose another out=")
    if run_dir.is_file():
        raise UserError(f"out={run_dir} is a file: give a directory for the run")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        read_manifest(run_dir, STAGE, fix=f"choose a new out= directory; {run_dir} is kept as it is")
    if resume is not None:
        found = ckpt.find_checkpoint(run_dir, resume)
        if found is not None or resume == "auto":
            return found
    if ckpt.checkpoint_dirs(run_dir) or (run_dir / FINAL_MODEL).is_dir():
        raise UserError(f"{run_dir} already holds a run: "
                        "continue it with --resume auto, or choose another out= directory")
    return None


def build_model(recipe: TrainRecipe, info: DistInfo, precision: Precision, quiet: bool) -> tuple[torch.nn.Module, GPT]:
    """The model, counted and checked against the device's memory before its weights exist."""
    config, train = recipe.model, recipe.train
    with torch.device("meta"):
        shape_only = GPT(config)
    n_params = shape_only.num_params()
    n_muon = sum(p.numel() for _, p in parameter_kinds(shape_only)["hidden_matrix"])
    checkpointed = len(blocks_to_checkpoint(config.n_layer, train.activation_checkpointing, train.checkpoint_every_n))
    shards = info.world_size if train.parallel == "fsdp" else 1
    estimate = estimate_memory(config, n_params, n_muon, train.optimizer, train.micro_batch,
                               precision.name != "fp32", checkpointed, info.device, shards)
    if info.is_main and not quiet:
        print(f"model: {n_params:,} parameters "
              f"({n_params - shape_only.tok_emb.weight.numel():,} without the token embedding); "
              f"memory per rank about {estimate.describe()}")
    if train.check_memory:
        per_machine = info.world_size if info.device.type == "cpu" else 1
        check_fits(estimate, info.device, available_memory(info.device), per_machine)
    torch.manual_seed(train.seed)  # the same initial weights on every rank
    with torch.device(info.device):
        model = GPT(config)
    return model, shape_only


def write_run_files(run_dir: Path, job: TrainingJob, counts: dict) -> None:
    write_text(run_dir / RESOLVED_CONFIG, yaml.safe_dump(job.config, sort_keys=False))
    write_json(run_dir / MANIFEST, make_manifest(job.stage, config=job.config, counts=counts, inputs=job.inputs))


def tokens_inputs(tokens: TokensDir) -> dict:
    return {"tokens": {"path": str(tokens.path), "manifest_sha256": file_sha256(tokens.path / MANIFEST)},
            "tokenizer": {"sha256": tokens.tokenizer_sha256}}


def export_model(path: Path, model: torch.nn.Module, job: TrainingJob, info: DistInfo, extra: dict) -> None:
    """Write a model directory from the training model (all ranks gather, rank 0 writes)."""
    weights = ckpt.model_tensors(model, info, tied=job.model.config.tie_embeddings)
    if info.is_main:
        job.write_model(path, weights, extra)
    barrier(info)


def plain_model_writer(recipe: TrainRecipe, tokenizer) -> Callable[[Path, dict, dict], None]:
    """`lmsmith train`'s model directories: the weights as they are, in a GPT of the recipe's shape."""
    from lmsmith.model.directory import save_model_dir

    def write(path: Path, weights: dict, extra: dict) -> None:
        with torch.device("meta"):
            plain = GPT(recipe.model)
        plain.load_state_dict({**weights,
                               **({"head.weight": weights["tok_emb.weight"]} if recipe.model.tie_embeddings else {})},
                              assign=True)
        if recipe.model.tie_embeddings:
            plain.head.weight = plain.tok_emb.weight
        save_model_dir(path, plain, tokenizer, made_by="train",
                       inputs={"tokens": {"path": str(recipe.data)}}, extra=extra)

    return write


# ---------------------------------------------------------------------------------------------
# One step, one evaluation


@dataclass(frozen=True)
class StepResult:
    loss: float
    grad_norm: float
    tokens: int  # positions this rank's micro-batches held, padding included (the model computed them)
    rows: int  # sequences in them


def train_step(model, optimizers, scaler, batches: TrainBatches, step: int, precision: Precision,
               grad_clip: float) -> StepResult:
    """Forward and backward over the step's micro-batches, clip, optimizer step.

    A step whose loss or gradient norm is not finite leaves the weights as they were. The tokens
    are counted from the batches themselves: fine-tuning pads each batch only to its longest
    example, so a step can hold far fewer than the plan's rows x block_size.
    """
    grad_accum = batches.plan.grad_accum
    loss_sum = torch.zeros((), device=batches.device)
    tokens = rows = 0
    for micro, (inputs, targets) in enumerate(batches.micro_batches(step)):
        tokens, rows = tokens + inputs.numel(), rows + inputs.size(0)
        with gradient_sync(model, enabled=micro == grad_accum - 1):
            with precision.autocast():
                loss = model(inputs, targets).loss / grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += loss.detach()
    if scaler is not None:
        for optimizer in optimizers:
            scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip if grad_clip > 0 else math.inf, foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP: the norm is a distributed tensor over the shards
        norm = norm.full_tensor()
    loss_value, norm_value = torch.stack([loss_sum.float(), norm.float().to(loss_sum.device)]).tolist()  # one sync
    if scaler is not None:
        for optimizer in optimizers:  # the scaler skips the update itself when gradients overflowed
            scaler.step(optimizer)
        scaler.update()
    elif math.isfinite(loss_value) and math.isfinite(norm_value):
        for optimizer in optimizers:
            optimizer.step()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_value, norm_value, tokens, rows)


@torch.no_grad()
def evaluate(model, batches: EvalBatches, precision: Precision, info: DistInfo) -> float:
    """Mean validation loss over the fixed validation windows, averaged over ranks."""
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in batches:
        with precision.autocast():
            total += model(inputs, targets).loss.item()
        count += 1
    model.train()
    return mean_across_ranks(total / max(1, count), info)


# ---------------------------------------------------------------------------------------------
# The run


def run(config, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, resume: str | None = None) -> dict:
    """The train stage: pretrain `config.model` on the tokens in `inputs["tokens"]` into the run directory `out`.

    A config file may name both instead (`data:` and `out:`, as the training recipes that build and
    sweep write for their child processes do). Returns the run's manifest.
    """
    recipe = train_recipe_of(config, inputs.get("tokens"), out)
    return read_manifest(train(recipe, resume=resume, quiet=quiet), STAGE)


def train(recipe: TrainRecipe, resume: str | None = None, quiet: bool = False) -> Path:
    """Train as the recipe says; returns the run directory. Under torchrun every rank calls this."""
    with process_group(recipe.train.device) as info:
        return _train(recipe, info, resume, quiet)


def _train(recipe: TrainRecipe, info: DistInfo, resume: str | None, quiet: bool) -> Path:
    cfg, run_dir = recipe.train, Path(recipe.out)
    quiet = quiet or not info.is_main
    tokens, tokenizer = open_data(recipe)
    plan = plan_batch(cfg, recipe.model.block_size, info.world_size)
    train_windows = TokenWindows(tokens, "train", recipe.model.block_size)
    val_windows = TokenWindows(tokens, "val", recipe.model.block_size)
    resume_from = prepare_run_dir(run_dir, resume, recipe.data)
    barrier(info)  # every rank has looked at the run directory before rank 0 writes to it
    # One run at a time writes a run directory: a second would mix its checkpoints into this one's.
    with directory_lock(run_dir, "training run") if info.is_main else contextlib.nullcontext():
        precision = resolve_precision(cfg.precision, info.device)
        model, _ = build_model(recipe, info, precision, quiet)
        job = TrainingJob(
            model=model,
            batches=TrainBatches(train_windows, plan, cfg.seed, info.rank, info.device),
            eval_batches=EvalBatches(val_windows, plan, cfg.eval_batches, cfg.seed, info.rank, info.device),
            write_model=plain_model_writer(recipe, tokenizer), stage=STAGE, inputs=tokens_inputs(tokens),
            config=recipe_to_dict(recipe), tokenizer_sha256=tokens.tokenizer_sha256,
            train_tokens=tokens.split_tokens("train"),
        )
        return run_job(job, cfg, run_dir, info, resume_from, quiet).run_dir


def run_job(job: TrainingJob, cfg, run_dir: Path, info: DistInfo, resume_from: Path | None = None,
            quiet: bool = False) -> RunResult:
    """The training loop over `job`, as `cfg` (a TrainConfig) says; every rank calls this."""
    quiet = quiet or not info.is_main
    require_extras(cfg.tensorboard, cfg.wandb)
    model_config = job.model.config
    plan = job.batches.plan
    precision = resolve_precision(cfg.precision, info.device)
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 parts of the model on tensor cores
    if info.device.type == "cpu":
        keep_freed_memory()  # each step reuses the last one's buffers instead of faulting in fresh pages
    # Training FLOPs per token at a row length (attention's share grows with it); rows are block_size
    # long in pretraining, as long as the batch's longest example in fine-tuning.
    flops_per_token = functools.lru_cache(maxsize=None)(job.model.flops_per_token)
    model = parallelize(job.model, cfg, info)
    optimizers = build_optimizers(unwrap(model), cfg)
    scaler = precision.grad_scaler()

    state = RunState()
    if resume_from is not None:
        saved = ckpt.read_checkpoint_state(resume_from)
        ckpt.check_same_model(resume_from, saved.get("model", {}), asdict(model_config))
        if saved.get("tokenizer_sha256") != job.tokenizer_sha256:
            raise UserError(f"{resume_from} was trained on tokens of another tokenizer: "
                            "resume with the data= it started with")
        if saved["run"]["step"] > cfg.steps:
            raise UserError(f"{resume_from} is at step {saved['run']['step']}, past train.steps={cfg.steps}: "
                            "raise train.steps to continue")
        saved = ckpt.load_checkpoint(resume_from, model, optimizers, scaler, info, model_config.tie_embeddings)
        state = RunState(**saved["run"])

    batches, eval_batches = job.batches, job.eval_batches
    guard = NonFiniteGuard(cfg.max_bad_steps)
    metrics = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_after(run_dir / METRICS, state.step)
        write_run_files(run_dir, job, {"steps": state.step})
        metrics = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb, cfg.wandb_project, job.config)
    peak = cfg.peak_flops or (measure_matmul_peak(info.device, precision.dtype) if info.is_main else 0.0)
    if info.is_main and not quiet:
        start = f"resuming from {resume_from.name}" if resume_from else "starting"
        length = f"{cfg.steps} steps"
        if cfg.max_minutes:
            length = f"{cfg.max_minutes:g} minutes" + (f" (at most {cfg.steps} steps)" if cfg.steps < UNCAPPED else "")
        print(f"{start}: {length} of {plan.tokens:,} tokens ({plan.rows} x {plan.block_size}; "
              f"micro-batch {plan.micro_batch} x {plan.grad_accum} accumulation x {info.world_size} rank(s)), "
              f"{precision.name} on {info.device}"
              + (f", {job.train_tokens:,} train tokens" if job.train_tokens else ""))

    def checkpoint_state() -> dict:
        return {"run": asdict(state), "model": asdict(model_config), "recipe": job.config,
                "tokenizer_sha256": job.tokenizer_sha256, "world_size": info.world_size}

    def save() -> None:
        if not ckpt.checkpoint_dirs(run_dir) or ckpt.checkpoint_dirs(run_dir)[-1].name != f"step-{state.step:06d}":
            ckpt.save_checkpoint(run_dir, state.step, model, optimizers, scaler, checkpoint_state(), info,
                                 cfg.keep_last)

    def run_evaluation(progress: TrainProgress) -> bool:
        """Evaluate, keep the best model; True when early stopping says to stop."""
        val_loss = evaluate(model, eval_batches, precision, info)
        state.last_val_loss = val_loss
        improved = state.best_val_loss is None or val_loss < state.best_val_loss - cfg.early_stop_min_delta
        if improved:
            state.best_val_loss, state.evals_since_best = val_loss, 0
            export_model(run_dir / BEST_MODEL, model, job, info, {"step": state.step, "val_loss": val_loss})
        else:
            state.evals_since_best += 1
        if metrics is not None:
            metrics.log({"step": state.step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 700))})
        progress.print(f"step {state.step}: val loss {val_loss:.4f} (perplexity {math.exp(min(val_loss, 700)):.2f})"
                       + (" best" if improved else ""))
        return cfg.early_stop_patience is not None and state.evals_since_best >= cfg.early_stop_patience

    started = time.perf_counter()
    seconds_before = state.train_seconds
    budget = None
    if cfg.max_minutes:  # a validation pass costs about a third of a step per micro-batch (forward only)
        budget = TimeBudget(cfg.max_minutes, cfg.steps, cfg.warmup_steps, cfg.eval_every,
                            eval_share=cfg.eval_batches / (3 * plan.grad_accum), used_seconds=seconds_before)
    total = state.planned_steps or cfg.steps
    stopped_early = False
    if state.tokens is None:  # a checkpoint from before tokens were counted, when every row was block_size long
        state.tokens = state.step * plan.tokens
    window_start, window_tokens, window_rows, data_seconds = time.perf_counter(), 0, 0, batches.seconds
    with StopRequest() as stop, TrainProgress(total, state.step, quiet) as progress:
        model.train()
        while state.step < total:
            torch.manual_seed(step_seed(cfg.seed, state.step, info.rank))
            lr_scale = set_learning_rates(optimizers, state.step, cfg, total)
            result = train_step(model, optimizers, scaler, batches, state.step, precision, cfg.grad_clip)
            loss, grad_norm = result.loss, result.grad_norm
            bad = any_rank(NonFiniteGuard.is_bad(loss, grad_norm) if scaler is None else not math.isfinite(loss), info)
            state.step += 1
            # This rank's rows stand for every rank's: the same count in pretraining, close to it when
            # each rank pads its own fine-tuning batches (counting them exactly would cost a sync a step).
            state.tokens += result.tokens * info.world_size
            window_tokens, window_rows = window_tokens + result.tokens, window_rows + result.rows
            guard.record(bad, state.step)
            state.skipped_steps = guard.skipped
            state.train_seconds = seconds_before + time.perf_counter() - started
            if budget is not None:
                # Every rank follows rank 0's plan, so all stop at the same step.
                planned = budget.after_step(state.step, state.planned_steps)
                state.planned_steps = planned if planned is None else from_rank_zero(planned, info)
                if state.planned_steps and state.planned_steps != total:
                    total = state.planned_steps
                    progress.set_total(total)

            log_now = state.step % cfg.log_every == 0 or state.step == total
            if log_now:
                loss = mean_across_ranks(loss, info)
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_tokens * info.world_size / elapsed if elapsed > 0 else 0.0
            row_length = round(window_tokens / window_rows) if window_rows else model_config.block_size
            utilisation = mfu(flops_per_token(row_length), tokens_per_s / info.world_size, peak)
            lr = cfg.lr * lr_scale
            progress.update(state.step, loss, lr, tokens_per_s, utilisation, log_now)
            if log_now and metrics is not None:
                metrics.log({"step": state.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                             "tokens": state.tokens, "epoch": round(batches.epochs(state.step), 4),
                             "tokens_per_s": round(tokens_per_s, 1), "mfu": round(utilisation, 4),
                             "data_share": round((batches.seconds - data_seconds) / elapsed, 4) if elapsed > 0 else 0.0,
                             "skipped_steps": guard.skipped, "elapsed_s": round(time.perf_counter() - started, 2)})
            if log_now:
                window_start, window_tokens, window_rows, data_seconds = time.perf_counter(), 0, 0, batches.seconds

            early_stop = False
            if (cfg.eval_every and state.step % cfg.eval_every == 0) or state.step == total:
                early_stop = run_evaluation(progress)
                # not training time
                window_start, window_tokens, window_rows, data_seconds = time.perf_counter(), 0, 0, batches.seconds
            if state.step % cfg.save_every == 0 or state.step == total or early_stop:
                save()
            stopping = any_rank(stop.signal is not None, info)
            if stopping:
                save()
                progress.print(f"stopped by {stop.signal or 'another rank'} at step {state.step}; checkpoint saved in "
                               f"{run_dir / ckpt.CHECKPOINTS}. "
                               f"Continue with: lmsmith train RECIPE out={run_dir} --resume auto")
                raise KeyboardInterrupt
            if early_stop:
                progress.print(f"early stop at step {state.step}: "
                               f"no improvement for {cfg.early_stop_patience} evaluations "
                               f"(best val loss {state.best_val_loss:.4f})")
                stopped_early = True
                break

    export_model(run_dir / FINAL_MODEL, model, job, info,
                 {"step": state.step, "val_loss": state.last_val_loss, "best_val_loss": state.best_val_loss})
    if info.is_main:
        counts = {"steps": state.step, "tokens": state.tokens,
                  "epochs": round(batches.epochs(state.step), 4), "val_loss": state.last_val_loss,
                  "best_val_loss": state.best_val_loss, "skipped_steps": guard.skipped,
                  "seconds": round(time.perf_counter() - started, 1)}
        write_run_files(run_dir, job, counts)
        metrics.close()
        if not quiet:
            print(f"done: {state.step} steps, {counts['epochs']} epochs, val loss {state.last_val_loss:.4f} "
                  f"(best {state.best_val_loss:.4f}); model in {run_dir / FINAL_MODEL}, best in {run_dir / BEST_MODEL}")
    return RunResult(run_dir, state.step, stopped_early, state.best_val_loss, state.last_val_loss)
