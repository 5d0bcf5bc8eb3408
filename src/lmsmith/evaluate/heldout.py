"""`lmsmith eval`: a model's loss, perplexity and bits per byte on a whole split of a tokens directory.

The model (a model directory, or a run directory whose final model is in `model/`) and the
tokens must come from the same tokenizer: the tokens' manifest names the hash of the tokenizer
that made them, and a model whose tokenizer hashes differently is refused, because its ids
would mean other text. Bits per byte does not depend on the tokenizer, so it is the number to
compare models with different tokenizers on the same text.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lmsmith.core.atomic import write_json
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST, recorded_input
from lmsmith.core.progress import progress_bar
from lmsmith.model.scoring import EvalResult, evaluate_tokens, token_byte_lengths, windows
from lmsmith.schema.evaluate import EvalConfig
from lmsmith.text.tokens_dir import TokensDir, open_tokens_dir, read_split

STAGE = "eval"




@dataclass
class SplitEval:
    """What was scored, and the scores."""

    model: str
    data: str
    split: str
    result: EvalResult

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "split": self.split, **self.result.to_dict()}


def tokens_dir_of(model_dir: Path) -> Path:
    """The tokens directory a trained model was made from, as its manifest records it."""
    try:
        manifest = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
        recorded = Path(manifest["inputs"]["tokens"]["path"])
        return recorded_input(model_dir, manifest, "tokens") or recorded  # one that is gone: named as recorded
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{model_dir} does not record the tokens it was trained on: name them with --data TOKENS_DIR"
        ) from None


def check_same_tokenizer(tokens: TokensDir, model_tokenizer, model_dir: Path) -> None:
    if model_tokenizer.sha256 != tokens.tokenizer_sha256:
        raise UserError(
            f"{tokens.path} was made by another tokenizer than the model in {model_dir} (the tokenizer hashes differ), "
            "so its ids mean other text to this model: "
            f"tokenize the text again with `lmsmith tokenize DATA -t {model_dir} -o DIR`"
        )


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    from lmsmith.train.precision import resolve_precision

    resolved = resolve_precision(precision, device)
    return None if resolved.name == "fp32" else resolved.dtype


def evaluate(model: str | Path, data: str | Path | None = None, config: EvalConfig | None = None,
                   quiet: bool = False) -> SplitEval:
    """Score every token of one split of `data` (default: the tokens the model was trained on)."""
    from lmsmith.core.device import pick_device
    from lmsmith.core.host_memory import keep_freed_memory
    from lmsmith.model.directory import load_model_dir, resolve_model_dir

    config = config or EvalConfig()
    config.check("eval")
    model_dir = resolve_model_dir(model)
    tokens = open_tokens_dir(data if data is not None else tokens_dir_of(model_dir))
    device = pick_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # each batch reuses the last one's logits buffer
    net, model_tokenizer = load_model_dir(model_dir, device)
    check_same_tokenizer(tokens, model_tokenizer, model_dir)
    if tokens.split_tokens(config.split) < 2:
        raise UserError(f"the {config.split} split of {tokens.path} holds {tokens.split_tokens(config.split)} tokens, "
                        f"nothing to score: evaluate another split (--split val), or hold out more text when curating")
    ids = read_split(tokens, config.split)
    context = config.context or net.config.block_size
    stride = config.stride or max(1, context // 2)
    with _WindowProgress(len(windows(len(ids), context, stride)), config.batch_size, quiet) as progress:
        result = evaluate_tokens(net, ids, token_byte_lengths(tokens.tokenizer()), context=context, stride=stride,
                                 batch_size=config.batch_size, device=device,
                                 autocast_dtype=autocast_dtype(config.precision, device), progress=progress)
    return SplitEval(str(model_dir), str(tokens.path), config.split, result)


class _WindowProgress:
    """A bar over the windows scored."""

    def __init__(self, total_windows: int, batch_size: int, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        self.bar = progress_bar(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"),
                                TimeRemainingColumn(), quiet=quiet)
        self.task = self.bar.add_task("eval", total=total_windows)

    def __enter__(self):
        self.bar.start()
        return self

    def __call__(self, n_windows: int) -> None:
        self.bar.advance(self.task, n_windows)

    def __exit__(self, *exc) -> None:
        self.bar.stop()


def eval_table(scored: SplitEval):
    """A rich table of the scores, with what was scored in its title."""
    from rich.table import Table

    r = scored.result
    table = Table(title=f"{scored.model} on the {scored.split} split of {scored.data}", title_justify="left")
    for column in ("loss (nats/token)", "perplexity", "bits per byte", "tokens", "bytes", "context / stride"):
        table.add_column(column, justify="right")
    table.add_row(f"{r.loss:.4f}", f"{r.perplexity:.2f}", f"{r.bits_per_byte:.4f}", f"{r.tokens:,}", f"{r.bytes:,}",
                  f"{r.context} / {r.stride}")
    return table


RESULT = "result.json"


def run(config, inputs: dict, out: str | Path | None = None, *, quiet: bool = False, as_json: bool = False) -> dict:
    """The eval stage: score `inputs["model"]` on a split of `inputs["data"]` (default: its own tokens).

    With `out`, writes `out/result.json` and its manifest; prints the table (or one JSON line).
    Returns the scores.
    """
    from lmsmith.core.output import input_record, stage_directory, write_manifest

    cfg: EvalConfig = config.eval
    model, data = inputs["model"], inputs.get("data")
    if out is not None:  # refuse a bad -o before minutes of scoring
        from lmsmith.core.output import check_output

        check_output(out, STAGE, reads=[model] + ([data] if data else []))
    scored = evaluate(model, data, cfg, quiet=quiet or as_json)
    if out is not None:
        with stage_directory(out, STAGE, reads=[model] + ([data] if data else [])) as tmp:
            write_json(tmp / RESULT, scored.to_dict())
            write_manifest(tmp, STAGE, config=dataclasses.asdict(cfg), counts=scored.result.to_dict(),
                           inputs={"model": input_record(scored.model), "tokens": input_record(scored.data)})
    if as_json:
        print(json.dumps(scored.to_dict()))
    else:  # the scores are the result: shown with --quiet too (which only hides the progress bar)
        from rich.console import Console

        Console(highlight=False).print(eval_table(scored))
    return scored.to_dict()


def show_result(out: Path) -> None:
    """The scores a finished eval step wrote, as the table `lmsmith eval` prints (at the end of a build)."""
    from rich.console import Console

    from lmsmith.model.scoring import EvalResult

    scored = json.loads((Path(out) / RESULT).read_text(encoding="utf-8"))
    fields = {k: scored[k] for k in EvalResult.__dataclass_fields__}
    Console(highlight=False).print(eval_table(SplitEval(scored["model"], scored["data"], scored["split"],
                                                        EvalResult(**fields))))
