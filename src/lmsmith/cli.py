"""The command line: one verb per stage. Each verb parses its arguments and calls the stage.

Every `UserError` becomes one line on stderr and exit code 2; nothing else is caught, so a
bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from lmsmith import __version__
from lmsmith.errors import UserError


# ---------------------------------------------------------------------------------------------
# curate


def add_curate(sub) -> None:
    p = sub.add_parser("curate", help="turn raw text, code and datasets into clean, deduplicated train/val/test shards")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders, hf:NAME[:CONFIG][:SPLIT], or stdlib; KEY=VALUE items are config overrides "
                        "(e.g. split.val_fraction=0.05)")
    p.add_argument("-o", "--out", required=True, help="output directory (replaced as a whole when the run succeeds)")
    p.add_argument("--config", help="YAML config: its curate: section, or bare keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, anywhere on the line (repeatable), e.g. --set dedup.threshold=0.85")
    p.add_argument("--keep-dropped", action="store_true", help="also write what was removed, with the reason, to OUT/dropped/")
    p.add_argument("--workers", type=int, default=None, help="processes for the per-document steps (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    p.set_defaults(run=run_curate)


def run_curate(args) -> None:
    import re
    from pathlib import Path

    from lmsmith.data.pipeline import curate

    override = re.compile(r"^[A-Za-z_][\w.]*=")
    inputs = [a for a in args.inputs if not override.match(a) or Path(a).exists()]
    overrides = [a for a in args.inputs if a not in inputs] + args.set
    curate(inputs, args.out, args.config, keep_dropped=args.keep_dropped, quiet=args.quiet,
           workers=args.workers, overrides=overrides)


# ---------------------------------------------------------------------------------------------
# tokenizer


def add_tokenizer(sub) -> None:
    p = sub.add_parser("tokenizer", help="train or inspect a tokenizer")
    verbs = p.add_subparsers(dest="tokenizer_verb", required=True, metavar="{train,show}")
    t = verbs.add_parser("train", help="train a byte-level BPE (or char-level) tokenizer on text files or folders")
    t.add_argument("inputs", nargs="+", help="text files or folders (searched recursively)")
    t.add_argument("-o", "--out", required=True, help="output directory for tokenizer.json")
    t.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size, including special tokens (BPE)")
    t.add_argument("--kind", choices=["bpe", "char"], default="bpe", help="byte-level BPE, or one token per character")
    t.add_argument("--special", action="append", default=[], metavar="TOKEN", help="extra special token (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(run=run_tokenizer_train)
    s = verbs.add_parser("show", help="show how a text splits into pieces and ids")
    s.add_argument("tokenizer", help="tokenizer or model directory")
    s.add_argument("text", help="text to encode")
    s.set_defaults(run=run_tokenizer_show)


def run_tokenizer_train(args) -> None:
    from lmsmith.tokenizer import train_tokenizer_cli

    train_tokenizer_cli(args.inputs, args.out, kind=args.kind, vocab_size=args.vocab_size,
                        special_tokens=args.special, quiet=args.quiet)


def run_tokenizer_show(args) -> None:
    from lmsmith.tokenizer import load_tokenizer, show_pieces

    show_pieces(load_tokenizer(args.tokenizer), args.text)


# ---------------------------------------------------------------------------------------------
# tokenize


def add_tokenize(sub) -> None:
    p = sub.add_parser("tokenize", help="encode a curated directory (or text files) into token shards for training")
    p.add_argument("inputs", nargs="+", metavar="DATA", help="a curated directory (from `lmsmith curate`), or text files and folders")
    p.add_argument("-t", "--tokenizer", required=True, help="tokenizer directory (from `lmsmith tokenizer train`)")
    p.add_argument("-o", "--out", required=True, help="output tokens directory (replaced as a whole when done)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="text files only: the last fraction of the tokens held out for validation (default 0.1)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard file")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(run=run_tokenize)


def run_tokenize(args) -> None:
    from lmsmith.token_shards import tokenize_corpus

    tokenize_corpus(args.inputs, args.tokenizer, args.out, val_fraction=args.val_fraction,
                    shard_tokens=args.shard_tokens, quiet=args.quiet)


# ---------------------------------------------------------------------------------------------
# train


def add_train(sub) -> None:
    p = sub.add_parser("train", help="pretrain a model on token shards (one process, or many under torchrun)")
    p.add_argument("config", nargs="?", help="recipe YAML with data:, out:, model: and train: sections")
    p.add_argument("overrides", nargs="*", help="overrides, e.g. data=tokens/ out=runs/tiny train.lr=3e-3")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="continue from the run's newest checkpoint (auto; starts fresh if there is none) or from PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(run=run_train)


def run_train(args) -> None:
    from lmsmith.train.config import load_recipe
    from lmsmith.train.loop import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    train(load_recipe(config, overrides), resume=args.resume, quiet=args.quiet)


# ---------------------------------------------------------------------------------------------
# eval


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="loss, perplexity and bits per byte of a model on a whole held-out split")
    p.add_argument("model", metavar="MODEL_OR_RUN", help="model directory, or run directory (its final model)")
    p.add_argument("--data", metavar="TOKENS_DIR", help="tokens directory (default: the one the model was trained on)")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--context", type=int, default=None, help="tokens each window sees (default: the model's block_size)")
    p.add_argument("--stride", type=int, default=None, help="tokens a window moves on (default: half the context)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], default="fp32",
                   help="fp32 is exact; auto takes the device's fast format")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_eval)


def run_eval(args) -> None:
    from lmsmith.evaluate_split import eval_cli

    eval_cli(args)


# ---------------------------------------------------------------------------------------------
# build


def add_build(sub) -> None:
    p = sub.add_parser("build", help="run every stage of a recipe: curate, tokenizer, tokenize, train, eval, samples")
    p.add_argument("recipe", nargs="?", help="recipe YAML or the name of a shipped recipe (default: quickstart)")
    p.add_argument("overrides", nargs="*", help="overrides, e.g. train.steps=500 curate.inputs=[docs/]")
    p.add_argument("-o", "--out", metavar="WORKDIR", help="work directory (default: work/RECIPE_NAME)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="redo this stage and the ones after it even if up to date (repeatable)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="train with N processes under torchrun (e.g. one per GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars; only the result")
    p.set_defaults(run=run_build)


def run_build(args) -> None:
    from lmsmith.build import build_cli

    build_cli(args)


# ---------------------------------------------------------------------------------------------
# init


def add_init(sub) -> None:
    p = sub.add_parser("init", help="make a fresh, untrained model directory")
    p.add_argument("config", nargs="?", help="YAML model config (a model: section or bare keys)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.n_layer=4")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory; sets the vocabulary size")
    p.add_argument("-o", "--out", required=True, help="output model directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_init)


def run_init(args) -> None:
    from lmsmith.model_dir import init_model_dir

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    init_model_dir(config, overrides, args.tokenizer, args.out, seed=args.seed)


# ---------------------------------------------------------------------------------------------
# generate


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="write text with a model, streaming tokens as they come")
    p.add_argument("model", help="model or run directory")
    p.add_argument("--prompt", action="append", default=None, help="prompt text (repeat for a batch); \\n is a newline")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--no-stream", action="store_true", help="print each text when it is complete")
    p.set_defaults(run=run_generate)


def run_generate(args) -> None:
    from lmsmith.generate import generate_cli

    generate_cli(args)


# ---------------------------------------------------------------------------------------------
# convert


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert between lmsmith and Hugging Face model directories")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--from-hf", metavar="HF_DIR", help="a local GPT-2 or Llama family directory")
    way.add_argument("--to-hf", metavar="MODEL_DIR", help="an lmsmith model directory")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.set_defaults(run=run_convert)


def run_convert(args) -> None:
    from lmsmith.convert import export_hf_dir, import_hf_dir

    if args.from_hf:
        import_hf_dir(args.from_hf, args.out)
    else:
        export_hf_dir(args.to_hf, args.out)


# ---------------------------------------------------------------------------------------------
# finetune


def add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="specialise a model on domain data: full fine-tuning or LoRA, "
                                        "instruction tuning or continued pretraining")
    p.add_argument("base", nargs="?", metavar="BASE",
                   help="start point: a run or model directory, a Hugging Face GPT-2/Llama directory, or hf:NAME")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, anywhere on the line: lora.rank=16 template=chatml train.lr=1e-4")
    p.add_argument("--data", help="instruct: a JSONL file; continue: text files, a folder, a curated or tokens directory")
    p.add_argument("-o", "--out", required=True, help="the run directory (with --merge: the merged model directory)")
    p.add_argument("--mode", choices=["instruct", "continue"], help="answers to prompts (default), or more pretraining on text")
    p.add_argument("--method", choices=["full", "lora"], help="train every weight (default), or only LoRA adapters")
    p.add_argument("--template", help="chat template for instruct data: chatml, plain (default) or raw")
    p.add_argument("--config", help="YAML with finetune: and train: sections")
    p.add_argument("--merge", metavar="RUN", help="fold the LoRA adapter of RUN (or an adapter directory) into its base")
    p.add_argument("--base", dest="merge_base", metavar="BASE",
                   help="with --merge: the base to fold into (default: the one the adapter names)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(run=run_finetune)
    accept_trailing_overrides(p)


def accept_trailing_overrides(parser: argparse.ArgumentParser) -> None:
    """Let KEY=VALUE overrides also come after the options (`... --method lora lora.rank=16`):
    argparse alone takes positionals in one run, and would call the later ones unrecognised."""
    import re

    parse = parser.parse_known_args
    override = re.compile(r"^[A-Za-z_][\w.]*=")

    def parse_known_args(args=None, namespace=None):
        namespace, extras = parse(args, namespace)
        trailing = [a for a in extras if override.match(a)]
        namespace.overrides = [*(namespace.overrides or []), *trailing]
        return namespace, [a for a in extras if a not in trailing]

    parser.parse_known_args = parse_known_args


def run_finetune(args) -> None:
    from lmsmith.finetune import finetune_cli

    finetune_cli(args)


# ---------------------------------------------------------------------------------------------
# sweep


def add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="search hyperparameters with Optuna: short training runs, median pruning")
    p.add_argument("recipe", nargs="?", help="recipe YAML with a sweep: section (or a shipped recipe's name)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. sweep.steps=200")
    p.add_argument("--trials", type=int, help="trials in the study, counting those of earlier runs (default: sweep.trials)")
    p.add_argument("--budget-minutes", type=float, help="stop after this many minutes; run again to continue")
    p.add_argument("-o", "--out", help="sweep directory: study, trials, results, best recipe, plots (default: sweeps/NAME)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage shared by machines, e.g. postgresql://host/db "
                                                    "(default: sqlite in the sweep directory)")
    p.add_argument("--study-name", help="the study's name in the storage (default: the recipe's name)")
    p.add_argument("--data", metavar="TOKENS_DIR", help="train every trial on these tokens instead of building them")
    p.add_argument("--workdir", help="where the recipe's data stages are built (default: work/NAME, as lmsmith build)")
    p.add_argument("--quiet", action="store_true", help="no progress lines and no results table")
    p.set_defaults(run=run_sweep)
    accept_trailing_overrides(p)


def run_sweep(args) -> None:
    from lmsmith.sweep import sweep_cli

    sweep_cli(args)


# ---------------------------------------------------------------------------------------------
# report


def add_report(sub) -> None:
    p = sub.add_parser("report", help="a self-contained report.html with loss curves, schedule, throughput, data and scores")
    p.add_argument("path", metavar="RUN_OR_WORKDIR", help="a training run, or a build's work directory")
    p.add_argument("-o", "--out", help="where report.html and the PNGs go (default: RUN_OR_WORKDIR/report)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(run=run_report)


def run_report(args) -> None:
    from lmsmith.report import report_cli

    report_cli(args)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmsmith", description="Build your own language model end to end.")
    parser.add_argument("--version", action="version", version=f"lmsmith {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (add_build, add_curate, add_tokenizer, add_tokenize, add_init, add_train, add_eval, add_generate,
                add_convert, add_finetune, add_sweep, add_report):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
