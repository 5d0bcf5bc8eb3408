"""The Trainer: runs a TrainingJob step by step (shaped like torchtitan's Trainer).

    Trainer(job, cfg, run_dir, info)    place the model (checkpointing/compile/DDP/FSDP), make the
                                        optimizers, pick the precision, resume from a checkpoint
    .step()                             one optimizer step: micro-batches, backward, clip, update
    .evaluate()                         the periodic held-out loss; keeps the best model
    .checkpoint()                       a checkpoint of this step (the last train.keep_last are kept)
    .fit()                              the loop that calls them; writes RUN/model, returns a RunResult

`lmsmith train` (loop.py) and `lmsmith finetune` each make a TrainingJob and run it here.

Every random draw depends only on the seed and the step: batch positions (data), dropout masks
(torch is reseeded from (seed, step, rank) at each step). A run resumed from a checkpoint of
step k therefore repeats steps k+1... exactly as the uninterrupted run did.
"""

from __future__ import annotations

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
from lmsmith.core.errors import UserError
from lmsmith.core.host_memory import keep_freed_memory
from lmsmith.core.manifest import MANIFEST, make_manifest
from lmsmith.train import checkpoint as ckpt
from lmsmith.train.budget import UNCAPPED, TimeBudget
from lmsmith.train.data import EvalBatches, TrainBatches
from lmsmith.train.distributed import DistInfo, any_rank, barrier, from_rank_zero, mean_across_ranks
from lmsmith.train.flops import measure_matmul_peak, mfu
from lmsmith.train.guard import NonFiniteGuard
from lmsmith.train.metrics import METRICS, MetricsLog, require_extras, truncate_after
from lmsmith.train.optim import build_optimizers
from lmsmith.train.parallel import gradient_sync, parallelize, unwrap
from lmsmith.train.precision import Precision, resolve_precision
from lmsmith.train.progress import TrainProgress
from lmsmith.train.schedule import set_learning_rates

STAGE = "train"  # the stage `lmsmith train` names in its manifest (a TrainingJob's default)
RESOLVED_CONFIG = "config.yaml"
FINAL_MODEL, BEST_MODEL = "model", "best"


def next_token_loss(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective of pretraining and of instruct fine-tuning: cross-entropy of each next token.

    An objective takes the model and one micro-batch (inputs first) and returns the loss and any
    statistics to log beside it; preference tuning (finetune/dpo.py) brings its own.
    """
    inputs, targets = batch
    return model(inputs, targets).loss, {}


def in_short_windows(objective: Callable, length: int) -> Callable:
    """`objective` on each row of the micro-batch cut into windows of `length` tokens (the context
    curriculum's first phase): the same tokens, each seeing at most `length` before it, and attention
    over `length` positions instead of the whole block, which is cheaper."""
    def objective_in_windows(model, batch):
        inputs, targets = batch
        return objective(model, (inputs.reshape(-1, length), targets.reshape(-1, length)))

    return objective_in_windows


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
    are), batches of its own data and a writer that folds LoRA adapters in. The Trainer below
    runs both alike.
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
    objective: Callable = next_token_loss  # (model, micro-batch) -> (loss, statistics to log)
    # (model) -> (validation loss, statistics): a job that validates otherwise than by its objective on
    # eval_batches (RL: the exam's pass rate on held-out items); lower is better, as for a loss
    validate: Callable | None = None


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



def write_run_files(run_dir: Path, job: TrainingJob, counts: dict) -> None:
    write_text(run_dir / RESOLVED_CONFIG, yaml.safe_dump(job.config, sort_keys=False))
    write_json(run_dir / MANIFEST, make_manifest(job.stage, config=job.config, counts=counts, inputs=job.inputs))


def export_model(path: Path, model: torch.nn.Module, job: TrainingJob, info: DistInfo, extra: dict) -> None:
    """Write a model directory from the training model (all ranks gather, rank 0 writes)."""
    weights = ckpt.model_tensors(model, info, tied=job.model.config.tie_embeddings)
    if info.is_main:
        job.write_model(path, weights, extra)
    barrier(info)


# ---------------------------------------------------------------------------------------------
# One step, one evaluation


@dataclass(frozen=True)
class StepResult:
    loss: float
    grad_norm: float
    tokens: int  # positions this rank's micro-batches held, padding included (the model computed them)
    rows: int  # sequences in them
    stats: dict[str, float] = field(default_factory=dict)  # what the objective reports beside its loss


def train_step(model, optimizers, scaler, batches: TrainBatches, step: int, precision: Precision,
               grad_clip: float, objective: Callable = next_token_loss) -> StepResult:
    """Forward and backward over the step's micro-batches, clip, optimizer step.

    A step whose loss or gradient norm is not finite leaves the weights as they were. The tokens
    are counted from the batches themselves: fine-tuning pads each batch only to its longest
    example, so a step can hold far fewer than the plan's rows x block_size.
    """
    grad_accum = batches.plan.grad_accum
    loss_sum = torch.zeros((), device=batches.device)
    stats_sum: dict[str, torch.Tensor] = {}
    tokens = rows = 0
    for micro, batch in enumerate(batches.micro_batches(step)):
        inputs = batch[0]
        tokens, rows = tokens + inputs.numel(), rows + inputs.size(0)
        with gradient_sync(model, enabled=micro == grad_accum - 1):
            with precision.autocast():
                loss, stats = objective(model, batch)
                loss = loss / grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += loss.detach()
        for name, value in stats.items():
            stats_sum[name] = stats_sum.get(name, 0) + value.detach().float() / grad_accum
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
    return StepResult(loss_value, norm_value, tokens, rows, {k: round(float(v), 5) for k, v in stats_sum.items()})


@torch.no_grad()
def evaluate_objective(model, batches: EvalBatches, precision: Precision, info: DistInfo,
                       objective: Callable = next_token_loss) -> tuple[float, dict[str, float]]:
    """Mean validation loss (and the objective's statistics) over the fixed validation batches, over ranks."""
    model.eval()
    total, count = 0.0, 0
    stats_sum: dict[str, float] = {}
    for batch in batches:
        with precision.autocast():
            loss, stats = objective(model, batch)
        total += loss.item()
        for name, value in stats.items():
            stats_sum[name] = stats_sum.get(name, 0.0) + float(value)
        count += 1
    model.train()
    stats = {name: round(mean_across_ranks(value / max(1, count), info), 5) for name, value in stats_sum.items()}
    return mean_across_ranks(total / max(1, count), info), stats


def evaluate(model, batches: EvalBatches, precision: Precision, info: DistInfo,
             objective: Callable = next_token_loss) -> float:
    """Mean validation loss over the fixed validation batches, averaged over ranks."""
    return evaluate_objective(model, batches, precision, info, objective)[0]



# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """The training loop over `job`, as `cfg` (a TrainConfig) says; every rank makes one and calls fit().

    The methods run the statements of one loop in its order: random draws, collectives between
    ranks and writes to the run directory come in the same sequence at every step, which is what
    keeps a resumed run bit-identical to an uninterrupted one.
    """

    def __init__(self, job: TrainingJob, cfg, run_dir: Path, info: DistInfo, resume_from: Path | None = None,
                 quiet: bool = False):
        self.job, self.cfg, self.run_dir, self.info = job, cfg, run_dir, info
        self.quiet = quiet or not info.is_main
        require_extras(cfg.tensorboard, cfg.wandb)
        self.model_config = job.model.config  # checked on resume, saved in every checkpoint
        self.precision = resolve_precision(cfg.precision, info.device)
        if info.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 parts of the model on tensor cores
        if info.device.type == "cpu":
            keep_freed_memory()  # each step reuses the last one's buffers instead of faulting in fresh pages
        # Training FLOPs per token at a row length (attention's share grows with it); rows are block_size
        # long in pretraining, as long as the batch's longest example in fine-tuning.
        self.flops_per_token = functools.lru_cache(maxsize=None)(job.model.flops_per_token)
        self.model = parallelize(job.model, cfg, info)
        self.optimizers = build_optimizers(unwrap(self.model), cfg)
        self.scaler = self.precision.grad_scaler()
        self.state = self._resume(resume_from)
        self.guard = NonFiniteGuard(cfg.max_bad_steps)
        self.metrics = self._open_metrics()
        # Rank 0 alone measures the peak: MFU is only reported there.
        self.peak = cfg.peak_flops or (measure_matmul_peak(info.device, self.precision.dtype) if info.is_main else 0.0)
        self._print_start(resume_from)
        self.progress: TrainProgress | None = None  # fit()'s progress bar, while it runs
        self.step_stats: dict[str, float] = {}  # what the objective reported beside the last step's loss

    def _resume(self, resume_from: Path | None) -> RunState:
        """A fresh RunState, or the one saved in `resume_from` with model, optimizers and scaler restored."""
        if resume_from is None:
            return RunState()
        cfg, job = self.cfg, self.job
        saved = ckpt.read_checkpoint_state(resume_from)
        # The checks come before any weights load: a refused checkpoint leaves the model as it was built.
        ckpt.check_same_model(resume_from, saved.get("model", {}), asdict(self.model_config))
        if saved.get("tokenizer_sha256") != job.tokenizer_sha256:
            raise UserError(f"{resume_from} was trained on tokens of another tokenizer: "
                            "resume with the data= it started with")
        if saved["run"]["step"] > cfg.steps:
            raise UserError(f"{resume_from} is at step {saved['run']['step']}, past train.steps={cfg.steps}: "
                            "raise train.steps to continue")
        saved = ckpt.load_checkpoint(resume_from, self.model, self.optimizers, self.scaler, self.info,
                                     self.model_config.tie_embeddings)
        return RunState(**saved["run"])

    def _open_metrics(self) -> MetricsLog | None:
        """Rank 0 writes the run directory; other ranks log nothing (None)."""
        if not self.info.is_main:
            return None
        cfg, run_dir = self.cfg, self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_after(run_dir / METRICS, self.state.step)  # a resumed run logs the steps after its checkpoint anew
        write_run_files(run_dir, self.job, {"steps": self.state.step})
        return MetricsLog(run_dir, cfg.tensorboard, cfg.wandb, cfg.wandb_project, self.job.config)

    def _print_start(self, resume_from: Path | None) -> None:
        cfg, info, job, plan = self.cfg, self.info, self.job, self.job.batches.plan
        if not (info.is_main and not self.quiet):
            return
        start = f"resuming from {resume_from.name}" if resume_from else "starting"
        length = f"{cfg.steps} steps"
        if cfg.max_minutes:
            length = f"{cfg.max_minutes:g} minutes" + (f" (at most {cfg.steps} steps)" if cfg.steps < UNCAPPED else "")
        print(f"{start}: {length} of {plan.tokens:,} tokens ({plan.rows} x {plan.block_size}; "
              f"micro-batch {plan.micro_batch} x {plan.grad_accum} accumulation x {info.world_size} rank(s)), "
              f"{self.precision.name} on {info.device}"
              + (f", the first {cfg.short_context_share:.0%} of steps on {cfg.short_context}-token windows"
                 if cfg.short_context and job.stage == STAGE else "")
              + (f", {job.train_tokens:,} train tokens" if job.train_tokens else ""))

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> RunResult:
        """Train to the last step (or an early stop), then write RUN/model; returns where the run ended."""
        cfg, state = self.cfg, self.state
        self._start_clock()
        stopped_early = False
        with StopRequest() as stop, TrainProgress(self.total, state.step, self.quiet) as progress:
            self.progress = progress
            self.model.train()
            while state.step < self.total:
                loss, grad_norm, lr = self.step()
                self._follow_budget()
                self._log(loss, grad_norm, lr)
                early_stop = False
                if (cfg.eval_every and state.step % cfg.eval_every == 0) or state.step == self.total:
                    early_stop = self.evaluate()
                    self._restart_window()  # not training time: tokens/s counts from here
                if state.step % cfg.save_every == 0 or state.step == self.total or early_stop:
                    self.checkpoint()
                if any_rank(stop.signal is not None, self.info):  # every rank stops at the same step
                    self._stop(stop.signal)
                if early_stop:
                    progress.print(f"early stop at step {state.step}: "
                                   f"no improvement for {cfg.early_stop_patience} evaluations "
                                   f"(best val loss {state.best_val_loss:.4f})")
                    stopped_early = True
                    break
        return self._finish(stopped_early)

    def _start_clock(self) -> None:
        """The loop's own bookkeeping: wall clock, time budget, planned total, throughput window."""
        cfg, state = self.cfg, self.state
        self.started = time.perf_counter()
        self.seconds_before = state.train_seconds  # a resumed run's clock goes on from its checkpoint
        self.budget = None
        if cfg.max_minutes:  # a validation pass costs about a third of a step per micro-batch (forward only)
            self.budget = TimeBudget(cfg.max_minutes, cfg.steps, cfg.warmup_steps, cfg.eval_every,
                                     eval_share=cfg.eval_batches / (3 * self.job.batches.plan.grad_accum),
                                     used_seconds=self.seconds_before)
        self.total = state.planned_steps or cfg.steps  # a budgeted run keeps the plan it had
        self.whole_rows = False  # the context curriculum's second phase has begun (see _objective)
        if state.tokens is None:  # a checkpoint from before tokens were counted, when every row was block_size long
            state.tokens = state.step * self.job.batches.plan.tokens
        self._restart_window()

    def _restart_window(self) -> None:
        """Start a new window for tokens/s, MFU and the data loader's share of the time."""
        self.window_start, self.window_tokens, self.window_rows, self.data_seconds = (
            time.perf_counter(), 0, 0, self.job.batches.seconds)

    def _objective(self) -> Callable:
        """The job's objective, on short windows while the context curriculum's first phase lasts
        (pretraining only: see TrainConfig.short_context).

        The phase ends at short_context_share of the planned steps; a time budget's re-plan can move
        that point, so once a step has trained on whole rows the later ones do too (no back and forth)."""
        cfg = self.cfg
        short = (cfg.short_context is not None and self.job.stage == STAGE and not self.whole_rows
                 and self.state.step < cfg.short_context_share * self.total)
        self.whole_rows = self.whole_rows or not short
        return in_short_windows(self.job.objective, cfg.short_context) if short else self.job.objective

    def step(self) -> tuple[float, float, float]:
        """One optimizer step: micro-batches, backward, clip, update. Returns (loss, grad norm, learning rate).

        The loss is this rank's; a step that was not finite on any rank is counted as skipped.
        """
        cfg, info, state = self.cfg, self.info, self.state
        torch.manual_seed(step_seed(cfg.seed, state.step, info.rank))  # dropout masks: a function of the step
        lr_scale = set_learning_rates(self.optimizers, state.step, cfg, self.total)
        result = train_step(self.model, self.optimizers, self.scaler, self.job.batches, state.step, self.precision,
                            cfg.grad_clip, self._objective())
        loss, grad_norm = result.loss, result.grad_norm
        self.step_stats = result.stats
        # With a scaler the gradients' overflow is its business (it skips the update); only the loss counts.
        bad = any_rank(NonFiniteGuard.is_bad(loss, grad_norm) if self.scaler is None else not math.isfinite(loss),
                       info)
        state.step += 1
        # This rank's rows stand for every rank's: the same count in pretraining, close to it when
        # each rank pads its own fine-tuning batches (counting them exactly would cost a sync a step).
        state.tokens += result.tokens * info.world_size
        self.window_tokens, self.window_rows = self.window_tokens + result.tokens, self.window_rows + result.rows
        self.guard.record(bad, state.step)
        state.skipped_steps = self.guard.skipped
        state.train_seconds = self.seconds_before + time.perf_counter() - self.started
        return loss, grad_norm, cfg.lr * lr_scale

    def _follow_budget(self) -> None:
        """With train.max_minutes: take the budget's (re)planned total of steps."""
        if self.budget is None:
            return
        state = self.state
        # Every rank follows rank 0's plan, so all stop at the same step.
        planned = self.budget.after_step(state.step, state.planned_steps)
        state.planned_steps = planned if planned is None else from_rank_zero(planned, self.info)
        if state.planned_steps and state.planned_steps != self.total:
            self.total = state.planned_steps
            self.progress.set_total(self.total)

    def _log(self, loss: float, grad_norm: float, lr: float) -> None:
        """Update the progress bar; every train.log_every steps (and the last) log the mean loss over ranks."""
        cfg, info, state, batches = self.cfg, self.info, self.state, self.job.batches
        log_now = state.step % cfg.log_every == 0 or state.step == self.total
        if log_now:
            loss = mean_across_ranks(loss, info)
        elapsed = time.perf_counter() - self.window_start
        tokens_per_s = self.window_tokens * info.world_size / elapsed if elapsed > 0 else 0.0
        row_length = round(self.window_tokens / self.window_rows) if self.window_rows else self.model_config.block_size
        utilisation = mfu(self.flops_per_token(row_length), tokens_per_s / info.world_size, self.peak)
        self.progress.update(state.step, loss, lr, tokens_per_s, utilisation, log_now)
        if log_now and self.metrics is not None:
            self.metrics.log({"step": state.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                              "tokens": state.tokens, "epoch": round(batches.epochs(state.step), 4),
                              "tokens_per_s": round(tokens_per_s, 1), "mfu": round(utilisation, 4),
                              "data_share": (round((batches.seconds - self.data_seconds) / elapsed, 4)
                                             if elapsed > 0 else 0.0),
                              "skipped_steps": self.guard.skipped,
                              "elapsed_s": round(time.perf_counter() - self.started, 2), **self.step_stats})
        if log_now:
            self._restart_window()

    def evaluate(self) -> bool:
        """The held-out loss now; keeps the best model in RUN/best. True when early stopping says to stop."""
        cfg, state = self.cfg, self.state
        if self.job.validate is not None:
            val_loss, val_stats = self.job.validate(unwrap(self.model))
        else:
            val_loss, val_stats = evaluate_objective(self.model, self.job.eval_batches, self.precision, self.info,
                                                     self.job.objective)
        state.last_val_loss = val_loss
        improved = state.best_val_loss is None or val_loss < state.best_val_loss - cfg.early_stop_min_delta
        if improved:
            state.best_val_loss, state.evals_since_best = val_loss, 0
            export_model(self.run_dir / BEST_MODEL, self.model, self.job, self.info,
                         {"step": state.step, "val_loss": val_loss})
        else:
            state.evals_since_best += 1
        # A job's own validation (RL's pass rate) is a loss only in that lower is better: no perplexity for it.
        perplexity = {} if self.job.validate else {"perplexity": math.exp(min(val_loss, 700))}
        reported = {**perplexity, **val_stats}
        if self.metrics is not None:
            self.metrics.log({"step": state.step, "val_loss": val_loss,
                              **{f"val_{name}": value for name, value in reported.items()}})
        shown = ", ".join(f"{name.replace('_', ' ')} {value:.4g}" for name, value in reported.items())
        self.progress.print(f"step {state.step}: val loss {val_loss:.4f}" + (f" ({shown})" if shown else "")
                            + (" best" if improved else ""))
        return cfg.early_stop_patience is not None and state.evals_since_best >= cfg.early_stop_patience

    def checkpoint(self) -> None:
        """Save this step's checkpoint, unless it is saved already (a signal can come on a save_every step)."""
        state, run_dir = self.state, self.run_dir
        if ckpt.checkpoint_dirs(run_dir) and ckpt.checkpoint_dirs(run_dir)[-1].name == f"step-{state.step:06d}":
            return
        extra = {"run": asdict(state), "model": asdict(self.model_config), "recipe": self.job.config,
                 "tokenizer_sha256": self.job.tokenizer_sha256, "world_size": self.info.world_size}
        ckpt.save_checkpoint(run_dir, state.step, self.model, self.optimizers, self.scaler, extra, self.info,
                             self.cfg.keep_last)  # keeps the last train.keep_last checkpoints

    def _stop(self, signal_name: str | None) -> None:
        """A signal came (here or on another rank): save this step, say how to continue, stop."""
        self.checkpoint()
        run_dir = self.run_dir
        self.progress.print(f"stopped by {signal_name or 'another rank'} at step {self.state.step}; checkpoint saved "
                            f"in {run_dir / ckpt.CHECKPOINTS}. "
                            f"Continue with: lmsmith train RECIPE out={run_dir} --resume auto")
        raise KeyboardInterrupt

    def _finish(self, stopped_early: bool) -> RunResult:
        """Write RUN/model (every rank gathers) and, on rank 0, the final manifest and the closing line."""
        state, run_dir, batches = self.state, self.run_dir, self.job.batches
        export_model(run_dir / FINAL_MODEL, self.model, self.job, self.info,
                     {"step": state.step, "val_loss": state.last_val_loss, "best_val_loss": state.best_val_loss})
        if self.info.is_main:
            counts = {"steps": state.step, "tokens": state.tokens,
                      "epochs": round(batches.epochs(state.step), 4), "val_loss": state.last_val_loss,
                      "best_val_loss": state.best_val_loss, "skipped_steps": self.guard.skipped,
                      "seconds": round(time.perf_counter() - self.started, 1),
                      "precision": self.precision.name, "device": self.info.device.type}
            write_run_files(run_dir, self.job, counts)
            self.metrics.close()
            if not self.quiet:
                print(f"done: {state.step} steps, {counts['epochs']} epochs, val loss {state.last_val_loss:.4f} "
                      f"(best {state.best_val_loss:.4f}); model in {run_dir / FINAL_MODEL}, "
                      f"best in {run_dir / BEST_MODEL}")
        return RunResult(run_dir, state.step, stopped_early, state.best_val_loss, state.last_val_loss)
