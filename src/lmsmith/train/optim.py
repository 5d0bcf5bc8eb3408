"""Optimizers and which parameters each one trains.

    AdamW   every parameter (optimizer=adamw), or those Muon does not take (optimizer=muon).
            Weight decay pulls only the matrices of the blocks and an untied output head towards
            zero; embeddings (a rare token's row gets few updates, and decay would wipe it out),
            norm gains and biases are not decayed.
    Muon    (optimizer=muon) the 2-D matrices inside the blocks: attention and feed-forward
            weights. Their momentum-averaged update is orthogonalised by a Newton-Schulz
            iteration, which trains hidden matrices faster than AdamW at the same compute. The
            embeddings, the head, norms and biases stay with AdamW, as Muon is defined for
            hidden layers only. (lmsmith.train.muon.GroupedMuon: torch.optim.Muon with the
            orthogonalisation batched over matrices of one shape.)

Each parameter group records its peak learning rate (`peak_lr`) and its kind (`kind`); the
schedule scales `lr` from `peak_lr` every step.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lmsmith.core.errors import UserError
from lmsmith.schema.train import TrainConfig


def parameter_kinds(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters by kind: `decay` and `no_decay` (AdamW), `hidden_matrix` (Muon's candidates).

    A tied head shares the embedding's tensor, which `named_parameters` lists once, as the embedding.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    kinds: dict[str, list] = {"decay": [], "no_decay": [], "hidden_matrix": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or id(param) in embeddings:
            kinds["no_decay"].append((name, param))
        elif name.startswith("blocks."):
            kinds["hidden_matrix"].append((name, param))
        else:
            kinds["decay"].append((name, param))  # an untied output head
    return kinds


def _group(kind: str, params: list, lr: float, weight_decay: float) -> dict:
    return {"params": [p for _, p in params], "kind": kind, "peak_lr": lr, "lr": lr, "weight_decay": weight_decay}


def _fused_ok(params: list[nn.Parameter]) -> bool:
    """The fused AdamW kernel runs on plain CUDA and CPU tensors, not on sharded (DTensor) ones."""
    return bool(params) and all(p.device.type in ("cuda", "cpu") and type(p.data) is torch.Tensor for p in params)


def build_optimizers(model: nn.Module, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW alone, or AdamW plus Muon; build them after `parallelize` (FSDP replaces the parameters)."""
    kinds = parameter_kinds(model)
    groups = [_group("no_decay", kinds["no_decay"], config.lr, 0.0)]
    if config.optimizer == "adamw":
        groups.append(_group("decay", kinds["decay"] + kinds["hidden_matrix"], config.lr, config.weight_decay))
    elif kinds["decay"]:
        groups.append(_group("decay", kinds["decay"], config.lr, config.weight_decay))
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    adamw = torch.optim.AdamW(groups, betas=(config.beta1, config.beta2), eps=config.eps,
                              fused=True if _fused_ok(params) else None)
    if config.optimizer == "adamw":
        return [adamw]
    if getattr(torch.optim, "Muon", None) is None:
        raise UserError(f"train.optimizer=muon needs torch.optim.Muon, which PyTorch {torch.__version__} lacks: "
                        "upgrade PyTorch to 2.9 or newer, or use train.optimizer=adamw")
    from lmsmith.train.muon import GroupedMuon

    muon = GroupedMuon([_group("hidden_matrix", kinds["hidden_matrix"], config.muon_lr, config.weight_decay)],
                       momentum=config.muon_momentum, nesterov=True)
    return [adamw, muon]
