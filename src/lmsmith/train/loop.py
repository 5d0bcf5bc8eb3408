"""The training loop: `lmsmith train RECIPE`.

Read top to bottom, `train` does what a textbook training script does, with each concern in its
own module of this package:

    join the ranks (distributed)         open the tokens (tokens_dir, data)
    build the model, check it fits (memory)
    run it in a Trainer (trainer): apply checkpointing/compile/DDP/FSDP (parallel),
    make the optimizers (optim), resume from a checkpoint if asked (checkpoint), then
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
from collections.abc import Callable
from pathlib import Path

import torch

from lmsmith.core.config import ConfigError
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST, file_sha256, read_manifest
from lmsmith.core.output import LOCK, directory_lock
from lmsmith.model.sizes import check_model_fits, parameter_counts
from lmsmith.model.transformer import GPT
from lmsmith.schema.train import TrainRecipe, plan_batch, recipe_to_dict, run_summary, train_recipe_of
from lmsmith.text.tokens_dir import TokensDir, open_tokens_dir
from lmsmith.train import checkpoint as ckpt
from lmsmith.train.data import EvalBatches, TokenWindows, TrainBatches
from lmsmith.train.distributed import DistInfo, barrier, process_group
from lmsmith.train.memory import available_memory, check_fits, estimate_memory
from lmsmith.train.optim import parameter_kinds
from lmsmith.train.parallel import blocks_to_checkpoint
from lmsmith.train.precision import Precision, resolve_precision
from lmsmith.train.sizing import SIZING_FILE, size_to_machine, sizing_summary
from lmsmith.train.trainer import FINAL_MODEL, STAGE, RunResult, Trainer, TrainingJob

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


def check_run_path(run_dir: Path, data: str) -> None:
    """Refuse a run path no run may be written at (checked before the lock, which creates the directory)."""
    if Path(data).resolve() == run_dir.resolve():
        raise UserError(f"out={run_dir} is the tokens directory: choose another out=")
    if run_dir.is_symlink() and not run_dir.exists():
        raise UserError(f"out={run_dir} is a link to nothing: remove the link or choose another out= directory")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"out={run_dir} is a file: give a directory for the run")


def prepare_run_dir(run_dir: Path, resume: str | None, data: str) -> Path | None:
    """Check the run directory (under its lock); return the checkpoint to resume from (None: a fresh start)."""
    check_run_path(run_dir, data)
    if run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):  # our own lock is already there
        read_manifest(run_dir, STAGE, fix=f"choose a new out= directory; {run_dir} is kept as it is")
    if resume is not None:
        found = ckpt.find_checkpoint(run_dir, resume)
        if found is not None or resume == "auto":
            return found
    if ckpt.checkpoint_dirs(run_dir) or (run_dir / FINAL_MODEL).is_dir():
        raise UserError(f"{run_dir} already holds a run: "
                        "continue it with --resume auto, or choose another out= directory")
    return None


def check_fits_before_building(recipe: TrainRecipe, info: DistInfo, precision: Precision) -> None:
    """Refuse, by arithmetic alone, a model that surely cannot train here: even the meta-device model that
    counts parameters exactly takes hours to build at model.n_layer=10^6. The count is a lower bound (every
    block parameter taken as a Muon matrix), so this refuses nothing the exact check would pass."""
    config, train = recipe.model, recipe.train
    check_model_fits(config)
    if not train.check_memory:
        return
    parts = parameter_counts(config)
    checkpointed = len(blocks_to_checkpoint(config.n_layer, train.activation_checkpointing, train.checkpoint_every_n))
    shards = info.world_size if train.parallel == "fsdp" else 1
    estimate = estimate_memory(config, sum(parts.values()), parts["n_layer"], train.optimizer, train.micro_batch,
                               precision.name != "fp32", checkpointed, info.device, shards)
    per_machine = info.world_size if info.device.type == "cpu" else 1
    check_fits(estimate, info.device, available_memory(info.device), per_machine)


def build_model(recipe: TrainRecipe, info: DistInfo, precision: Precision, quiet: bool) -> tuple[torch.nn.Module, GPT]:
    """The model, counted and checked against the device's memory before its weights exist."""
    config, train = recipe.model, recipe.train
    check_fits_before_building(recipe, info, precision)
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


def tokens_inputs(tokens: TokensDir) -> dict:
    return {"tokens": {"path": str(tokens.path.absolute()), "manifest_sha256": file_sha256(tokens.path / MANIFEST)},
            "tokenizer": {"sha256": tokens.tokenizer_sha256}}


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
                       inputs={"tokens": {"path": str(Path(recipe.data).absolute())}}, extra=extra)

    return write


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
    run_dir = Path(recipe.out)
    quiet = quiet or not info.is_main
    tokens, tokenizer = open_data(recipe)
    # One run at a time writes a run directory: a second would mix its checkpoints into this one's. The lock
    # comes before any look at the directory: a run checked first could find it empty, wait while another run
    # finishes there, then take the lock and train over the finished run.
    check_run_path(run_dir, recipe.data)
    with directory_lock(run_dir, "training run") if info.is_main else contextlib.nullcontext():
        barrier(info)  # rank 0 holds the lock before any rank looks at the run directory
        resume_from = prepare_run_dir(run_dir, resume, recipe.data)
        barrier(info)  # every rank has looked at the run directory before rank 0 writes to it
        recipe = size_to_machine(recipe, tokens, info, run_dir, resume_from is not None, quiet)
        cfg = recipe.train
        plan = plan_batch(cfg, recipe.model.block_size, info.world_size)
        train_windows = TokenWindows(tokens, "train", recipe.model.block_size)
        val_windows = TokenWindows(tokens, "val", recipe.model.block_size)
        precision = resolve_precision(cfg.precision, info.device)
        model, _ = build_model(recipe, info, precision, quiet)
        job = TrainingJob(
            model=model,
            batches=TrainBatches(train_windows, plan, cfg.seed, info.rank, info.device, cfg.data_order),
            eval_batches=EvalBatches(val_windows, plan, cfg.eval_batches, cfg.seed, info.rank, info.device),
            write_model=plain_model_writer(recipe, tokenizer), stage=STAGE, inputs=tokens_inputs(tokens),
            config=recipe_to_dict(recipe), tokenizer_sha256=tokens.tokenizer_sha256,
            train_tokens=tokens.split_tokens("train"),
        )
        return run_job(job, cfg, run_dir, info, resume_from, quiet).run_dir


def run_job(job: TrainingJob, cfg, run_dir: Path, info: DistInfo, resume_from: Path | None = None,
            quiet: bool = False) -> RunResult:
    """The training loop over `job`, as `cfg` (a TrainConfig) says; every rank calls this (see trainer.Trainer)."""
    return Trainer(job, cfg, run_dir, info, resume_from, quiet).fit()


def show_run(out: Path) -> None:
    """The build's summary of a finished training step: what it trained, and the shape the machine chose."""
    print(run_summary(read_manifest(Path(out), STAGE)))
    if (Path(out) / SIZING_FILE).is_file():
        print(sizing_summary(Path(out) / SIZING_FILE))
