"""Sizing a time-budgeted run to the machine it runs on (the `sizing:` section, lmsmith.schema.sizing).

The same 3.5-minute budget trains 4M tokens on a CPU with bf16 matrix units and 1M on one that
has only AVX2 and fp32; the shape that is best for the first is too large for the second. So,
before training, each candidate shape trains a few real steps on the device itself (one untimed
step for the one-time costs, then `sizing.probe_steps` timed ones, with the recipe's optimizer and
precision). Its tokens per second times the budget is what it would train. The largest candidate
whose budget trains at least `sizing.tokens_per_parameter` tokens for each of its parameters is
taken; if none does, the smallest.

The probe's seconds come out of the budget, so the whole run keeps to `train.max_minutes`. The
choice is written to RUN/sizing.json: a resumed run takes it from there, since a checkpoint's
weights only fit the shape they were trained in. Under torchrun every rank probes, and rank 0's
choice is everyone's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lmsmith.core.atomic import write_json
from lmsmith.core.counts import human_count
from lmsmith.core.errors import UserError
from lmsmith.core.host_memory import keep_freed_memory
from lmsmith.model.transformer import GPT
from lmsmith.schema.sizing import apply_candidate
from lmsmith.schema.train import TrainRecipe, plan_batch
from lmsmith.text.tokens_dir import TokensDir
from lmsmith.train.budget import PROBE_STEPS
from lmsmith.train.data import TokenWindows, TrainBatches
from lmsmith.train.distributed import DistInfo, from_rank_zero
from lmsmith.train.flops import measure_matmul_peak, synchronize
from lmsmith.train.optim import build_optimizers
from lmsmith.train.precision import resolve_precision
from lmsmith.train.trainer import train_step

SIZING_FILE = "sizing.json"


@dataclass
class Measured:
    """One candidate as the probe found it."""

    candidate: dict
    shape: str  # "3 layers x 128, 2k-token batches"
    parameters: int
    step_seconds: float
    tokens_per_s: float
    budget_tokens: float = 0.0  # what the budget would train at that speed
    needed_tokens: float = 0.0  # tokens_per_parameter x parameters

    @property
    def enough(self) -> bool:
        return self.budget_tokens >= self.needed_tokens


def size_to_machine(recipe: TrainRecipe, tokens: TokensDir, info: DistInfo, run_dir: Path, resuming: bool,
                    quiet: bool) -> TrainRecipe:
    """The recipe with the shape this machine should train in its budget (unchanged without candidates)."""
    if not recipe.sizing.candidates or not recipe.train.max_minutes:
        return recipe
    if resuming and (run_dir / SIZING_FILE).is_file():
        return chosen_before(recipe, run_dir / SIZING_FILE)
    if info.device.type == "cpu":
        keep_freed_memory()  # as training will: without it each step faults in fresh pages, a third slower
    started = time.perf_counter()
    try:
        rate = matrix_rate(recipe, info)
        measured = probe(recipe, tokens, info, rate, started)
    except (RuntimeError, ValueError, OSError) as exc:  # an odd BLAS or device: train the recipe as written
        if info.is_main:
            print(f"warning: sizing to this machine failed ({type(exc).__name__}: {exc}); "
                  "training the recipe's own shape")
        return recipe
    probe_seconds = time.perf_counter() - started
    budget_seconds = 60 * recipe.train.max_minutes - probe_seconds
    for m in measured:
        m.budget_tokens = m.tokens_per_s * max(0.0, budget_seconds)
    check_budget_room(recipe, measured[0], probe_seconds)
    # Under torchrun every rank probes, and their clocks differ: rank 0's choice (and budget) is everyone's.
    index = from_rank_zero(choose(measured), info)
    budget_seconds = from_rank_zero_seconds(budget_seconds, info)
    model, train = apply_candidate(recipe.model, recipe.train, recipe.sizing.candidates[index])
    train = dataclasses.replace(train, max_minutes=budget_seconds / 60)
    if info.is_main:
        chosen = measured[index]
        record = {"chosen": index, "candidate": chosen.candidate, "train_minutes": train.max_minutes,
                  "probe_seconds": round(probe_seconds, 2), "matmul_flops": rate, "device": device_words(info),
                  "precision": precision_name(recipe, info), "candidates": len(recipe.sizing.candidates),
                  "measured": [dataclasses.asdict(m) for m in measured]}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / SIZING_FILE, record)
        if not quiet:
            print(sizing_line(record, chosen))
            for number, m in enumerate(measured):
                print(candidate_line(m, number == index, recipe.sizing.tokens_per_parameter))
    return dataclasses.replace(recipe, model=model, train=train)


def from_rank_zero_seconds(seconds: float, info: DistInfo) -> float:
    """Rank 0's seconds on every rank, to the millisecond (the broadcast carries whole numbers)."""
    return from_rank_zero(round(seconds * 1000), info) / 1000


def probe(recipe: TrainRecipe, tokens: TokensDir, info: DistInfo, rate: float, started: float) -> list[Measured]:
    """The candidates measured in order, up to the first whose budget would train too few tokens per parameter.

    Candidates grow, so the ones after it would train fewer still. A candidate whose FLOPs could not
    train enough even at the device's full matrix rate is not run at all: on a CPU, one step of a
    shape meant for a GPU could take minutes.
    """
    seconds = 60 * recipe.train.max_minutes
    measured: list[Measured] = []
    for candidate in recipe.sizing.candidates:
        model_config, _ = apply_candidate(recipe.model, recipe.train, candidate)
        with torch.device("meta"):
            shape_only = GPT(model_config)
        needed = recipe.sizing.tokens_per_parameter * shape_only.num_params()
        at_full_rate = rate / shape_only.flops_per_token() * seconds
        if measured and at_full_rate < needed:
            break
        m = measure(recipe, candidate, tokens, info)
        m.needed_tokens = needed
        measured.append(m)
        if m.tokens_per_s * (seconds - (time.perf_counter() - started)) < needed:
            break
    return measured


def measure(recipe: TrainRecipe, candidate: dict, tokens: TokensDir, info: DistInfo) -> Measured:
    """Seconds per optimizer step of the recipe with `candidate` applied, over a few real steps."""
    model_config, train = apply_candidate(recipe.model, recipe.train, candidate)
    plan = plan_batch(train, model_config.block_size, info.world_size)
    precision = resolve_precision(train.precision, info.device)
    torch.manual_seed(train.seed)
    with torch.device(info.device):
        model = GPT(model_config)
    optimizers = build_optimizers(model, train)
    batches = TrainBatches(TokenWindows(tokens, "train", model_config.block_size), plan, train.seed, info.rank,
                           info.device, train.data_order)
    steps, scaler = recipe.sizing.probe_steps, precision.grad_scaler()
    train_step(model, optimizers, scaler, batches, 1, precision, train.grad_clip)  # pays the one-time costs
    synchronize(info.device)
    started = time.perf_counter()
    for step in range(2, steps + 2):
        train_step(model, optimizers, scaler, batches, step, precision, train.grad_clip)
    synchronize(info.device)
    step_seconds = (time.perf_counter() - started) / steps
    shape = f"{model_config.n_layer} layers x {model_config.n_embd}, {batch_words(plan.tokens)} batches"
    return Measured(candidate, shape, model.num_params(), step_seconds, plan.tokens / step_seconds)


def batch_words(tokens: int) -> str:
    return f"{tokens // 1024}k-token" if tokens % 1024 == 0 else f"{tokens:,}-token"


def choose(measured: list[Measured]) -> int:
    """The largest candidate (the last listed) whose budget trains enough tokens per parameter; else the smallest."""
    enough = [i for i, m in enumerate(measured) if m.enough]
    return enough[-1] if enough else 0


def check_budget_room(recipe: TrainRecipe, smallest: Measured, probe_seconds: float) -> None:
    """Refuse a budget in which even the smallest candidate cannot finish its warmup and a little more."""
    steps_needed = recipe.train.warmup_steps + 10 * PROBE_STEPS
    needed = probe_seconds + steps_needed * smallest.step_seconds
    if needed > 60 * recipe.train.max_minutes:
        raise UserError(f"train.max_minutes={recipe.train.max_minutes:g} is too short for any shape of this recipe: "
                        f"the smallest ({smallest.shape}) takes {smallest.step_seconds:.2f} s a step here; "
                        f"give at least {math.ceil(needed / 6) / 10:g} minutes (--minutes)")


def chosen_before(recipe: TrainRecipe, path: Path) -> TrainRecipe:
    """The shape and budget an interrupted run was sized to, from its sizing.json."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        candidate, minutes = record["candidate"], float(record["train_minutes"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is unreadable, so the shape this run was trained in is unknown: "
                        "start the run afresh (--resume none) or restore the file") from None
    model, train = apply_candidate(recipe.model, recipe.train, candidate)
    return dataclasses.replace(recipe, model=model, train=dataclasses.replace(train, max_minutes=minutes))


def matrix_rate(recipe: TrainRecipe, info: DistInfo) -> float:
    """FLOP/s of large matrix products in the run's precision: the device's ceiling, shown beside the choice."""
    precision = resolve_precision(recipe.train.precision, info.device)
    return measure_matmul_peak(info.device, precision.dtype, seconds=0.2)


def device_words(info: DistInfo) -> str:
    if info.device.type == "cuda":
        return torch.cuda.get_device_name(info.device)
    if info.device.type == "cpu":
        return f"{torch.get_num_threads()} CPU cores"
    return str(info.device)


def precision_name(recipe: TrainRecipe, info: DistInfo) -> str:
    return resolve_precision(recipe.train.precision, info.device).name


def sizing_line(record: dict, chosen: Measured) -> str:
    """`sizing: fp32 on 2 CPU cores at 95 GFLOP/s: 3 layers x 128, 2k-token batches, ~1.1M tokens in 3.3 min`."""
    return (f"sizing: {record['precision']} on {record['device']} at {record['matmul_flops'] / 1e9:,.0f} GFLOP/s: "
            f"{chosen.shape}, ~{human_count(chosen.budget_tokens)} tokens in {record['train_minutes']:.1f} min "
            f"(measured in {record['probe_seconds']:.0f} s)")


def sizing_summary(path: Path) -> str:
    """The sizing line of a finished run, from its sizing.json (the build's summary shows it again)."""
    record = json.loads(path.read_text(encoding="utf-8"))
    chosen = Measured(**record["measured"][record["chosen"]])
    return sizing_line(record, chosen) + f"; candidate {record['chosen'] + 1} of {record['candidates']}"


def candidate_line(m: Measured, chosen: bool, tokens_per_parameter: float) -> str:
    verdict = "enough" if m.enough else "too few"
    mark = "*" if chosen else " "
    return (f"  {mark} {m.shape}: {human_count(m.parameters)} parameters, {m.tokens_per_s:,.0f} tokens/s "
            f"-> {human_count(m.budget_tokens)} tokens, {verdict} for {tokens_per_parameter:g} per parameter "
            f"({human_count(m.needed_tokens)})")
