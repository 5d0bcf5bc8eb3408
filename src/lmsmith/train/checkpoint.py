"""Checkpoints: everything needed to continue a run exactly where it stopped.

    RUN/checkpoints/step-000500/
        model.safetensors       the weights (a tied head stored once, as tok_emb.weight)
        optimizer.safetensors   every optimizer state tensor, named state/<parameter>/<key>
        rng.safetensors         the torch (CPU and CUDA) random states
        state.json              the step, optimizer groups and scalars, gradient scaler, numpy and
                                python random states, best validation loss, the resolved recipe

Nothing is pickled, so a checkpoint from anywhere can be opened safely. A checkpoint directory
is built under a temporary name and renamed into place when complete: a crash (or a full disk)
while saving leaves the earlier checkpoints as they were. Under torchrun every rank takes part in
gathering the state (FSDP shards must be collected) and rank 0 writes.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmsmith.core.atomic import atomic_directory
from lmsmith.core.errors import UserError, cannot_read, check_readable, is_disk_full
from lmsmith.train.distributed import DistInfo, barrier
from lmsmith.train.parallel import unwrap

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
MODEL_FILE, OPTIMIZER_FILE, RNG_FILE, STATE_FILE = (
    "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


def _options(info: DistInfo):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Across ranks, gather whole tensors to the CPU so the files do not depend on the number of ranks.
    return StateDictOptions(full_state_dict=info.is_distributed, cpu_offload=info.is_distributed)


# ---------------------------------------------------------------------------------------------
# Flattening state into named tensors and JSON


def model_tensors(model: nn.Module, info: DistInfo, tied: bool) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(info))
    if tied:
        state.pop("head.weight", None)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def optimizer_tensors(model: nn.Module, optimizers: list, info: DistInfo) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizers' state as (tensors named state/<param>/<key>, JSON-able rest)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizers, options=_options(info))
    if not state:  # gathered to rank 0 only: the other ranks get nothing to write
        return {}, {}
    tensors, scalars = {}, {}
    for param, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{param}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(param, {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[str, dict[str, Any]] = {}
    for name, value in tensors.items():
        param, key = name.removeprefix("state/").rsplit("/", 1)
        state.setdefault(param, {})[key] = value
    for param, entries in rest["scalars"].items():
        state.setdefault(param, {}).update(entries)
    # JSON has no tuples; optimizers index betas and coefficients, which lists serve as well, but
    # a restored group should compare equal to a fresh one.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_states() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    version, internal, gauss_next = random.getstate()
    python_state = {"version": version, "internal": list(internal), "gauss_next": gauss_next}
    return tensors, {"numpy": numpy_state, "python": python_state}


def restore_rng_states(tensors: dict[str, torch.Tensor], states: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = states["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# ---------------------------------------------------------------------------------------------
# Saving


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a temporary, half-written one has another name)."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizers: list, scaler, state: dict,
                    info: DistInfo, keep_last: int) -> Path | None:
    """Write checkpoint `step` (every rank calls this; rank 0 writes); then keep only the last `keep_last`."""
    weights = model_tensors(model, info, tied=state["model"]["tie_embeddings"])
    opt_tensors, opt_rest = optimizer_tensors(model, optimizers, info)
    target = Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"
    if info.is_main:
        rng_tensors, rng_rest = rng_states()
        payload = {**state, "step": step, "optimizer": opt_rest, "rng": rng_rest,
                   "scaler": scaler.state_dict() if scaler is not None else None}
        writing = MODEL_FILE
        try:
            with atomic_directory(target) as tmp:
                for writing, tensors in ((MODEL_FILE, weights), (OPTIMIZER_FILE, opt_tensors), (RNG_FILE, rng_tensors)):
                    save_file(tensors, tmp / writing)
                writing = STATE_FILE
                (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1) + "\n")
                writing = f"{target.name} (moving it into place)"
        except (OSError, SafetensorError) as exc:  # safetensors wraps the OSError of a failed write in its own type
            previous = [p.name for p in checkpoint_dirs(run_dir) if p != target]
            kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
            if is_disk_full(exc):
                reason = f"the disk is full while writing {writing}"
            else:
                reason = f"{getattr(exc, 'strerror', None) or exc} (while writing {writing})"
            raise UserError(f"cannot save the checkpoint of step {step} in {target.parent}: {reason}; {kept}. "
                            "Free some space (or lower train.keep_last), then continue with --resume auto") from None
        for old in checkpoint_dirs(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return target if info.is_main else None


# ---------------------------------------------------------------------------------------------
# Loading


def find_checkpoint(run_dir: Path, resume: str) -> Path | None:
    """`auto`: the newest checkpoint of the run, or None to start fresh; else the given directory."""
    if resume == "auto":
        found = checkpoint_dirs(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if path.is_dir() and not (path / STATE_FILE).is_file() and checkpoint_dirs(path):
        return checkpoint_dirs(path)[-1]  # a run directory: its newest checkpoint
    if not (path / STATE_FILE).is_file():
        raise UserError(f"{path} is not a checkpoint (no {STATE_FILE}): "
                        "give RUN/checkpoints/step-N, a run directory, or auto")
    return path


def read_checkpoint_state(path: Path) -> dict:
    try:
        return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except PermissionError as exc:
        raise cannot_read(path / STATE_FILE, exc) from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise UserError(f"{path / STATE_FILE} is unreadable or corrupted: resume from an earlier checkpoint") from None


def check_same_model(path: Path, saved: dict, current: dict) -> None:
    """Refuse a checkpoint made for another model shape, naming what differs."""
    differ = [f"{k} {saved.get(k)!r} vs {current[k]!r}" for k in current
              if saved.get(k) != current[k] and k != "dropout"]
    if differ:
        raise UserError(f"{path} was made for another model ({'; '.join(differ[:4])}): resume with the model section "
                        "the run started with, or start a new run in another out= directory")


def check_same_optimizers(path: Path, saved_groups: list[dict], model: nn.Module, optimizers: list) -> None:
    """Refuse optimizer state whose groups (kind and parameters) differ from this run's optimizers."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    current = get_optimizer_state_dict(model, optimizers)["param_groups"]  # this rank's view: names suffice
    describe = lambda groups: [(g.get("kind"), sorted(g["params"])) for g in groups]  # noqa: E731
    if describe(saved_groups) != describe(current):
        saved = ", ".join(str(g.get("kind")) for g in saved_groups)
        now = ", ".join(str(g.get("kind")) for g in current)
        raise UserError(f"{path / OPTIMIZER_FILE} does not fit this run's optimizer "
                        f"(parameter groups {saved} vs {now}): "
                        "resume with the train.optimizer the run started with")


def _load(file: Path) -> dict[str, torch.Tensor]:
    if file.is_file():
        check_readable(file)  # safetensors reports an unreadable file as a missing one
    try:
        return load_file(file)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{file} is truncated or corrupted ({exc}): resume from an earlier checkpoint") from None


def load_checkpoint(path: Path, model: nn.Module, optimizers: list, scaler, info: DistInfo, tied: bool) -> dict:
    """Restore weights, optimizer, scaler and random states in place; return the state.json dict."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = read_checkpoint_state(path)
    weights = _load(path / MODEL_FILE)
    # Shapes from the model itself: under FSDP a parameter reports its whole shape, not its shard's.
    current = {k: v.shape for k, v in unwrap(model).state_dict().items() if not (tied and k == "head.weight")}
    for name, shape in current.items():
        if name not in weights or weights[name].shape != shape:
            got = list(weights[name].shape) if name in weights else "nothing"
            raise UserError(f"{path / MODEL_FILE}: {name} is {got}, the model needs {list(shape)}: "
                            "the checkpoint was made for another model shape")
        if weights[name].is_floating_point() and not bool(torch.isfinite(weights[name]).all()):
            raise UserError(f"{path / MODEL_FILE}: {name} holds NaN or inf: the run had diverged when this checkpoint "
                            "was saved; resume from an earlier one (--resume PATH) with a lower train.lr")
    if tied:
        weights["head.weight"] = weights["tok_emb.weight"]
    set_model_state_dict(model, weights, options=_options(info))
    optimizer_state = optimizer_state_from(_load(path / OPTIMIZER_FILE), state["optimizer"])
    check_same_optimizers(path, optimizer_state["param_groups"], model, optimizers)
    set_optimizer_state_dict(model, optimizers, optimizer_state, options=_options(info))
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    restore_rng_states(_load(path / RNG_FILE), state["rng"])
    return state

